//! Message ID generation, nsqd's `guid.go` layout: 41 bits of ~1 ms ticks since nsqd's epoch,
//! 10 bits of node ID, 12 bits of sequence.
//!
//! Unlike nsqd, which sleeps 1 ms when a tick's 4096 IDs are used up or the clock steps back, this
//! generator borrows the next tick: IDs stay unique and increasing and the executor never blocks.

use super::message::{MessageId, hex_id};

/// nsqd's epoch for IDs, in ticks of 2^20 ns.
const TWEPOCH: i64 = 1_288_834_974_288;
const SEQUENCE_MASK: i64 = 0xfff;

/// One generator per topic (IDs are unique per topic, as in nsqd).
#[derive(Debug, Clone)]
pub struct GuidFactory {
    node_id: i64,
    last_tick: i64,
    sequence: i64,
}

impl GuidFactory {
    /// A generator for `node_id` (0..1024, `--node-id`).
    pub fn new(node_id: i64) -> Self {
        GuidFactory {
            node_id: node_id & 0x3ff,
            last_tick: -1,
            sequence: 0,
        }
    }

    /// The next ID at `now_ns` (Unix nanoseconds).
    pub fn next_id(&mut self, now_ns: i64) -> MessageId {
        let mut tick = (now_ns >> 20).max(self.last_tick);
        if tick == self.last_tick {
            self.sequence = (self.sequence + 1) & SEQUENCE_MASK;
            if self.sequence == 0 {
                tick += 1;
            }
        } else {
            self.sequence = 0;
        }
        self.last_tick = tick;
        let id = ((tick - TWEPOCH) << 22) | (self.node_id << 12) | self.sequence;
        hex_id(id as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_within_and_across_ticks_and_never_repeat() {
        let mut g = GuidFactory::new(7);
        let now = 1_700_000_000_000_000_000i64;
        let mut prev = g.next_id(now);
        for i in 0..10_000 {
            // 10k IDs in the same instant overflow the 4096 sequence: must borrow ticks.
            let id = g.next_id(now + if i > 5000 { 1 } else { 0 });
            assert!(id > prev, "{i}");
            prev = id;
        }
        // Clock stepping back still yields larger IDs.
        assert!(g.next_id(now - 1_000_000_000) > prev);
    }

    #[test]
    fn layout_matches_nsqd() {
        let mut g = GuidFactory::new(1);
        let now: i64 = (TWEPOCH + 5) << 20;
        assert_eq!(&g.next_id(now), &hex_id((5 << 22) | (1 << 12)));
        assert_eq!(&g.next_id(now), &hex_id((5 << 22) | (1 << 12) | 1));
    }
}
