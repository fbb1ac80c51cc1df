//! A shard's part of a stats snapshot, and gathering every shard's part in one mesh round.

use std::time::Instant;

use super::Shard;
use crate::broker::channel::{Channel, Consumer};
use crate::broker::latency::merged_stats;
use crate::broker::topic::Topic;
use crate::mesh::{MeshMsg, ReplyTo};
use crate::stats::{
    ChannelStats, ClientFeatures, ClientIdentity, ConsumerStats, DeliveryCounts, ShardFigures,
    ShardStats, StatsFilter, TopicStats,
};

impl Shard {
    /// Every shard's part of a snapshot: one request to each other core, sent together, and
    /// this core's own part while they answer. A core that is shutting down is left out.
    pub async fn gather_stats(&self, filter: &StatsFilter) -> Vec<ShardStats> {
        let mut waits = Vec::with_capacity(self.nr_shards.saturating_sub(1));
        for peer in (0..self.nr_shards).filter(|&p| p != self.id) {
            let (token, reply) = self.pending_stats.register();
            self.outboxes.push(
                peer,
                MeshMsg::Stats {
                    filter: filter.clone(),
                    reply: ReplyTo {
                        shard: self.id,
                        token,
                    },
                },
            );
            waits.push(reply);
        }
        let mut parts = vec![self.stats_part(filter)];
        for wait in waits {
            if let Some(part) = wait.await {
                parts.push(*part);
            }
        }
        parts
    }

    /// This shard's part: owned topics passing the filter, its connections, its figures.
    pub fn stats_part(&self, filter: &StatsFilter) -> ShardStats {
        let topics = self.topics.borrow();
        let selected: Vec<&Topic> = match &filter.topic {
            _ if !filter.include_topics => Vec::new(),
            Some(name) => topics.get(name).into_iter().collect(),
            None => topics.values().collect(),
        };
        let topic_found = filter.topic.is_some() && !selected.is_empty();
        let now = Instant::now();
        let mut topic_stats: Vec<TopicStats> = selected
            .into_iter()
            .filter_map(|t| topic_stats(t, filter, now))
            .collect();
        topic_stats.sort_by(|a, b| a.name.cmp(&b.name));
        let clients = if filter.include_clients {
            self.clients
                .borrow()
                .values()
                .map(|c| {
                    let mut s = c.meta.stats(c.id, c.remote, c.connect_ts);
                    let (snappy, deflate) = c.transport.compression_flags();
                    s.features = ClientFeatures {
                        snappy,
                        deflate,
                        tls: c.transport.tls_details(),
                    };
                    s
                })
                .collect()
        } else {
            Vec::new()
        };
        let narrowed = filter.topic.is_some() || filter.channel.is_some() || !filter.include_topics;
        let unlisted_counts = if filter.include_clients && narrowed {
            unlisted_counts(&topics, &topic_stats)
        } else {
            Vec::new()
        };
        ShardStats {
            topics: topic_stats,
            topic_found,
            health_error: self.disk.as_ref().and_then(|d| d.registry.health_error()),
            clients,
            unlisted_counts,
            figures: self.figures(&topics),
        }
    }

    fn figures(&self, topics: &std::collections::HashMap<String, Topic>) -> ShardFigures {
        let clients = self.clients.borrow();
        let mesh = &self.outboxes.counters;
        ShardFigures {
            shard: self.id,
            tcp_connections: clients.len() as u64,
            producers: clients.values().filter(|c| c.meta.has_published()).count() as u64,
            http_connections: self.http_connections.get(),
            topics: topics.len() as u64,
            channels: topics.values().map(|t| t.channels.len() as u64).sum(),
            mesh_messages_out: mesh.messages_out.get(),
            mesh_batches_out: mesh.batches_out.get(),
            mesh_messages_in: mesh.messages_in.get(),
            mesh_outbox_depth: self.outboxes.queued() as u64,
            mesh_batch_sizes: mesh.batch_size_histogram(),
        }
    }
}

/// The delivery figures of every consumer of `topics` that `listed` does not show.
fn unlisted_counts(
    topics: &std::collections::HashMap<String, Topic>,
    listed: &[TopicStats],
) -> Vec<(u64, DeliveryCounts)> {
    let shown: rustc_hash::FxHashSet<u64> = listed
        .iter()
        .flat_map(|t| &t.channels)
        .flat_map(|c| &c.consumers)
        .map(|c| c.conn)
        .collect();
    topics
        .values()
        .flat_map(|t| t.channels.values())
        .flat_map(|c| c.consumers())
        .filter(|k| !shown.contains(&k.info.id.conn))
        .map(|k| (k.info.id.conn, delivery_counts(k)))
        .collect()
}

/// A topic's stats, or `None` when the channel filter excludes it (nsqd leaves out topics
/// that lack the filtered channel).
fn topic_stats(t: &Topic, filter: &StatsFilter, now: Instant) -> Option<TopicStats> {
    let channels: Vec<ChannelStats> = match &filter.channel {
        Some(name) => vec![channel_stats(
            t.channels.get(name)?,
            filter.include_clients,
            now,
        )],
        None => t
            .channels
            .values()
            .map(|c| channel_stats(c, filter.include_clients, now))
            .collect(),
    };
    Some(TopicStats {
        name: t.name.clone(),
        depth: t.depth() as i64,
        backend_depth: t.backend_depth(),
        message_count: t.message_count,
        message_bytes: t.message_bytes,
        paused: t.paused,
        channels,
        // nsqd merges every channel's stream, whatever the channel filter.
        e2e_processing_latency: merged_stats(t.channels.values().filter_map(Channel::latency), now),
    })
}

fn channel_stats(c: &Channel, include_clients: bool, now: Instant) -> ChannelStats {
    let consumers = if include_clients {
        c.consumers()
            .iter()
            .map(|k| ConsumerStats {
                shard: k.info.id.shard,
                conn: k.info.id.conn,
                identity: ClientIdentity {
                    client_id: k.info.client_id.clone(),
                    hostname: k.info.hostname.clone(),
                    user_agent: k.info.user_agent.clone(),
                    remote_address: k.info.remote_address.clone(),
                    connect_ts: k.info.connect_ts,
                    sample_rate: k.info.sample_rate,
                    auth: None,
                },
                counts: delivery_counts(k),
            })
            .collect()
    } else {
        Vec::new()
    };
    ChannelStats {
        name: c.name.clone(),
        depth: c.depth() as i64,
        backend_depth: c.backend_depth(),
        in_flight_count: c.in_flight_count() as u64,
        deferred_count: c.deferred_count() as u64,
        message_count: c.counters.message_count,
        requeue_count: c.counters.requeue_count,
        timeout_count: c.counters.timeout_count,
        client_count: c.consumers().len() as u64,
        paused: c.paused,
        consumers,
        e2e_processing_latency: c.latency().map(|w| w.stats(now)),
    }
}

/// A consumer's delivery figures as `/stats` shows them.
fn delivery_counts(k: &Consumer) -> DeliveryCounts {
    DeliveryCounts {
        ready_count: k.ready_count,
        in_flight_count: k.in_flight_count,
        message_count: k.message_count,
        finish_count: k.finish_count,
        requeue_count: k.requeue_count,
    }
}
