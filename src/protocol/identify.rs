//! IDENTIFY: decoding the client's JSON as Go's `encoding/json` would, validating each setting
//! with nsqd's ranges and texts, and building the feature-negotiation reply.
//!
//! Pure: the connection applies the resulting [`ClientSettings`].

use std::time::Duration;

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::errors::{E_BAD_BODY, E_IDENTIFY_FAILED, ProtocolError};

/// The IDENTIFY fields nsqd reads; `None` means absent or `null` (keep the default).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IdentifyRequest {
    /// `client_id` (absent means empty: IDENTIFY overwrites it unconditionally).
    pub client_id: String,
    /// `hostname`, same rule.
    pub hostname: String,
    /// `user_agent`.
    pub user_agent: String,
    /// `feature_negotiation`: reply with JSON instead of `OK`.
    pub feature_negotiation: bool,
    /// `heartbeat_interval` in ms (0 default, -1 disable).
    pub heartbeat_interval: i64,
    /// `output_buffer_size` in bytes (0 default, -1 unbuffered).
    pub output_buffer_size: i64,
    /// `output_buffer_timeout` in ms (0 default, -1 disable).
    pub output_buffer_timeout: i64,
    /// `tls_v1` requested.
    pub tls_v1: bool,
    /// `snappy` requested.
    pub snappy: bool,
    /// `deflate` requested.
    pub deflate: bool,
    /// `deflate_level` requested.
    pub deflate_level: i64,
    /// `sample_rate` (0..=99).
    pub sample_rate: i64,
    /// `msg_timeout` in ms (0 default).
    pub msg_timeout: i64,
    /// `topology_region`.
    pub topology_region: String,
    /// `topology_zone`.
    pub topology_zone: String,
}

fn decode_error() -> ProtocolError {
    ProtocolError::fatal(E_BAD_BODY, "IDENTIFY failed to decode JSON body")
}

/// The members of the IDENTIFY object in document order, repeated keys kept: Go's decoder
/// applies each in turn, and a later `null` leaves the earlier value in place. `null` for the
/// whole body decodes to no members; any other non-object is an error.
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Members, E> {
                Ok(Members(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_any(MembersVisitor)
    }
}

impl Members {
    /// One field as Go's `encoding/json` fills it: every key equal to `name` ignoring case,
    /// in document order; `null` leaves the field as it was; a value `convert` rejects (a
    /// wrong type, even one a later key would replace) fails the whole body.
    fn field<T>(
        &self,
        name: &str,
        zero: T,
        convert: impl Fn(&Value) -> Option<T>,
    ) -> Result<T, ProtocolError> {
        let mut out = zero;
        for (key, value) in &self.0 {
            if key.eq_ignore_ascii_case(name) && !value.is_null() {
                out = convert(value).ok_or_else(decode_error)?;
            }
        }
        Ok(out)
    }

    fn string(&self, name: &str) -> Result<String, ProtocolError> {
        self.field(name, String::new(), |v| v.as_str().map(str::to_owned))
    }

    fn bool(&self, name: &str) -> Result<bool, ProtocolError> {
        self.field(name, false, Value::as_bool)
    }

    /// An integer field; floats (even `1.0`) are a decode error as in Go. `bits` bounds the
    /// type.
    fn int(&self, name: &str, bits: u32) -> Result<i64, ProtocolError> {
        self.field(name, 0, |v| {
            let n = v.as_i64()?;
            (bits != 32 || i32::try_from(n).is_ok()).then_some(n)
        })
    }
}

/// Decodes the IDENTIFY body; any JSON or type error is nsqd's `IDENTIFY failed to decode JSON body`.
pub fn parse_identify(body: &[u8]) -> Result<IdentifyRequest, ProtocolError> {
    let m: Members = crate::go_json::from_slice(body).map_err(|_| decode_error())?;
    Ok(IdentifyRequest {
        client_id: m.string("client_id")?,
        hostname: m.string("hostname")?,
        user_agent: m.string("user_agent")?,
        feature_negotiation: m.bool("feature_negotiation")?,
        heartbeat_interval: m.int("heartbeat_interval", 64)?,
        output_buffer_size: m.int("output_buffer_size", 64)?,
        output_buffer_timeout: m.int("output_buffer_timeout", 64)?,
        tls_v1: m.bool("tls_v1")?,
        snappy: m.bool("snappy")?,
        deflate: m.bool("deflate")?,
        deflate_level: m.int("deflate_level", 64)?,
        sample_rate: m.int("sample_rate", 32)?,
        msg_timeout: m.int("msg_timeout", 64)?,
        topology_region: m.string("topology_region")?,
        topology_zone: m.string("topology_zone")?,
    })
}

/// The server-side bounds and defaults IDENTIFY is validated against.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// `--max-heartbeat-interval`.
    pub max_heartbeat_interval: Duration,
    /// `--min-output-buffer-timeout`.
    pub min_output_buffer_timeout: Duration,
    /// `--max-output-buffer-timeout`.
    pub max_output_buffer_timeout: Duration,
    /// `--max-output-buffer-size`.
    pub max_output_buffer_size: i64,
    /// `--max-msg-timeout`.
    pub max_msg_timeout: Duration,
    /// `--max-rdy-count`, reported in the reply.
    pub max_rdy_count: i64,
    /// `--max-deflate-level`, reported in the reply.
    pub max_deflate_level: i64,
    /// `--topology-region`, reported in the reply.
    pub topology_region: String,
    /// `--topology-zone`, reported in the reply.
    pub topology_zone: String,
}

impl Default for ServerLimits {
    /// nsqd's defaults for every bound.
    fn default() -> Self {
        ServerLimits {
            max_heartbeat_interval: Duration::from_secs(60),
            min_output_buffer_timeout: Duration::from_millis(25),
            max_output_buffer_timeout: Duration::from_secs(30),
            max_output_buffer_size: 65536,
            max_msg_timeout: Duration::from_secs(900),
            max_rdy_count: 2500,
            max_deflate_level: 6,
            topology_region: String::new(),
            topology_zone: String::new(),
        }
    }
}

/// A client's effective settings (nsqd's `clientV2` fields that IDENTIFY changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// `None` = heartbeats disabled.
    pub heartbeat_interval: Option<Duration>,
    /// Output buffer size in bytes (1 = unbuffered).
    pub output_buffer_size: i64,
    /// Output buffer timeout (zero = no timed flush).
    pub output_buffer_timeout: Duration,
    /// Percentage of messages delivered (0 = all).
    pub sample_rate: i32,
    /// In-flight timeout for messages sent to this client.
    pub msg_timeout: Duration,
    /// IDENTIFY `topology_region`.
    pub topology_region: String,
    /// IDENTIFY `topology_zone`.
    pub topology_zone: String,
}

impl ClientSettings {
    /// nsqd's defaults for a fresh connection.
    pub fn defaults(
        heartbeat: Duration,
        output_buffer_timeout: Duration,
        msg_timeout: Duration,
    ) -> Self {
        ClientSettings {
            heartbeat_interval: Some(heartbeat),
            output_buffer_size: 16384,
            output_buffer_timeout,
            sample_rate: 0,
            msg_timeout,
            topology_region: String::new(),
            topology_zone: String::new(),
        }
    }

    /// Applies the request in nsqd's order (heartbeat, buffer timeout, buffer size, sample
    /// rate, msg timeout); the first invalid value stops it with nsqd's `IDENTIFY <reason>`.
    pub fn apply(
        &mut self,
        req: &IdentifyRequest,
        lim: &ServerLimits,
    ) -> Result<(), ProtocolError> {
        let bad = |reason: String| ProtocolError::fatal(E_BAD_BODY, format!("IDENTIFY {reason}"));
        // Stored before validation, as nsqd does with the identity fields.
        self.topology_region = req.topology_region.clone();
        self.topology_zone = req.topology_zone.clone();
        let ms = |d: Duration| d.as_millis() as i64;
        match req.heartbeat_interval {
            -1 => self.heartbeat_interval = None,
            0 => {}
            v if v >= 1000 && v <= ms(lim.max_heartbeat_interval) => {
                self.heartbeat_interval = Some(Duration::from_millis(v as u64))
            }
            v => return Err(bad(format!("heartbeat interval ({v}) is invalid"))),
        }
        match req.output_buffer_timeout {
            -1 => self.output_buffer_timeout = Duration::ZERO,
            0 => {}
            v if v >= ms(lim.min_output_buffer_timeout)
                && v <= ms(lim.max_output_buffer_timeout) =>
            {
                self.output_buffer_timeout = Duration::from_millis(v as u64)
            }
            v => return Err(bad(format!("output buffer timeout ({v}) is invalid"))),
        }
        match req.output_buffer_size {
            -1 => {
                self.output_buffer_size = 1;
                self.output_buffer_timeout = Duration::ZERO;
            }
            0 => {}
            v if (64..=lim.max_output_buffer_size).contains(&v) => self.output_buffer_size = v,
            v => return Err(bad(format!("output buffer size ({v}) is invalid"))),
        }
        match req.sample_rate {
            v if (0..=99).contains(&v) => self.sample_rate = v as i32,
            v => return Err(bad(format!("sample rate ({v}) is invalid"))),
        }
        match req.msg_timeout {
            0 => {}
            v if v >= 1000 && v <= ms(lim.max_msg_timeout) => {
                self.msg_timeout = Duration::from_millis(v as u64)
            }
            v => return Err(bad(format!("msg timeout ({v}) is invalid"))),
        }
        Ok(())
    }
}

/// What this build can negotiate: TLS, snappy and deflate are answered as nsqd answers with
/// those features off until they are built.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features {
    /// TLS configured (cert and key).
    pub tls: bool,
    /// `--snappy` and built.
    pub snappy: bool,
    /// `--deflate` and built.
    pub deflate: bool,
}

/// The negotiated outcome of an IDENTIFY with `feature_negotiation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The JSON reply, in nsqd's key order.
    pub json: String,
    /// Upgrade to TLS after the reply.
    pub tls_v1: bool,
    /// Switch to snappy after the reply.
    pub snappy: bool,
    /// Switch to deflate after the reply, at `deflate_level`.
    pub deflate: bool,
    /// Negotiated deflate level.
    pub deflate_level: i64,
}

/// nsqd v1.3.0 has no topology keys; later nsqd adds them. They appear only when a topology
/// is configured, so the default reply is byte-identical to v1.3.0's.
fn topology_keys(lim: &ServerLimits) -> String {
    if lim.topology_region.is_empty() && lim.topology_zone.is_empty() {
        return String::new();
    }
    format!(
        ",\"topology_region\":{},\"topology_zone\":{}",
        Value::from(lim.topology_region.as_str()),
        Value::from(lim.topology_zone.as_str())
    )
}

/// Builds nsqd's feature-negotiation reply (compact JSON in nsqd's exact key order).
pub fn negotiate(
    req: &IdentifyRequest,
    settings: &ClientSettings,
    lim: &ServerLimits,
    features: Features,
    auth_required: bool,
    version: &str,
) -> Result<Negotiated, ProtocolError> {
    let tls_v1 = features.tls && req.tls_v1;
    let deflate = features.deflate && req.deflate;
    let mut deflate_level = 6;
    if deflate && req.deflate_level > 0 {
        deflate_level = req.deflate_level;
    }
    deflate_level = deflate_level.min(lim.max_deflate_level);
    let snappy = features.snappy && req.snappy;
    if deflate && snappy {
        return Err(ProtocolError::fatal(
            E_IDENTIFY_FAILED,
            "cannot enable both deflate and snappy compression",
        ));
    }
    let json = format!(
        concat!(
            "{{\"max_rdy_count\":{},\"version\":{},\"max_msg_timeout\":{},\"msg_timeout\":{},",
            "\"tls_v1\":{},\"deflate\":{},\"deflate_level\":{},\"max_deflate_level\":{},",
            "\"snappy\":{},\"sample_rate\":{},\"auth_required\":{},\"output_buffer_size\":{},",
            "\"output_buffer_timeout\":{}{}}}"
        ),
        lim.max_rdy_count,
        Value::from(version),
        lim.max_msg_timeout.as_millis(),
        settings.msg_timeout.as_millis(),
        tls_v1,
        deflate,
        deflate_level,
        lim.max_deflate_level,
        snappy,
        settings.sample_rate,
        auth_required,
        settings.output_buffer_size,
        settings.output_buffer_timeout.as_millis(),
        topology_keys(lim),
    );
    Ok(Negotiated {
        json,
        tls_v1,
        snappy,
        deflate,
        deflate_level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServerLimits {
        ServerLimits::default()
    }

    fn defaults() -> ClientSettings {
        ClientSettings::defaults(
            Duration::from_secs(30),
            Duration::from_millis(250),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn reply_matches_nsqd_for_defaults() {
        let req = parse_identify(br#"{"feature_negotiation":true,"snappy":true}"#).unwrap();
        let n = negotiate(
            &req,
            &defaults(),
            &limits(),
            Features::default(),
            false,
            "1.3.0",
        )
        .unwrap();
        assert_eq!(
            n.json,
            r#"{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":60000,"tls_v1":false,"deflate":false,"deflate_level":6,"max_deflate_level":6,"snappy":false,"sample_rate":0,"auth_required":false,"output_buffer_size":16384,"output_buffer_timeout":250}"#
        );
    }

    #[test]
    fn keys_are_case_insensitive_and_types_strict() {
        let req =
            parse_identify(br#"{"Client_ID":"a","HOSTNAME":"h","msg_timeout":null}"#).unwrap();
        assert_eq!(req.client_id, "a");
        assert_eq!(req.hostname, "h");
        for bad in [
            &br#"{"heartbeat_interval":1.5}"#[..],
            br#"{"client_id":1}"#,
            b"[1]",
            b"{",
            br#"{"sample_rate":4294967296}"#,
        ] {
            assert_eq!(
                parse_identify(bad).unwrap_err().to_string(),
                "E_BAD_BODY IDENTIFY failed to decode JSON body"
            );
        }
    }

    #[test]
    fn repeated_keys_apply_in_order_and_null_keeps_the_earlier_value() {
        // Go's decoder sets a field for each matching key in turn; `null` is a no-op.
        let req = parse_identify(
            br#"{"msg_timeout":1000,"msg_timeout":null,"feature_negotiation":true,
                "FEATURE_NEGOTIATION":null,"heartbeat_interval":-1,"Heartbeat_Interval":null,
                "sample_rate":5,"sample_rate":7,"client_id":"a","client_id":null}"#,
        )
        .unwrap();
        assert_eq!(req.msg_timeout, 1000);
        assert!(req.feature_negotiation);
        assert_eq!(req.heartbeat_interval, -1);
        assert_eq!(req.sample_rate, 7, "the last non-null value wins");
        assert_eq!(req.client_id, "a");
        // A wrong type fails the body even when a later key would replace it.
        assert!(parse_identify(br#"{"msg_timeout":"x","msg_timeout":1000}"#).is_err());
        assert_eq!(parse_identify(b"null").unwrap(), IdentifyRequest::default());
    }

    #[test]
    fn validation_texts_and_order() {
        let cases = [
            (
                r#"{"heartbeat_interval":999}"#,
                "E_BAD_BODY IDENTIFY heartbeat interval (999) is invalid",
            ),
            (
                r#"{"output_buffer_timeout":1}"#,
                "E_BAD_BODY IDENTIFY output buffer timeout (1) is invalid",
            ),
            (
                r#"{"output_buffer_size":63}"#,
                "E_BAD_BODY IDENTIFY output buffer size (63) is invalid",
            ),
            (
                r#"{"sample_rate":100}"#,
                "E_BAD_BODY IDENTIFY sample rate (100) is invalid",
            ),
            (
                r#"{"msg_timeout":999}"#,
                "E_BAD_BODY IDENTIFY msg timeout (999) is invalid",
            ),
            (
                r#"{"heartbeat_interval":5,"sample_rate":100}"#,
                "E_BAD_BODY IDENTIFY heartbeat interval (5) is invalid",
            ),
        ];
        for (json, text) in cases {
            let req = parse_identify(json.as_bytes()).unwrap();
            assert_eq!(
                defaults().apply(&req, &limits()).unwrap_err().to_string(),
                text,
                "{json}"
            );
        }
    }

    #[test]
    fn unbuffered_forces_zero_timeout_and_heartbeat_can_be_disabled() {
        let req = parse_identify(
            br#"{"output_buffer_size":-1,"heartbeat_interval":-1,"msg_timeout":5000}"#,
        )
        .unwrap();
        let mut s = defaults();
        s.apply(&req, &limits()).unwrap();
        assert_eq!(s.output_buffer_size, 1);
        assert_eq!(s.output_buffer_timeout, Duration::ZERO);
        assert_eq!(s.heartbeat_interval, None);
        assert_eq!(s.msg_timeout, Duration::from_secs(5));
    }

    #[test]
    fn both_compressions_rejected_when_enabled() {
        let req = parse_identify(br#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#)
            .unwrap();
        let f = Features {
            tls: false,
            snappy: true,
            deflate: true,
        };
        let e = negotiate(&req, &defaults(), &limits(), f, false, "1.3.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
        );
    }
}
