//! `nsq-bench`: load generator for nsqd-compatible brokers (see `nsqd_uring::bench`).

use std::process::ExitCode;

use clap::Parser;
use nsqd_uring::bench::{self, args::Cli};

fn main() -> ExitCode {
    match bench::main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("nsq-bench: {msg}");
            ExitCode::from(1)
        }
    }
}
