//! A channel's in-flight messages and their deadlines.
//!
//! Every delivery adds an entry with a deadline, and almost every entry is finished long
//! before it. Most deliveries go to their consumer's [`ring::DeliveryRing`], kept in delivery
//! order, where the FIN that follows usually finds its message at the front; the rest
//! (redeliveries of older IDs, TOUCHed messages) go to a [`scattered::ScatteredTable`] found
//! by ID. A FIN looks in its consumer's ring, then in the scattered table, and only for an
//! error (`client does not own message` vs `ID not in flight`) in the other rings.

mod ring;
mod scattered;

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::channel::ConsumerId;
use super::message::{Message, MessageId};
use ring::DeliveryRing;
use scattered::ScatteredTable;

pub use scattered::STALE_SLACK;

/// A delivered message waiting for FIN, REQ, TOUCH or its deadline. A clone shares the body.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// The message as delivered (attempts already counted).
    pub msg: Message,
    /// Who holds it.
    pub owner: ConsumerId,
    /// When it times out.
    pub deadline: Instant,
    /// When it was delivered (TOUCH may not extend past this + `max_msg_timeout`).
    pub delivered_at: Instant,
    /// Whether the body has an allocation of its own, from a TOUCH or a settle pass (see
    /// [`Message::detach_body`]).
    pub detached: bool,
}

/// In-flight messages with their deadlines; see the module comment.
#[derive(Debug, Default)]
pub struct InFlightTable {
    rings: FxHashMap<ConsumerId, DeliveryRing>,
    /// Live entries over all rings.
    in_rings: usize,
    scattered: ScatteredTable,
    /// The `delivered_before` of the last [`InFlightTable::settle`].
    settled_before: Option<Instant>,
}

impl InFlightTable {
    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.in_rings + self.scattered.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any deadline, live or stale, is held: false means there is nothing to expire.
    pub fn has_deadlines(&self) -> bool {
        self.in_rings > 0 || self.scattered.scheduled() > 0
    }

    /// Deadlines held, live or stale (bounded by about twice [`Self::len`] plus slack).
    pub fn scheduled(&self) -> usize {
        self.scattered.scheduled() + self.rings.values().map(DeliveryRing::slots).sum::<usize>()
    }

    /// A copy of the in-flight entry of `id` (its body shared), whoever holds it.
    pub fn get(&self, id: &MessageId) -> Option<InFlight> {
        (self.rings.values())
            .find_map(|r| r.get(id))
            .or_else(|| self.scattered.get(id).cloned())
    }

    /// Records a delivery, due at `entry.deadline`; `timeout` is the consumer's msg_timeout.
    /// (A message delivered twice in one channel, which the protocol cannot do, would simply
    /// be held twice.)
    pub fn insert(&mut self, timeout: Duration, entry: InFlight) {
        let owner = entry.owner;
        let ring = (self.rings.entry(owner)).or_insert_with(|| DeliveryRing::new(owner));
        match ring.try_push(timeout, entry) {
            Ok(()) => self.in_rings += 1,
            Err(entry) => self.scattered.insert(timeout, entry),
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
        if let Some(f) = self.take_from_ring(owner, id) {
            return Ok(Some(f));
        }
        match self.scattered.take_if_owned(id, owner) {
            Ok(None) if self.other_ring_holding(owner, id).is_some() => Err(()),
            found => found,
        }
    }

    /// Gives `id` a new deadline (TOUCH). `decide(entry)` checks the entry (its owner first)
    /// and returns the new deadline, having perhaps updated the entry, or an error to leave it
    /// alone. `None` if `id` is not in flight. A TOUCHed message leaves its ring: its deadline
    /// no longer follows delivery order.
    pub fn reschedule<E>(
        &mut self,
        owner: ConsumerId,
        id: &MessageId,
        decide: impl FnOnce(&mut InFlight) -> Result<Instant, E>,
    ) -> Option<Result<(), E>> {
        let holder = if self.rings.get(&owner).is_some_and(|r| r.contains(id)) {
            Some(owner)
        } else if self.scattered.get(id).is_some() {
            None
        } else {
            Some(self.other_ring_holding(owner, id)?)
        };
        let Some(holder) = holder else {
            return self.scattered.reschedule(id, decide);
        };
        // `decide` sees a copy; the ring's entry goes only once it is accepted.
        let mut f = self.rings.get(&holder)?.get(id)?;
        let at = match decide(&mut f) {
            Ok(at) => at,
            Err(e) => return Some(Err(e)),
        };
        drop(self.take_from_ring(holder, id));
        f.deadline = at;
        self.scattered.insert_touched(f);
        Some(Ok(()))
    }

    /// Removes and returns every message whose deadline has passed at `now`, in deadline
    /// order (then ID), as nsqd's in-flight priority queue requeues them.
    pub fn expire(&mut self, now: Instant) -> Vec<InFlight> {
        let mut expired = self.scattered.expire(now);
        let from_scattered = expired.len();
        for ring in self.rings.values_mut() {
            ring.expire(now, &mut expired);
        }
        self.in_rings -= expired.len() - from_scattered;
        self.rings.retain(|_, r| !r.is_spent());
        expired.sort_unstable_by_key(|a| (a.deadline, a.msg.id));
        expired
    }

    /// Gives each message delivered before `delivered_before`, and not at the previous call's,
    /// a body of its own (see [`crate::broker::settle`]).
    pub fn settle(&mut self, delivered_before: Instant) {
        let since = self.settled_before.replace(delivered_before);
        for ring in self.rings.values_mut() {
            ring.settle(since, delivered_before);
        }
        self.scattered.settle(since, delivered_before);
    }

    /// The consumer `owner` left: its messages stay in flight until FIN'd (they cannot be
    /// now) or timed out, and its ring goes with the last of them.
    pub fn owner_left(&mut self, owner: ConsumerId) {
        if let Some(ring) = self.rings.get_mut(&owner) {
            ring.retired = true;
            if ring.is_spent() {
                self.rings.remove(&owner);
            }
        }
    }

    /// Removes every entry (shutdown flush, channel empty).
    pub fn drain(&mut self) -> impl Iterator<Item = InFlight> + '_ {
        self.in_rings = 0;
        let rings = std::mem::take(&mut self.rings);
        (rings.into_values())
            .flat_map(DeliveryRing::drain)
            .chain(self.scattered.drain())
    }

    fn take_from_ring(&mut self, owner: ConsumerId, id: &MessageId) -> Option<InFlight> {
        let ring = self.rings.get_mut(&owner)?;
        let f = ring.take(id)?;
        self.in_rings -= 1;
        if ring.is_spent() {
            self.rings.remove(&owner);
        }
        Some(f)
    }

    /// Who other than `owner` holds `id` in a ring: an error path's search, O(consumers).
    fn other_ring_holding(&self, owner: ConsumerId, id: &MessageId) -> Option<ConsumerId> {
        (self.rings.iter())
            .find(|(o, r)| **o != owner && r.contains(id))
            .map(|(o, _)| *o)
    }
}

/// Entries for the tables' tests.
#[cfg(test)]
mod test_entries {
    use super::*;
    use crate::broker::message::hex_id;
    use bytes::Bytes;

    /// Message `n` (empty body) held by `owner`, delivered `timeout` before `deadline`.
    pub fn entry(n: u64, owner: ConsumerId, deadline: Instant, timeout: Duration) -> InFlight {
        InFlight {
            msg: Message::new(hex_id(n), 0, Bytes::new()),
            owner,
            deadline,
            delivered_at: deadline - timeout,
            detached: false,
        }
    }

    /// The IDs, in order.
    pub fn ids(v: Vec<InFlight>) -> Vec<MessageId> {
        v.into_iter().map(|e| e.msg.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_entries::ids;
    use super::*;
    use crate::broker::message::hex_id;

    const A: ConsumerId = ConsumerId { shard: 0, conn: 1 };
    const B: ConsumerId = ConsumerId { shard: 1, conn: 2 };
    const T: Duration = Duration::from_secs(60);

    fn entry(n: u64, owner: ConsumerId, deadline: Instant) -> InFlight {
        test_entries::entry(n, owner, deadline, T)
    }

    #[test]
    fn ownership_is_checked_in_rings_and_in_the_scattered_table() {
        let t0 = Instant::now();
        let mut t = InFlightTable::default();
        t.insert(T, entry(5, A, t0 + T));
        t.insert(T, entry(6, B, t0 + T));
        // An older ID for A: a redelivery, kept in the scattered table.
        t.insert(T, entry(1, A, t0 + T));
        assert_eq!(t.len(), 3);
        for n in [5, 1] {
            assert!(t.take_if_owned(&hex_id(n), B).is_err(), "{n}");
        }
        assert!(t.take_if_owned(&hex_id(6), A).is_err());
        assert_eq!(t.len(), 3, "refused takes leave the entries");
        assert!(t.take_if_owned(&hex_id(9), A).unwrap().is_none());
        for (n, owner) in [(5, A), (1, A), (6, B)] {
            assert!(t.take_if_owned(&hex_id(n), owner).unwrap().is_some());
            assert!(t.take_if_owned(&hex_id(n), owner).unwrap().is_none());
        }
        assert!(t.is_empty());
    }

    #[test]
    fn expires_rings_and_touched_messages_together_in_deadline_order() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = InFlightTable::default();
        t.insert(T, entry(1, A, t0 + s(60)));
        t.insert(T, entry(2, B, t0 + s(61)));
        t.insert(T, entry(3, A, t0 + s(62)));
        t.insert(T, entry(4, A, t0 + s(63)));
        let touch = |at: Instant| move |_: &mut InFlight| Ok::<_, ()>(at);
        assert_eq!(t.reschedule(A, &hex_id(3), touch(t0 + s(5))), Some(Ok(())));
        // Touching someone else's message: decide sees the entry and refuses.
        let refuse = |f: &mut InFlight| {
            if f.owner == A {
                Ok(t0)
            } else {
                Err("not owner")
            }
        };
        assert_eq!(t.reschedule(A, &hex_id(2), refuse), Some(Err("not owner")));
        assert_eq!(t.reschedule(A, &hex_id(7), touch(t0)), None);
        assert_eq!(t.len(), 4);
        assert!(t.expire(t0 + s(4)).is_empty());
        assert_eq!(ids(t.expire(t0 + s(60))), vec![hex_id(3), hex_id(1)]);
        assert_eq!(ids(t.expire(t0 + s(100))), vec![hex_id(2), hex_id(4)]);
        assert!(t.is_empty());
        assert_eq!(t.scheduled(), 0);
    }

    #[test]
    fn a_ring_outlives_its_consumer_until_its_last_message_goes() {
        let t0 = Instant::now();
        let mut t = InFlightTable::default();
        t.insert(T, entry(1, A, t0 + T));
        t.insert(T, entry(2, A, t0 + T));
        t.owner_left(A);
        assert!(t.take_if_owned(&hex_id(1), A).unwrap().is_some());
        assert_eq!(t.rings.len(), 1);
        assert_eq!(t.expire(t0 + T).len(), 1);
        assert!(t.rings.is_empty());
        t.insert(T, entry(3, B, t0 + T));
        assert_eq!(ids(t.drain().collect()), vec![hex_id(3)]);
        assert!(t.is_empty() && t.rings.is_empty());
    }

    #[test]
    fn interleaved_consumers_finishing_out_of_order_stay_bounded() {
        let t0 = Instant::now();
        let mut t = InFlightTable::default();
        // Two consumers take turns; each finishes its deliveries late and out of order (every
        // other one lingers for 100 deliveries); every seventh is TOUCHed.
        for n in 0..50_000u64 {
            let owner = if n % 2 == 0 { A } else { B };
            let at = t0 + T + Duration::from_micros(n);
            t.insert(T, entry(n, owner, at));
            if n % 4 < 2 {
                assert!(t.take_if_owned(&hex_id(n), owner).unwrap().is_some());
            } else if n >= 100 && (n - 100) % 4 >= 2 {
                assert!(t.take_if_owned(&hex_id(n - 100), owner).unwrap().is_some());
            }
            if n % 7 == 0 && n % 4 >= 2 {
                let later = at + Duration::from_secs(1);
                t.reschedule(owner, &hex_id(n), |_| Ok::<_, ()>(later));
            }
            assert!(
                t.scheduled() <= 2 * t.len() + STALE_SLACK + 2 * ring::HOLE_SLACK + 4,
                "{} deadlines for {} in flight",
                t.scheduled(),
                t.len()
            );
        }
        let live = t.len();
        assert_eq!(t.expire(t0 + Duration::from_secs(3600)).len(), live);
        assert!(t.is_empty());
    }
}
