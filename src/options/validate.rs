//! Startup checks: nsqd's fatal option errors, and the features nsqd-uring
//! does not implement yet (the broker refuses to start when they are asked for).

use super::OptionsError;
use super::strconv::go_float_v;
use super::table::{Options, by_flag};
use super::values::TlsRequired;

/// Flags whose features nsqd-uring has not built yet: setting any of them to
/// a non-default value is refused at startup. Remove a name once it works.
pub const UNBUILT_FLAGS: &[&str] = &[];

impl Options {
    /// nsqd's startup checks, in nsqd's order, with its messages; also
    /// upgrades `tls_required` to `All` when a client-auth policy is set, as
    /// nsqd does. `parse_args` already calls this.
    pub fn validate(&mut self) -> Result<(), OptionsError> {
        for e in &self.enable_experiment {
            if e != "topology-aware-consumption" {
                return Err(OptionsError::Invalid(format!(
                    "invalid experiment {e:?} (valid: topology-aware-consumption)"
                )));
            }
        }
        let fail = |msg: String| Err(OptionsError::Invalid(msg));
        if !(1..=9).contains(&self.max_deflate_level) {
            return fail("--max-deflate-level must be [1,9]".into());
        }
        if !(0..1024).contains(&self.node_id) {
            return fail("--node-id must be [0,1024)".into());
        }
        if !self.tls_client_auth_policy.is_empty() && self.tls_required == TlsRequired::None {
            self.tls_required = TlsRequired::All;
        }
        if self.tls_required != TlsRequired::None
            && self.tls_cert.is_empty()
            && self.tls_key.is_empty()
        {
            return fail("cannot require TLS client connections without TLS key and cert".into());
        }
        if self.auth_http_request_method != "post" && self.auth_http_request_method != "get" {
            return fail("--auth-http-request-method must be post or get".into());
        }
        for &p in &self.e2e_processing_latency_percentiles {
            if p.is_nan() || p <= 0.0 || p > 1.0 {
                return fail(format!(
                    "invalid E2E processing latency percentile: {}",
                    go_float_v(p)
                ));
            }
        }
        Ok(())
    }

    /// One `--<flag> is not supported yet by nsqd-uring` message per
    /// [`UNBUILT_FLAGS`] entry whose value differs from its default.
    pub fn unbuilt_features(&self) -> Vec<String> {
        let defaults = Options::default();
        UNBUILT_FLAGS
            .iter()
            .filter_map(|&flag| by_flag(flag))
            .filter(|def| (def.to_json)(self) != (def.to_json)(&defaults))
            .map(|def| format!("--{} is not supported yet by nsqd-uring", def.flag))
            .collect()
    }
}
