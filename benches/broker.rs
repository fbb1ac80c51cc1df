//! Broker model costs without IO: message ID generation (`broker::guid::GuidFactory`) and the
//! fan-out of a published batch to every channel and its consumers (`broker::topic::Topic::publish`
//! then `broker::channel::Channel::pump`), as one PUB/MPUB costs on the topic's owner core.
//!
//! `cargo bench --bench broker`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    BatchSize, BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main,
};
use nsqd_uring::broker::channel::{ConsumerId, ConsumerInfo};
use nsqd_uring::broker::guid::GuidFactory;
use nsqd_uring::broker::topic::Topic;

const MEM_QUEUE: usize = 1_000_000;
const NOW_NS: i64 = 1_700_000_000_000_000_000;

fn guid(c: &mut Criterion) {
    let mut g = c.benchmark_group("guid");
    g.throughput(Throughput::Elements(1));
    let mut factory = GuidFactory::new(42);
    let mut now = NOW_NS;
    g.bench_function("next_id", |b| {
        b.iter(|| {
            now += 100;
            black_box(factory.next_id(black_box(now)))
        })
    });
    g.finish();
}

fn consumer(conn: u64) -> ConsumerInfo {
    ConsumerInfo {
        id: ConsumerId { shard: 0, conn },
        client_id: format!("c{conn}"),
        hostname: "bench".into(),
        user_agent: "criterion".into(),
        remote_address: "127.0.0.1:1".into(),
        connect_ts: 0,
        msg_timeout: Duration::from_secs(60),
        sample_rate: 0,
        locality: Default::default(),
    }
}

/// A topic with `channels` channels, each with `consumers` consumers at a high RDY.
fn topic_with(channels: usize, consumers: u64) -> Topic {
    let mut t = Topic::new("bench", 1);
    for ch in 0..channels {
        let channel = t.channel_mut(&format!("ch{ch}"), MEM_QUEUE);
        for conn in 0..consumers {
            let conn = ch as u64 * 1000 + conn;
            channel.add_consumer(consumer(conn), 0);
            channel.set_ready(ConsumerId { shard: 0, conn }, 1_000_000);
        }
    }
    t
}

fn fan_out(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for (batch, size, channels, consumers) in [
        (1, 200, 1, 1),
        (100, 200, 1, 1),
        (100, 200, 1, 16),
        (100, 200, 4, 4),
        (100, 16384, 1, 1),
    ] {
        let bodies: Vec<Bytes> = (0..batch).map(|_| Bytes::from(vec![b'x'; size])).collect();
        g.throughput(Throughput::Elements((batch * channels) as u64));
        let name = format!("{batch}x{size}B/{channels}ch/{consumers}cons");
        g.bench_with_input(BenchmarkId::from_parameter(name), &bodies, |b, bodies| {
            b.iter_batched_ref(
                || topic_with(channels, consumers),
                |t| {
                    let now = Instant::now();
                    t.publish(bodies.clone(), None, NOW_NS, MEM_QUEUE)
                        .expect("room");
                    let mut sent = 0usize;
                    for ch in t.channels.values_mut() {
                        sent += ch.pump(now, &mut |_| true, &mut |id, m, _| {
                            black_box((id, m.id));
                        });
                    }
                    assert_eq!(sent, bodies.len() * channels);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, guid, fan_out);
criterion_main!(benches);
