//! One consumer's in-flight messages, in the order they were delivered.
//!
//! A channel hands its messages out in ID order (the topic numbers them as they are
//! published), a consumer's msg_timeout is fixed once it subscribes, and consumers mostly FIN
//! in the order they received. So one consumer's deliveries, kept in delivery order, are
//! sorted by ID and by deadline at once: a FIN usually takes the front, any other ID is a
//! binary search away, and what is due is at the front. The entries live inline and are
//! added and removed at the two ends, so the memory a message touches is sequential; a table
//! keyed by message ID touches a random cache line per delivery and per FIN, which is what
//! this replaces on the hot path.
//!
//! An entry taken from the middle leaves a hole (its ID stays, for the search; its body is
//! released at once). Holes at the front are dropped as they surface, and all are compacted
//! away once they outnumber the live entries plus [`HOLE_SLACK`], so a consumer that keeps
//! its oldest message while finishing the rest costs memory for what it holds, not for its
//! throughput.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::InFlight;
use crate::broker::channel::ConsumerId;
use crate::broker::message::{Message, MessageId};

/// Holes tolerated beyond the live count before a compaction.
pub(super) const HOLE_SLACK: usize = 64;

/// A ring that has held this many slots keeps them only while at least a quarter is used.
const KEEP_CAPACITY: usize = 64;

/// An entry as the ring keeps it: what [`InFlight`] holds less what the ring itself knows
/// (the owner, the timeout, hence the deadline), 80 bytes instead of 112, since these bytes
/// are the memory each delivery and FIN touches.
#[derive(Debug)]
struct Held {
    id: MessageId,
    body: Bytes,
    timestamp: i64,
    delivered_at: Instant,
    attempts: u16,
    live: bool,
    detached: bool,
}

impl Held {
    fn new(f: InFlight) -> Self {
        Held {
            id: f.msg.id,
            body: f.msg.body,
            timestamp: f.msg.timestamp,
            delivered_at: f.delivered_at,
            attempts: f.msg.attempts,
            live: true,
            detached: f.detached,
        }
    }

    /// The entry as an [`InFlight`] of `owner` with `timeout`, with `body`.
    fn to_in_flight(&self, owner: ConsumerId, timeout: Duration, body: Bytes) -> InFlight {
        InFlight {
            msg: Message {
                id: self.id,
                timestamp: self.timestamp,
                attempts: self.attempts,
                body,
            },
            owner,
            deadline: self.delivered_at + timeout,
            delivered_at: self.delivered_at,
            detached: self.detached,
        }
    }
}

/// One consumer's in-flight messages in delivery order; see the module comment.
#[derive(Debug)]
pub(super) struct DeliveryRing {
    owner: ConsumerId,
    entries: VecDeque<Held>,
    /// Taken entries still in `entries`; the front entry is never one.
    holes: usize,
    /// The msg_timeout of every entry (a delivery with another goes elsewhere).
    timeout: Duration,
    /// The consumer left: the ring goes once its last entry does.
    pub(super) retired: bool,
}

impl DeliveryRing {
    /// An empty ring for `owner`'s deliveries.
    pub(super) fn new(owner: ConsumerId) -> Self {
        DeliveryRing {
            owner,
            entries: VecDeque::new(),
            holes: 0,
            timeout: Duration::ZERO,
            retired: false,
        }
    }

    /// Live entries.
    pub(super) fn live(&self) -> usize {
        self.entries.len() - self.holes
    }

    /// Entries and holes held.
    pub(super) fn slots(&self) -> usize {
        self.entries.len()
    }

    /// Whether the ring can go: its consumer left and nothing is held.
    pub(super) fn is_spent(&self) -> bool {
        self.retired && self.entries.is_empty()
    }

    /// Appends `f` if it keeps the ring in ID and deadline order under one timeout;
    /// otherwise hands it back.
    pub(super) fn try_push(&mut self, timeout: Duration, f: InFlight) -> Result<(), InFlight> {
        let fits = f.owner == self.owner && f.deadline == f.delivered_at + timeout;
        match self.entries.back() {
            _ if !fits => return Err(f),
            None => self.timeout = timeout,
            Some(last) => {
                if timeout != self.timeout
                    || last.id >= f.msg.id
                    || last.delivered_at > f.delivered_at
                {
                    return Err(f);
                }
            }
        }
        self.entries.push_back(Held::new(f));
        Ok(())
    }

    /// Where the live entry `id` is: the front first, then a binary search (IDs are 16
    /// fixed-width hex digits, so byte order is numeric order).
    fn position(&self, id: &MessageId) -> Option<usize> {
        let front = self.entries.front()?;
        if front.id == *id {
            return Some(0);
        }
        let last = self.entries.back()?;
        if *id < front.id || *id > last.id {
            return None;
        }
        let i = self.entries.binary_search_by(|h| h.id.cmp(id)).ok()?;
        self.entries[i].live.then_some(i)
    }

    /// Whether `id` is in flight here.
    pub(super) fn contains(&self, id: &MessageId) -> bool {
        self.position(id).is_some()
    }

    /// A copy of the live entry `id` (its body shared).
    pub(super) fn get(&self, id: &MessageId) -> Option<InFlight> {
        let h = &self.entries[self.position(id)?];
        Some(h.to_in_flight(self.owner, self.timeout, h.body.clone()))
    }

    /// Removes and returns the live entry `id`.
    pub(super) fn take(&mut self, id: &MessageId) -> Option<InFlight> {
        let i = self.position(id)?;
        let taken = self.vacate(i);
        if i == 0 {
            self.entries.pop_front();
            self.drop_front_holes();
        } else {
            self.holes += 1;
            if self.holes > self.live() + HOLE_SLACK {
                self.entries.retain(|h| h.live);
                self.holes = 0;
            }
        }
        Some(taken)
    }

    /// Moves every live entry due at `now` to `out`, earliest first.
    pub(super) fn expire(&mut self, now: Instant, out: &mut Vec<InFlight>) {
        while let Some(front) = self.entries.front() {
            if front.delivered_at + self.timeout > now {
                break;
            }
            if front.live {
                out.push(self.vacate(0));
            } else {
                self.holes -= 1;
            }
            self.entries.pop_front();
        }
        self.drop_front_holes();
        // Called periodically: a burst's slots are given back once the ring has shrunk.
        let cap = self.entries.capacity();
        if cap > KEEP_CAPACITY && self.entries.len() * 4 < cap {
            self.entries
                .shrink_to((self.entries.len() * 2).max(KEEP_CAPACITY));
        }
    }

    /// Gives each live entry delivered in `[since, before)` (from the start without `since`)
    /// a body of its own (see [`crate::broker::settle`]).
    pub(super) fn settle(&mut self, since: Option<Instant>, before: Instant) {
        let hi = self.entries.partition_point(|h| h.delivered_at < before);
        let lo = since.map_or(0, |s| self.entries.partition_point(|h| h.delivered_at < s));
        for h in self.entries.range_mut(lo.min(hi)..hi) {
            if h.live && !h.detached {
                h.body = Bytes::copy_from_slice(&h.body);
                h.detached = true;
            }
        }
    }

    /// Removes every live entry.
    pub(super) fn drain(self) -> impl Iterator<Item = InFlight> {
        let (owner, timeout) = (self.owner, self.timeout);
        (self.entries.into_iter())
            .filter(|h| h.live)
            .map(move |mut h| {
                let body = std::mem::take(&mut h.body);
                h.to_in_flight(owner, timeout, body)
            })
    }

    /// Takes entry `i` out, leaving a hole with its ID and delivery time; the body goes with
    /// the entry returned.
    fn vacate(&mut self, i: usize) -> InFlight {
        let h = &mut self.entries[i];
        h.live = false;
        let body = std::mem::take(&mut h.body);
        h.to_in_flight(self.owner, self.timeout, body)
    }

    fn drop_front_holes(&mut self) {
        while self.entries.front().is_some_and(|h| !h.live) {
            self.entries.pop_front();
            self.holes -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::channel::ConsumerId;
    use crate::broker::message::hex_id;
    use bytes::Bytes;

    const A: ConsumerId = ConsumerId { shard: 0, conn: 1 };
    const T: Duration = Duration::from_secs(60);

    fn entry(n: u64, delivered_at: Instant) -> InFlight {
        InFlight {
            msg: Message::new(hex_id(n), 0, Bytes::from(vec![n as u8; 4])),
            owner: A,
            deadline: delivered_at + T,
            delivered_at,
            detached: false,
        }
    }

    #[test]
    fn only_deliveries_in_id_and_deadline_order_under_one_timeout_are_taken() {
        let t0 = Instant::now();
        let mut r = DeliveryRing::new(A);
        assert!(r.try_push(T, entry(10, t0)).is_ok());
        assert!(r.try_push(T, entry(20, t0)).is_ok());
        assert!(r.try_push(T, entry(15, t0)).is_err(), "an older ID");
        assert!(r.try_push(T, entry(20, t0)).is_err(), "the same ID");
        let earlier = entry(30, t0 - Duration::from_secs(1));
        assert!(r.try_push(T, earlier).is_err(), "an earlier deadline");
        assert!(r.try_push(T * 2, entry(40, t0)).is_err(), "another timeout");
        assert_eq!(r.live(), 2);
    }

    #[test]
    fn takes_from_front_and_middle_and_finds_nothing_twice() {
        let t0 = Instant::now();
        let mut r = DeliveryRing::new(A);
        for n in 1..=5 {
            r.try_push(T, entry(n, t0)).unwrap();
        }
        let got = r.take(&hex_id(3)).expect("middle");
        assert_eq!((got.msg.id, &got.msg.body[..]), (hex_id(3), &[3u8; 4][..]));
        assert!(r.take(&hex_id(3)).is_none(), "a hole is not in flight");
        assert!(r.get(&hex_id(3)).is_none());
        assert!(r.take(&hex_id(9)).is_none());
        assert_eq!(r.take(&hex_id(1)).map(|f| f.msg.id), Some(hex_id(1)));
        // Taking 2 surfaces the hole at 3: the front is live again.
        assert!(r.take(&hex_id(2)).is_some());
        assert_eq!((r.slots(), r.live()), (2, 2));
        assert_eq!(r.get(&hex_id(4)).map(|f| f.msg.id), Some(hex_id(4)));
        assert_eq!(r.drain().count(), 2);
    }

    #[test]
    fn expires_from_the_front_in_deadline_order_skipping_holes() {
        let t0 = Instant::now();
        let mut r = DeliveryRing::new(A);
        for n in 0..6u64 {
            r.try_push(T, entry(n, t0 + Duration::from_secs(n)))
                .unwrap();
        }
        r.take(&hex_id(1)).unwrap();
        let mut out = Vec::new();
        r.expire(t0 + T + Duration::from_secs(3), &mut out);
        let ids: Vec<_> = out.iter().map(|f| f.msg.id).collect();
        assert_eq!(ids, vec![hex_id(0), hex_id(2), hex_id(3)]);
        assert_eq!((r.slots(), r.live()), (2, 2));
    }

    #[test]
    fn holes_stay_bounded_while_the_oldest_message_is_kept() {
        let t0 = Instant::now();
        let mut r = DeliveryRing::new(A);
        r.try_push(T, entry(0, t0)).unwrap();
        for n in 1..100_000u64 {
            r.try_push(T, entry(n, t0)).unwrap();
            assert!(r.take(&hex_id(n)).is_some());
            assert!(r.slots() <= 2 * r.live() + HOLE_SLACK + 1, "{}", r.slots());
        }
        assert_eq!(r.get(&hex_id(0)).map(|f| f.msg.id), Some(hex_id(0)));
    }

    #[test]
    fn settles_each_delivery_once_by_delivery_time() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut r = DeliveryRing::new(A);
        for n in 0..4u64 {
            r.try_push(T, entry(n, at(n))).unwrap();
        }
        r.settle(None, at(2));
        let detached: Vec<bool> = (0..4)
            .map(|n| r.get(&hex_id(n)).unwrap().detached)
            .collect();
        assert_eq!(detached, vec![true, true, false, false]);
        r.settle(Some(at(2)), at(3));
        assert!(r.get(&hex_id(2)).unwrap().detached);
        assert!(!r.get(&hex_id(3)).unwrap().detached);
    }
}
