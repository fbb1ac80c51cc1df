//! A topic: ID generation, fan-out of every message to every channel, and the backlog that
//! waits for the first channel (or for an unpause). Lives on its owner shard.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::channel::Channel;
use super::guid::GuidFactory;
use super::latency::LatencyConfig;
use super::message::Message;
use super::settle::SettlingQueue;
use crate::storage::backlog::{DiskBacklog, Registry};
use crate::storage::diskqueue::queue_name;

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The in-memory queue is full and this topic has no disk queue (no data path).
    QueueFull { mem_queue_size: usize },
    /// The disk queues cannot be written (disk full, unwritable data path).
    Disk(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::QueueFull { mem_queue_size } => {
                write!(
                    f,
                    "memory queue full (--mem-queue-size={mem_queue_size}, no disk backend)"
                )
            }
            PublishError::Disk(e) => write!(f, "disk write failed - {e}"),
        }
    }
}

/// One topic and its channels.
#[derive(Debug)]
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// `#ephemeral`: never persisted; deleted when its last channel goes.
    pub ephemeral: bool,
    /// A new topic waits here, holding its messages, until the channels nsqlookupd knows for
    /// it exist (nsqd starts a topic only after that query), so all of them get the backlog.
    pub starting: bool,
    /// A paused topic keeps messages in its backlog instead of fanning them out.
    pub paused: bool,
    /// Channels by name (sorted, as `/stats` lists them).
    pub channels: BTreeMap<String, Channel>,
    /// Messages accepted.
    pub message_count: u64,
    /// Bytes of message bodies accepted.
    pub message_bytes: u64,
    /// Bumped whenever a channel is added or removed, so the core can tell its channel list
    /// changed without comparing names (see `Shard::announce_registrations`).
    channel_changes: u64,
    /// Messages (and deferrals) waiting for a channel, with which of them may still share a
    /// client's read buffer (see `settle`).
    backlog: SettlingQueue<(Message, Option<Instant>)>,
    guid: GuidFactory,
    /// Overflow of the backlog (non-ephemeral topics with a data path).
    disk: Option<DiskBacklog>,
    /// Where channels get their disk queues.
    registry: Option<Rc<Registry>>,
    /// E2E latency tracking given to every channel created (`None`: not tracked).
    latency: Option<Arc<LatencyConfig>>,
}

impl Topic {
    /// A new topic whose IDs carry `node_id`.
    pub fn new(name: &str, node_id: i64) -> Self {
        Self::with_disk(name, node_id, None)
    }

    /// A new topic whose backlog (and whose non-ephemeral channels) overflow to disk queues
    /// opened in `registry`, as nsqd's do. An `#ephemeral` topic has no disk queue of its own
    /// (its overflow is dropped), but its non-ephemeral channels do, as in nsqd.
    pub fn with_disk(name: &str, node_id: i64, registry: Option<Rc<Registry>>) -> Self {
        let ephemeral = crate::protocol::names::is_ephemeral(name);
        let own_disk = registry.as_ref().filter(|_| !ephemeral);
        Topic {
            name: name.to_string(),
            ephemeral,
            starting: false,
            paused: false,
            channels: BTreeMap::new(),
            message_count: 0,
            message_bytes: 0,
            channel_changes: 0,
            backlog: SettlingQueue::new(),
            guid: GuidFactory::new(node_id),
            disk: own_disk.map(|r| r.open(&queue_name(name, None))),
            registry,
            latency: None,
        }
    }

    /// Channels created from now on track E2E processing latency as `config` asks.
    pub fn track_latency(&mut self, config: Option<Arc<LatencyConfig>>) {
        self.latency = config;
    }

    /// Messages waiting in the topic itself (no channel yet, or paused), memory and disk.
    pub fn depth(&self) -> usize {
        self.backlog.len() + self.backend_depth() as usize
    }

    /// Messages in the topic's disk queue (nsqd's `backend_depth`).
    pub fn backend_depth(&self) -> i64 {
        self.disk.as_ref().map_or(0, |d| d.depth().max(0))
    }

    fn fans_out(&self) -> bool {
        !self.paused && !self.starting && !self.channels.is_empty()
    }

    /// Whether `n` messages can be accepted without dropping any.
    fn has_room(&self, n: usize, mem_queue_size: usize) -> bool {
        if self.fans_out() {
            self.channels
                .values()
                .all(|c| c.has_room(n, mem_queue_size))
        } else {
            self.ephemeral || self.disk.is_some() || self.backlog.len() + n <= mem_queue_size
        }
    }

    /// Whether accepting `n` messages now would write any of them to a disk queue (this
    /// topic's or a channel's). While the disk is failing only such publishes are refused:
    /// what fits in memory is accepted, as in nsqd, whose topic and channel `put` touch the
    /// disk queue only once the memory queue is full. Deferred messages, which stay in
    /// memory, are counted as if they did not, so the answer errs towards refusing.
    fn needs_disk(&self, n: usize, mem_queue_size: usize) -> bool {
        if !self.fans_out() {
            return self
                .disk
                .as_ref()
                .is_some_and(|d| d.durable() || self.backlog.len() + n > mem_queue_size);
        }
        self.channels
            .values()
            .any(|c| c.needs_disk(n, mem_queue_size))
    }

    /// Accepts a batch of bodies (all or none), assigning IDs and fanning out to every channel.
    pub fn publish(
        &mut self,
        bodies: Vec<Bytes>,
        defer_until: Option<Instant>,
        now_ns: i64,
        mem_queue_size: usize,
    ) -> Result<(), PublishError> {
        if let Some(e) = self.registry.as_ref().and_then(|r| r.health_error())
            && self.needs_disk(bodies.len(), mem_queue_size)
        {
            return Err(PublishError::Disk(e));
        }
        if !self.has_room(bodies.len(), mem_queue_size) {
            return Err(PublishError::QueueFull { mem_queue_size });
        }
        for body in bodies {
            self.message_count += 1;
            self.message_bytes += body.len() as u64;
            let mut msg = Message::new(self.guid.next_id(now_ns), now_ns, body);
            if defer_until.is_some() {
                // Kept until due (and shared by every channel's copy): see `detach_body`.
                msg.detach_body();
            }
            if self.fans_out() {
                self.fan_out(msg, defer_until, mem_queue_size);
            } else if self.backlog.len() < mem_queue_size
                && (defer_until.is_some() || !self.disk.as_ref().is_some_and(DiskBacklog::durable))
            {
                // A deferred message waits in memory even with `--durable-ack`, as it does in
                // a channel: a disk queue record has no room for its deferral.
                self.backlog.push_back((msg, defer_until));
            } else if let Some(disk) = &self.disk {
                // Spilled deferred messages lose their deferral, as in nsqd.
                disk.push(&msg);
            } else if !self.ephemeral {
                self.backlog.push_back((msg, defer_until));
            }
        }
        Ok(())
    }

    fn fan_out(&mut self, msg: Message, defer_until: Option<Instant>, mem_queue_size: usize) {
        let mut channels = self.channels.values_mut().peekable();
        while let Some(ch) = channels.next() {
            if channels.peek().is_some() {
                ch.put(msg.clone(), defer_until, mem_queue_size);
            } else {
                ch.put(msg, defer_until, mem_queue_size);
                break;
            }
        }
    }

    /// Moves the backlog into the channels once there is somewhere to send it.
    pub fn drain_backlog(&mut self, mem_queue_size: usize) {
        if !self.fans_out() {
            return;
        }
        while let Some((msg, defer_until)) = self.backlog.pop_front() {
            self.fan_out(msg, defer_until, mem_queue_size);
        }
        while let Some(msg) = self.disk.as_ref().and_then(DiskBacklog::pop) {
            self.fan_out(msg, None, mem_queue_size);
        }
    }

    /// Gets or creates a channel; a new channel receives the backlog (nsqd gives the messages
    /// published before any channel existed to the first channel).
    pub fn channel_mut(&mut self, name: &str, mem_queue_size: usize) -> &mut Channel {
        if !self.channels.contains_key(name) {
            let mut channel = Channel::new(name);
            if let Some(config) = &self.latency {
                channel.track_latency(config.clone());
            }
            if let Some(r) = &self.registry
                && !channel.ephemeral
            {
                channel.attach_disk(r.open(&queue_name(&self.name, Some(name))));
            }
            self.channels.insert(name.to_string(), channel);
            self.channel_changes += 1;
            self.drain_backlog(mem_queue_size);
        }
        self.channels.get_mut(name).expect("inserted")
    }

    /// Removes a channel (its disk queue goes with it).
    pub fn remove_channel(&mut self, name: &str) -> Option<Channel> {
        let removed = self.channels.remove(name);
        self.channel_changes += u64::from(removed.is_some());
        removed
    }

    /// Gives each message kept in the backlog or a channel since before the previous pass a
    /// body of its own (see [`crate::broker::settle`]); `delivered_before` is this pass's
    /// time less [`crate::broker::settle::SETTLE_EVERY`].
    pub fn settle(&mut self, delivered_before: Instant) {
        self.backlog.settle();
        for ch in self.channels.values_mut() {
            ch.settle(delivered_before);
        }
    }

    /// How many times a channel was added or removed.
    pub fn channel_changes(&self) -> u64 {
        self.channel_changes
    }

    /// Drops the topic's own backlog (nsqd's topic empty).
    pub fn empty(&mut self) {
        self.backlog.clear();
        if let Some(disk) = &self.disk {
            disk.empty();
        }
    }

    /// Shutdown: moves the backlog and every channel's memory, in-flight and deferred
    /// messages into their disk queues (deferral lost, attempts kept), as nsqd's close does.
    pub fn flush_to_disk(&mut self) {
        if let Some(disk) = &self.disk {
            for (msg, _) in self.backlog.drain() {
                disk.push(&msg);
            }
        }
        for ch in self.channels.values_mut() {
            ch.flush_to_disk();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(n: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(format!("m{i}"))).collect()
    }

    #[test]
    fn channel_changes_count_every_add_and_remove() {
        let mut t = Topic::new("t", 1);
        t.channel_mut("a", 10);
        t.channel_mut("a", 10);
        assert_eq!(t.channel_changes(), 1, "an existing channel is no change");
        assert!(t.remove_channel("a").is_some());
        assert!(t.remove_channel("a").is_none());
        t.channel_mut("a", 10);
        assert_eq!(t.channel_changes(), 3, "removed and re-added: two more");
    }

    #[test]
    fn a_backlog_kept_past_a_settle_pass_gets_bodies_of_its_own() {
        let block = Bytes::from(vec![7u8; 4096]);
        let mut t = Topic::new("t", 1);
        let sliced = |range: std::ops::Range<usize>| vec![block.slice(range)];
        t.publish(sliced(0..10), None, 1, 100).unwrap();
        let now = Instant::now();
        let shares = |t: &Topic| -> Vec<bool> {
            let block = block.as_ptr_range();
            t.backlog
                .iter()
                .map(|(m, _)| block.contains(&m.body.as_ptr()))
                .collect()
        };
        t.settle(now);
        t.publish(sliced(10..20), None, 2, 100).unwrap();
        t.settle(now);
        assert_eq!(shares(&t), [false, true]);
        t.settle(now);
        assert_eq!(shares(&t), [false, false]);
        assert_eq!(&t.backlog[1].0.body[..], &[7u8; 10][..]);
    }

    #[test]
    fn backlog_goes_to_first_channel_only() {
        let mut t = Topic::new("t", 1);
        t.publish(bodies(3), None, 1 << 40, 100).unwrap();
        assert_eq!(t.depth(), 3);
        t.channel_mut("a", 100);
        t.channel_mut("b", 100);
        assert_eq!(t.channels["a"].depth(), 3);
        assert_eq!(t.channels["b"].depth(), 0);
        t.publish(bodies(2), None, 1 << 40, 100).unwrap();
        assert_eq!(t.channels["a"].depth(), 5);
        assert_eq!(t.channels["b"].depth(), 2);
        assert_eq!(t.message_count, 5);
    }

    #[test]
    fn full_queue_refuses_whole_batch() {
        let mut t = Topic::new("t", 1);
        t.channel_mut("a", 3);
        t.publish(bodies(2), None, 1 << 40, 3).unwrap();
        assert_eq!(
            t.publish(bodies(2), None, 1 << 40, 3),
            Err(PublishError::QueueFull { mem_queue_size: 3 })
        );
        assert_eq!(t.channels["a"].depth(), 2);
    }

    #[test]
    fn paused_topic_holds_messages_until_unpaused() {
        let mut t = Topic::new("t", 1);
        t.channel_mut("a", 10);
        t.paused = true;
        t.publish(bodies(2), None, 1 << 40, 10).unwrap();
        assert_eq!(t.channels["a"].depth(), 0);
        t.paused = false;
        t.drain_backlog(10);
        assert_eq!(t.channels["a"].depth(), 2);
    }
}
