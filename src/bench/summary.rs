//! The ratio tables of a results CSV as Markdown: each run of the broker under test beside the
//! same load on the other broker and the raw ceiling of the same frame shape, latency
//! percentiles at equal offered load, CPU scaling from one core to two, idle connection cost.

use std::fmt::Write;

use super::results::{RAW_LABEL, Row, labels, latency_floor_for, ratio, raw_for, same_load};

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

fn kilo(v: Option<f64>) -> String {
    v.map(|x| format!("{:.0}k", x / 1e3))
        .unwrap_or_else(|| "–".into())
}

/// The whole summary for broker `ours`.
pub fn markdown(rows: &[Row], ours: &str) -> String {
    let others: Vec<String> = labels(rows)
        .into_iter()
        .filter(|l| l != ours && l != RAW_LABEL)
        .collect();
    let other = others.first().map(String::as_str);
    let mut out = String::new();
    throughput(&mut out, rows, ours, other);
    latency(&mut out, rows, ours, other);
    scaling(&mut out, rows, ours, other);
    raw(&mut out, rows);
    idle(&mut out, rows);
    out
}

fn throughput(out: &mut String, rows: &[Row], ours: &str, other: Option<&str>) {
    let o = other.unwrap_or("other");
    let _ = writeln!(
        out,
        "## Throughput\n\n| run | {ours} msg/s | MB/s | ÷ raw | {o} msg/s | ÷ {o} | cpu ns/msg | {o} cpu ns/msg | cpu ÷ {o} |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let modes = ["pub", "sub", "pubsub"];
    for r in rows
        .iter()
        .filter(|r| r.get("label") == ours && modes.contains(&r.get("mode")))
    {
        let theirs = other.and_then(|l| same_load(rows, r, l));
        let raw = raw_for(rows, r);
        let mbps = |row: &Row| row.num("mb_per_s");
        let _ = writeln!(
            out,
            "| {} [{}] | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.describe(),
            r.get("tag"),
            kilo(r.num("msgs_per_s")),
            cell(r.num("mb_per_s"), 1),
            cell(ratio(mbps(r), raw.and_then(mbps)), 2),
            kilo(theirs.and_then(|t| t.num("msgs_per_s"))),
            cell(
                ratio(
                    r.num("msgs_per_s"),
                    theirs.and_then(|t| t.num("msgs_per_s"))
                ),
                2
            ),
            cell(r.num("cpu_ns_per_msg"), 0),
            cell(theirs.and_then(|t| t.num("cpu_ns_per_msg")), 0),
            cell(
                ratio(
                    r.num("cpu_ns_per_msg"),
                    theirs.and_then(|t| t.num("cpu_ns_per_msg"))
                ),
                2
            ),
        );
    }
    out.push('\n');
}

fn latency(out: &mut String, rows: &[Row], ours: &str, other: Option<&str>) {
    let runs: Vec<&Row> = rows
        .iter()
        .filter(|r| r.get("label") == ours && r.get("mode") == "latency")
        .collect();
    if runs.is_empty() {
        return;
    }
    let o = other.unwrap_or("other");
    let _ = writeln!(
        out,
        "## Latency (open loop, µs from intended send time)\n\n\
         `raw` is the same generator and schedule against a raw echo server on the broker's CPU:\n\
         the floor this machine puts under any broker at that rate.\n\n\
         | run | p50 | p90 | p99 | p99.9 | p99.99 | max | {o} p50 | {o} p99 | {o} p99.9 | p99 ÷ {o} | raw p50 | raw p99 | raw p99.9 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let theirs = other.and_then(|l| same_load(rows, r, l));
        let t = |c: &str| theirs.and_then(|t| t.num(c));
        let floor = latency_floor_for(rows, r);
        let f = |c: &str| floor.and_then(|f| f.num(c));
        let _ = writeln!(
            out,
            "| {} [{}] | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.describe(),
            r.get("tag"),
            cell(r.num("p50_us"), 0),
            cell(r.num("p90_us"), 0),
            cell(r.num("p99_us"), 0),
            cell(r.num("p999_us"), 0),
            cell(r.num("p9999_us"), 0),
            cell(r.num("max_us"), 0),
            cell(t("p50_us"), 0),
            cell(t("p99_us"), 0),
            cell(t("p999_us"), 0),
            cell(ratio(r.num("p99_us"), t("p99_us")), 2),
            cell(f("p50_us"), 0),
            cell(f("p99_us"), 0),
            cell(f("p999_us"), 0),
        );
    }
    out.push('\n');
}

/// CPU per message at two cores against one, same load spread over topics (tag `scale`).
fn scaling(out: &mut String, rows: &[Row], ours: &str, other: Option<&str>) {
    let one: Vec<&Row> = rows
        .iter()
        .filter(|r| r.get("tag") == "scale" && r.get("cores") == "1")
        .collect();
    if one.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Scaling (broker CPU per message, load over every shard)\n\n| broker | run | x1 ns/msg | x2 ns/msg | x2 ÷ x1 | x1 msg/s | x2 msg/s |\n|---|---|---:|---:|---:|---:|---:|"
    );
    for label in [Some(ours), other].into_iter().flatten() {
        for r in one.iter().filter(|r| r.get("label") == label) {
            let two = rows.iter().find(|t| {
                t.get("label") == label
                    && t.get("tag") == "scale"
                    && t.get("cores") == "2"
                    && ["mode", "size", "batch", "connections", "topics"]
                        .iter()
                        .all(|c| t.get(c) == r.get(c))
            });
            let t = |c: &str| two.and_then(|t| t.num(c));
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} | {} |",
                r.describe(),
                cell(r.num("cpu_ns_per_msg"), 0),
                cell(t("cpu_ns_per_msg"), 0),
                cell(ratio(t("cpu_ns_per_msg"), r.num("cpu_ns_per_msg")), 2),
                kilo(r.num("msgs_per_s")),
                kilo(t("msgs_per_s")),
            );
        }
    }
    out.push('\n');
}

fn raw(out: &mut String, rows: &[Row]) {
    let raws: Vec<&Row> = rows.iter().filter(|r| r.get("mode") == "raw").collect();
    if raws.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Raw baseline (no broker)\n\n| run | reply | msg/s | MB/s | p99 µs |\n|---|---|---:|---:|---:|"
    );
    for r in raws {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.describe(),
            r.get("raw_reply"),
            kilo(r.num("msgs_per_s")),
            cell(r.num("mb_per_s"), 1),
            cell(r.num("p99_us"), 0),
        );
    }
    out.push('\n');
}

fn idle(out: &mut String, rows: &[Row]) {
    let idle: Vec<&Row> = rows.iter().filter(|r| r.get("mode") == "idle").collect();
    if idle.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Idle connections\n\n| broker | connections | RSS per connection (bytes) |\n|---|---:|---:|"
    );
    for r in idle {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            r.get("label"),
            r.get("connections"),
            cell(r.num("rss_per_conn_bytes"), 0)
        );
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::parse_csv;

    #[test]
    fn tables_show_ratios_to_the_other_broker_and_raw() {
        let rows = parse_csv(
            "label,tag,mode,size,batch,connections,cores,topics,rate,raw_reply,msgs_per_s,mb_per_s,cpu_ns_per_msg,p99_us\n\
             us,tp,pub,200,100,16,1,1,0,,900000,180,300,\n\
             them,tp,pub,200,100,16,1,1,0,,300000,60,900,\n\
             raw,raw,raw,200,100,16,1,1,0,ack,1000000,200,,\n\
             us,lat50,latency,200,1,16,1,1,1000,,1000,0.2,,100\n\
             them,lat50,latency,200,1,16,1,1,1000,,1000,0.2,,400\n\
             raw,lat50,raw,200,1,16,1,1,1000,echo,1000,0.2,,70\n\
             us,scale,pub,200,100,16,1,16,0,,1,1,100,\n\
             us,scale,pub,200,100,16,2,16,0,,1,1,110,\n",
        );
        let md = markdown(&rows, "us");
        assert!(
            md.contains("| 900k | 180.0 | 0.90 | 300k | 3.00 | 300 | 900 | 0.33 |"),
            "{md}"
        );
        assert!(md.contains("| 0.25 | – | 70 | – |"), "{md}");
        assert!(md.contains("| 100 | 110 | 1.10 |"), "{md}");
        assert!(md.contains("## Raw baseline"));
    }
}
