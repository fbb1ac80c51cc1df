//! In-flight messages that arrived out of their consumer's delivery order: TOUCHed ones,
//! redeliveries of requeued or timed-out messages (older IDs than what the consumer already
//! holds), and any whose deadline does not follow the consumer's previous one. Most messages
//! never come here (see [`super::ring`]); these are found by ID through a map.
//!
//! Two costs dominate such a table: hashing a value in and out of a map, and forgetting
//! deadlines of finished messages. The entries live in a slab (reused slots, so it stays as
//! large as what is in flight) and the map only holds slot numbers. A deadline names its slot
//! and the slot's generation; finishing a message bumps the generation, so a finished
//! message's deadline is recognised as stale by one array read, no hashing.
//!
//! Deliveries made with one msg_timeout come due in the order they were made: a FIFO per
//! timeout value takes them in O(1). TOUCH deadlines (capped at delivery +
//! `max_msg_timeout`) and a rare out-of-order one go to a binary heap. Stale deadlines at the
//! front of a FIFO are dropped as new ones arrive, and everything is compacted once stale
//! deadlines outnumber live ones, so memory follows what is in flight, not throughput.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::InFlight;
use crate::broker::channel::ConsumerId;
use crate::broker::message::MessageId;

/// Stale deadlines tolerated beyond twice the live count before a full compaction.
pub const STALE_SLACK: usize = 1024;

/// A scheduled deadline: the slot it belongs to and the slot's generation when scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    at: Instant,
    slot: u32,
    generation: u32,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    entry: Option<InFlight>,
}

/// Out-of-order in-flight messages by ID, with their deadlines; see the module comment.
#[derive(Debug, Default)]
pub struct ScatteredTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: FxHashMap<MessageId, u32>,
    /// One FIFO per msg_timeout value, each ordered by deadline.
    fifos: Vec<(Duration, VecDeque<Deadline>)>,
    /// TOUCHed and out-of-order deadlines.
    heap: BinaryHeap<Reverse<Deadline>>,
    scheduled: usize,
}

impl ScatteredTable {
    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Deadlines held, live or stale (bounded by about twice [`Self::len`]).
    pub fn scheduled(&self) -> usize {
        self.scheduled
    }

    /// The in-flight entry of `id`.
    pub fn get(&self, id: &MessageId) -> Option<&InFlight> {
        let slot = *self.index.get(id)?;
        self.slots[slot as usize].entry.as_ref()
    }

    /// Records a delivery, due at `entry.deadline`; `timeout` is the consumer's msg_timeout
    /// (it picks the FIFO). A message already in flight here under the same ID is replaced.
    pub fn insert(&mut self, timeout: Duration, entry: InFlight) {
        let deadline = self.occupy(entry);
        self.schedule_delivery(timeout, deadline);
    }

    /// Records a TOUCHed message: its deadline is its own, not delivery + a timeout.
    pub fn insert_touched(&mut self, entry: InFlight) {
        let deadline = self.occupy(entry);
        self.schedule_own(deadline);
    }

    /// Puts `entry` in a slot and indexes it; returns the deadline to schedule.
    fn occupy(&mut self, entry: InFlight) -> Deadline {
        let at = entry.deadline;
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::default());
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 in flight")
            }
        };
        // One hash operation per entry; a message already in flight under this ID (not
        // reachable through the protocol) gives its slot back.
        if let Some(old) = self.index.insert(entry.msg.id, slot) {
            self.release(old);
        }
        let s = &mut self.slots[slot as usize];
        s.entry = Some(entry);
        Deadline {
            at,
            slot,
            generation: s.generation,
        }
    }

    /// Removes `id` if `owner` holds it: `Ok(None)` if it is not in flight, `Err(())` if
    /// someone else holds it (the entry stays).
    #[allow(clippy::result_unit_err)]
    pub fn take_if_owned(
        &mut self,
        id: &MessageId,
        owner: ConsumerId,
    ) -> Result<Option<InFlight>, ()> {
        // One hash operation per FIN/REQ: the entry found is the one removed.
        let Entry::Occupied(found) = self.index.entry(*id) else {
            return Ok(None);
        };
        let slot = *found.get();
        let held_by = self.slots[slot as usize].entry.as_ref().map(|e| e.owner);
        if held_by != Some(owner) {
            return Err(());
        }
        found.remove();
        Ok(self.release(slot))
    }

    /// Gives `id` a new deadline (TOUCH). Returns the entry for the caller's checks first:
    /// `decide(entry)` returns the new deadline (and may update the entry), or an error to
    /// leave it alone.
    pub fn reschedule<E>(
        &mut self,
        id: &MessageId,
        decide: impl FnOnce(&mut InFlight) -> Result<Instant, E>,
    ) -> Option<Result<(), E>> {
        let slot = *self.index.get(id)?;
        let s = &mut self.slots[slot as usize];
        let entry = s.entry.as_mut()?;
        let at = match decide(entry) {
            Ok(at) => at,
            Err(e) => return Some(Err(e)),
        };
        entry.deadline = at;
        // The old deadline goes stale: it carries the previous generation.
        s.generation = s.generation.wrapping_add(1);
        let deadline = Deadline {
            at,
            slot,
            generation: s.generation,
        };
        self.schedule_own(deadline);
        Some(Ok(()))
    }

    /// Schedules a deadline that does not follow delivery order (a TOUCH's) on the heap.
    fn schedule_own(&mut self, deadline: Deadline) {
        self.heap.push(Reverse(deadline));
        self.scheduled += 1;
        self.compact_if_stale();
    }

    /// Removes and returns every message whose deadline has passed at `now`, earliest first.
    pub fn expire(&mut self, now: Instant) -> Vec<InFlight> {
        let mut due = Vec::new();
        for (_, fifo) in &mut self.fifos {
            while fifo.front().is_some_and(|d| d.at <= now) {
                due.push(fifo.pop_front().expect("front exists"));
            }
        }
        while let Some(&Reverse(d)) = self.heap.peek() {
            if d.at > now {
                break;
            }
            self.heap.pop();
            due.push(d);
        }
        self.scheduled -= due.len();
        self.fifos.retain(|(_, fifo)| !fifo.is_empty());
        let mut expired = Vec::new();
        for d in due {
            if self.is_live(d) {
                let entry = self.release(d.slot).expect("live slot holds an entry");
                self.index.remove(&entry.msg.id);
                expired.push(entry);
            }
        }
        // Several FIFOs and the heap each yield in order, not together: requeue in deadline
        // order (then ID), as nsqd's in-flight priority queue does.
        expired.sort_unstable_by_key(|a| (a.deadline, a.msg.id));
        expired
    }

    /// Gives each message delivered in `[since, delivered_before)` (from the start without
    /// `since`) a body of its own (see [`crate::broker::settle`]). A FIFO is in delivery
    /// order (its deadlines are delivery + its timeout), so only that slice of each FIFO is
    /// looked at; a TOUCHed message (on the heap) was detached by its TOUCH.
    pub fn settle(&mut self, since: Option<Instant>, delivered_before: Instant) {
        let Self { fifos, slots, .. } = self;
        for (timeout, fifo) in fifos.iter() {
            let hi = fifo.partition_point(|d| d.at < delivered_before + *timeout);
            let lo = since.map_or(0, |s| fifo.partition_point(|d| d.at < s + *timeout));
            for d in fifo.range(lo.min(hi)..hi) {
                let s = &mut slots[d.slot as usize];
                if s.generation != d.generation {
                    continue;
                }
                if let Some(e) = &mut s.entry
                    && !e.detached
                {
                    e.msg.detach_body();
                    e.detached = true;
                }
            }
        }
    }

    /// Removes every entry (shutdown flush, channel empty).
    pub fn drain(&mut self) -> impl Iterator<Item = InFlight> + '_ {
        self.index.clear();
        self.free.clear();
        self.fifos.clear();
        self.heap.clear();
        self.scheduled = 0;
        self.slots.drain(..).filter_map(|s| s.entry)
    }

    fn is_live(&self, d: Deadline) -> bool {
        let s = &self.slots[d.slot as usize];
        s.generation == d.generation && s.entry.is_some()
    }

    /// Empties a slot for reuse; its deadlines go stale.
    fn release(&mut self, slot: u32) -> Option<InFlight> {
        let s = &mut self.slots[slot as usize];
        let entry = s.entry.take();
        if entry.is_some() {
            s.generation = s.generation.wrapping_add(1);
            self.free.push(slot);
        }
        entry
    }

    fn schedule_delivery(&mut self, timeout: Duration, deadline: Deadline) {
        let i = match self.fifos.iter().position(|(t, _)| *t == timeout) {
            Some(i) => i,
            None => {
                self.fifos.push((timeout, VecDeque::new()));
                self.fifos.len() - 1
            }
        };
        // Finished messages leave stale deadlines at the front; drop a couple per push so
        // a FIN-heavy channel keeps its FIFO near its in-flight count without compacting.
        for _ in 0..2 {
            match self.fifos[i].1.front() {
                Some(&front) if !self.is_live(front) => {
                    self.fifos[i].1.pop_front();
                    self.scheduled -= 1;
                }
                _ => break,
            }
        }
        let fifo = &mut self.fifos[i].1;
        if fifo.back().is_none_or(|last| last.at <= deadline.at) {
            fifo.push_back(deadline);
        } else {
            self.heap.push(Reverse(deadline));
        }
        self.scheduled += 1;
        self.compact_if_stale();
    }

    /// Once stale deadlines outnumber live ones (plus slack), keeps only live ones (order is
    /// preserved, so FIFOs stay sorted).
    fn compact_if_stale(&mut self) {
        if self.scheduled <= 2 * self.index.len() + STALE_SLACK {
            return;
        }
        let slots = &self.slots;
        let live = |d: &Deadline| {
            let s = &slots[d.slot as usize];
            s.generation == d.generation && s.entry.is_some()
        };
        for (_, fifo) in &mut self.fifos {
            fifo.retain(live);
        }
        self.fifos.retain(|(_, fifo)| !fifo.is_empty());
        self.heap.retain(|Reverse(d)| live(d));
        self.scheduled = self.heap.len() + self.fifos.iter().map(|(_, f)| f.len()).sum::<usize>();
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_entries::ids;
    use super::*;
    use crate::broker::message::hex_id;

    const A: ConsumerId = ConsumerId { shard: 0, conn: 1 };
    const B: ConsumerId = ConsumerId { shard: 1, conn: 2 };

    fn entry(n: u64, owner: ConsumerId, deadline: Instant) -> InFlight {
        super::super::test_entries::entry(n, owner, deadline, Duration::ZERO)
    }

    #[test]
    fn expires_in_deadline_order_across_fifos_and_touches() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = ScatteredTable::default();
        t.insert(s(60), entry(1, A, t0 + s(60)));
        t.insert(s(10), entry(2, A, t0 + s(10)));
        t.insert(s(60), entry(3, B, t0 + s(61)));
        t.insert(s(60), entry(4, A, t0 + s(62)));
        // Out of order within a FIFO (a clock read earlier by the caller): still found.
        t.insert(s(60), entry(5, A, t0 + s(30)));
        assert_eq!(
            t.reschedule(&hex_id(4), |_| Ok::<_, ()>(t0 + s(5))),
            Some(Ok(()))
        );
        assert_eq!(t.len(), 5);
        assert!(t.expire(t0 + s(4)).is_empty());
        assert_eq!(ids(t.expire(t0 + s(10))), vec![hex_id(4), hex_id(2)]);
        assert_eq!(ids(t.expire(t0 + s(60))), vec![hex_id(5), hex_id(1)]);
        assert_eq!(t.len(), 1);
        assert_eq!(ids(t.expire(t0 + s(100))), vec![hex_id(3)]);
        assert_eq!(t.len(), 0);
        assert_eq!(t.scheduled(), 0);
    }

    #[test]
    fn ownership_and_finished_messages_never_expire() {
        let t0 = Instant::now();
        let mut t = ScatteredTable::default();
        t.insert(Duration::ZERO, entry(1, A, t0));
        t.insert(Duration::ZERO, entry(2, A, t0));
        assert!(t.take_if_owned(&hex_id(1), B).is_err());
        assert_eq!(t.len(), 2, "a refused take leaves the entry");
        assert!(t.take_if_owned(&hex_id(1), A).unwrap().is_some());
        assert!(t.take_if_owned(&hex_id(1), A).unwrap().is_none());
        // The freed slot is reused by a new message; the old deadline stays stale.
        t.insert(
            Duration::from_secs(9),
            entry(3, B, t0 + Duration::from_secs(9)),
        );
        assert_eq!(ids(t.expire(t0)), vec![hex_id(2)]);
        assert_eq!(t.get(&hex_id(3)).map(|e| e.owner), Some(B));
        assert_eq!(t.drain().count(), 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn stale_deadlines_stay_bounded_by_the_live_count() {
        let t0 = Instant::now();
        let mut t = ScatteredTable::default();
        let timeout = Duration::from_secs(60);
        // Finished out of delivery order (every other one lingers for 100 deliveries): front
        // trimming alone cannot keep up, compaction must. TOUCH spam adds heap entries.
        for n in 0..50_000u64 {
            let at = t0 + timeout + Duration::from_micros(n);
            t.insert(timeout, entry(n, A, at));
            if n % 2 == 1 {
                assert!(t.take_if_owned(&hex_id(n), A).unwrap().is_some());
            } else if n >= 100 {
                assert!(t.take_if_owned(&hex_id(n - 100), A).unwrap().is_some());
            }
            if n % 7 == 0 {
                let later = at + Duration::from_secs(1);
                t.reschedule(&hex_id(n), |_| Ok::<_, ()>(later));
            }
            assert!(
                t.scheduled() <= 2 * t.len() + STALE_SLACK + 2,
                "{} deadlines for {} in flight",
                t.scheduled(),
                t.len()
            );
        }
        let live = t.len();
        assert_eq!(t.expire(t0 + Duration::from_secs(3600)).len(), live);
        assert_eq!(t.len(), 0);
    }
}
