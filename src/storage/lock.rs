//! The `--data-path` lock: one broker per data directory, with nsqd's error text.

use std::fs::File;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Holds the directory's flock for the life of the process.
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<File>,
}

/// Takes an exclusive non-blocking flock on the directory itself, as nsqd's dirlock does.
pub fn lock(data_path: &Path) -> Result<DirLock, String> {
    let dir = File::open(data_path).map_err(|e| {
        format!(
            "failed to lock data-path: {}",
            super::go_error::path_error("open", data_path, &e)
        )
    })?;
    let held = Flock::lock(dir, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        let why = super::go_error::errno_text(&std::io::Error::from_raw_os_error(e as i32));
        format!(
            "failed to lock data-path: cannot flock directory {} - {why} (possibly in use by another instance of nsqd)",
            data_path.display(),
        )
    })?;
    Ok(DirLock { _lock: held })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_with_nsqd_text() {
        let dir = std::env::temp_dir().join(format!("nsqd-lock-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = lock(&dir).unwrap();
        let err = lock(&dir).unwrap_err();
        assert!(err.contains("cannot flock directory"), "{err}");
        drop(held);
        assert!(lock(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
