//! A channel: its queue, its consumers with their RDY counts, the in-flight table with
//! timeouts, and deferred (REQ with delay) messages. Lives on its topic's owner shard.
//!
//! Delivery is push-based: whenever a message or RDY capacity appears, [`Channel::pump`] hands
//! messages to ready consumers in turn through a sink supplied by the shard, which writes frames
//! to a local connection or batches them to another core.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::in_flight::{InFlight, InFlightTable};
use super::latency::{LatencyConfig, LatencyWindow};
use super::message::{Message, MessageId};
use super::settle::SettlingQueue;
use crate::storage::backlog::DiskBacklog;

/// A connection anywhere in the process: the core it lives on and its process-wide ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsumerId {
    /// Shard (core index) owning the connection.
    pub shard: usize,
    /// Process-wide connection ID.
    pub conn: u64,
}

/// What a channel knows of a subscribed client, for delivery and `/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Where to deliver.
    pub id: ConsumerId,
    /// IDENTIFY `client_id` (or the remote host before IDENTIFY).
    pub client_id: String,
    /// IDENTIFY `hostname`.
    pub hostname: String,
    /// IDENTIFY `user_agent`.
    pub user_agent: String,
    /// `ip:port` of the peer.
    pub remote_address: String,
    /// Unix seconds when it connected.
    pub connect_ts: i64,
    /// In-flight timeout for this client.
    pub msg_timeout: Duration,
    /// IDENTIFY `sample_rate` (0 = all).
    pub sample_rate: i32,
    /// How close the client is to this node (only set with the topology-aware-consumption
    /// experiment; otherwise every consumer is `Global`).
    pub locality: Locality,
}

/// A consumer's topology relative to this nsqd (`--topology-zone`/`--topology-region` against
/// the client's IDENTIFY values). With nsqd's `topology-aware-consumption` experiment, ready
/// consumers in the same zone get messages first, then those in the same region, then the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Locality {
    /// Same zone as this node.
    Zone,
    /// Same region, other zone.
    Region,
    /// Anywhere (and everyone without the experiment).
    #[default]
    Global,
}

impl Locality {
    /// Classifies a client: zone match first, then region; empty values never match.
    pub fn of(server_zone: &str, server_region: &str, zone: &str, region: &str) -> Self {
        if !server_zone.is_empty() && zone == server_zone {
            Locality::Zone
        } else if !server_region.is_empty() && region == server_region {
            Locality::Region
        } else {
            Locality::Global
        }
    }
}

/// Per-consumer delivery state.
#[derive(Debug)]
pub struct Consumer {
    /// Identity and settings.
    pub info: ConsumerInfo,
    /// Current RDY.
    pub ready_count: u64,
    /// Messages sent and not yet FIN/REQ/timed out.
    pub in_flight_count: u64,
    /// Messages delivered.
    pub message_count: u64,
    /// FINs.
    pub finish_count: u64,
    /// REQs.
    pub requeue_count: u64,
}

impl Consumer {
    fn is_ready(&self) -> bool {
        self.ready_count > 0 && self.in_flight_count < self.ready_count
    }
}

/// Why a FIN/REQ/TOUCH failed (nsqd's texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlightError {
    /// `ID not in flight`
    NotInFlight,
    /// `client does not own message`
    NotOwner,
}

impl InFlightError {
    /// nsqd's wording, used after `FIN <id> failed `.
    pub fn text(self) -> &'static str {
        match self {
            InFlightError::NotInFlight => "ID not in flight",
            InFlightError::NotOwner => "client does not own message",
        }
    }
}

/// Counters shown in `/stats`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChannelCounters {
    /// Messages put into the channel (including deferred).
    pub message_count: u64,
    /// REQs.
    pub requeue_count: u64,
    /// In-flight timeouts.
    pub timeout_count: u64,
}

/// One channel of a topic.
#[derive(Debug)]
pub struct Channel {
    /// Channel name.
    pub name: String,
    /// `#ephemeral`: overflow is dropped and the channel goes away with its last consumer.
    pub ephemeral: bool,
    /// Paused channels deliver to no client.
    pub paused: bool,
    /// Counters for `/stats`.
    pub counters: ChannelCounters,
    /// Queued messages, with which of them may still share a client's read buffer (see
    /// `settle`).
    queue: SettlingQueue<Message>,
    in_flight: InFlightTable,
    deferred: BinaryHeap<Reverse<(Instant, u64)>>,
    deferred_msgs: FxHashMap<u64, Message>,
    deferred_seq: u64,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    /// The closest locality among the consumers: a ready consumer that has it is the pick,
    /// without looking at the rest (with everyone `Global`, the first ready one).
    closest: Locality,
    /// Set once a consumer has joined: an ephemeral channel is deleted when the last one leaves.
    had_consumer: bool,
    /// Overflow queue on disk (non-ephemeral channels with a data path).
    disk: Option<DiskBacklog>,
    /// `--mem-queue-size` seen by the last put, for requeues and timeouts.
    mem_limit: usize,
    /// E2E processing latency of FINished messages, when percentiles are configured.
    e2e: Option<LatencyWindow>,
}

impl Channel {
    /// An empty channel.
    pub fn new(name: &str) -> Self {
        Channel {
            name: name.to_string(),
            ephemeral: crate::protocol::names::is_ephemeral(name),
            paused: false,
            counters: ChannelCounters::default(),
            queue: SettlingQueue::new(),
            in_flight: InFlightTable::default(),
            deferred: BinaryHeap::new(),
            deferred_msgs: FxHashMap::default(),
            deferred_seq: 0,
            consumers: Vec::new(),
            next_consumer: 0,
            closest: Locality::Global,
            had_consumer: false,
            disk: None,
            mem_limit: usize::MAX,
            e2e: None,
        }
    }

    /// Starts tracking E2E processing latency (publish to FIN) as `config` asks.
    pub fn track_latency(&mut self, config: Arc<LatencyConfig>) {
        self.e2e = Some(LatencyWindow::new(config, Instant::now()));
    }

    /// The E2E latency window, when tracked.
    pub fn latency(&self) -> Option<&LatencyWindow> {
        self.e2e.as_ref()
    }

    /// Gives the channel its disk queue: overflow goes there instead of being refused.
    pub fn attach_disk(&mut self, disk: DiskBacklog) {
        self.disk = Some(disk);
    }

    /// Messages waiting in memory and on disk (excludes in-flight and deferred).
    pub fn depth(&self) -> usize {
        self.queue.len() + self.backend_depth() as usize
    }

    /// Messages in the disk queue (nsqd's `backend_depth`).
    pub fn backend_depth(&self) -> i64 {
        self.disk.as_ref().map_or(0, |d| d.depth().max(0))
    }

    /// Messages delivered and not yet finished.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// Messages waiting for their REQ delay or DPUB deferral.
    pub fn deferred_count(&self) -> usize {
        self.deferred_msgs.len()
    }

    /// Subscribed consumers.
    pub fn consumers(&self) -> &[Consumer] {
        &self.consumers
    }

    /// Whether putting `n` messages now would write any of them to this channel's disk queue.
    pub fn needs_disk(&self, n: usize, mem_queue_size: usize) -> bool {
        self.disk
            .as_ref()
            .is_some_and(|d| d.durable() || self.queue.len() + n > mem_queue_size)
    }

    /// Whether `n` more messages fit under `mem_queue_size` (ephemeral channels always accept
    /// and drop the overflow).
    pub fn has_room(&self, n: usize, mem_queue_size: usize) -> bool {
        self.ephemeral || self.disk.is_some() || self.queue.len() + n <= mem_queue_size
    }

    /// Puts a message in the channel: deferred until `defer_until`, or queued.
    /// An ephemeral channel drops what exceeds `mem_queue_size`, as nsqd does.
    pub fn put(&mut self, msg: Message, defer_until: Option<Instant>, mem_queue_size: usize) {
        self.counters.message_count += 1;
        self.mem_limit = mem_queue_size;
        match defer_until {
            Some(due) => self.defer(msg, due),
            None => self.enqueue(msg),
        }
    }

    /// Memory while under the limit, then disk; ephemeral overflow is dropped as in nsqd,
    /// unless a consumer is waiting for a message: nsqd's channel queue is a Go channel, and
    /// a full (or, with `--mem-queue-size=0`, zero-capacity) one still hands a message to a
    /// client's pump blocked on it, one per ready client.
    fn enqueue(&mut self, msg: Message) {
        let limit = match &self.disk {
            Some(d) if d.durable() => 0,
            _ => self.mem_limit,
        };
        if self.queue.len() < limit {
            self.queue.push_back(msg);
        } else if let Some(disk) = &self.disk {
            disk.push(&msg);
        } else if !self.ephemeral || self.queue.len() < self.waiting_consumers() {
            self.queue.push_back(msg);
        }
    }

    /// Gives each message queued or in flight since before the previous pass a body of its
    /// own (see [`crate::broker::settle`]); `delivered_before` is this pass's time less
    /// [`crate::broker::settle::SETTLE_EVERY`].
    pub fn settle(&mut self, delivered_before: Instant) {
        self.queue.settle();
        self.in_flight.settle(delivered_before);
    }

    /// Consumers that would take a message right now (none while paused).
    fn waiting_consumers(&self) -> usize {
        if self.paused {
            return 0;
        }
        self.consumers.iter().filter(|c| c.is_ready()).count()
    }

    /// Shutdown: queue, in-flight and deferred messages go to the disk queue (attempts kept,
    /// deferral lost), as nsqd's channel close does.
    pub fn flush_to_disk(&mut self) {
        let Some(disk) = &self.disk else { return };
        for msg in self.queue.drain() {
            disk.push(&msg);
        }
        for f in self.in_flight.drain() {
            disk.push(&f.msg);
        }
        for (_, msg) in self.deferred_msgs.drain() {
            disk.push(&msg);
        }
        self.deferred.clear();
        for c in &mut self.consumers {
            c.in_flight_count = 0;
        }
    }

    fn defer(&mut self, msg: Message, due: Instant) {
        self.deferred_seq += 1;
        self.deferred.push(Reverse((due, self.deferred_seq)));
        self.deferred_msgs.insert(self.deferred_seq, msg);
    }

    /// Adds a consumer (RDY starts at 0). Returns false if `max_consumers` (non-zero) is reached.
    pub fn add_consumer(&mut self, info: ConsumerInfo, max_consumers: usize) -> bool {
        if max_consumers > 0 && self.consumers.len() >= max_consumers {
            return false;
        }
        self.had_consumer = true;
        self.closest = self.closest.min(info.locality);
        self.consumers.push(Consumer {
            info,
            ready_count: 0,
            in_flight_count: 0,
            message_count: 0,
            finish_count: 0,
            requeue_count: 0,
        });
        true
    }

    /// Removes a consumer; its in-flight messages wait for their timeout, as in nsqd.
    pub fn remove_consumer(&mut self, id: ConsumerId) {
        self.consumers.retain(|c| c.info.id != id);
        self.in_flight.owner_left(id);
        self.closest = (self.consumers.iter())
            .map(|c| c.info.locality)
            .min()
            .unwrap_or(Locality::Global);
    }

    /// An ephemeral channel whose last consumer left is deleted.
    pub fn should_delete(&self) -> bool {
        self.ephemeral && self.had_consumer && self.consumers.is_empty()
    }

    fn consumer_mut(&mut self, id: ConsumerId) -> Option<&mut Consumer> {
        self.consumers.iter_mut().find(|c| c.info.id == id)
    }

    /// Sets a consumer's RDY count.
    pub fn set_ready(&mut self, id: ConsumerId, count: u64) {
        if let Some(c) = self.consumer_mut(id) {
            c.ready_count = count;
        }
    }

    fn take_owned(
        &mut self,
        id: ConsumerId,
        msg_id: &MessageId,
    ) -> Result<InFlight, InFlightError> {
        let f = self
            .in_flight
            .take_if_owned(msg_id, id)
            .map_err(|()| InFlightError::NotOwner)?
            .ok_or(InFlightError::NotInFlight)?;
        if let Some(c) = self.consumer_mut(id) {
            c.in_flight_count = c.in_flight_count.saturating_sub(1);
        }
        Ok(f)
    }

    /// FIN: the message is done. With E2E latency tracked, records now − the message's
    /// publish timestamp, as nsqd's `FinishMessage` does.
    pub fn finish(&mut self, id: ConsumerId, msg_id: &MessageId) -> Result<(), InFlightError> {
        let f = self.take_owned(id, msg_id)?;
        if let Some(c) = self.consumer_mut(id) {
            c.finish_count += 1;
        }
        if let Some(e2e) = &mut self.e2e {
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            e2e.record(f.msg.timestamp, now_ns, Instant::now());
        }
        Ok(())
    }

    /// REQ: back to the queue now, or deferred by `delay`.
    pub fn requeue(
        &mut self,
        id: ConsumerId,
        msg_id: &MessageId,
        delay: Duration,
        now: Instant,
    ) -> Result<(), InFlightError> {
        let f = self.take_owned(id, msg_id)?;
        self.counters.requeue_count += 1;
        if let Some(c) = self.consumer_mut(id) {
            c.requeue_count += 1;
        }
        let mut msg = f.msg;
        // A requeued message stays: deferred, or redelivered and perhaps requeued again, over
        // and over faster than the settle pass could see it queued or in flight twice.
        if !f.detached {
            msg.detach_body();
        }
        if delay.is_zero() {
            self.enqueue(msg);
        } else {
            self.defer(msg, now + delay);
        }
        Ok(())
    }

    /// TOUCH: a new deadline of now + the client's msg_timeout, capped at delivery +
    /// `max_msg_timeout`. A touched message is one a consumer keeps for long: the first TOUCH
    /// detaches its body.
    pub fn touch(
        &mut self,
        id: ConsumerId,
        msg_id: &MessageId,
        now: Instant,
        max_msg_timeout: Duration,
    ) -> Result<(), InFlightError> {
        let timeout = self
            .consumers
            .iter()
            .find(|c| c.info.id == id)
            .map(|c| c.info.msg_timeout)
            .unwrap_or(max_msg_timeout);
        self.in_flight
            .reschedule(id, msg_id, |f| {
                if f.owner != id {
                    return Err(InFlightError::NotOwner);
                }
                if !f.detached {
                    f.msg.detach_body();
                    f.detached = true;
                }
                Ok((now + timeout).min(f.delivered_at + max_msg_timeout))
            })
            .unwrap_or(Err(InFlightError::NotInFlight))
    }

    /// Moves expired in-flight messages back to the queue and due deferred messages into it.
    /// Returns true if anything moved.
    pub fn process_timers(&mut self, now: Instant) -> bool {
        if !self.in_flight.has_deadlines() && self.deferred.is_empty() {
            // No deadline of any kind: an idle channel costs the periodic scan one check.
            return false;
        }
        let mut moved = false;
        for f in self.in_flight.expire(now) {
            self.counters.timeout_count += 1;
            if let Some(c) = self.consumer_mut(f.owner) {
                c.in_flight_count = c.in_flight_count.saturating_sub(1);
            }
            self.enqueue(f.msg);
            moved = true;
        }
        while let Some(Reverse((due, seq))) = self.deferred.peek().copied() {
            if due > now {
                break;
            }
            self.deferred.pop();
            if let Some(msg) = self.deferred_msgs.remove(&seq) {
                self.enqueue(msg);
                moved = true;
            }
        }
        moved
    }

    /// Hands queued messages to ready consumers in turn until the queue is empty or nobody is
    /// ready. `sink(consumer, message, rdy_used_up)` sends the frame (`rdy_used_up`: this
    /// delivery fills the consumer's RDY, so its output should not wait for more);
    /// `roll(sample_rate)` decides sampling.
    pub fn pump(
        &mut self,
        now: Instant,
        roll: &mut impl FnMut(i32) -> bool,
        sink: &mut impl FnMut(ConsumerId, &Message, bool),
    ) -> usize {
        if self.paused || self.consumers.is_empty() {
            return 0;
        }
        let mut delivered = 0;
        while !self.queue.is_empty() || self.disk.as_ref().is_some_and(DiskBacklog::has_ready) {
            let Some(idx) = self.next_ready() else { break };
            let Some(mut msg) = self
                .queue
                .pop_front()
                .or_else(|| self.disk.as_ref().and_then(DiskBacklog::pop))
            else {
                break;
            };
            let consumer = &mut self.consumers[idx];
            if consumer.info.sample_rate > 0 && !roll(consumer.info.sample_rate) {
                continue;
            }
            msg.attempts = msg.attempts.wrapping_add(1);
            consumer.in_flight_count += 1;
            consumer.message_count += 1;
            let id = consumer.info.id;
            let timeout = consumer.info.msg_timeout;
            let deadline = now + timeout;
            sink(id, &msg, !consumer.is_ready());
            self.in_flight.insert(
                timeout,
                InFlight {
                    msg,
                    owner: id,
                    deadline,
                    delivered_at: now,
                    detached: false,
                },
            );
            delivered += 1;
        }
        delivered
    }

    /// Round-robin over ready consumers, starting after the last one served; the closest
    /// locality wins (all are `Global` unless topology-aware consumption is on).
    fn next_ready(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        let mut best: Option<(Locality, usize)> = None;
        // Runs once per delivery: the index wraps by comparison, not `%` (a division per
        // consumer looked at was a quarter of this loop's time).
        let mut idx = self.next_consumer.min(n);
        for _ in 0..n {
            if idx >= n {
                idx = 0;
            }
            let c = &self.consumers[idx];
            if c.is_ready() && best.is_none_or(|(l, _)| c.info.locality < l) {
                best = Some((c.info.locality, idx));
                if c.info.locality == self.closest {
                    break;
                }
            }
            idx += 1;
        }
        let (_, idx) = best?;
        self.next_consumer = if idx + 1 >= n { 0 } else { idx + 1 };
        Some(idx)
    }

    /// Drops queued, in-flight and deferred messages and resets consumers' in-flight counts
    /// (nsqd's channel empty).
    pub fn empty(&mut self) {
        self.queue.clear();
        self.in_flight.drain().for_each(drop);
        self.deferred.clear();
        self.deferred_msgs.clear();
        for c in &mut self.consumers {
            c.in_flight_count = 0;
        }
        if let Some(disk) = &self.disk {
            disk.empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn info(conn: u64) -> ConsumerInfo {
        ConsumerInfo {
            id: ConsumerId { shard: 0, conn },
            client_id: String::new(),
            hostname: String::new(),
            user_agent: String::new(),
            remote_address: String::new(),
            connect_ts: 0,
            msg_timeout: Duration::from_secs(60),
            sample_rate: 0,
            locality: Locality::Global,
        }
    }

    fn msg(n: u8) -> Message {
        let mut id = *b"000000000000000_";
        id[15] = b'0' + n;
        Message::new(id, 0, Bytes::from(vec![n]))
    }

    fn pump_all(ch: &mut Channel, now: Instant) -> Vec<(u64, Message)> {
        let mut out = Vec::new();
        ch.pump(now, &mut |_| true, &mut |c, m, _| {
            out.push((c.conn, m.clone()))
        });
        out
    }

    /// A message's body is a slice of `block` until a settle pass gives it its own.
    fn shares(block: &Bytes, m: &Message) -> bool {
        block.as_ptr_range().contains(&m.body.as_ptr())
    }

    #[test]
    fn messages_that_stay_queued_or_in_flight_get_bodies_of_their_own() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let block = Bytes::from(vec![9u8; 4096]);
        let sliced = |n: u8| {
            let mut m = msg(n);
            m.body = block.slice(n as usize..n as usize + 8);
            m
        };
        let mut ch = Channel::new("c");
        ch.add_consumer(info(1), 0);
        for n in 0..4 {
            ch.put(sliced(n), None, 100);
        }
        ch.set_ready(ConsumerId { shard: 0, conn: 1 }, 1);
        let delivered = pump_all(&mut ch, t0).remove(0).1;
        // First pass (at t0 + 1 s): everything is new.
        ch.settle(t0 - ms(1));
        assert!(ch.queue.iter().all(|m| shares(&block, m)));
        let held = |ch: &Channel| ch.in_flight.get(&delivered.id).unwrap().msg;
        assert!(shares(&block, &held(&ch)));
        // A message queued after it waits for the next pass.
        ch.put(sliced(4), None, 100);
        ch.settle(t0 + ms(1));
        let queued: Vec<bool> = ch.queue.iter().map(|m| shares(&block, m)).collect();
        assert_eq!(queued, [false, false, false, true]);
        assert_eq!(&ch.queue[0].body[..], &[9u8; 8][..], "same bytes");
        assert!(
            !shares(&block, &held(&ch)),
            "in flight since before the pass"
        );
        ch.settle(t0 + ms(2));
        assert!(ch.queue.iter().all(|m| !shares(&block, m)));
    }

    /// A consumer REQing at once, over and over, would keep a message moving between the
    /// queue and flight faster than the settle pass sees it twice.
    #[test]
    fn a_requeued_message_gets_a_body_of_its_own() {
        let now = Instant::now();
        let block = Bytes::from(vec![5u8; 1024]);
        let mut m = msg(1);
        m.body = block.slice(10..20);
        let mut ch = Channel::new("c");
        ch.add_consumer(info(1), 0);
        ch.put(m, None, 100);
        ch.set_ready(ConsumerId { shard: 0, conn: 1 }, 1);
        let id = pump_all(&mut ch, now).remove(0).1.id;
        ch.requeue(ConsumerId { shard: 0, conn: 1 }, &id, Duration::ZERO, now)
            .unwrap();
        assert!(!shares(&block, &ch.queue[0]));
        assert_eq!(&ch.queue[0].body[..], &[5u8; 10][..]);
    }

    #[test]
    fn rdy_limits_and_round_robin() {
        let now = Instant::now();
        let mut ch = Channel::new("c");
        ch.add_consumer(info(1), 0);
        ch.add_consumer(info(2), 0);
        for i in 0..5 {
            ch.put(msg(i), None, 100);
        }
        assert!(pump_all(&mut ch, now).is_empty(), "RDY 0 gets nothing");
        ch.set_ready(ConsumerId { shard: 0, conn: 1 }, 1);
        ch.set_ready(ConsumerId { shard: 0, conn: 2 }, 2);
        let got = pump_all(&mut ch, now);
        assert_eq!(got.len(), 3);
        assert_eq!(got.iter().filter(|(c, _)| *c == 1).count(), 1);
        assert!(got.iter().all(|(_, m)| m.attempts == 1));
        assert_eq!(ch.depth(), 2);
        assert_eq!(ch.in_flight_count(), 3);
    }

    #[test]
    fn fin_req_touch_and_ownership() {
        let now = Instant::now();
        let mut ch = Channel::new("c");
        let a = ConsumerId { shard: 0, conn: 1 };
        let b = ConsumerId { shard: 0, conn: 2 };
        ch.add_consumer(info(1), 0);
        ch.add_consumer(info(2), 0);
        ch.set_ready(a, 10);
        ch.put(msg(1), None, 10);
        let got = pump_all(&mut ch, now);
        let id = got[0].1.id;
        assert_eq!(ch.finish(b, &id), Err(InFlightError::NotOwner));
        assert_eq!(ch.touch(a, &id, now, Duration::from_secs(900)), Ok(()));
        assert_eq!(ch.requeue(a, &id, Duration::ZERO, now), Ok(()));
        assert_eq!(ch.finish(a, &id), Err(InFlightError::NotInFlight));
        let again = pump_all(&mut ch, now);
        assert_eq!(again[0].1.attempts, 2, "attempts count redeliveries");
        assert!(ch.finish(a, &id).is_ok());
        assert_eq!(ch.counters.requeue_count, 1);
    }

    #[test]
    fn timeout_redelivers_and_deferred_waits() {
        let now = Instant::now();
        let mut ch = Channel::new("c");
        let mut i = info(1);
        i.msg_timeout = Duration::from_secs(1);
        ch.add_consumer(i, 0);
        ch.set_ready(ConsumerId { shard: 0, conn: 1 }, 10);
        ch.put(msg(1), None, 10);
        ch.put(msg(2), Some(now + Duration::from_secs(5)), 10);
        assert_eq!(pump_all(&mut ch, now).len(), 1);
        assert_eq!(ch.deferred_count(), 1);
        assert!(!ch.process_timers(now + Duration::from_millis(500)));
        assert!(ch.process_timers(now + Duration::from_secs(2)));
        assert_eq!(ch.counters.timeout_count, 1);
        assert_eq!(
            pump_all(&mut ch, now + Duration::from_secs(2))[0]
                .1
                .attempts,
            2
        );
        assert!(ch.process_timers(now + Duration::from_secs(6)));
        assert_eq!(ch.deferred_count(), 0);
    }

    #[test]
    fn ephemeral_drops_overflow_and_deletes_after_last_consumer() {
        let mut ch = Channel::new("c#ephemeral");
        for i in 0..5 {
            ch.put(msg(i), None, 2);
        }
        assert_eq!(ch.depth(), 2);
        assert!(!ch.should_delete());
        ch.add_consumer(info(1), 0);
        ch.remove_consumer(ConsumerId { shard: 0, conn: 1 });
        assert!(ch.should_delete());
    }

    #[test]
    fn a_full_ephemeral_channel_still_hands_a_message_to_each_waiting_consumer() {
        // --mem-queue-size=0: nsqd's zero-capacity channel passes a message to a client
        // blocked on it and drops what no client is waiting for.
        let now = Instant::now();
        let mut ch = Channel::new("c#ephemeral");
        ch.put(msg(0), None, 0);
        assert_eq!(ch.depth(), 0, "nobody waiting: dropped");
        ch.add_consumer(info(1), 0);
        ch.add_consumer(info(2), 0);
        ch.set_ready(ConsumerId { shard: 0, conn: 1 }, 5);
        ch.set_ready(ConsumerId { shard: 0, conn: 2 }, 1);
        for i in 1..5 {
            ch.put(msg(i), None, 0);
        }
        let got: Vec<u8> = pump_all(&mut ch, now)
            .iter()
            .map(|(_, m)| m.body[0])
            .collect();
        assert_eq!(got, [1, 2], "one per waiting consumer, the rest dropped");
        // Consumer 2 is now full; consumer 1 still waits; a paused channel has no one waiting.
        ch.put(msg(5), None, 0);
        ch.put(msg(6), None, 0);
        assert_eq!(pump_all(&mut ch, now).len(), 1);
        ch.paused = true;
        ch.put(msg(7), None, 0);
        assert_eq!(ch.depth(), 0);
    }

    #[test]
    fn timeout_heap_stays_proportional_to_in_flight() {
        let now = Instant::now();
        let mut ch = Channel::new("c");
        let a = ConsumerId { shard: 0, conn: 1 };
        ch.add_consumer(info(1), 0);
        ch.set_ready(a, 1);
        // FIN-heavy traffic: one message in flight at a time, 20,000 delivered and finished.
        for i in 0..20_000u32 {
            let mut id = *b"0000000000000000";
            id[8..].copy_from_slice(format!("{i:08}").as_bytes());
            ch.put(Message::new(id, 0, Bytes::new()), None, usize::MAX);
            let got = pump_all(&mut ch, now);
            assert!(ch.finish(a, &got[0].1.id).is_ok());
        }
        assert!(
            ch.in_flight.scheduled() <= crate::broker::in_flight::STALE_SLACK + 2,
            "{}",
            ch.in_flight.scheduled()
        );
        // TOUCH spam on one in-flight message.
        ch.put(msg(1), None, usize::MAX);
        let id = pump_all(&mut ch, now)[0].1.id;
        for ms in 0..20_000 {
            let t = now + Duration::from_millis(ms);
            assert!(ch.touch(a, &id, t, Duration::from_secs(900)).is_ok());
        }
        assert!(
            ch.in_flight.scheduled() <= crate::broker::in_flight::STALE_SLACK + 3,
            "{}",
            ch.in_flight.scheduled()
        );
        // The live deadline survived the rebuilds: the message times out exactly once.
        assert!(!ch.process_timers(now + Duration::from_secs(60)));
        assert!(ch.process_timers(now + Duration::from_secs(80)));
        assert_eq!(ch.counters.timeout_count, 1);
        assert_eq!(ch.depth(), 1);
    }

    /// Which consumer each delivery of one pump went to.
    fn delivery_order(ch: &mut Channel, now: Instant) -> Vec<u64> {
        pump_all(ch, now).iter().map(|(c, _)| *c).collect()
    }

    /// A channel with consumers `(conn, locality, rdy)` and `messages` queued.
    fn channel_with(consumers: &[(u64, Locality, u64)], messages: u8) -> Channel {
        let mut ch = Channel::new("c");
        for &(conn, locality, rdy) in consumers {
            let mut i = info(conn);
            i.locality = locality;
            ch.add_consumer(i, 0);
            ch.set_ready(ConsumerId { shard: 0, conn }, rdy);
        }
        for i in 0..messages {
            ch.put(msg(i), None, 10);
        }
        ch
    }

    #[test]
    fn equal_consumers_alternate_and_the_closest_follows_leaves() {
        let now = Instant::now();
        let mut ch = channel_with(
            &[
                (1, Locality::Global, 100),
                (2, Locality::Global, 100),
                (3, Locality::Region, 1),
            ],
            5,
        );
        // The region consumer first (its one slot), then the two global ones in turn: a
        // ready global consumer must not end the search while a closer one is ready.
        let order = delivery_order(&mut ch, now);
        assert_eq!(order, vec![3, 1, 2, 1, 2]);
        // Once the region consumer leaves, the global ones still alternate.
        ch.remove_consumer(ConsumerId { shard: 0, conn: 3 });
        for i in 5..9 {
            ch.put(msg(i), None, 10);
        }
        let order = delivery_order(&mut ch, now);
        assert_eq!(order, vec![1, 2, 1, 2]);
    }

    #[test]
    fn closer_consumers_are_served_first() {
        let now = Instant::now();
        let mut ch = channel_with(
            &[
                (1, Locality::Global, 2),
                (2, Locality::Region, 2),
                (3, Locality::Zone, 2),
            ],
            6,
        );
        let order = delivery_order(&mut ch, now);
        assert_eq!(order, vec![3, 3, 2, 2, 1, 1]);
        assert_eq!(Locality::of("z", "r", "z", "x"), Locality::Zone);
        assert_eq!(Locality::of("z", "r", "y", "r"), Locality::Region);
        assert_eq!(Locality::of("", "", "", ""), Locality::Global);
    }

    #[test]
    fn max_consumers_is_enforced() {
        let mut ch = Channel::new("c");
        assert!(ch.add_consumer(info(1), 1));
        assert!(!ch.add_consumer(info(2), 1));
    }
}
