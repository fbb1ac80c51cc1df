//! Go's text for a failed file operation (`*fs.PathError`: `open /x: no such file or
//! directory`), so start-up errors about the data path read as nsqd's do.

use std::path::Path;

/// The errno text as Go prints it: the C library's message with a lower-case first letter
/// and no `(os error N)` suffix.
pub fn errno_text(e: &std::io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => {
            let full = std::io::Error::from_raw_os_error(code).to_string();
            match full.rfind(" (os error ") {
                Some(at) => full[..at].to_string(),
                None => full,
            }
        }
        None => e.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// `op path: errno text`, as Go's `*fs.PathError` prints.
pub fn path_error(op: &str, path: &Path, e: &std::io::Error) -> String {
    format!("{op} {}: {}", path.display(), errno_text(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_go() {
        let missing = std::io::Error::from_raw_os_error(2);
        assert_eq!(
            path_error("open", Path::new("/x"), &missing),
            "open /x: no such file or directory"
        );
        let busy = std::io::Error::from_raw_os_error(nix::libc::EWOULDBLOCK);
        assert_eq!(errno_text(&busy), "resource temporarily unavailable");
        assert_eq!(
            errno_text(&std::io::Error::from_raw_os_error(21)),
            "is a directory"
        );
    }
}
