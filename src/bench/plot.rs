//! `nsq-bench plot`: SVG charts and a ratio summary from the results CSV — throughput bars per
//! mode and size (each broker beside the raw ceiling), broker CPU per message, the connection
//! sweep, and latency percentile curves per load level.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::args::PlotArgs;
use super::results::{RAW_LABEL, Row, is_open_loop, labels, raw_for, read_csv};
use super::summary;

/// Chart size in pixels: wide enough for 16 unrotated category labels.
const SIZE: (u32, u32) = (1600, 720);
/// Series colours, in label order.
const PALETTE: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// A grouped bar chart: categories on x, one bar per series.
struct Bars {
    title: String,
    y_desc: String,
    categories: Vec<String>,
    /// (series name, value per category).
    series: Vec<(String, Vec<Option<f64>>)>,
}

/// Draws everything for `args`; returns the files written.
pub fn plot(args: &PlotArgs) -> Result<Vec<PathBuf>, String> {
    let rows = read_csv(&args.csv)?;
    if rows.is_empty() {
        return Err(format!("{}: no rows", args.csv.display()));
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.csv.parent().map(Path::to_path_buf).unwrap_or_default());
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut written = Vec::new();
    for mode in ["pub", "sub", "pubsub"] {
        for (metric, y_desc, file) in [
            ("msgs_per_s", "messages/s", "throughput"),
            ("cpu_ns_per_msg", "broker CPU ns/message", "cpu"),
        ] {
            let chart = bars_for(
                &rows,
                &args.ours,
                mode,
                "tp",
                metric,
                y_desc,
                metric == "msgs_per_s",
            );
            if let Some(chart) = chart {
                let path = out.join(format!("{file}_{mode}.svg"));
                draw_bars(&path, &chart)?;
                written.push(path);
            }
        }
    }
    if let Some(chart) = connections_chart(&rows, &args.ours) {
        let path = out.join("connections.svg");
        draw_bars(&path, &chart)?;
        written.push(path);
    }
    let latency = rows.iter().filter(|r| r.get("mode") == "latency").count();
    if latency > 0 {
        let path = out.join("latency.svg");
        draw_latency(&path, &rows)?;
        written.push(path);
    }
    let summary_path = out.join("summary.md");
    std::fs::write(&summary_path, summary::markdown(&rows, &args.ours))
        .map_err(|e| format!("{}: {e}", summary_path.display()))?;
    written.push(summary_path);
    Ok(written)
}

/// Bars of `metric` for rows of `mode` with `tag`: one series per broker, plus raw if asked.
fn bars_for(
    rows: &[Row],
    ours: &str,
    mode: &str,
    tag: &str,
    metric: &str,
    y_desc: &str,
    with_raw: bool,
) -> Option<Bars> {
    let mine: Vec<&Row> = rows
        .iter()
        .filter(|r| r.get("label") == ours && r.get("mode") == mode && r.get("tag") == tag)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut series = Vec::new();
    for label in labels(rows).into_iter().filter(|l| l != RAW_LABEL) {
        let values = mine
            .iter()
            .map(|m| super::results::same_load(rows, m, &label).and_then(|r| r.num(metric)))
            .collect::<Vec<_>>();
        if values.iter().any(Option::is_some) {
            series.push((label, values));
        }
    }
    if with_raw {
        let raw: Vec<Option<f64>> = mine
            .iter()
            .map(|m| raw_for(rows, m).and_then(|r| r.num(metric)))
            .collect();
        if raw.iter().any(Option::is_some) {
            series.push(("raw baseline".into(), raw));
        }
    }
    Some(Bars {
        title: format!(
            "{mode}: {y_desc} (B = body bytes, M100 = MPUB of 100, c = connections, x = cores)"
        ),
        y_desc: y_desc.into(),
        categories: mine.iter().map(|r| short_label(r)).collect(),
        series,
    })
}

fn connections_chart(rows: &[Row], ours: &str) -> Option<Bars> {
    let mut chart = None::<Bars>;
    for mode in ["pub", "pubsub"] {
        let Some(b) = bars_for(rows, ours, mode, "conn", "msgs_per_s", "messages/s", false) else {
            continue;
        };
        match &mut chart {
            None => chart = Some(b),
            Some(c) => {
                c.categories.extend(b.categories);
                for (name, vals) in b.series {
                    if let Some((_, v)) = c.series.iter_mut().find(|(n, _)| *n == name) {
                        v.extend(vals);
                    }
                }
            }
        }
    }
    chart.map(|mut c| {
        c.title = "connections sweep (MPUB 100 x 200 B): messages/s".into();
        c
    })
}

/// A category label short enough to sit under its bars: size, batch, connections, cores.
fn short_label(r: &Row) -> String {
    let batch = match r.get("batch") {
        "1" | "" => "PUB".to_string(),
        b => format!("M{b}"),
    };
    let mode = if r.get("tag") == "conn" {
        format!("{} ", r.get("mode"))
    } else {
        String::new()
    };
    format!(
        "{mode}{}B {batch} c{} x{}",
        r.get("size"),
        r.get("connections"),
        r.get("cores")
    )
}

fn draw_bars(path: &Path, bars: &Bars) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let n = bars.categories.len().max(1);
    let ymax = bars
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b))
        .max(1.0)
        * 1.5;
    let ymin = bars
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(f64::MAX, |a, &b| if b > 0.0 { a.min(b) } else { a })
        .min(ymax / 10.0)
        / 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(&bars.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        // Log scale: one chart spans 64 B and 16 KiB messages, orders of magnitude apart.
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (ymin..ymax).log_scale())
        .map_err(|e| err(&e))?;
    let cats = bars.categories.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&move |x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                cats.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 11))
        .y_desc(format!("{} (log scale)", bars.y_desc))
        .y_label_formatter(&|v| human(*v))
        .draw()
        .map_err(|e| err(&e))?;
    let k = bars.series.len().max(1) as f64;
    let width = 0.8 / k;
    for (s, (name, values)) in bars.series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        let rects = values.iter().enumerate().filter_map(move |(i, v)| {
            let v = (*v)?;
            let x0 = i as f64 - 0.4 + s as f64 * width;
            Some(Rectangle::new(
                [(x0, ymin), (x0 + width, v)],
                color.filled(),
            ))
        });
        chart
            .draw_series(rects)
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Latency percentile curves: x = percentile, y = microseconds (log), one line per run.
fn draw_latency(path: &Path, rows: &[Row]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    const COLS: [(&str, &str); 6] = [
        ("p50_us", "p50"),
        ("p90_us", "p90"),
        ("p99_us", "p99"),
        ("p999_us", "p99.9"),
        ("p9999_us", "p99.99"),
        ("max_us", "max"),
    ];
    // The broker runs, and the raw echo at the same rates (the machine's floor).
    let runs: Vec<&Row> = rows
        .iter()
        .filter(|r| r.get("mode") == "latency" || (r.get("mode") == "raw" && is_open_loop(r)))
        .collect();
    let ymax = runs
        .iter()
        .flat_map(|r| COLS.iter().filter_map(|(c, _)| r.num(c)))
        .fold(10.0f64, f64::max)
        * 2.0;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "latency from intended send time (open loop)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(-0.2f64..5.2, (1f64..ymax).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_labels(COLS.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                COLS.get(i as usize)
                    .map(|c| c.1.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("microseconds")
        .draw()
        .map_err(|e| err(&e))?;
    let mut levels: Vec<&str> = runs.iter().map(|r| r.get("tag")).collect();
    levels.sort();
    levels.dedup();
    let first_label = runs.first().map(|r| r.get("label")).unwrap_or("");
    for r in &runs {
        let level = levels.iter().position(|l| *l == r.get("tag")).unwrap_or(0);
        let color = PALETTE[level % PALETTE.len()];
        // One colour per load level; the broker under test drawn thick, the other thin, the
        // raw floor faint.
        let style = if r.get("label") == first_label {
            color.stroke_width(3)
        } else if r.get("label") == RAW_LABEL {
            color.mix(0.4).stroke_width(2)
        } else {
            color.stroke_width(1)
        };
        let points: Vec<(f64, f64)> = COLS
            .iter()
            .enumerate()
            .filter_map(|(i, (c, _))| Some((i as f64, r.num(c)?.max(1.0))))
            .collect();
        let name = format!("{} {} ({}/s)", r.get("label"), r.get("tag"), r.get("rate"));
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// 1234567 → "1.23M".
fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers() {
        assert_eq!(human(1_234_567.0), "1.23M");
        assert_eq!(human(12_345.0), "12k");
        assert_eq!(human(5.0), "5");
    }

    #[test]
    fn plots_and_summary_come_out_of_a_small_csv() {
        let dir = std::env::temp_dir().join(format!("nsq-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("results.csv");
        std::fs::write(
            &csv,
            "label,tag,mode,size,batch,connections,cores,topics,rate,raw_reply,msgs_per_s,cpu_ns_per_msg,p50_us,p90_us,p99_us,p999_us,p9999_us,max_us\n\
             nsqd-uring,tp,pub,200,100,16,1,1,0,,900000,300,,,,,,\n\
             nsqd,tp,pub,200,100,16,1,1,0,,300000,900,,,,,,\n\
             raw,raw,raw,200,100,16,1,1,0,ack,1000000,,,,,,,\n\
             nsqd-uring,lat50,latency,200,1,16,1,1,1000,,1000,,50,60,90,200,300,400\n",
        )
        .unwrap();
        let args = PlotArgs {
            csv: csv.clone(),
            out: None,
            ours: "nsqd-uring".into(),
        };
        let written = plot(&args).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.contains(&"throughput_pub.svg".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"latency.svg".to_string()), "{names:?}");
        let svg = std::fs::read_to_string(dir.join("throughput_pub.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("raw baseline"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
