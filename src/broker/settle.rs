//! Giving messages that stay a body of their own.
//!
//! A body read from a client is a slice of the connection's read buffer (up to 64 KiB), and
//! that buffer stays allocated while any slice of it lives: one small message kept in a queue
//! keeps every message read with it in memory. Copying every body at publish, as nsqd in
//! effect does, cost 5–20 % more broker CPU per message in pubsub (measured), while most
//! messages are delivered and finished within milliseconds. So only messages that stay are
//! copied: a periodic pass every [`SETTLE_EVERY`] gives each message that was already queued
//! or in flight at the previous pass its own copy ([`Message::detach_body`]). A message thus
//! pins what it was read with for at most two passes, and one delivered in between is never
//! copied.
//!
//! A backlog read in bulk (MPUBs, pipelined PUBs) is different: its messages fill their read
//! buffers, so copying them frees nothing and costs an allocation per message (17 % more CPU
//! per message for NSQ's `bench_reader` consuming `bench_writer`'s backlog). Queued messages
//! whose bodies lie next to each other in memory, [`DENSE_RUN_BYTES`] or more of them, are
//! left where they are ([`sparse`]); such a run pins at most four times what it holds.
//!
//! [`Message::detach_body`]: super::message::Message::detach_body

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use super::chunked::ChunkedQueue;
use super::message::Message;

/// Bodies of queued messages this close together (the gap is the next command's header) are
/// taken as read together.
const RUN_GAP: usize = 1024;
/// A run of adjacent queued bodies holding this much is left in its read buffers (at most
/// 64 KiB each).
pub const DENSE_RUN_BYTES: usize = 16 * 1024;

/// For consecutive queued bodies, the positions of those that should get their own copy, as
/// ranges in order (neighbouring ones merged): every body but those in a run of bodies
/// adjacent in memory (each starting at most [`RUN_GAP`] after the end of the one before)
/// that holds [`DENSE_RUN_BYTES`] or more. A backlog read in bulk is one dense run per read
/// buffer, so this stays short where the queue is long (a flag per body cost a pass over
/// millions of them and an allocation as large).
pub fn sparse<'a>(bodies: impl Iterator<Item = &'a Bytes>) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    let close_run = |out: &mut Vec<Range<usize>>, run: Range<usize>, bytes: usize| {
        if run.is_empty() || bytes >= DENSE_RUN_BYTES {
            return;
        }
        match out.last_mut() {
            Some(last) if last.end == run.start => last.end = run.end,
            _ => out.push(run),
        }
    };
    let (mut run_start, mut run_bytes, mut prev_end, mut count) = (0, 0, None::<usize>, 0);
    for body in bodies {
        let start = body.as_ptr() as usize;
        let adjacent = prev_end.is_some_and(|end| start >= end && start - end <= RUN_GAP);
        if !adjacent {
            close_run(&mut out, run_start..count, run_bytes);
            (run_start, run_bytes) = (count, 0);
        }
        count += 1;
        run_bytes += body.len();
        prev_end = Some(start + body.len());
    }
    close_run(&mut out, run_start..count, run_bytes);
    out
}

/// An item of a queue the settle pass walks: a channel's message, or a topic backlog's
/// message with its deferral.
pub trait Queued {
    /// The body, to tell dense runs.
    fn body(&self) -> &Bytes;
    /// The message to detach, or `None` if its body has its own allocation already.
    fn detachable(&mut self) -> Option<&mut Message>;
}

impl Queued for Message {
    fn body(&self) -> &Bytes {
        &self.body
    }

    fn detachable(&mut self) -> Option<&mut Message> {
        Some(self)
    }
}

impl Queued for (Message, Option<std::time::Instant>) {
    fn body(&self) -> &Bytes {
        &self.0.body
    }

    /// A deferred message was detached when it was published.
    fn detachable(&mut self) -> Option<&mut Message> {
        self.1.is_none().then_some(&mut self.0)
    }
}

/// A memory queue (a channel's, or a topic's backlog) that keeps its own [`YoungTail`]: every
/// change goes through it, so the tail always matches the queue. Reading goes through
/// `Deref` to the [`ChunkedQueue`].
#[derive(Debug)]
pub struct SettlingQueue<T> {
    items: ChunkedQueue<T>,
    young: YoungTail,
}

impl<T> Default for SettlingQueue<T> {
    fn default() -> Self {
        SettlingQueue {
            items: ChunkedQueue::new(),
            young: YoungTail::default(),
        }
    }
}

impl<T> std::ops::Deref for SettlingQueue<T> {
    type Target = ChunkedQueue<T>;

    fn deref(&self) -> &ChunkedQueue<T> {
        &self.items
    }
}

impl<T: Queued> SettlingQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends at the back.
    pub fn push_back(&mut self, item: T) {
        self.items.push_back(item);
        self.young.pushed();
    }

    /// Takes the oldest item.
    pub fn pop_front(&mut self) -> Option<T> {
        let item = self.items.pop_front();
        self.young.shrunk_to(self.items.len());
        item
    }

    /// Drops every item.
    pub fn clear(&mut self) {
        self.items.clear();
        self.young.shrunk_to(0);
    }

    /// Takes every item, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + use<T> {
        self.young.shrunk_to(0);
        self.items.drain()
    }

    /// One settle pass: detaches the bodies the tail says are due, except those lying in
    /// dense runs ([`sparse`]) and those that have their own allocation already.
    pub fn settle(&mut self) {
        let due = self.young.settle(self.items.len());
        if due.is_empty() {
            return;
        }
        for copy in sparse(self.items.range(due.clone()).map(Queued::body)) {
            let at = due.start + copy.start..due.start + copy.end;
            for item in self.items.range_mut(at) {
                if let Some(msg) = item.detachable() {
                    msg.detach_body();
                }
            }
        }
    }
}

/// How often a core's queues and in-flight tables are settled.
pub const SETTLE_EVERY: Duration = Duration::from_millis(500);

/// Which messages at the back of a FIFO queue (pushed at the back, taken from the front) may
/// still share a read buffer: the newest `unsettled`, of which the oldest `seen` were
/// already there at the previous pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct YoungTail {
    unsettled: usize,
    seen: usize,
}

impl YoungTail {
    /// A message was pushed at the back.
    pub fn pushed(&mut self) {
        self.unsettled += 1;
    }

    /// Messages were taken from the front (or all dropped), leaving `len`: the oldest ones go
    /// first, so they come out of `seen` first.
    pub fn shrunk_to(&mut self, len: usize) {
        if self.unsettled > len {
            self.seen = self.seen.saturating_sub(self.unsettled - len);
            self.unsettled = len;
        }
    }

    /// A pass over a queue of `len` messages: returns the positions to detach now (those
    /// that were there at the previous pass too); the rest of the tail waits for the next.
    pub fn settle(&mut self, len: usize) -> Range<usize> {
        self.shrunk_to(len);
        let start = len - self.unsettled;
        let due = start..start + self.seen;
        self.unsettled -= self.seen;
        self.seen = self.unsettled;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_due_at_the_second_pass_it_is_still_queued_for() {
        let mut tail = YoungTail::default();
        let mut len = 0;
        for _ in 0..3 {
            tail.pushed();
            len += 1;
        }
        // First pass: the three are new.
        assert_eq!(tail.settle(len), 0..0);
        tail.pushed();
        tail.pushed();
        len += 2;
        // Second pass: the first three stayed, the two newest wait.
        assert_eq!(tail.settle(len), 0..3);
        // Nothing new: the two are due at the next pass, then nothing is left.
        assert_eq!(tail.settle(len), 3..5);
        assert_eq!(tail.settle(len), 5..5);
    }

    #[test]
    fn messages_taken_from_the_front_are_never_due() {
        let mut tail = YoungTail::default();
        for _ in 0..4 {
            tail.pushed();
        }
        assert_eq!(tail.settle(4), 0..0);
        tail.pushed();
        // Three of the four seen ones were delivered in between.
        tail.shrunk_to(2);
        assert_eq!(tail.settle(2), 0..1);
        // A queue emptied and refilled: only what came after counts.
        tail.shrunk_to(0);
        tail.pushed();
        assert_eq!(tail.settle(1), 0..0);
        assert_eq!(tail.settle(1), 0..1);
    }

    #[test]
    fn only_bodies_outside_dense_runs_are_copied() {
        let block = Bytes::from(vec![0u8; 256 * 1024]);
        // A 40 KiB MPUB's bodies (4-byte gaps), then two stragglers of other buffers, then
        // pipelined PUBs holding less than a dense run, then a second dense run.
        let mut bodies = Vec::new();
        let mut at = 0;
        for _ in 0..200 {
            bodies.push(block.slice(at..at + 200));
            at += 204;
        }
        bodies.push(block.slice(100_000..100_100));
        bodies.push(block.slice(50_000..50_100));
        at = 120_000;
        for _ in 0..10 {
            bodies.push(block.slice(at..at + 1000));
            at += 1030;
        }
        at = 200_000;
        for _ in 0..20 {
            bodies.push(block.slice(at..at + 1000));
            at += 1030;
        }
        // The MPUB and 20 KiB of PUBs stay; the stragglers and a short run are copied.
        assert_eq!(
            sparse(bodies.iter()),
            vec![Range {
                start: 200,
                end: 212
            }]
        );
        // A far gap splits a run; the two short runs are copied, as one range.
        let split = [block.slice(0..10_000), block.slice(12_000..22_000)];
        assert_eq!(sparse(split.iter()), vec![Range { start: 0, end: 2 }]);
        // Short runs between dense ones stay apart.
        let mixed = [
            block.slice(0..100),
            block.slice(30_000..50_000),
            block.slice(60_000..60_100),
        ];
        assert_eq!(sparse(mixed.iter()), [0..1, 2..3]);
        assert!(sparse(std::iter::empty()).is_empty());
    }

    #[test]
    fn settled_messages_are_not_counted_again() {
        let mut tail = YoungTail::default();
        tail.pushed();
        tail.settle(1);
        assert_eq!(tail.settle(1), 0..1);
        // A later message behind the settled one.
        tail.pushed();
        assert_eq!(tail.settle(2), 1..1);
        assert_eq!(tail.settle(2), 1..2);
    }
}
