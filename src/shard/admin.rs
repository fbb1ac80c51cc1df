//! HTTP administration of topics and channels (create, delete, empty, pause, unpause),
//! applied by the topic's owner core whichever core's HTTP listener took the request.

use std::time::Instant;

use super::Shard;
use crate::broker::channel::{Channel, ConsumerId};
use crate::mesh::{AdminError, AdminOp, MeshMsg, ReplyTo};

impl Shard {
    /// Applies `op` on the topic's owner: in place, or one mesh round trip away.
    pub async fn admin(&self, op: AdminOp) -> Result<(), AdminError> {
        let owner = self.owner_of(op.topic());
        if owner == self.id {
            let persist = op.persists_before_answer();
            let result = self.apply_admin(op);
            if result.is_ok() && persist {
                self.persist_metadata().await;
            }
            return result;
        }
        let (token, reply) = self.pending_admin.register();
        self.outboxes.push(
            owner,
            MeshMsg::Admin {
                op,
                reply: ReplyTo {
                    shard: self.id,
                    token,
                },
            },
        );
        reply.await
    }

    /// Applies an administrative action to an owned topic, with nsqd's semantics: a paused
    /// topic keeps messages in its own queue, a paused channel delivers to nobody (in-flight
    /// messages can still be finished), unpausing resumes delivery at once, deleting a channel
    /// disconnects its consumers.
    pub(super) fn apply_admin(&self, op: AdminOp) -> Result<(), AdminError> {
        use AdminError::{ChannelNotFound, TopicNotFound};
        let now = Instant::now();
        let mqs = self.settings.mem_queue_size;
        let mut topics = self.topics.borrow_mut();
        match op {
            AdminOp::CreateTopic { topic } => {
                self.create_topic(&mut topics, &topic);
            }
            AdminOp::DeleteTopic { topic } => {
                let t = self
                    .remove_topic(&mut topics, &topic)
                    .ok_or(TopicNotFound)?;
                tracing::info!("TOPIC({topic}): deleting");
                for ch in t.channels.values() {
                    self.disconnect_consumers(ch);
                    tracing::info!("CHANNEL({}): deleting", ch.name);
                }
            }
            AdminOp::EmptyTopic { topic } => {
                topics.get_mut(&topic).ok_or(TopicNotFound)?.empty();
            }
            AdminOp::PauseTopic { topic, paused } => {
                let t = topics.get_mut(&topic).ok_or(TopicNotFound)?;
                t.paused = paused;
                tracing::info!(
                    "TOPIC({topic}): {}",
                    if paused { "pausing" } else { "unpausing" }
                );
                if !paused {
                    t.drain_backlog(mqs);
                    for ch in t.channels.values_mut() {
                        self.pump_channel(ch, now);
                    }
                }
            }
            AdminOp::CreateChannel { topic, channel } => {
                let t = topics.get_mut(&topic).ok_or(TopicNotFound)?;
                if !t.channels.contains_key(&channel) {
                    t.channel_mut(&channel, mqs);
                    tracing::info!("TOPIC({topic}): new channel({channel})");
                }
            }
            AdminOp::DeleteChannel { topic, channel } => {
                let t = topics.get(&topic).ok_or(TopicNotFound)?;
                let ch = t.channels.get(&channel).ok_or(ChannelNotFound)?;
                self.disconnect_consumers(ch);
                self.delete_channel(&mut topics, &topic, &channel);
            }
            AdminOp::EmptyChannel { topic, channel } => {
                let t = topics.get_mut(&topic).ok_or(TopicNotFound)?;
                t.channels.get_mut(&channel).ok_or(ChannelNotFound)?.empty();
            }
            AdminOp::PauseChannel {
                topic,
                channel,
                paused,
            } => {
                let t = topics.get_mut(&topic).ok_or(TopicNotFound)?;
                let ch = t.channels.get_mut(&channel).ok_or(ChannelNotFound)?;
                ch.paused = paused;
                tracing::info!(
                    "CHANNEL({channel}): {}",
                    if paused { "pausing" } else { "unpausing" }
                );
                if !paused {
                    self.pump_channel(ch, now);
                }
            }
        }
        Ok(())
    }

    /// Closes every consumer of a channel that is going away (no error frame, as nsqd) and
    /// forgets their subscriptions, so their later FIN/REQ/TOUCH fail as not in flight.
    fn disconnect_consumers(&self, channel: &Channel) {
        let ids: Vec<ConsumerId> = channel.consumers().iter().map(|c| c.info.id).collect();
        let mut subscriptions = self.subscriptions.borrow_mut();
        for id in ids {
            subscriptions.remove(&id.conn);
            self.close_client(id);
        }
    }

    /// Closes a connection after its pending output, here or on its core.
    pub(super) fn close_client(&self, id: ConsumerId) {
        if id.shard == self.id {
            if let Some(c) = self.clients.borrow().get(&id.conn) {
                c.close();
            }
        } else {
            self.outboxes
                .push(id.shard, MeshMsg::CloseClient { conn: id.conn });
        }
    }
}
