//! `nsqd`: parse options like nsqd, start the thread-per-core runtime, map the outcome to an
//! exit status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nsqd_uring::broker::latency::LatencyConfig;
use nsqd_uring::logging;
use nsqd_uring::options::{self, Options, Parsed, TlsRequired};
use nsqd_uring::protocol::codec::Limits;
use nsqd_uring::runtime::{self, RuntimeConfig};
use nsqd_uring::settings::{DiskSettings, FeatureSettings, LookupdSettings, Settings};

fn main() -> ExitCode {
    let opts = match options::parse_args(std::env::args_os()) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Exit {
            message,
            code,
            to_stderr,
        }) => {
            // A closed pipe (`nsqd --help | head`) is no reason to panic.
            use std::io::Write;
            let _ = if to_stderr {
                writeln!(std::io::stderr(), "{message}")
            } else {
                writeln!(std::io::stdout(), "{message}")
            };
            return ExitCode::from(code as u8);
        }
        Err(e) => {
            eprintln!("nsqd: {e}");
            return ExitCode::from(1);
        }
    };
    logging::init(opts.log_level, &opts.log_prefix);
    let unbuilt = opts.unbuilt_features();
    if !unbuilt.is_empty() {
        for msg in &unbuilt {
            eprintln!("nsqd: {msg}");
        }
        return ExitCode::from(1);
    }
    if opts.mem_queue_size < 0 {
        eprintln!(
            "nsqd: --mem-queue-size={} must be >= 0",
            opts.mem_queue_size
        );
        return ExitCode::from(1);
    }
    let mut settings = settings_from(&opts);
    settings.lookupd = LookupdSettings {
        addresses: opts.lookupd_tcp_addresses.clone(),
        broadcast_address: opts.broadcast_address.clone(),
        broadcast_tcp_port: opts.broadcast_tcp_port.clamp(0, 65535) as u16,
        broadcast_http_port: opts.broadcast_http_port.clamp(0, 65535) as u16,
        hostname: options::os_hostname(),
        topology_region: opts.topology_region.clone(),
        topology_zone: opts.topology_zone.clone(),
        http_endpoints: Default::default(),
        http_timeouts: (
            opts.http_client_connect_timeout,
            opts.http_client_request_timeout,
        ),
    };
    if settings.auth.enabled() {
        // nsqd's client TLS configuration, for https:// auth servers.
        match nsqd_uring::auth::client::tls_config(&opts.tls_root_ca_file) {
            Ok(tls) => settings.auth.tls = Some(tls),
            Err(e) => {
                eprintln!("nsqd: {e}");
                return ExitCode::from(1);
            }
        }
    }
    settings.features = match features_from(&opts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("nsqd: {e}");
            return ExitCode::from(1);
        }
    };
    let config = RuntimeConfig {
        cores: opts.cores,
        tcp_address: opts.tcp_address.clone(),
        http_address: opts.http_address.clone(),
        https_address: opts.https_address.clone(),
        settings,
        options: opts.clone(),
    };
    match runtime::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            tracing::error!(target: nsqd_uring::logging::FATAL_TARGET, "{msg}");
            ExitCode::from(1)
        }
    }
}

/// TLS and compression as IDENTIFY may negotiate them.
fn features_from(o: &Options) -> Result<FeatureSettings, String> {
    let tls = nsqd_uring::tls::server_config(o)?;
    let tls_required = o.tls_required != TlsRequired::None;
    if tls_required && tls.is_none() {
        return Err("cannot require TLS client connections without TLS key and cert".into());
    }
    Ok(FeatureSettings {
        tls,
        tls_required,
        snappy: o.snappy,
        deflate: o.deflate,
    })
}

/// Resolves the options every core reads into [`Settings`].
fn settings_from(o: &Options) -> Settings {
    let mut s = Settings {
        limits: Limits {
            max_msg_size: o.max_msg_size,
            max_body_size: o.max_body_size,
            max_rdy_count: o.max_rdy_count,
            max_req_timeout_ms: o.max_req_timeout.as_millis() as i64,
        },
        max_msg_timeout: o.max_msg_timeout,
        mem_queue_size: o.mem_queue_size as usize,
        max_channel_consumers: o.max_channel_consumers.max(0) as usize,
        node_id: o.node_id,
        disk: Some(DiskSettings {
            // nsqd's default data path is the working directory.
            data_path: if o.data_path.is_empty() {
                PathBuf::from(".")
            } else {
                PathBuf::from(&o.data_path)
            },
            max_bytes_per_file: o.max_bytes_per_file,
            sync_every: o.sync_every.max(1) as u64,
            sync_timeout: o.sync_timeout,
            durable_ack: o.durable_ack,
            board: None,
            segment_file_budget: 0,
        }),
        auth: nsqd_uring::auth::AuthSettings {
            addresses: o.auth_http_addresses.clone(),
            method: if o.auth_http_request_method == "post" {
                nsqd_uring::auth::client::Method::Post
            } else {
                nsqd_uring::auth::client::Method::Get
            },
            connect_timeout: o.http_client_connect_timeout,
            request_timeout: o.http_client_request_timeout,
            tls: None,
        },
        ..Settings::default()
    };
    let lim = &mut s.server_limits;
    lim.max_heartbeat_interval = o.max_heartbeat_interval;
    lim.min_output_buffer_timeout = o.min_output_buffer_timeout;
    lim.max_output_buffer_timeout = o.max_output_buffer_timeout;
    lim.max_output_buffer_size = o.max_output_buffer_size;
    lim.max_msg_timeout = o.max_msg_timeout;
    lim.max_rdy_count = o.max_rdy_count;
    lim.max_deflate_level = o.max_deflate_level;
    lim.topology_region = o.topology_region.clone();
    lim.topology_zone = o.topology_zone.clone();
    s.spin_before_park = o.spin_before_park;
    s.connection_affinity = o.connection_affinity;
    s.output_coalesce = o.output_coalesce;
    s.topology_aware_consumption = o
        .enable_experiment
        .iter()
        .any(|e| e == "topology-aware-consumption");
    // nsqd's hidden client timeout is 60 s; the default heartbeat is half of it.
    s.client_defaults.heartbeat_interval = Some(Duration::from_secs(30));
    s.client_defaults.output_buffer_timeout = o.output_buffer_timeout;
    s.client_defaults.msg_timeout = o.msg_timeout;
    s.e2e_latency = (!o.e2e_processing_latency_percentiles.is_empty()).then(|| {
        Arc::new(LatencyConfig {
            percentiles: o.e2e_processing_latency_percentiles.clone(),
            window: o.e2e_processing_latency_window_time,
        })
    });
    s
}
