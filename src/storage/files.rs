//! The segment files a shard's disk queues hold open between storage rounds, counted against
//! a budget derived from the open-file limit (see [`crate::runtime::limits`]).

use std::cell::Cell;
use std::rc::Rc;

use glommio::io::BufferedFile;

/// How many segment files a shard's queues hold open, against a budget: past it, a queue
/// gives its files back at the end of its round and opens them again when it next needs
/// them, so that thousands of queues with a backlog cannot use up the open-file limit and
/// make every accept fail.
#[derive(Debug, Default)]
pub struct SegmentFiles {
    open: Cell<usize>,
    /// 0: no bound.
    budget: usize,
}

impl SegmentFiles {
    /// A count for one shard, bounded by `budget` (0 = none).
    pub fn new(budget: usize) -> Rc<SegmentFiles> {
        Rc::new(SegmentFiles {
            open: Cell::new(0),
            budget,
        })
    }

    /// Queues that may be finished at once at shutdown, each holding up to two files (its
    /// segment and its meta file's temporary sibling) on top of those open already.
    pub fn close_batch(&self) -> usize {
        const MOST: usize = 64;
        match self.budget {
            0 => MOST,
            budget => (budget / 2).clamp(1, MOST),
        }
    }

    pub(super) fn over_budget(&self) -> bool {
        self.budget > 0 && self.open.get() > self.budget
    }
}

/// An open segment file, counted in its shard's [`SegmentFiles`] while it lives.
pub(super) struct SegmentFile {
    file: Option<BufferedFile>,
    files: Rc<SegmentFiles>,
}

impl SegmentFile {
    pub(super) fn new(file: BufferedFile, files: &Rc<SegmentFiles>) -> SegmentFile {
        files.open.set(files.open.get() + 1);
        SegmentFile {
            file: Some(file),
            files: files.clone(),
        }
    }

    pub(super) fn get(&self) -> &BufferedFile {
        self.file.as_ref().expect("present until closed")
    }

    pub(super) async fn close(mut self) {
        if let Some(f) = self.file.take() {
            let _ = f.close().await;
        }
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        self.files.open.set(self.files.open.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_are_counted_until_closed_or_dropped() {
        crate::storage::run_in_temp_dir("nsqd-files", |d| async move {
            let files = SegmentFiles::new(1);
            let open = |n: u8| {
                let path = d.join(format!("f{n}"));
                async move {
                    glommio::io::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .buffered_open(&path)
                        .await
                        .unwrap()
                }
            };
            let a = SegmentFile::new(open(1).await, &files);
            assert!(!files.over_budget());
            let b = SegmentFile::new(open(2).await, &files);
            assert!(files.over_budget(), "two open, budget one");
            b.close().await;
            assert!(!files.over_budget());
            drop(a);
            assert_eq!(files.open.get(), 0);
        });
    }

    #[test]
    fn a_stop_finishes_half_the_budget_at_once_at_most_64() {
        assert_eq!(SegmentFiles::new(0).close_batch(), 64, "unbounded");
        assert_eq!(SegmentFiles::new(5000).close_batch(), 64);
        assert_eq!(SegmentFiles::new(20).close_batch(), 10);
        assert_eq!(SegmentFiles::new(1).close_batch(), 1);
    }
}
