//! Reading the results CSV back, and pairing rows: a run of the broker under test with the same
//! run against the other broker, and with the raw baseline of the same frame shape. Both the
//! ratio tables (`summary`) and the charts (`plot`) are built on these pairings.

use std::collections::HashMap;
use std::path::Path;

/// One CSV row, by column name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    cells: HashMap<String, String>,
}

impl Row {
    /// A cell as text ("" when absent).
    pub fn get(&self, col: &str) -> &str {
        self.cells.get(col).map(String::as_str).unwrap_or("")
    }

    /// A cell as a number, if it is one.
    pub fn num(&self, col: &str) -> Option<f64> {
        self.get(col).parse().ok()
    }

    /// The run's shape without the broker: rows with equal keys are the same load.
    pub fn key(&self) -> String {
        [
            "tag",
            "mode",
            "size",
            "batch",
            "connections",
            "cores",
            "topics",
            "rate",
        ]
        .iter()
        .map(|c| self.get(c))
        .collect::<Vec<_>>()
        .join("|")
    }

    /// A short name for the run in tables and chart axes.
    pub fn describe(&self) -> String {
        // sub publishes nothing during its window: its batch is only the preload's.
        let batch = match (self.get("mode"), self.get("batch")) {
            ("sub", _) => String::new(),
            (_, "1" | "") => "PUB ".to_string(),
            (_, b) => format!("MPUB{b} "),
        };
        let mut s = format!(
            "{} {}B {}c{} x{}",
            self.get("mode"),
            self.get("size"),
            batch,
            self.get("connections"),
            self.get("cores")
        );
        if self.get("rate") != "0" && !self.get("rate").is_empty() {
            s.push_str(&format!(" @{}/s", self.get("rate")));
        }
        if self.get("topics") != "1" && !self.get("topics").is_empty() {
            s.push_str(&format!(" t{}", self.get("topics")));
        }
        s
    }
}

/// Parses CSV text with a header line (cells never contain commas: the writer strips them).
pub fn parse_csv(text: &str) -> Vec<Row> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    lines
        .map(|line| Row {
            cells: cols
                .iter()
                .zip(line.split(','))
                .map(|(c, v)| (c.to_string(), v.trim().to_string()))
                .collect(),
        })
        .collect()
}

/// Reads and parses a results CSV.
pub fn read_csv(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(parse_csv(&text))
}

/// The label of raw baseline rows.
pub const RAW_LABEL: &str = "raw";

/// The raw baseline for a broker row: same size, batch, connections and cores; echo for runs
/// with consumers, ack for pub.
pub fn raw_for<'a>(rows: &'a [Row], row: &Row) -> Option<&'a Row> {
    let reply = if row.get("mode") == "pub" {
        "ack"
    } else {
        "echo"
    };
    let same = |r: &&Row| {
        r.get("mode") == "raw"
            && r.get("raw_reply") == reply
            && !is_open_loop(r)
            && ["size", "cores"].iter().all(|c| r.get(c) == row.get(c))
    };
    let exact = rows.iter().filter(same).find(|r| {
        ["batch", "connections"]
            .iter()
            .all(|c| r.get(c) == row.get(c))
    });
    exact.or_else(|| {
        rows.iter()
            .filter(same)
            .find(|r| r.get("batch") == row.get("batch"))
    })
}

/// Whether a row ran at a fixed offered rate (latency, or the raw echo's latency floor) rather
/// than as fast as answered.
pub fn is_open_loop(row: &Row) -> bool {
    row.num("rate").is_some_and(|r| r > 0.0)
}

/// The raw echo run at the same offered rate as latency row `row` (same tag, rate and cores):
/// the open-loop latency this machine gives with no broker in the path.
pub fn latency_floor_for<'a>(rows: &'a [Row], row: &Row) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.get("mode") == "raw"
            && is_open_loop(r)
            && ["tag", "rate", "cores"]
                .iter()
                .all(|c| r.get(c) == row.get(c))
    })
}

/// The row with the same load against broker `label`.
pub fn same_load<'a>(rows: &'a [Row], row: &Row, label: &str) -> Option<&'a Row> {
    let key = row.key();
    rows.iter()
        .find(|r| r.get("label") == label && r.key() == key)
}

/// Labels in first-seen order.
pub fn labels(rows: &[Row]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        let l = r.get("label").to_string();
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// `a / b` when both are known and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "label,tag,mode,size,batch,connections,cores,topics,rate,raw_reply,msgs_per_s,mb_per_s\n\
        raw,lat50,raw,200,100,16,1,1,5000,echo,5000,1\n\
        ours,tp,pub,200,100,16,1,1,0,,900,180\n\
        nsqd,tp,pub,200,100,16,1,1,0,,300,60\n\
        raw,raw,raw,200,100,16,1,1,0,ack,1000,200\n\
        raw,raw,raw,200,100,16,1,1,0,echo,700,140\n\
        ours,tp,pubsub,200,100,16,1,1,0,,350,70\n";

    #[test]
    fn rows_pair_with_the_other_broker_and_the_right_raw_shape() {
        let rows = parse_csv(CSV);
        assert_eq!(rows.len(), 6);
        assert_eq!(labels(&rows), vec!["raw", "ours", "nsqd"]);
        let ours = &rows[1];
        let other = same_load(&rows, ours, "nsqd").unwrap();
        assert_eq!(
            ratio(ours.num("msgs_per_s"), other.num("msgs_per_s")),
            Some(3.0)
        );
        assert_eq!(raw_for(&rows, ours).unwrap().get("raw_reply"), "ack");
        // The open-loop echo row comes first and has the same shape, but is no ceiling.
        assert_eq!(raw_for(&rows, &rows[5]).unwrap().get("msgs_per_s"), "700");
        assert!(same_load(&rows, &rows[5], "nsqd").is_none());
        assert_eq!(ours.describe(), "pub 200B MPUB100 c16 x1");
    }

    #[test]
    fn a_latency_row_pairs_with_the_raw_echo_at_its_rate() {
        let rows = parse_csv(
            "label,tag,mode,size,batch,connections,cores,rate,raw_reply,p99_us\n\
             ours,lat50,latency,200,1,16,1,5000,,90\n\
             raw,lat25,raw,200,1,16,1,2500,echo,70\n\
             raw,lat50,raw,200,1,16,1,5000,echo,80\n\
             raw,raw,raw,200,1,16,1,0,echo,300\n",
        );
        assert_eq!(
            latency_floor_for(&rows, &rows[0]).unwrap().get("p99_us"),
            "80"
        );
        let elsewhere = parse_csv("label,tag,mode,cores,rate\nours,lat50,latency,1,9\n");
        assert!(latency_floor_for(&rows, &elsewhere[0]).is_none());
    }

    #[test]
    fn odd_input_gives_no_rows_or_empty_cells() {
        assert!(parse_csv("").is_empty());
        let rows = parse_csv("a,b\n1\n");
        assert_eq!(rows[0].get("a"), "1");
        assert_eq!(rows[0].get("b"), "");
        assert_eq!(rows[0].num("b"), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    }
}
