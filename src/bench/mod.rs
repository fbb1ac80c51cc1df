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

use args::{Cli, Command, Mode, TopicOnCoreArgs};

/// Runs the parsed command; `Err` carries the message for a failure (exit status 1).
pub fn main(cli: Cli) -> Result<(), String> {
    let (mode, load) = match cli.command {
        Command::Plot(p) => {
            for path in plot::plot(&p)? {
                println!("wrote {}", path.display());
            }
            return Ok(());
        }
        Command::TopicOnCore(t) => {
            println!("{}", topic_on_core(&t)?);
            return Ok(());
        }
        Command::CpuTime(c) => {
            let used = proc_stat::cpu_time(c.pid)
                .ok_or_else(|| format!("cannot read the CPU time of process {}", c.pid))?;
            println!("{}", used.as_nanos());
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

/// The first `<prefix><n><suffix>` (n = 0, 1, ...) that nsqd-uring with `cores` cores places
/// on core `core`.
pub fn topic_on_core(t: &TopicOnCoreArgs) -> Result<String, String> {
    if t.core >= t.cores.max(1) {
        return Err(format!(
            "--core {} is not below --cores {}",
            t.core, t.cores
        ));
    }
    (0..10_000)
        .map(|n| format!("{}{n}{}", t.prefix, t.suffix))
        .find(|name| crate::mesh::owner_of(name, t.cores) == t.core)
        .ok_or_else(|| {
            format!(
                "no name {}<n>{} lands on core {}",
                t.prefix, t.suffix, t.core
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_on_core_names_a_topic_that_core_owns() {
        for cores in 1..=4 {
            for core in 0..cores {
                let args = TopicOnCoreArgs {
                    prefix: "c7_".into(),
                    suffix: "#ephemeral".into(),
                    core,
                    cores,
                };
                let name = topic_on_core(&args).unwrap();
                assert!(
                    name.starts_with("c7_") && name.ends_with("#ephemeral"),
                    "{name}"
                );
                assert_eq!(crate::mesh::owner_of(&name, cores), core);
            }
        }
        let beyond = TopicOnCoreArgs {
            prefix: "x".into(),
            suffix: String::new(),
            core: 2,
            cores: 2,
        };
        assert!(topic_on_core(&beyond).is_err());
    }
}
