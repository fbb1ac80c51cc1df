//! go-diskqueue v1.1.0's on-disk layout, as pure functions: segment and meta file names, the
//! meta file's text, and the rule for when a write starts a new segment.

use std::path::{Path, PathBuf};

/// The queue name of a topic (`<topic>`) or channel (`<topic>:<channel>`).
pub fn queue_name(topic: &str, channel: Option<&str>) -> String {
    match channel {
        Some(c) => format!("{topic}:{c}"),
        None => topic.to_string(),
    }
}

/// `<dir>/<name>.diskqueue.<%06d>.dat`
pub fn segment_path(dir: &Path, name: &str, file_num: i64) -> PathBuf {
    dir.join(format!("{name}.diskqueue.{file_num:06}.dat"))
}

/// `<dir>/<name>.diskqueue.meta.dat`
pub fn meta_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.diskqueue.meta.dat"))
}

/// Where a corrupt segment goes: the same name plus `.bad`.
pub fn bad_path(segment: &Path) -> PathBuf {
    let mut s = segment.as_os_str().to_owned();
    s.push(".bad");
    PathBuf::from(s)
}

/// A position in the queue: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Segment number.
    pub file_num: i64,
    /// Byte offset inside the segment.
    pub pos: i64,
}

/// The content of a meta file: depth, read position, write position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// Records written and not yet read.
    pub depth: i64,
    /// Next record to read.
    pub read: Position,
    /// Where the next record is written.
    pub write: Position,
}

impl Meta {
    /// The exact text go-diskqueue writes: `<depth>\n<rf>,<rp>\n<wf>,<wp>\n`.
    pub fn encode(&self) -> String {
        format!(
            "{}\n{},{}\n{},{}\n",
            self.depth, self.read.file_num, self.read.pos, self.write.file_num, self.write.pos
        )
    }

    /// Parses a meta file. Rejects what go-diskqueue's `fmt.Fscanf` would, plus negative
    /// numbers and a read position past the write position, which would make no sense.
    pub fn parse(text: &str) -> Result<Meta, String> {
        let mut lines = text.lines();
        let mut next = |what: &str| {
            lines
                .next()
                .map(str::trim)
                .ok_or_else(|| format!("meta file has no {what} line"))
        };
        let num = |s: &str| {
            s.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("bad number {s:?} in meta file"))
        };
        let pair = |s: &str| -> Result<Position, String> {
            let (f, p) = s
                .split_once(',')
                .ok_or_else(|| format!("bad position {s:?} in meta file"))?;
            Ok(Position {
                file_num: num(f)?,
                pos: num(p)?,
            })
        };
        let depth = num(next("depth")?)?;
        let read = pair(next("read position")?)?;
        let write = pair(next("write position")?)?;
        if read > write {
            return Err(format!(
                "read position {read:?} is past write position {write:?}"
            ));
        }
        Ok(Meta { depth, read, write })
    }
}

/// go-diskqueue v1.1.0's roll rule: before writing a record of `record_len` payload bytes,
/// start a new segment if the current one already has data and the record would push it past
/// `max_bytes_per_file`.
pub fn must_roll(write_pos: i64, record_len: usize, max_bytes_per_file: i64) -> bool {
    write_pos > 0 && write_pos + 4 + record_len as i64 > max_bytes_per_file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_go_diskqueue() {
        let dir = Path::new("/d");
        assert_eq!(
            segment_path(dir, &queue_name("orders", Some("archive")), 0),
            Path::new("/d/orders:archive.diskqueue.000000.dat")
        );
        assert_eq!(
            segment_path(dir, "t", 1234567),
            Path::new("/d/t.diskqueue.1234567.dat")
        );
        assert_eq!(meta_path(dir, "t"), Path::new("/d/t.diskqueue.meta.dat"));
        assert_eq!(
            bad_path(Path::new("/d/t.diskqueue.000003.dat")),
            Path::new("/d/t.diskqueue.000003.dat.bad")
        );
    }

    #[test]
    fn meta_round_trips_in_nsqd_text() {
        // Captured from nsqd v1.3.0 (t1:c1.diskqueue.meta.dat).
        let m = Meta::parse("8\n0,0\n3,74\n").unwrap();
        assert_eq!(m.depth, 8);
        assert_eq!(m.read, Position::default());
        assert_eq!(
            m.write,
            Position {
                file_num: 3,
                pos: 74
            }
        );
        assert_eq!(m.encode(), "8\n0,0\n3,74\n");
        assert_eq!(Meta::default().encode(), "0\n0,0\n0,0\n");
    }

    #[test]
    fn corrupt_meta_is_rejected() {
        for bad in [
            "",
            "x\n0,0\n0,0\n",
            "1\n0,0\n",
            "1\n0;0\n0,0\n",
            "-1\n0,0\n0,0\n",
            "1\n2,0\n1,0\n",
            "1\n0,-5\n0,0\n",
        ] {
            assert!(Meta::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roll_rule_is_v1_1_0() {
        // nsqd with --max-bytes-per-file=100 and 37-byte records puts two per file.
        assert!(!must_roll(0, 33, 100));
        assert!(!must_roll(37, 33, 100));
        assert!(must_roll(74, 33, 100));
        // A record bigger than the limit still goes into an empty segment.
        assert!(!must_roll(0, 500, 100));
        assert!(must_roll(1, 500, 100));
        assert!(!must_roll(63, 33, 100));
    }
}
