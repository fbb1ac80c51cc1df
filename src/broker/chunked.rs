//! A FIFO queue kept in fixed-size chunks, for the channel and topic memory queues.
//!
//! A `VecDeque` grows by doubling: each growth reallocates (which may copy the buffer) and
//! copies the wrapped part of the ring, while every connection of that core waits; a queue of
//! millions of messages lives in one mapping of its own, unmapped when it is dropped and
//! faulted in afresh when the queue fills again; and it keeps its peak capacity after it
//! drains. In chunks of [`CHUNK_LEN`] items (32–40 KiB for the
//! queues' items, under glibc's mmap threshold), growth never copies, a drained chunk is freed
//! at once, and freed chunks are reused from the allocator's arena, as the message bodies are.
//! One emptied chunk is kept as a spare, so a queue whose length hovers around a chunk
//! boundary does not allocate and free on every message.

use std::collections::VecDeque;
use std::ops::{Index, Range};

/// Items per chunk.
pub const CHUNK_LEN: usize = 512;

/// A FIFO queue of `T` in chunks of [`CHUNK_LEN`]. Every chunk holds at least one item, and
/// every chunk but the first and the last is full, so a position maps to its chunk directly.
#[derive(Debug)]
pub struct ChunkedQueue<T> {
    chunks: VecDeque<VecDeque<T>>,
    len: usize,
    spare: Option<VecDeque<T>>,
}

impl<T> Default for ChunkedQueue<T> {
    fn default() -> Self {
        ChunkedQueue {
            chunks: VecDeque::new(),
            len: 0,
            spare: None,
        }
    }
}

impl<T> ChunkedQueue<T> {
    /// An empty queue; allocates nothing until the first push.
    pub fn new() -> Self {
        Self::default()
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends at the back.
    pub fn push_back(&mut self, item: T) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK_LEN => last.push_back(item),
            _ => {
                let mut chunk = self
                    .spare
                    .take()
                    .unwrap_or_else(|| VecDeque::with_capacity(CHUNK_LEN));
                chunk.push_back(item);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }

    /// Takes the oldest item.
    pub fn pop_front(&mut self) -> Option<T> {
        let first = self.chunks.front_mut()?;
        let item = first.pop_front();
        if first.is_empty() {
            let emptied = self.chunks.pop_front();
            if self.spare.is_none() {
                self.spare = emptied;
            }
        }
        self.len -= 1;
        item
    }

    /// Drops every item and frees every chunk.
    pub fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.spare = None;
        self.len = 0;
    }

    /// Takes every item, oldest first, leaving the queue empty.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + use<T> {
        self.len = 0;
        self.spare = None;
        std::mem::take(&mut self.chunks).into_iter().flatten()
    }

    /// Every item, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// The items at positions `range` (0 is the oldest), oldest first.
    pub fn range(&self, range: Range<usize>) -> impl Iterator<Item = &T> {
        let count = self.checked_count(&range);
        let (chunk, offset) = self.locate(range.start);
        self.chunks
            .range(chunk.min(self.chunks.len())..)
            .enumerate()
            .flat_map(move |(k, c)| c.range(if k == 0 { offset } else { 0 }..))
            .take(count)
    }

    /// [`ChunkedQueue::range`], mutably.
    pub fn range_mut(&mut self, range: Range<usize>) -> impl Iterator<Item = &mut T> {
        let count = self.checked_count(&range);
        let (chunk, offset) = self.locate(range.start);
        let from = chunk.min(self.chunks.len());
        self.chunks
            .range_mut(from..)
            .enumerate()
            .flat_map(move |(k, c)| c.range_mut(if k == 0 { offset } else { 0 }..))
            .take(count)
    }

    fn checked_count(&self, range: &Range<usize>) -> usize {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range {range:?} out of a queue of {}",
            self.len
        );
        range.end - range.start
    }

    /// The chunk and the position within it of item `index` (`index` may be `len`).
    fn locate(&self, index: usize) -> (usize, usize) {
        let first = self.chunks.front().map_or(0, VecDeque::len);
        if index < first {
            (0, index)
        } else {
            let rest = index - first;
            (1 + rest / CHUNK_LEN, rest % CHUNK_LEN)
        }
    }
}

impl<T> Index<usize> for ChunkedQueue<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        assert!(
            index < self.len,
            "index {index} out of a queue of {}",
            self.len
        );
        let (chunk, offset) = self.locate(index);
        &self.chunks[chunk][offset]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue after `pushes` pushes and `pops` pops of 0, 1, 2, ...
    fn queue(pushes: usize, pops: usize) -> ChunkedQueue<usize> {
        let mut q = ChunkedQueue::new();
        (0..pushes).for_each(|i| q.push_back(i));
        for i in 0..pops {
            assert_eq!(q.pop_front(), Some(i));
        }
        q
    }

    #[test]
    fn is_first_in_first_out_across_chunk_boundaries() {
        let n = 3 * CHUNK_LEN + 7;
        let mut q = queue(n, 0);
        assert_eq!(q.len(), n);
        assert_eq!(q.chunks.len(), 4);
        for i in 0..n {
            assert_eq!(q.pop_front(), Some(i));
            q.push_back(n + i);
        }
        assert_eq!(
            q.iter().copied().collect::<Vec<_>>(),
            (n..2 * n).collect::<Vec<_>>()
        );
        assert_eq!(
            q.drain().collect::<Vec<_>>(),
            (n..2 * n).collect::<Vec<_>>()
        );
        assert!(q.is_empty());
        assert_eq!(q.pop_front(), None);
    }

    #[test]
    fn positions_and_ranges_count_from_the_oldest_item() {
        // The first chunk partly taken, full middle chunks, a partial last chunk.
        let (pushes, pops) = (4 * CHUNK_LEN + 100, CHUNK_LEN + 30);
        let q = queue(pushes, pops);
        let expected: Vec<usize> = (pops..pushes).collect();
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(q[i], *want);
        }
        for range in [
            0..0,
            0..1,
            3..CHUNK_LEN,
            400..1300,
            0..q.len(),
            q.len()..q.len(),
        ] {
            let got: Vec<usize> = q.range(range.clone()).copied().collect();
            assert_eq!(got, expected[range.clone()], "{range:?}");
        }
    }

    #[test]
    fn range_mut_changes_exactly_its_range() {
        let mut q = queue(2 * CHUNK_LEN + 10, 5);
        q.range_mut(CHUNK_LEN - 10..CHUNK_LEN + 10)
            .for_each(|x| *x = usize::MAX);
        let changed: Vec<usize> = (0..q.len()).filter(|&i| q[i] == usize::MAX).collect();
        assert_eq!(
            changed,
            (CHUNK_LEN - 10..CHUNK_LEN + 10).collect::<Vec<_>>()
        );
    }

    #[test]
    #[should_panic(expected = "out of a queue")]
    fn a_range_past_the_end_is_refused() {
        let q = queue(10, 0);
        let _ = q.range(5..11).count();
    }

    #[test]
    fn drained_chunks_are_freed_but_one_is_kept_for_reuse() {
        let mut q = queue(3 * CHUNK_LEN, 0);
        for _ in 0..2 * CHUNK_LEN {
            q.pop_front();
        }
        assert_eq!(q.chunks.len(), 1);
        assert!(q.spare.is_some());
        // Hovering at a chunk boundary reuses the spare instead of allocating.
        let spare = q.spare.as_ref().map(|c| c.as_slices().0.as_ptr());
        q.push_back(0);
        assert_eq!(q.chunks.back().map(|c| c.as_slices().0.as_ptr()), spare);
        q.clear();
        assert!(q.is_empty() && q.chunks.is_empty() && q.spare.is_none());
    }
}
