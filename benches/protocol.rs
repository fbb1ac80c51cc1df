//! Wire-format costs on the hot path: decoding every V2 command (`protocol::codec::decode`),
//! MPUB bodies of several shapes, and encoding every frame type (`protocol::frame`).
//!
//! `cargo bench --bench protocol`; criterion reports per-iteration time and bytes/s.

use bytes::{BufMut, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use nsqd_uring::protocol::codec::{ClientState, DecodeContext, decode};
use nsqd_uring::protocol::frame;

fn ctx(state: ClientState) -> DecodeContext {
    DecodeContext::new(state)
}

fn with_body(line: &str, body: &[u8]) -> Vec<u8> {
    let mut v = line.as_bytes().to_vec();
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn mpub(count: usize, size: usize) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u32(count as u32);
    for _ in 0..count {
        body.put_u32(size as u32);
        body.put_bytes(b'x', size);
    }
    with_body("MPUB bench\n", &body)
}

/// Every command, with the state it is valid in.
fn commands() -> Vec<(&'static str, Vec<u8>, ClientState)> {
    use ClientState::{Init, Subscribed};
    let id = "0123456789abcdef";
    vec![
        ("NOP", b"NOP\n".to_vec(), Init),
        ("RDY", b"RDY 2500\n".to_vec(), Subscribed),
        ("FIN", format!("FIN {id}\n").into_bytes(), Subscribed),
        ("REQ", format!("REQ {id} 1000\n").into_bytes(), Subscribed),
        ("TOUCH", format!("TOUCH {id}\n").into_bytes(), Subscribed),
        ("CLS", b"CLS\n".to_vec(), Subscribed),
        ("SUB", b"SUB bench_topic bench_channel\n".to_vec(), Init),
        ("PUB/200B", with_body("PUB bench\n", &[b'x'; 200]), Init),
        ("DPUB/200B", with_body("DPUB bench 1000\n", &[b'x'; 200]), Init),
        ("MPUB/100x200B", mpub(100, 200), Init),
        (
            "IDENTIFY",
            with_body(
                "IDENTIFY\n",
                br#"{"client_id":"bench","hostname":"h","feature_negotiation":true,"heartbeat_interval":30000}"#,
            ),
            Init,
        ),
        ("AUTH", with_body("AUTH\n", b"secret"), Init),
    ]
}

fn decode_commands(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/decode");
    for (name, bytes, state) in commands() {
        let ctx = ctx(state);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &bytes, |b, bytes| {
            let mut buf = BytesMut::with_capacity(bytes.len());
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(bytes);
                let cmd = decode(&mut buf, &ctx, false);
                assert!(matches!(cmd, Ok(Some(_))), "{name}: {cmd:?}");
                black_box(cmd)
            })
        });
    }
    g.finish();
}

fn decode_mpub_shapes(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/mpub");
    let ctx = ctx(ClientState::Init);
    for (count, size) in [(100, 64), (100, 200), (100, 1024), (10, 16384)] {
        let bytes = mpub(count, size);
        g.throughput(Throughput::Elements(count as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{count}x{size}B")),
            &bytes,
            |b, bytes| {
                let mut buf = BytesMut::with_capacity(bytes.len());
                b.iter(|| {
                    buf.clear();
                    buf.extend_from_slice(bytes);
                    black_box(decode(&mut buf, &ctx, false))
                })
            },
        );
    }
    g.finish();
}

fn encode_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/encode");
    let id = *b"0123456789abcdef";
    let mut out = BytesMut::with_capacity(64 * 1024);
    g.bench_function("response/OK", |b| {
        b.iter(|| {
            out.clear();
            frame::put_response(&mut out, black_box(frame::OK));
        })
    });
    g.bench_function("response/heartbeat", |b| {
        b.iter(|| {
            out.clear();
            frame::put_response(&mut out, black_box(frame::HEARTBEAT));
        })
    });
    g.bench_function("error/E_INVALID", |b| {
        b.iter(|| {
            out.clear();
            frame::put_error(&mut out, black_box(b"E_INVALID invalid command FOO"));
        })
    });
    for size in [64usize, 200, 1024, 16384] {
        let body = vec![b'x'; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("message", size), &body, |b, body| {
            b.iter(|| {
                out.clear();
                frame::put_message(&mut out, 1_700_000_000_000_000_000, 1, &id, black_box(body));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode_commands, decode_mpub_shapes, encode_frames);
criterion_main!(benches);
