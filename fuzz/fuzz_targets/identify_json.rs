//! IDENTIFY bodies: arbitrary bytes through JSON decoding, nsqd's validation and the
//! feature-negotiation reply. Accepted settings must be in nsqd's ranges and the reply must be
//! valid JSON carrying them.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nsqd_uring::protocol::identify::{
    ClientSettings, Features, ServerLimits, negotiate, parse_identify,
};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_identify(data) else {
        return;
    };
    let lim = ServerLimits {
        topology_region: "r\"\\\u{1}".into(),
        topology_zone: "z".into(),
        ..ServerLimits::default()
    };
    let mut s = ClientSettings::defaults(
        Duration::from_secs(30),
        Duration::from_millis(250),
        Duration::from_secs(60),
    );
    if s.apply(&req, &lim).is_err() {
        return;
    }
    if let Some(h) = s.heartbeat_interval {
        assert!(h >= Duration::from_secs(1) && h <= lim.max_heartbeat_interval);
    }
    assert!(
        s.output_buffer_size == 1
            || (64..=lim.max_output_buffer_size).contains(&s.output_buffer_size)
    );
    assert!(s.output_buffer_timeout <= lim.max_output_buffer_timeout);
    assert!((0..=99).contains(&s.sample_rate));
    assert!(s.msg_timeout >= Duration::from_secs(1) && s.msg_timeout <= lim.max_msg_timeout);
    for features in [
        Features::default(),
        Features {
            tls: true,
            snappy: true,
            deflate: true,
        },
    ] {
        let Ok(n) = negotiate(&req, &s, &lim, features, true, "1.3.0") else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&n.json).expect("reply is JSON");
        assert_eq!(v["msg_timeout"], s.msg_timeout.as_millis() as u64);
        assert_eq!(v["topology_region"], lim.topology_region.as_str());
        assert!(n.deflate_level <= lim.max_deflate_level);
        assert!(!(n.snappy && n.deflate));
    }
});
