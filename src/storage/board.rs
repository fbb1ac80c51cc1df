//! The process-wide picture of `nsqd.dat`: each shard posts the topics and channels it owns,
//! and whichever shard writes the file writes all of them. Touched only when a topic or
//! channel is created (or paused), never per message, so a mutex is fine here.

use std::sync::Mutex;

use super::metadata::{Metadata, TopicMeta};

#[derive(Debug, Default)]
struct BoardState {
    parts: Vec<Vec<TopicMeta>>,
    /// Bumped by every change.
    generation: u64,
    /// The newest generation renamed into place.
    written: u64,
}

/// Every shard's part of nsqd.dat.
#[derive(Debug, Default)]
pub struct MetadataBoard {
    state: Mutex<BoardState>,
}

impl MetadataBoard {
    /// A board holding what was loaded at start-up, split by owner shard, so a write by one
    /// shard never drops another shard's topics.
    pub fn new(nr_shards: usize, loaded: &[TopicMeta], owner_of: impl Fn(&str) -> usize) -> Self {
        let mut parts = vec![Vec::new(); nr_shards.max(1)];
        for t in loaded {
            let owner = owner_of(&t.name).min(parts.len() - 1);
            parts[owner].push(t.clone());
        }
        MetadataBoard {
            state: Mutex::new(BoardState {
                parts,
                generation: 1,
                written: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces one shard's part; returns whether it changed.
    pub fn update(&self, shard: usize, part: Vec<TopicMeta>) -> bool {
        let mut s = self.lock();
        let Some(slot) = s.parts.get_mut(shard) else {
            return false;
        };
        if *slot == part {
            return false;
        }
        *slot = part;
        s.generation += 1;
        true
    }

    /// The whole file as of now, and its generation.
    pub fn snapshot(&self) -> (Metadata, u64) {
        let s = self.lock();
        let meta = Metadata {
            topics: s.parts.iter().flatten().cloned().collect(),
            version: crate::settings::NSQD_VERSION.to_string(),
        };
        (meta, s.generation)
    }

    /// Whether a write of `generation` may replace the file (nothing newer was written).
    pub fn claim(&self, generation: u64) -> bool {
        let mut s = self.lock();
        if generation <= s.written {
            return false;
        }
        s.written = generation;
        true
    }

    /// Puts a written and synced file of `generation` in place with `rename` unless something
    /// newer already is; returns whether it renamed. The board stays locked meanwhile, so the
    /// renames happen in generation order: claiming first and renaming later would let an
    /// older file land over a newer one, and the newest topics would stay missing from
    /// nsqd.dat (nothing is left "unwritten" to redo it). A failed rename leaves the
    /// generation unwritten, for a later retry.
    pub fn commit(
        &self,
        generation: u64,
        rename: impl FnOnce() -> std::io::Result<()>,
    ) -> std::io::Result<bool> {
        let mut s = self.lock();
        if generation <= s.written {
            return Ok(false);
        }
        rename()?;
        s.written = generation;
        Ok(true)
    }

    /// Whether the newest generation is not on disk yet.
    pub fn unwritten(&self) -> bool {
        let s = self.lock();
        s.generation > s.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            paused: false,
            channels: vec![],
        }
    }

    #[test]
    fn parts_from_all_shards_are_written_together() {
        let loaded = [topic("a"), topic("b")];
        let board = MetadataBoard::new(2, &loaded, |n| usize::from(n == "b"));
        assert!(board.unwritten());
        assert!(board.update(0, vec![topic("a"), topic("c")]));
        assert!(!board.update(0, vec![topic("a"), topic("c")]), "no change");
        let (meta, generation) = board.snapshot();
        let names: Vec<_> = meta.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "b"]);
        assert!(board.claim(generation));
        assert!(!board.unwritten());
        assert!(
            !board.claim(generation - 1),
            "an older snapshot never replaces a newer one"
        );
    }

    #[test]
    fn commits_rename_in_generation_order_and_retry_after_a_failure() {
        let board = MetadataBoard::new(2, &[], |_| 0);
        board.update(0, vec![topic("a")]);
        let (_, older) = board.snapshot();
        board.update(1, vec![topic("b")]);
        let (_, newer) = board.snapshot();
        let failed = board.commit(newer, || Err(std::io::Error::other("disk full")));
        assert!(failed.is_err());
        assert!(board.unwritten(), "a failed rename is retried later");
        let mut renamed = Vec::new();
        let mut rename = |g| {
            renamed.push(g);
            Ok(())
        };
        assert!(board.commit(newer, || rename(newer)).unwrap());
        assert!(!board.commit(older, || rename(older)).unwrap());
        assert_eq!(
            renamed,
            [newer],
            "the older file never lands over the newer one"
        );
        assert!(!board.unwritten());
    }
}
