//! Process limits io_uring and many connections need: locked memory and open files.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// glommio refuses to start an executor below this locked-memory limit.
pub const MIN_MEMLOCK: u64 = 512 * 1024;

/// Raises `RLIMIT_MEMLOCK` as far as allowed (to unlimited where privileged). Returns the soft
/// limit now in force, or a message telling the operator what to raise when still too low.
pub fn raise_memlock() -> Result<u64, String> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_MEMLOCK).map_err(|e| e.to_string())?;
    let infinity = nix::sys::resource::RLIM_INFINITY;
    // Privileged: lift both limits. Otherwise the soft limit can go up to the hard one.
    if setrlimit(Resource::RLIMIT_MEMLOCK, infinity, infinity).is_err() && soft < hard {
        let _ = setrlimit(Resource::RLIMIT_MEMLOCK, hard, hard);
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_MEMLOCK).map_err(|e| e.to_string())?;
    if soft < MIN_MEMLOCK {
        return Err(memlock_advice(soft));
    }
    Ok(soft)
}

/// The operator-facing message for a locked-memory limit too low for io_uring.
pub fn memlock_advice(soft: u64) -> String {
    format!(
        "io_uring needs at least {} KiB of locked memory per process but RLIMIT_MEMLOCK is {} KiB \
         and could not be raised. Raise it, e.g. `ulimit -l unlimited` (as root) before starting \
         nsqd, `LimitMEMLOCK=infinity` in a systemd unit, `--ulimit memlock=-1:-1` for docker, or \
         a `memlock` line in /etc/security/limits.conf",
        MIN_MEMLOCK / 1024,
        soft / 1024
    )
}

/// How many disk queue segment files each of `shards` cores may keep open between storage
/// rounds: a quarter of the open-file limit in all, the rest left to connections. nsqd keeps
/// one or two per queue with data, so thousands of queues with a backlog made its (and our)
/// listeners fail every accept with `Too many open files`.
pub fn segment_file_budget(shards: usize) -> usize {
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    (limit / 4 / shards.max(1)).max(16)
}

/// Raises the open-file soft limit to the hard limit (each connection holds two descriptors).
pub fn raise_nofile() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
