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
//! [`Message::detach_body`]: super::message::Message::detach_body

use std::ops::Range;
use std::time::Duration;

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
