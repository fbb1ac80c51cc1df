//! The owner side of a shard: applying publishes, subscriptions and channel actions to the
//! topics this core owns, whoever asked, and the periodic timeout/deferred scan.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Shard;
use super::reply::RemoteResult;
use crate::broker::channel::{Channel, ConsumerId, ConsumerInfo, InFlightError};
use crate::broker::topic::Topic;
use crate::mesh::{ChannelOp, PublishCmd, PublishOutcome};
use crate::protocol::errors::{E_FIN_FAILED, E_REQ_FAILED, E_TOUCH_FAILED, ProtocolError};

impl Shard {
    pub(super) fn pump_channel(&self, channel: &mut Channel, now: Instant) {
        // The wall clock, read at most once per pass and only if a body's freshness decides
        // how it is written (see `output::FRESH_BODY_COPY`).
        let unix_now = std::cell::Cell::new(None);
        let now_ns = || {
            let t = unix_now.get().unwrap_or_else(super::client::unix_nanos);
            unix_now.set(Some(t));
            t
        };
        channel.pump(
            now,
            &mut |rate| self.sample(rate),
            &mut |c, m, rdy_used_up| self.deliver(c, m, rdy_used_up, now_ns),
        );
    }

    pub(super) fn create_topic<'a>(
        &self,
        topics: &'a mut std::collections::HashMap<String, Topic>,
        name: &str,
    ) -> &'a mut Topic {
        topics.entry(name.to_string()).or_insert_with(|| {
            tracing::info!("TOPIC({name}): created (shard {})", self.id);
            self.topic_changes.set(self.topic_changes.get() + 1);
            let mut t = self.new_topic(name);
            if self.lookupd_knows_peers() {
                t.starting = true;
                self.queue_channel_precreation(name);
            }
            t
        })
    }

    /// Applies publishes in order, stopping at the first refusal (as nsqd, which closes the
    /// connection at the first failed publish and so never runs the later ones).
    /// The bodies move into the messages: no reference count is taken per message.
    pub(super) fn apply_publishes(&self, batch: Vec<PublishCmd>) -> PublishOutcome {
        let n = batch.len();
        for (i, cmd) in batch.into_iter().enumerate() {
            if let Err(e) = self.apply_publish(&cmd.topic, cmd.bodies, cmd.defer_ms) {
                return PublishOutcome {
                    accepted: i,
                    error: Some(e),
                };
            }
        }
        PublishOutcome {
            accepted: n,
            error: None,
        }
    }

    /// Accepts a publish on an owned topic and delivers what consumers are ready for.
    fn apply_publish(&self, topic: &str, bodies: Vec<Bytes>, defer_ms: u64) -> RemoteResult {
        let now = Instant::now();
        let defer_until = (defer_ms > 0).then(|| now + Duration::from_millis(defer_ms));
        let mut topics = self.topics.borrow_mut();
        let t = self.create_topic(&mut topics, topic);
        let mqs = self.settings.mem_queue_size;
        let count = bodies.len();
        if let Err(e) = t.publish(bodies, defer_until, super::client::unix_nanos(), mqs) {
            tracing::error!("TOPIC({topic}): publish of {count} message(s) refused: {e}");
            return Err(e.to_string());
        }
        for ch in t.channels.values_mut() {
            self.pump_channel(ch, now);
        }
        Ok(())
    }

    /// Adds a consumer to an owned topic's channel, creating both as needed.
    pub(super) fn apply_subscribe(
        &self,
        topic: &str,
        channel: &str,
        consumer: ConsumerInfo,
    ) -> RemoteResult {
        let mut topics = self.topics.borrow_mut();
        let t = self.create_topic(&mut topics, topic);
        let mqs = self.settings.mem_queue_size;
        let existed = t.channels.contains_key(channel);
        let ch = t.channel_mut(channel, mqs);
        if !existed {
            tracing::info!("TOPIC({topic}): new channel({channel})");
        }
        let conn = consumer.id.conn;
        if !ch.add_consumer(consumer, self.settings.max_channel_consumers) {
            return Err(format!(
                "consumers for {topic}:{channel} exceeds limit of {}",
                self.settings.max_channel_consumers
            ));
        }
        self.subscriptions
            .borrow_mut()
            .insert(conn, (topic.to_string(), channel.to_string()));
        Ok(())
    }

    /// Applies a consumer's RDY/FIN/REQ/TOUCH/leave to its channel; `now` is when the action
    /// arrived (its caller reads the clock once per socket read or mesh batch, not per FIN).
    pub(super) fn apply_channel_op(&self, consumer: ConsumerId, op: ChannelOp, now: Instant) {
        if op == ChannelOp::Leave {
            self.leave_channel(consumer);
            return;
        }
        self.apply_channel_ops(consumer, std::iter::once(op), now);
    }

    /// Applies a run of one consumer's RDY/FIN/REQ/TOUCH (no leave) in order, then delivers
    /// what they made room for: the channel is looked up once and pumped once per run, not
    /// per FIN. Failures answer in order, as nsqd's.
    pub(super) fn apply_channel_ops(
        &self,
        consumer: ConsumerId,
        ops: impl IntoIterator<Item = ChannelOp>,
        now: Instant,
    ) {
        // Borrowed, not cloned: this runs for every read full of FINs.
        let subs = self.subscriptions.borrow();
        let mut topics = self.topics.borrow_mut();
        let channel = subs
            .get(&consumer.conn)
            .and_then(|(t, c)| topics.get_mut(t)?.channels.get_mut(c));
        let Some(ch) = channel else {
            // The channel is gone (deleted): in-flight actions fail as nsqd's would.
            for op in ops.into_iter().filter(ChannelOp::may_fail) {
                self.answer_failure(consumer, &op, InFlightError::NotInFlight);
            }
            return;
        };
        for op in ops {
            let result = match &op {
                ChannelOp::Ready(n) => {
                    ch.set_ready(consumer, *n);
                    Ok(())
                }
                ChannelOp::Finish(id) => ch.finish(consumer, id),
                ChannelOp::Requeue(id, ms) => {
                    ch.requeue(consumer, id, Duration::from_millis(*ms), now)
                }
                ChannelOp::Touch(id) => ch.touch(consumer, id, now, self.settings.max_msg_timeout),
                ChannelOp::Leave => {
                    debug_assert!(false, "leave is applied on its own");
                    Ok(())
                }
            };
            if let Err(e) = result {
                self.answer_failure(consumer, &op, e);
            }
        }
        self.pump_channel(ch, now);
    }

    /// nsqd's non-fatal error for a FIN/REQ/TOUCH that failed: `<CMD> <id> failed <reason>`.
    fn answer_failure(&self, consumer: ConsumerId, op: &ChannelOp, e: InFlightError) {
        let (code, cmd, id) = failure_parts(op).expect("only in-flight ops fail");
        let text = [cmd.as_bytes(), b" ", &id, b" failed ", e.text().as_bytes()].concat();
        self.client_error(consumer, ProtocolError::non_fatal(code, text));
    }

    /// A consumer's connection closed: it leaves its channel, and an ephemeral channel left
    /// without consumers is deleted.
    fn leave_channel(&self, consumer: ConsumerId) {
        let Some((topic, channel)) = self.subscriptions.borrow_mut().remove(&consumer.conn) else {
            return;
        };
        let mut topics = self.topics.borrow_mut();
        let Some(ch) = topics
            .get_mut(&topic)
            .and_then(|t| t.channels.get_mut(&channel))
        else {
            return;
        };
        ch.remove_consumer(consumer);
        if ch.should_delete() {
            self.delete_channel(&mut topics, &topic, &channel);
        }
    }

    /// Removes a channel; an ephemeral topic left without channels goes too.
    pub(super) fn delete_channel(
        &self,
        topics: &mut std::collections::HashMap<String, Topic>,
        topic: &str,
        channel: &str,
    ) {
        let Some(t) = topics.get_mut(topic) else {
            return;
        };
        t.remove_channel(channel);
        tracing::info!("CHANNEL({channel}): deleting");
        if t.ephemeral && t.channels.is_empty() {
            self.remove_topic(topics, topic);
            tracing::info!("TOPIC({topic}): deleting");
        }
    }

    /// Removes a topic (with its channels and their disk queues).
    pub(super) fn remove_topic(
        &self,
        topics: &mut std::collections::HashMap<String, Topic>,
        name: &str,
    ) -> Option<Topic> {
        let removed = topics.remove(name)?;
        let changes = self.topic_changes.get() + 1 + removed.channel_changes();
        self.topic_changes.set(changes);
        Some(removed)
    }

    /// A count that grows whenever a topic or channel of this core is added or removed.
    pub(super) fn topology_changes(&self) -> u64 {
        let topics = self.topics.borrow();
        let channels: u64 = topics.values().map(Topic::channel_changes).sum();
        self.topic_changes.get() + channels
    }

    /// Redelivers timed-out messages and releases due deferred ones on every owned channel.
    pub fn scan_queues(&self, now: Instant) {
        let mut topics = self.topics.borrow_mut();
        for t in topics.values_mut() {
            for ch in t.channels.values_mut() {
                if ch.process_timers(now) {
                    self.pump_channel(ch, now);
                }
            }
        }
    }

    /// The periodic settle pass over every owned topic (see [`crate::broker::settle`]).
    pub fn settle_messages(&self, now: Instant) {
        let delivered_before = now
            .checked_sub(crate::broker::settle::SETTLE_EVERY)
            .unwrap_or(now);
        for t in self.topics.borrow_mut().values_mut() {
            t.settle(delivered_before);
        }
    }

    /// Runs `f` over the owned topics (stats, tests).
    pub fn with_topics<R>(
        &self,
        f: impl FnOnce(&std::collections::HashMap<String, Topic>) -> R,
    ) -> R {
        f(&self.topics.borrow())
    }
}

/// Error code, command name and message ID for the ops that can fail.
fn failure_parts(op: &ChannelOp) -> Option<(&'static str, &'static str, [u8; 16])> {
    match op {
        ChannelOp::Finish(id) => Some((E_FIN_FAILED, "FIN", *id)),
        ChannelOp::Requeue(id, _) => Some((E_REQ_FAILED, "REQ", *id)),
        ChannelOp::Touch(id) => Some((E_TOUCH_FAILED, "TOUCH", *id)),
        ChannelOp::Ready(_) | ChannelOp::Leave => None,
    }
}
