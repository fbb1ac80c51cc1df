//! End-to-end tests of `parse_args`: flag forms, config files, validation,
//! `/config` rendering and the unbuilt-feature list.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::table::OPTIONS;
use super::*;

fn run(args: &[&str]) -> Options {
    let argv = std::iter::once("nsqd").chain(args.iter().copied());
    match parse_args(argv) {
        Ok(Parsed::Run(o)) => o,
        other => panic!("{args:?} gave {other:?}"),
    }
}

fn fail(args: &[&str]) -> String {
    let argv = std::iter::once("nsqd").chain(args.iter().copied());
    match parse_args(argv) {
        Err(e) => e.to_string(),
        other => panic!("{args:?} should fail, gave {other:?}"),
    }
}

/// Writes `text` to a fresh file in the temp dir; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("nsqd-options-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn flag(&self) -> String {
        format!("--config={}", self.0.display())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn defaults_match_nsqd() {
    let o = run(&[]);
    assert_eq!(o, Options::default());
    assert_eq!(o.tcp_address, "0.0.0.0:4150");
    assert_eq!(o.http_address, "0.0.0.0:4151");
    assert_eq!(o.https_address, "0.0.0.0:4152");
    assert_eq!(o.broadcast_address, os_hostname());
    assert_eq!(o.node_id, default_node_id(&os_hostname()));
    assert_eq!(o.log_level, LogLevel::Info);
    assert_eq!(o.log_prefix, "[nsqd] ");
    assert_eq!(o.msg_timeout, Duration::from_secs(60));
    assert_eq!(o.max_msg_timeout, Duration::from_secs(900));
    assert_eq!(o.max_req_timeout, Duration::from_secs(3600));
    assert_eq!(o.output_buffer_timeout, Duration::from_millis(250));
    assert_eq!(o.mem_queue_size, 10_000);
    assert_eq!(o.max_msg_size, 1_048_576);
    assert_eq!(o.max_body_size, 5_242_880);
    assert_eq!(o.tls_required, TlsRequired::None);
    assert_eq!(o.tls_min_version, TlsMinVersion::Tls10);
    assert!(o.deflate && o.snappy && o.statsd_mem_stats);
    assert_eq!((o.cores, o.durable_ack), (0, false));
    assert!(o.unbuilt_features().is_empty());
}

#[test]
fn every_value_flag_form() {
    for args in [
        &["-mem-queue-size=5"][..],
        &["--mem-queue-size=5"],
        &["-mem-queue-size", "5"],
        &["--mem-queue-size", "5"],
    ] {
        assert_eq!(run(args).mem_queue_size, 5, "{args:?}");
    }
    let o = run(&[
        "-data-path",
        "/d",
        "--tcp-address=127.0.0.1:1",
        "-msg-timeout=1m30s",
        "--cores",
        "3",
    ]);
    assert_eq!(o.data_path, "/d");
    assert_eq!(o.tcp_address, "127.0.0.1:1");
    assert_eq!(o.msg_timeout, Duration::from_secs(90));
    assert_eq!(o.cores, 3);
    // Last occurrence of a scalar flag wins; values may look like flags.
    assert_eq!(run(&["--node-id=1", "--node-id=2"]).node_id, 2);
    assert_eq!(run(&["--log-prefix", "-x-"]).log_prefix, "-x-");
    assert_eq!(run(&["--http-address="]).http_address, "");
    assert_eq!(run(&["--max-msg-size=0x100"]).max_msg_size, 256);
}

#[test]
fn bool_forms() {
    assert!(run(&["--durable-ack"]).durable_ack);
    assert!(run(&["-durable-ack"]).durable_ack);
    for v in ["1", "t", "T", "TRUE", "true", "True"] {
        assert!(run(&[&format!("--durable-ack={v}")]).durable_ack, "{v}");
    }
    for v in ["0", "f", "F", "FALSE", "false", "False"] {
        assert!(!run(&[&format!("-deflate={v}")]).deflate, "{v}");
    }
    // A switch never takes the next argument.
    assert_eq!(
        fail(&["--deflate", "false"]),
        r#"unexpected argument "false": nsqd takes only flags"#
    );
    assert_eq!(
        fail(&["--snappy=yes"]),
        r#"invalid value "yes" for flag -snappy: invalid boolean (use true/false, 1/0, t/f)"#
    );
}

#[test]
fn tls_required_is_bool_like() {
    let tls = ["--tls-cert=c.pem", "--tls-key=k.pem"];
    let with = |extra: &str| run(&[tls[0], tls[1], extra]).tls_required;
    assert_eq!(with("--tls-required"), TlsRequired::All);
    assert_eq!(with("-tls-required=true"), TlsRequired::All);
    assert_eq!(with("--tls-required=tcp-https"), TlsRequired::TcpHttps);
    assert_eq!(with("--tls-required=false"), TlsRequired::None);
    // A client-auth policy upgrades "not required" to "all".
    assert_eq!(with("--tls-client-auth-policy=require"), TlsRequired::All);
    assert_eq!(
        run(&[
            tls[0],
            tls[1],
            "--tls-required=tcp-https",
            "--tls-client-auth-policy=require"
        ])
        .tls_required,
        TlsRequired::TcpHttps
    );
    assert_eq!(
        fail(&["--tls-required=maybe"]),
        r#"invalid value "maybe" for flag -tls-required: must be true, false or tcp-https"#
    );
}

#[test]
fn repeated_list_flags_append() {
    let o = run(&[
        "--lookupd-tcp-address=a:4160",
        "-lookupd-tcp-address",
        "b:4160",
        "--auth-http-address=x",
        "--auth-http-address=y,z",
        "--enable-experiment=topology-aware-consumption",
        "--enable-experiment=topology-aware-consumption",
        "--e2e-processing-latency-percentile=0.5",
        "--e2e-processing-latency-percentile=1,0.99",
    ]);
    assert_eq!(o.lookupd_tcp_addresses, ["a:4160", "b:4160"]);
    assert_eq!(o.auth_http_addresses, ["x", "y,z"]);
    assert_eq!(
        o.enable_experiment,
        ["topology-aware-consumption", "topology-aware-consumption"]
    );
    // Only nsqd's one experiment exists: anything else is refused by name.
    let err = parse_args(["nsqd", "--enable-experiment=other"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid experiment \"other\""), "{err}");
    assert_eq!(o.e2e_processing_latency_percentiles, [1.0, 0.99, 0.5]);
    assert_eq!(
        fail(&["--e2e-processing-latency-percentile=0.9,x"]),
        r#"invalid value "0.9,x" for flag -e2e-processing-latency-percentile: could not parse "x" as a number"#
    );
}

#[test]
fn syntax_errors_name_the_flag() {
    assert_eq!(fail(&["--bogus"]), "flag provided but not defined: -bogus");
    assert_eq!(fail(&["-bogus=1"]), "flag provided but not defined: -bogus");
    assert_eq!(
        fail(&["--msg-timeout"]),
        "flag needs an argument: -msg-timeout"
    );
    assert_eq!(fail(&["---deflate"]), "bad flag syntax: ---deflate");
    assert_eq!(
        fail(&["serve"]),
        r#"unexpected argument "serve": nsqd takes only flags"#
    );
    assert_eq!(
        fail(&["--", "x"]),
        r#"unexpected argument "x": nsqd takes only flags"#
    );
    // Errors are reported in argument order, like Go.
    assert_eq!(
        fail(&["--mem-queue-size=x", "--bogus"]),
        r#"invalid value "x" for flag -mem-queue-size: not an integer"#
    );
}

#[test]
fn bad_values_name_flag_and_value() {
    assert_eq!(
        fail(&["--msg-timeout=10"]),
        r#"invalid value "10" for flag -msg-timeout: time: missing unit in duration "10""#
    );
    assert_eq!(
        fail(&["--sync-timeout", "soon"]),
        r#"invalid value "soon" for flag -sync-timeout: time: invalid duration "soon""#
    );
    assert_eq!(
        fail(&["--log-level=loud"]),
        r#"invalid value "loud" for flag -log-level: invalid log level 'loud' (debug, info, warn, error, fatal)"#
    );
    assert_eq!(run(&["--log-level=DEBUG"]).log_level, LogLevel::Debug);
    assert_eq!(
        fail(&["--tls-min-version=ssl3.0"]),
        r#"invalid value "ssl3.0" for flag -tls-min-version: unknown tlsVersionOption "ssl3.0""#
    );
    assert_eq!(
        run(&["--tls-min-version=TLS1.2"]).tls_min_version,
        TlsMinVersion::Tls12
    );
    assert_eq!(
        fail(&["--cores=-1"]),
        r#"invalid value "-1" for flag -cores: must not be negative"#
    );
    assert_eq!(
        fail(&["--max-rdy-count=99999999999999999999"]),
        r#"invalid value "99999999999999999999" for flag -max-rdy-count: value out of range"#
    );
}

#[test]
fn help_and_version_exit_zero() {
    for flag in ["--help", "-help", "-h", "--h"] {
        let Ok(Parsed::Exit {
            message,
            code: 0,
            to_stderr: true,
        }) = parse_args(["nsqd", flag])
        else {
            panic!("{flag}");
        };
        assert!(message.starts_with("Usage of nsqd:\n"));
        assert!(message.contains("\n  -mem-queue-size int\n    \tnumber of messages to keep in memory (per topic/channel) (default 10000)\n"));
        assert!(message.contains("\n  -msg-timeout duration\n"));
        assert!(message.contains("(default \"nsq.%s\")"));
        assert!(message.contains("\n  -deflate\n"));
        assert!(message.contains("\n  -cores int\n"));
    }
    let version = parse_args(["nsqd", "--version", "--mem-queue-size=1"]).unwrap();
    assert_eq!(
        version,
        Parsed::Exit {
            message: format!(
                "nsqd v1.3.0 (built w/nsqd-uring {})",
                env!("CARGO_PKG_VERSION")
            ),
            code: 0,
            to_stderr: false,
        }
    );
    // --version=false runs normally.
    assert!(!run(&["--version=false"]).version);
}

#[test]
fn config_file_precedence_and_coercion() {
    let file = TempFile::new(
        r#"
        mem_queue_size = 5
        max_rdy_count = "42"
        msg_timeout = "30s"
        max_msg_timeout = 1500
        nsqlookupd_tcp_addresses = ["a:4160", "b:4160"]
        auth_http_addresses = "x:1,y:2"
        e2e_processing_latency_percentiles = [0.5, 1]
        enable_experiment = "topology-aware-consumption"
        id = 7
        node_id = 9
        log_level = "warn"
        deflate = false
        snappy = "false"
        tls_min_version = "tls1.3"
        cores = 2
        durable_ack = true
        config = "/ignored"
        some_future_key = { nested = true }
        "#,
    );
    let o = run(&[
        &file.flag(),
        "--mem-queue-size=9",
        "--lookupd-tcp-address=c:4160",
    ]);
    assert_eq!(o.mem_queue_size, 9, "flag beats file");
    assert_eq!(
        o.lookupd_tcp_addresses,
        ["c:4160"],
        "flag list replaces file list"
    );
    assert_eq!(o.max_rdy_count, 42);
    assert_eq!(o.msg_timeout, Duration::from_secs(30));
    assert_eq!(
        o.max_msg_timeout,
        Duration::from_millis(1500),
        "integers are ms"
    );
    assert_eq!(o.auth_http_addresses, ["x:1", "y:2"]);
    assert_eq!(
        o.e2e_processing_latency_percentiles,
        [0.5, 1.0],
        "file order kept"
    );
    assert_eq!(o.enable_experiment, ["topology-aware-consumption"]);
    assert_eq!(o.node_id, 7, "key is `id`, not `node_id`");
    assert_eq!(o.log_level, LogLevel::Warn);
    assert!(!o.deflate && !o.snappy);
    assert_eq!(o.tls_min_version, TlsMinVersion::Tls13);
    assert_eq!((o.cores, o.durable_ack), (2, true));
    assert_eq!(o.config, file.0.display().to_string());
    assert_eq!(o.max_body_size, 5_242_880, "absent key keeps default");

    let file = TempFile::new("nsqlookupd_tcp_addresses = \"h:4160\"\n");
    assert_eq!(run(&[&file.flag()]).lookupd_tcp_addresses, ["h:4160"]);
}

#[test]
fn config_file_tls_required_forms() {
    for (value, want) in [
        ("true", TlsRequired::All),
        ("false", TlsRequired::None),
        ("\"tcp-https\"", TlsRequired::TcpHttps),
        ("\"true\"", TlsRequired::All),
    ] {
        let file = TempFile::new(&format!(
            "tls_cert = \"c\"\ntls_key = \"k\"\ntls_required = {value}\n"
        ));
        assert_eq!(run(&[&file.flag()]).tls_required, want, "{value}");
    }
}

#[test]
fn config_file_errors_name_file_and_key() {
    let missing = "/nonexistent/nsqd.toml";
    let msg = fail(&["--config", missing]);
    assert!(
        msg.starts_with("failed to load config file /nonexistent/nsqd.toml - "),
        "{msg}"
    );

    let file = TempFile::new("mem_queue_size = \n");
    let msg = fail(&[&file.flag()]);
    assert!(
        msg.starts_with(&format!(
            "failed to load config file {} - line 1, column ",
            file.0.display()
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");

    let file = TempFile::new("msg_timeout = 1.5\n");
    assert_eq!(
        fail(&[&file.flag()]),
        format!(
            "failed parsing msg_timeout = 1.5 in config file {}: expected a duration string or integer milliseconds, found float",
            file.0.display()
        )
    );
    let file = TempFile::new("log_level = \"loud\"\n");
    let msg = fail(&[&file.flag(), "--log-level=debug"]);
    assert!(
        msg.contains("failed parsing log_level = \"loud\" in config file"),
        "{msg}"
    );
    assert!(
        msg.ends_with("invalid log level 'loud' (debug, info, warn, error, fatal)"),
        "{msg}"
    );

    let file = TempFile::new("tls_required = \"maybe\"\n");
    assert!(fail(&[&file.flag()]).contains("tls_required"));
    let file = TempFile::new("nsqlookupd_tcp_addresses = [1, 2]\n");
    assert!(fail(&[&file.flag()]).contains("array items must be strings"));
}

#[test]
fn validation_messages_match_nsqd() {
    assert_eq!(
        fail(&["--max-deflate-level=0"]),
        "--max-deflate-level must be [1,9]"
    );
    assert_eq!(
        fail(&["--max-deflate-level=10"]),
        "--max-deflate-level must be [1,9]"
    );
    assert_eq!(fail(&["--node-id=-1"]), "--node-id must be [0,1024)");
    assert_eq!(fail(&["--node-id=1024"]), "--node-id must be [0,1024)");
    assert_eq!(run(&["--node-id=1023"]).node_id, 1023);
    assert_eq!(
        fail(&["--tls-required"]),
        "cannot require TLS client connections without TLS key and cert"
    );
    assert_eq!(
        fail(&["--tls-client-auth-policy=require-verify"]),
        "cannot require TLS client connections without TLS key and cert"
    );
    assert_eq!(
        fail(&["--auth-http-request-method=put"]),
        "--auth-http-request-method must be post or get"
    );
    assert_eq!(
        run(&["--auth-http-request-method=post"]).auth_http_request_method,
        "post"
    );
    assert_eq!(
        fail(&["--e2e-processing-latency-percentile=1.5"]),
        "invalid E2E processing latency percentile: 1.5"
    );
    assert_eq!(
        fail(&["--e2e-processing-latency-percentile=0"]),
        "invalid E2E processing latency percentile: 0"
    );
    let file = TempFile::new("e2e_processing_latency_percentiles = \"0.9, 2\"\n");
    assert_eq!(
        fail(&[&file.flag()]),
        "invalid E2E processing latency percentile: 2"
    );
    let file = TempFile::new("max_deflate_level = 0\n");
    assert_eq!(fail(&[&file.flag()]), "--max-deflate-level must be [1,9]");
}

#[test]
fn config_value_json_matches_nsqd() {
    let o = run(&[
        "--lookupd-tcp-address=h:4160",
        "--e2e-processing-latency-percentile=0.99,1",
        "--tls-min-version=tls1.2",
        "--node-id=42",
    ]);
    let d = Options::default();
    let cases: &[(&Options, &str, &str)] = &[
        (&d, "mem_queue_size", "10000"),
        (&d, "msg_timeout", "60000000000"),
        (&d, "output_buffer_timeout", "250000000"),
        (&d, "log_level", "2"),
        (&d, "nsqlookupd_tcp_addresses", "[]"),
        (&o, "nsqlookupd_tcp_addresses", r#"["h:4160"]"#),
        (&o, "id", "42"),
        (&d, "tls_required", "0"),
        (&d, "tls_min_version", "769"),
        (&o, "tls_min_version", "771"),
        (&d, "statsd_prefix", r#""nsq.%s""#),
        (&d, "log_prefix", r#""[nsqd] ""#),
        (&o, "e2e_processing_latency_percentiles", "[1,0.99]"),
        (&d, "e2e_processing_latency_percentiles", "[]"),
        (&d, "deflate", "true"),
        (&d, "data_path", r#""""#),
        (&d, "max_deflate_level", "6"),
    ];
    for (opts, key, want) in cases {
        assert_eq!(opts.config_value_json(key).as_deref(), Some(*want), "{key}");
    }
    for key in [
        "node_id",
        "client_timeout",
        "config",
        "version",
        "verbose",
        "worker_id",
        "msg-timeout",
        "",
    ] {
        assert_eq!(d.config_value_json(key), None, "{key}");
    }
    let with_level = run(&["--log-level=fatal"]);
    assert_eq!(
        with_level.config_value_json("log_level").as_deref(),
        Some("5")
    );
    // Every key renders valid JSON.
    for key in OPTIONS.iter().filter_map(|d| d.key) {
        let json = o.config_value_json(key).unwrap();
        serde_json::from_str::<serde_json::Value>(&json)
            .unwrap_or_else(|e| panic!("{key}: {json}: {e}"));
    }
}

#[test]
fn config_keys_follow_nsqd_naming() {
    let exceptions = [
        ("node-id", "id"),
        ("lookupd-tcp-address", "nsqlookupd_tcp_addresses"),
        ("auth-http-address", "auth_http_addresses"),
        (
            "e2e-processing-latency-percentile",
            "e2e_processing_latency_percentiles",
        ),
    ];
    for def in OPTIONS {
        let Some(key) = def.key else {
            assert!(
                ["version", "config", "verbose", "worker-id"].contains(&def.flag),
                "{}",
                def.flag
            );
            continue;
        };
        let want = exceptions
            .iter()
            .find(|(f, _)| *f == def.flag)
            .map_or_else(|| def.flag.replace('-', "_"), |(_, k)| k.to_string());
        assert_eq!(key, want, "{}", def.flag);
    }
    // 57 nsqd v1.3 flags plus --cores, --durable-ack, --spin-before-park,
    // --connection-affinity and --output-coalesce.
    assert_eq!(OPTIONS.len(), 62);
}

#[test]
fn unbuilt_features_report_non_defaults() {
    for flag in UNBUILT_FLAGS {
        assert!(
            OPTIONS.iter().any(|d| d.flag == *flag),
            "{flag} is not a flag"
        );
    }
    let o = run(&[
        "--tls-cert=c",
        "--tls-key=k",
        "--statsd-mem-stats=false",
        "--durable-ack",
        "--https-address=0.0.0.0:4153",
        "--sync-every=2500",
        "--mem-queue-size=1",
    ]);
    // Of the changed flags, exactly those still unbuilt are reported, in table order.
    let expected: Vec<String> = UNBUILT_FLAGS
        .iter()
        .filter(|f| {
            [
                "tls-cert",
                "tls-key",
                "https-address",
                "statsd-mem-stats",
                "durable-ack",
            ]
            .contains(f)
        })
        .map(|f| format!("--{f} is not supported yet by nsqd-uring"))
        .collect();
    assert_eq!(o.unbuilt_features(), expected);
    // Every listed flag is detected when changed.
    let changed = run(&[
        "--tls-cert=c",
        "--tls-key=k",
        "--tls-root-ca-file=ca",
        "--tls-client-auth-policy=require",
        "--tls-min-version=tls1.2",
        "--https-address=:1",
        "--lookupd-tcp-address=l",
        "--auth-http-address=a",
        "--auth-http-request-method=post",
        "--statsd-address=s:1",
        "--statsd-interval=1s",
        "--statsd-mem-stats=false",
        "--statsd-prefix=p",
        "--statsd-udp-packet-size=1",
        "--statsd-exclude-ephemeral",
        "--e2e-processing-latency-percentile=1",
        "--e2e-processing-latency-window-time=1s",
        "--deflate=false",
        "--snappy=false",
        "--max-deflate-level=1",
        "--enable-experiment=topology-aware-consumption",
        "--topology-region=r",
        "--topology-zone=z",
        "--broadcast-tcp-port=1",
        "--broadcast-http-port=1",
        "--durable-ack",
        "--http-client-connect-timeout=1s",
        "--http-client-request-timeout=1s",
        "--queue-scan-worker-pool-max=1",
        "--queue-scan-selection-count=1",
        "--max-bytes-per-file=1",
        "--sync-every=1",
        "--sync-timeout=1s",
        "--data-path=/tmp",
    ]);
    assert_eq!(changed.unbuilt_features().len(), UNBUILT_FLAGS.len());
    // HTTP is built: its address, and the broadcast address /info reports, are accepted.
    let http = run(&[
        "--http-address=127.0.0.1:1",
        "--broadcast-address=elsewhere",
    ]);
    assert!(http.unbuilt_features().is_empty());
}
