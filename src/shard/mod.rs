//! One core's world: the topics it owns, the connections it serves, and its links to the other
//! cores. Connections call the routing methods here without caring where a topic lives: work on
//! an owned topic happens in place, work on another core's topic travels over the mesh.

mod admin;
pub mod client;
pub mod client_meta;
pub mod outbox;
pub mod output;
pub mod owner;
pub mod registration;
pub mod reply;
mod snapshot;
pub mod storage;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;

use crate::broker::channel::{ConsumerId, ConsumerInfo};
use crate::broker::message::Message;
use crate::broker::topic::Topic;
use crate::mesh::{
    AdminError, ChannelOp, MeshBatch, MeshMsg, PublishCmd, PublishOutcome, ReplyTo, owner_of,
};
use crate::protocol::errors::ProtocolError;
use crate::settings::Settings;
use crate::stats::ShardStats;
use client::ClientHandle;
use outbox::Outboxes;
use reply::{PendingReplies, RemoteResult};

/// The state of one core. Shared by `Rc` among that core's tasks only.
pub struct Shard {
    /// This core's index.
    pub id: usize,
    /// How many cores serve.
    pub nr_shards: usize,
    /// Read-only settings.
    pub settings: Arc<Settings>,
    /// Set by the signal thread; every shard drains and exits when it sees it.
    pub shutdown: Arc<AtomicBool>,
    topics: RefCell<HashMap<String, Topic>>,
    /// For consumers of owned channels: connection ID → (topic, channel).
    subscriptions: RefCell<FxHashMap<u64, (String, String)>>,
    clients: RefCell<FxHashMap<u64, Rc<ClientHandle>>>,
    /// Cross-core traffic waiting to leave.
    pub outboxes: Rc<Outboxes>,
    pending_subscribes: PendingReplies<RemoteResult>,
    pending_publishes: PendingReplies<PublishOutcome>,
    pending_barriers: PendingReplies<()>,
    pending_admin: PendingReplies<Result<(), AdminError>>,
    pending_stats: PendingReplies<Option<Box<ShardStats>>>,
    /// HTTP connections open on this core (for `/metrics`).
    pub http_connections: Cell<u64>,
    rng: RefCell<SmallRng>,
    /// Disk queues of the owned topics (when a data path is set).
    disk: Option<storage::ShardDisk>,
    /// What this core announced to nsqlookupd.
    registration: registration::RegistrationState,
    /// Bumped whenever a topic is added or removed (by one more than the removed topic's
    /// channel changes, so with every topic's own count the total only ever grows).
    topic_changes: Cell<u64>,
}

impl Shard {
    /// A shard with no topics and no clients.
    pub fn new(
        id: usize,
        nr_shards: usize,
        settings: Arc<Settings>,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        Shard {
            id,
            nr_shards,
            shutdown,
            topics: RefCell::new(HashMap::new()),
            subscriptions: RefCell::new(FxHashMap::default()),
            clients: RefCell::new(FxHashMap::default()),
            outboxes: Rc::new(Outboxes::new(nr_shards)),
            pending_subscribes: PendingReplies::default(),
            pending_publishes: PendingReplies::default(),
            pending_barriers: PendingReplies::default(),
            pending_admin: PendingReplies::default(),
            pending_stats: PendingReplies::default(),
            http_connections: Cell::new(0),
            registration: Default::default(),
            topic_changes: Cell::new(0),
            rng: RefCell::new(SmallRng::from_entropy()),
            disk: settings
                .disk
                .as_ref()
                .map(|d| storage::ShardDisk::new(d, settings.limits.max_msg_size as usize)),
            settings,
        }
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// The shard owning `topic`.
    pub fn owner_of(&self, topic: &str) -> usize {
        owner_of(topic, self.nr_shards)
    }

    /// Registers a connection served by this core.
    pub fn add_client(&self, client: Rc<ClientHandle>) {
        self.clients.borrow_mut().insert(client.id, client);
    }

    /// Forgets a closed connection.
    pub fn remove_client(&self, id: u64) {
        self.clients.borrow_mut().remove(&id);
    }

    /// Every connection of this core (heartbeats, shutdown).
    pub fn clients(&self) -> Vec<Rc<ClientHandle>> {
        self.clients.borrow().values().cloned().collect()
    }

    /// Number of connections of this core.
    pub fn client_count(&self) -> usize {
        self.clients.borrow().len()
    }

    /// PUB/MPUB/DPUB commands for topics owned by `owner`, applied in order until one is
    /// refused. Consecutive publishes of a pipelining client cross cores as one batch.
    pub async fn publish(&self, owner: usize, batch: Vec<PublishCmd>) -> PublishOutcome {
        if owner == self.id {
            let ticket = self.disk_ticket();
            let outcome = self.apply_publishes(batch);
            return self.durable_outcome(outcome, ticket).await;
        }
        let (token, reply) = self.pending_publishes.register();
        tracing::debug!(
            from = self.id,
            to = owner,
            commands = batch.len(),
            "cross-shard publish"
        );
        self.outboxes.push(
            owner,
            MeshMsg::Publish {
                batch,
                reply: ReplyTo {
                    shard: self.id,
                    token,
                },
            },
        );
        reply.await
    }

    /// SUB: answered once the owner added the consumer.
    pub async fn subscribe(
        &self,
        topic: &str,
        channel: &str,
        consumer: ConsumerInfo,
    ) -> RemoteResult {
        let owner = self.owner_of(topic);
        if owner == self.id {
            return self.apply_subscribe(topic, channel, consumer);
        }
        let (token, reply) = self.pending_subscribes.register();
        tracing::debug!(
            topic,
            channel,
            from = self.id,
            to = owner,
            "cross-shard subscribe"
        );
        self.outboxes.push(
            owner,
            MeshMsg::Subscribe {
                topic: topic.to_string(),
                channel: channel.to_string(),
                consumer: Box::new(consumer),
                reply: ReplyTo {
                    shard: self.id,
                    token,
                },
            },
        );
        reply.await
    }

    /// Waits until `owner` has applied everything this core sent it so far, so error frames
    /// of earlier FIN/REQ/TOUCH reach the connection before the response to a later command.
    pub async fn barrier(&self, owner: usize) {
        if owner == self.id {
            return;
        }
        let (token, reply) = self.pending_barriers.register();
        self.outboxes.push(
            owner,
            MeshMsg::Barrier {
                reply: ReplyTo {
                    shard: self.id,
                    token,
                },
            },
        );
        reply.await
    }

    /// RDY/FIN/REQ/TOUCH/leave of a subscribed connection, received at `now`; failures come
    /// back as error frames. (An action sent to another core takes that core's time.)
    pub fn channel_op(&self, topic_owner: usize, conn: u64, op: ChannelOp, now: Instant) {
        if topic_owner == self.id {
            self.apply_channel_op(
                ConsumerId {
                    shard: self.id,
                    conn,
                },
                op,
                now,
            );
        } else {
            self.outboxes
                .push(topic_owner, MeshMsg::Channel { conn, op });
        }
    }

    /// FIN/REQ/TOUCH of a connection subscribed to a topic this core owns, applied in order
    /// and followed by one delivery pass (see [`Shard::apply_channel_ops`]); `ops` is emptied.
    pub fn local_channel_ops(&self, conn: u64, ops: &mut Vec<ChannelOp>, now: Instant) {
        let consumer = ConsumerId {
            shard: self.id,
            conn,
        };
        self.apply_op_run(consumer, ops, now);
    }

    /// Applies and empties a run of one consumer's actions, if there is one.
    fn apply_op_run(&self, consumer: ConsumerId, ops: &mut Vec<ChannelOp>, now: Instant) {
        if !ops.is_empty() {
            self.apply_channel_ops(consumer, ops.drain(..), now);
        }
    }

    /// Sends a delivered message to its consumer, here or on its core (`flush`: write it
    /// without waiting for more, see [`ClientHandle::push_message`]).
    fn deliver(
        &self,
        consumer: ConsumerId,
        msg: &Message,
        flush: bool,
        now_ns: impl FnOnce() -> i64,
    ) {
        if consumer.shard == self.id {
            if let Some(c) = self.clients.borrow().get(&consumer.conn) {
                c.push_message(msg, flush, now_ns);
            }
        } else {
            self.outboxes.push(
                consumer.shard,
                MeshMsg::Deliver {
                    conn: consumer.conn,
                    msg: msg.clone(),
                    flush,
                },
            );
        }
    }

    /// Sends a non-fatal error frame to a consumer, here or on its core.
    fn client_error(&self, consumer: ConsumerId, error: ProtocolError) {
        if consumer.shard == self.id {
            if let Some(c) = self.clients.borrow().get(&consumer.conn) {
                c.push_error(&error);
            }
        } else {
            self.outboxes.push(
                consumer.shard,
                MeshMsg::ClientError {
                    conn: consumer.conn,
                    error,
                },
            );
        }
    }

    /// Sampling roll: deliver iff `rand[0,100) <= rate`, as nsqd does.
    fn sample(&self, rate: i32) -> bool {
        self.rng.borrow_mut().gen_range(0..100) <= rate
    }

    /// Handles a batch from core `from`, received at `now`, in order. A run of one
    /// connection's FIN/REQ/TOUCH is applied together, as from a local connection
    /// ([`Shard::apply_channel_ops`]).
    pub fn handle_mesh_batch(self: &Rc<Self>, from: usize, batch: MeshBatch, now: Instant) {
        // The run's connection; it has one while `ops` is not empty.
        let mut run = ConsumerId {
            shard: from,
            conn: 0,
        };
        let mut ops = Vec::new();
        for msg in batch {
            match msg {
                MeshMsg::Channel { conn, op } if op.may_fail() => {
                    if conn != run.conn {
                        self.apply_op_run(run, &mut ops, now);
                        run.conn = conn;
                    }
                    ops.push(op);
                }
                other => {
                    self.apply_op_run(run, &mut ops, now);
                    self.handle_mesh(from, other, now);
                }
            }
        }
        self.apply_op_run(run, &mut ops, now);
    }

    /// Handles one message that arrived from core `from` in a batch received at `now`.
    pub fn handle_mesh(self: &Rc<Self>, from: usize, msg: MeshMsg, now: Instant) {
        let c = &self.outboxes.counters;
        c.messages_in.set(c.messages_in.get() + 1);
        match msg {
            MeshMsg::Publish { batch, reply } => {
                let ticket = self.disk_ticket();
                let outcome = self.apply_publishes(batch);
                let token = reply.token;
                let outboxes = self.outboxes.clone();
                self.reply_when_durable(outcome, ticket, move |outcome| {
                    outboxes.push(reply.shard, MeshMsg::PublishReply { token, outcome })
                });
            }
            MeshMsg::Subscribe {
                topic,
                channel,
                consumer,
                reply,
            } => {
                let result = self.apply_subscribe(&topic, &channel, *consumer);
                let token = reply.token;
                self.outboxes
                    .push(reply.shard, MeshMsg::SubscribeReply { token, result });
            }
            MeshMsg::Channel { conn, op } => {
                self.apply_channel_op(ConsumerId { shard: from, conn }, op, now)
            }
            MeshMsg::Adopt(moving) => {
                let serve = crate::protocol::connection::adopt(self.clone(), moving);
                glommio::spawn_local(serve).detach();
            }
            MeshMsg::Deliver { conn, msg, flush } => {
                if let Some(c) = self.clients.borrow().get(&conn) {
                    c.push_message(&msg, flush, client::unix_nanos);
                }
            }
            MeshMsg::SubscribeReply { token, result } => {
                self.pending_subscribes.complete(token, result)
            }
            MeshMsg::Barrier { reply } => {
                let token = reply.token;
                self.outboxes
                    .push(reply.shard, MeshMsg::BarrierReply { token });
            }
            MeshMsg::BarrierReply { token } => self.pending_barriers.complete(token, ()),
            MeshMsg::PublishReply { token, outcome } => {
                self.pending_publishes.complete(token, outcome)
            }
            MeshMsg::Lookupd(events) => self.deliver_lookupd(events),
            MeshMsg::ClientError { conn, error } => {
                if let Some(c) = self.clients.borrow().get(&conn) {
                    c.push_error(&error);
                }
            }
            MeshMsg::Admin { op, reply } => {
                let persist = op.persists_before_answer();
                let result = self.apply_admin(op);
                let token = reply.token;
                let outboxes = self.outboxes.clone();
                let send =
                    move || outboxes.push(reply.shard, MeshMsg::AdminReply { token, result });
                if result.is_ok() && persist {
                    self.when_metadata_persisted(send);
                } else {
                    send();
                }
            }
            MeshMsg::AdminReply { token, result } => self.pending_admin.complete(token, result),
            MeshMsg::Stats { filter, reply } => {
                let stats = Box::new(self.stats_part(&filter));
                let token = reply.token;
                self.outboxes
                    .push(reply.shard, MeshMsg::StatsReply { token, stats });
            }
            MeshMsg::StatsReply { token, stats } => self.pending_stats.complete(token, Some(stats)),
            MeshMsg::CloseClient { conn } => {
                if let Some(c) = self.clients.borrow().get(&conn) {
                    c.close();
                }
            }
        }
    }

    /// Fails every reply still awaited (the mesh is going away).
    pub fn fail_pending(&self) {
        self.pending_subscribes.fail_all(|| Err("exiting".into()));
        self.pending_barriers.fail_all(|| ());
        self.pending_admin.fail_all(|| Err(AdminError::Exiting));
        self.pending_stats.fail_all(|| None);
        self.pending_publishes.fail_all(|| PublishOutcome {
            accepted: 0,
            error: Some("exiting".into()),
        });
    }
}
