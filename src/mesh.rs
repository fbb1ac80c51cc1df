//! The messages that cross cores, and their batching.
//!
//! Each shard keeps one outbox per peer. Anything addressed to another core is appended to that
//! outbox; a flusher task per peer sends the whole outbox as one mesh item when it gets to run, so
//! under load one hop carries many messages. Receiving never waits on sending, so two cores
//! sending to each other cannot deadlock.

use bytes::Bytes;

use crate::broker::channel::ConsumerInfo;
use crate::broker::message::{Message, MessageId};
use crate::protocol::errors::ProtocolError;
use crate::stats::{ShardStats, StatsFilter};

/// Where a reply goes: the asking shard and its pending-reply token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// Shard that waits.
    pub shard: usize,
    /// Its token for the waiting connection.
    pub token: u64,
}

/// A consumer's action on the channel it is subscribed to (applied on the topic's owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelOp {
    /// RDY count.
    Ready(u64),
    /// FIN id.
    Finish(MessageId),
    /// REQ id delay_ms.
    Requeue(MessageId, u64),
    /// TOUCH id.
    Touch(MessageId),
    /// The connection closed (or CLS followed by close): leave the channel.
    Leave,
}

impl ChannelOp {
    /// FIN, REQ and TOUCH name an in-flight message and fail with an error frame when it is
    /// not the sender's; these are the actions applied in runs.
    pub fn may_fail(&self) -> bool {
        matches!(self, Self::Finish(_) | Self::Requeue(..) | Self::Touch(_))
    }
}

/// One PUB, MPUB or DPUB: bodies accepted together or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishCmd {
    /// Topic name (validated).
    pub topic: String,
    /// Message bodies (one for PUB/DPUB).
    pub bodies: Vec<Bytes>,
    /// DPUB deferral in milliseconds (0 = none).
    pub defer_ms: u64,
}

/// How a batch of publishes fared: the first `accepted` succeeded; `error` explains the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Commands accepted, in order.
    pub accepted: usize,
    /// Why the command after them was refused (then the rest was not attempted).
    pub error: Option<String>,
}

/// An HTTP administrative action on a topic or channel, applied by the topic's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOp {
    /// `/topic/create` (also `/pub` and `/mpub` before they validate the rest).
    CreateTopic { topic: String },
    /// `/topic/delete`: its channels go too, their consumers are disconnected.
    DeleteTopic { topic: String },
    /// `/topic/empty`: drops the topic's own queue.
    EmptyTopic { topic: String },
    /// `/topic/pause` and `/topic/unpause`.
    PauseTopic { topic: String, paused: bool },
    /// `/channel/create` (the topic must exist).
    CreateChannel { topic: String, channel: String },
    /// `/channel/delete`: its consumers are disconnected without an error frame.
    DeleteChannel { topic: String, channel: String },
    /// `/channel/empty`: drops queued, in-flight and deferred messages.
    EmptyChannel { topic: String, channel: String },
    /// `/channel/pause` and `/channel/unpause`.
    PauseChannel {
        topic: String,
        channel: String,
        paused: bool,
    },
}

impl AdminOp {
    /// The topic the action is about (it decides the owner core).
    pub fn topic(&self) -> &str {
        match self {
            AdminOp::CreateTopic { topic }
            | AdminOp::DeleteTopic { topic }
            | AdminOp::EmptyTopic { topic }
            | AdminOp::PauseTopic { topic, .. }
            | AdminOp::CreateChannel { topic, .. }
            | AdminOp::DeleteChannel { topic, .. }
            | AdminOp::EmptyChannel { topic, .. }
            | AdminOp::PauseChannel { topic, .. } => topic,
        }
    }

    /// Whether nsqd writes nsqd.dat before it answers this action (pause and unpause; it
    /// persists creations and deletions in the background).
    pub fn persists_before_answer(&self) -> bool {
        matches!(
            self,
            AdminOp::PauseTopic { .. } | AdminOp::PauseChannel { .. }
        )
    }
}

/// Why an administrative action failed (nsqd's HTTP errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminError {
    /// `TOPIC_NOT_FOUND`.
    TopicNotFound,
    /// `CHANNEL_NOT_FOUND`.
    ChannelNotFound,
    /// The owner core is shutting down.
    Exiting,
}

/// One cross-core message.
#[derive(Debug)]
pub enum MeshMsg {
    /// To a topic's owner: apply these publishes in order, stopping at the first refusal.
    Publish {
        batch: Vec<PublishCmd>,
        reply: ReplyTo,
    },
    /// To a topic's owner: add this consumer to topic/channel.
    Subscribe {
        topic: String,
        channel: String,
        consumer: Box<ConsumerInfo>,
        reply: ReplyTo,
    },
    /// To a topic's owner: a subscribed connection's RDY/FIN/REQ/TOUCH/leave.
    Channel { conn: u64, op: ChannelOp },
    /// To a consumer's shard: write this message to connection `conn` (`flush`: it used up the
    /// consumer's RDY, so write it without waiting for more).
    Deliver {
        conn: u64,
        msg: Message,
        flush: bool,
    },
    /// To a waiting shard: the outcome of a Subscribe.
    SubscribeReply {
        token: u64,
        result: Result<(), String>,
    },
    /// To a waiting shard: the outcome of a Publish batch.
    PublishReply { token: u64, outcome: PublishOutcome },
    /// To a topic's owner: answer once everything sent before this has been applied.
    Barrier { reply: ReplyTo },
    /// To a waiting shard: everything before the barrier was applied (and any error frames it
    /// caused were sent ahead of this reply).
    BarrierReply { token: u64 },
    /// To the first core: registration changes for nsqlookupd.
    Lookupd(Vec<crate::lookupd::LookupdEvent>),
    /// To a consumer's shard: a non-fatal error frame for `conn` (failed FIN/REQ/TOUCH).
    ClientError { conn: u64, error: ProtocolError },
    /// To a topic's owner: apply an HTTP administrative action.
    Admin { op: AdminOp, reply: ReplyTo },
    /// To a waiting shard: the outcome of an Admin.
    AdminReply {
        token: u64,
        result: Result<(), AdminError>,
    },
    /// To every other shard: its part of a stats snapshot.
    Stats { filter: StatsFilter, reply: ReplyTo },
    /// To a waiting shard: one shard's part of a snapshot.
    StatsReply { token: u64, stats: Box<ShardStats> },
    /// To a consumer's shard: close connection `conn` without an error frame (its channel or
    /// topic was deleted).
    CloseClient { conn: u64 },
    /// To a topic's owner: carry on serving this connection, whose first publish or
    /// subscription is for that core's topic (connection affinity).
    Adopt(Box<crate::protocol::handoff::MovingConnection>),
}

/// What one mesh hop carries.
pub type MeshBatch = Vec<MeshMsg>;

/// The shard that owns a topic: a stable hash of its name, so every core agrees.
pub fn owner_of(topic: &str, nr_shards: usize) -> usize {
    if nr_shards <= 1 {
        return 0;
    }
    crc32fast::hash(topic.as_bytes()) as usize % nr_shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_in_range() {
        for n in 1..5 {
            for t in ["a", "orders", "t#ephemeral"] {
                let o = owner_of(t, n);
                assert!(o < n);
                assert_eq!(o, owner_of(t, n));
            }
        }
        // Both shards get topics, so cross-shard paths are exercised with two cores.
        let owners: std::collections::HashSet<_> =
            (0..16).map(|i| owner_of(&format!("t{i}"), 2)).collect();
        assert_eq!(owners.len(), 2);
    }
}
