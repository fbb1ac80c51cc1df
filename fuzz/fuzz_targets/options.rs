//! Options: arbitrary command-line arguments plus an arbitrary `--config` TOML file through
//! `options::parse_args`. Any input is a value or an error, never a panic; accepted options
//! pass their own validation again and can list their unbuilt features.
//!
//! Input layout (so seeds stay readable): arguments one per line, then optionally a line
//! `===` followed by the config file's bytes (then `--config=<that file>` comes first).
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use nsqd_uring::options::{Parsed, parse_args};

const SEPARATOR: &[u8] = b"\n===\n";

fuzz_target!(|data: &[u8]| {
    let (args, config) = match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        Some(at) => (&data[..at], Some(&data[at + SEPARATOR.len()..])),
        None => (data, None),
    };
    let mut argv = vec![OsString::from("nsqd")];
    if let Some(text) = config {
        let path = std::env::temp_dir().join(format!("nsqd-fuzz-{}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write config");
        argv.push(format!("--config={}", path.display()).into());
    }
    if !args.is_empty() {
        argv.extend(
            args.split(|&b| b == b'\n')
                .map(|a| OsString::from_vec(a.to_vec())),
        );
    }
    if let Ok(Parsed::Run(mut opts)) = parse_args(argv) {
        opts.validate().expect("validated options validate again");
        let _ = opts.unbuilt_features();
    }
});
