//! Disk persistence in nsqd's own formats, so a data directory moves between nsqd and
//! nsqd-uring both ways: go-diskqueue segments and meta files, message records, `nsqd.dat`,
//! and the data-path lock. Pure format code is kept apart from the glommio IO that uses it.

pub mod backlog;
pub mod board;
pub mod diskqueue;
pub mod files;
pub mod go_error;
pub mod lock;
pub mod metadata;
pub mod queue_io;
pub mod record;

/// Test support: runs `body` on a glommio executor with a new temporary directory, which is
/// removed once `body` is done.
#[cfg(test)]
pub(crate) fn run_in_temp_dir<Fut: std::future::Future<Output = ()>>(
    prefix: &str,
    body: impl FnOnce(std::path::PathBuf) -> Fut,
) {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(body(dir.clone()));
    std::fs::remove_dir_all(&dir).unwrap();
}
