//! nsq-bench, the load generator behind `scripts/bench.sh`: publishes, consumes and times
//! messages against any nsqd-compatible broker on loopback, and measures the raw socket ceiling
//! of the same machine for comparison.
//!
//! `args` (command line), `client` (the V2 client side), `modes` (one loop per kind of
//! connection, wired into executors by `modes::start`), `schedule` (open-loop send times),
//! `run` (executors and the phase clock), `progress` (the line each second), `read_buf` (the socket read buffer), `histogram` (latency), `proc_stat` (the broker's CPU
//! and memory from /proc), `report` (text/JSON/CSV), and `results`, `summary`, `plot` (reading
//! the CSV back into ratio tables and SVG charts).

pub mod args;
pub mod client;
pub mod histogram;
pub mod modes;
pub mod plot;
pub mod proc_stat;
pub mod progress;
pub mod read_buf;
pub mod report;
pub mod results;
pub mod run;
pub mod schedule;
pub mod summary;

use args::{Cli, Command, Mode};

/// Runs the parsed command; `Err` carries the message for a failure (exit status 1).
pub fn main(cli: Cli) -> Result<(), String> {
    let (mode, load) = match cli.command {
        Command::Plot(p) => {
            for path in plot::plot(&p)? {
                println!("wrote {}", path.display());
            }
            return Ok(());
        }
        Command::Pub(a) => (Mode::Pub, a),
        Command::Sub(a) => (Mode::Sub, a),
        Command::Pubsub(a) => (Mode::Pubsub, a),
        Command::Latency(a) => (Mode::Latency, a),
        Command::Raw(a) => (Mode::Raw, a),
        Command::Idle(a) => (Mode::Idle, a),
        Command::RawServer(a) => return modes::start::raw_server(a),
    };
    let (shared, measured) = modes::start::run(mode, load)?;
    let report = report::Report::new(&shared, &measured);
    let args = &shared.args;
    if let Some(path) = &args.csv {
        report
            .append_csv(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!("{}", report.text());
    }
    if report.messages == 0 && mode != Mode::Idle {
        return Err(format!(
            "no messages were {} (errors: {})",
            if run::counts_sent(&shared) {
                "acknowledged"
            } else {
                "received"
            },
            report.errors.join("; ")
        ));
    }
    Ok(())
}
