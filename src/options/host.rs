//! Host-derived defaults: nsqd's default `--broadcast-address` is the OS
//! hostname and its default `--node-id` a hash of it, so two nsqds on one
//! cluster usually get distinct message-ID prefixes without configuration.

use md5::{Digest, Md5};

/// The OS hostname (`gethostname(2)`), or `localhost` if it cannot be read.
pub fn os_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// nsqd's default node id: `crc32_ieee(md5(hostname)) % 1024`.
pub fn default_node_id(hostname: &str) -> i64 {
    let digest = Md5::digest(hostname.as_bytes());
    i64::from(crc32fast::hash(&digest) % 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_matches_go() {
        // Reference values from Python's zlib.crc32(hashlib.md5(h).digest()) % 1024.
        assert_eq!(default_node_id("localhost"), 16);
        assert_eq!(default_node_id("nsq-host-1"), 250);
        assert!(!os_hostname().is_empty());
    }
}
