//! Disk persistence as nsqd users see it: a clean restart keeps every queued message, topic and
//! channel; the data directory is in nsqd's formats both ways (checked with a reader and
//! fixtures written here from the format description, not with nsqd); overflow, rolling,
//! corrupt segments and the data-path lock; disk faults while serving (full disk, read-only
//! data directory, segments damaged under a live backlog).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Broker, Client, Frame, temp_dir, unique};

const STOP: Duration = Duration::from_secs(30);

fn data_flag(dir: &Path) -> String {
    format!("--data-path={}", dir.display())
}

fn stop(b: &mut Broker) {
    let status = b.terminate(STOP).expect("exited after SIGTERM");
    assert!(status.success(), "{status}\n{}", b.log());
}

/// Subscribes with RDY `rdy` and collects bodies until `want` distinct ones arrived (FIN'ing
/// each) or `within` passes; returns them with the highest attempts seen per body.
fn drain(
    b: &Broker,
    topic: &str,
    channel: &str,
    want: usize,
    within: Duration,
) -> BTreeMap<Vec<u8>, Frame> {
    let mut c = b.client();
    c.sub(topic, channel);
    c.line("RDY 200");
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + within;
    c.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while got.len() < want && Instant::now() < deadline {
        match c.try_frame() {
            Ok(Frame::Message(m)) => {
                c.line(&format!("FIN {}", m.id));
                got.insert(m.body.clone(), Frame::Message(m));
            }
            Ok(Frame::Response(r)) if r == b"_heartbeat_" => c.line("NOP"),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    got
}

/// Like [`drain`], but waits for the given bodies rather than a count: after a crash, messages
/// whose OK never reached the publisher may be delivered too, in among the acknowledged ones,
/// so counting would stop early and miss the last acknowledged messages.
fn drain_all_of(
    b: &Broker,
    topic: &str,
    channel: &str,
    want: &BTreeSet<Vec<u8>>,
    within: Duration,
) -> BTreeMap<Vec<u8>, Frame> {
    let mut c = b.client();
    c.sub(topic, channel);
    c.line("RDY 200");
    let mut got = BTreeMap::new();
    let mut missing = want.len();
    let deadline = Instant::now() + within;
    c.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while missing > 0 && Instant::now() < deadline {
        match c.try_frame() {
            Ok(Frame::Message(m)) => {
                c.line(&format!("FIN {}", m.id));
                if want.contains(&m.body) && !got.contains_key(&m.body) {
                    missing -= 1;
                }
                got.insert(m.body.clone(), Frame::Message(m));
            }
            Ok(Frame::Response(r)) if r == b"_heartbeat_" => c.line("NOP"),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    got
}

fn bodies(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i:05}").into_bytes())
        .collect()
}

fn mpub_all(c: &mut Client, topic: &str, all: &[Vec<u8>]) {
    for chunk in all.chunks(100) {
        let refs: Vec<&[u8]> = chunk.iter().map(|b| b.as_slice()).collect();
        c.mpub(topic, &refs);
    }
}

#[test]
fn restart_with_backlog_in_memory_in_flight_deferred_and_on_disk_loses_nothing() {
    let dir = temp_dir();
    let flags = [
        data_flag(&dir),
        "--cores=2".to_string(),
        "--mem-queue-size=100".to_string(),
        "--max-bytes-per-file=8192".to_string(),
    ];
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let topics: Vec<String> = (0..4).map(|i| unique(&format!("keep{i}_"))).collect();
    let per_topic = 1500;
    let mut b = Broker::start(&args);
    for t in &topics {
        // Two channels per topic, created by SUB; the subscribers leave at once.
        for ch in ["a", "b"] {
            let mut c = b.client();
            c.sub(t, ch);
        }
    }
    let mut p = b.client();
    for t in &topics {
        mpub_all(&mut p, t, &bodies(t, per_topic));
    }
    // A deferred message, and in-flight messages held by a consumer that never answers.
    p.send(format!("DPUB {} 600000\n", topics[0]).as_bytes());
    p.send(&(8u32).to_be_bytes());
    p.send(b"deferred");
    p.expect_ok();
    let mut holder = b.client();
    holder.sub(&topics[1], "a");
    holder.line("RDY 7");
    let held: Vec<_> = (0..7).map(|_| holder.expect_message()).collect();
    stop(&mut b);
    drop(b);

    let meta = std::fs::read_to_string(dir.join("nsqd.dat")).unwrap();
    for t in &topics {
        assert!(meta.contains(&format!("\"name\":\"{t}\"")), "{meta}");
    }

    let b = Broker::start(&args);
    for (i, t) in topics.iter().enumerate() {
        for ch in ["a", "b"] {
            let mut want: BTreeSet<Vec<u8>> = bodies(t, per_topic).into_iter().collect();
            if i == 0 {
                want.insert(b"deferred".to_vec());
            }
            let got = drain(&b, t, ch, want.len(), Duration::from_secs(60));
            let keys: BTreeSet<Vec<u8>> = got.keys().cloned().collect();
            assert_eq!(keys.len(), want.len(), "{t}:{ch}");
            assert_eq!(keys, want, "{t}:{ch}");
            if i == 1 && ch == "a" {
                for h in &held {
                    let Some(Frame::Message(m)) = got.get(&h.body) else {
                        panic!("held message missing")
                    };
                    assert_eq!(m.id, h.id, "ID kept");
                    assert_eq!(m.timestamp, h.timestamp, "timestamp kept");
                    assert_eq!(m.attempts, 2, "attempts kept across the restart");
                }
            }
        }
    }
    drop(b);
}

/// A go-diskqueue reader written from the format description, independent of the broker.
struct Queue {
    depth: i64,
    records: Vec<(i64, u16, String, Vec<u8>)>,
}

fn read_queue(dir: &Path, name: &str) -> Queue {
    let meta = std::fs::read_to_string(dir.join(format!("{name}.diskqueue.meta.dat"))).unwrap();
    let lines: Vec<&str> = meta.split('\n').collect();
    assert_eq!(lines.len(), 4, "three newline-terminated lines: {meta:?}");
    assert_eq!(lines[3], "");
    let depth: i64 = lines[0].parse().unwrap();
    let pos = |l: &str| -> (i64, i64) {
        let (f, p) = l.split_once(',').unwrap();
        (f.parse().unwrap(), p.parse().unwrap())
    };
    let (rf, rp) = pos(lines[1]);
    let (wf, wp) = pos(lines[2]);
    let mut records = Vec::new();
    for f in rf..=wf {
        let path = dir.join(format!("{name}.diskqueue.{f:06}.dat"));
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        let mut off = if f == rf { rp as usize } else { 0 };
        let end = if f == wf { wp as usize } else { data.len() };
        while off < end {
            let len = i32::from_be_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            assert!(len >= 26, "record length {len}");
            let m = &data[off + 4..off + 4 + len];
            records.push((
                i64::from_be_bytes(m[..8].try_into().unwrap()),
                u16::from_be_bytes(m[8..10].try_into().unwrap()),
                String::from_utf8(m[10..26].to_vec()).unwrap(),
                m[26..].to_vec(),
            ));
            off += 4 + len;
        }
    }
    Queue { depth, records }
}

#[test]
fn data_directory_is_in_nsqd_format_and_rolls_at_max_bytes_per_file() {
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let topic = unique("fmt");
    let mut b = Broker::start(&[
        &flag,
        "--cores=2",
        "--mem-queue-size=0",
        "--max-bytes-per-file=300",
    ]);
    let mut c = b.client();
    c.sub(&topic, "ch");
    drop(c);
    let mut p = b.client();
    let all = bodies("xy", 40);
    mpub_all(&mut p, &topic, &all);
    let eph = unique("eph");
    p.publish(&format!("{eph}#ephemeral"), b"gone");
    stop(&mut b);

    // nsqd.dat: exactly nsqd v1.3.0's JSON; ephemeral topics are not in it.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("nsqd.dat")).unwrap()).unwrap();
    assert_eq!(meta["version"], "1.3.0");
    let text = std::fs::read_to_string(dir.join("nsqd.dat")).unwrap();
    assert_eq!(
        text,
        format!(
            r#"{{"topics":[{{"name":"{topic}","paused":false,"channels":[{{"name":"ch","paused":false}}]}}],"version":"1.3.0"}}"#
        )
    );
    // The topic's own queue handed everything to the channel; the channel holds all 40.
    let q = read_queue(&dir, &format!("{topic}:ch"));
    assert_eq!(q.depth, 40);
    let got: Vec<Vec<u8>> = q.records.iter().map(|r| r.3.clone()).collect();
    assert_eq!(got, all);
    for (ts, attempts, id, _) in &q.records {
        assert!(*ts > 1_600_000_000_000_000_000, "nanosecond timestamp");
        assert_eq!(*attempts, 0);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
    // 38-byte records (4 + 26 + 8) and a 300-byte limit: 7 per file under v1.1.0's rule.
    let segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{topic}:ch.diskqueue."))
                && n.ends_with(".dat")
                && !n.contains("meta")
        })
        .collect();
    assert_eq!(segs.len(), 6, "{segs:?}");
    for s in &segs {
        let len = std::fs::metadata(s).unwrap().len();
        assert!(len <= 300 && len % 38 == 0, "{s:?} {len}");
    }
    assert!(!std::fs::read_dir(&dir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains("ephemeral")
    }));
    drop(b);
}

/// Writes queue `name` as go-diskqueue would: segments 0 and 1 and a meta file reading from the
/// start of segment 0, writing at the end of segment 1, with `depth` messages.
fn write_two_segment_queue(dir: &Path, name: &str, seg0: &[u8], seg1: &[u8], depth: usize) {
    std::fs::write(dir.join(format!("{name}.diskqueue.000000.dat")), seg0).unwrap();
    std::fs::write(dir.join(format!("{name}.diskqueue.000001.dat")), seg1).unwrap();
    std::fs::write(
        dir.join(format!("{name}.diskqueue.meta.dat")),
        format!("{depth}\n0,0\n1,{}\n", seg1.len()),
    )
    .unwrap();
}

fn record(ts: i64, attempts: u16, id: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((26 + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&attempts.to_be_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn nsqd_written_data_directory_loads_with_ids_and_attempts() {
    let dir = temp_dir();
    let topic = unique("fixture");
    // nsqd v1.1's key order and empty arrays, which readers must accept.
    std::fs::write(
        dir.join("nsqd.dat"),
        format!(
            r#"{{"topics":[{{"channels":[{{"name":"c","paused":false}}],"name":"{topic}","paused":false}}],"version":"1.1.0"}}"#
        ),
    )
    .unwrap();
    let mut seg0 = record(1_700_000_000_000_000_001, 0, "0a1b2c3d4e5f6071", b"first");
    seg0.extend(record(
        1_700_000_000_000_000_002,
        3,
        "0a1b2c3d4e5f6072",
        b"second",
    ));
    let seg1 = record(1_700_000_000_000_000_003, 1, "0a1b2c3d4e5f6073", b"third");
    let name = format!("{topic}:c");
    write_two_segment_queue(&dir, &name, &seg0, &seg1, 3);
    let flag = data_flag(&dir);
    let b = Broker::start(&[&flag, "--cores=2"]);
    let got = drain(&b, &topic, "c", 3, Duration::from_secs(20));
    let expect = [
        ("first", "0a1b2c3d4e5f6071", 1_700_000_000_000_000_001, 1),
        ("second", "0a1b2c3d4e5f6072", 1_700_000_000_000_000_002, 4),
        ("third", "0a1b2c3d4e5f6073", 1_700_000_000_000_000_003, 2),
    ];
    for (body, id, ts, attempts) in expect {
        let Some(Frame::Message(m)) = got.get(body.as_bytes()) else {
            panic!("{body} missing: {got:?}")
        };
        assert_eq!((m.id.as_str(), m.timestamp, m.attempts), (id, ts, attempts));
    }
    drop(b);
}

#[test]
fn corrupt_segment_is_renamed_bad_and_the_rest_delivered() {
    let dir = temp_dir();
    let topic = unique("corrupt");
    std::fs::write(
        dir.join("nsqd.dat"),
        format!(
            r#"{{"topics":[{{"name":"{topic}","paused":false,"channels":[{{"name":"c","paused":false}}]}}],"version":"1.3.0"}}"#
        ),
    )
    .unwrap();
    let name = format!("{topic}:c");
    let mut seg0 = record(1_700_000_000_000_000_001, 0, "0a1b2c3d4e5f6071", b"before");
    // A length prefix of 2 GiB: must be rejected before any allocation.
    seg0.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0]);
    let seg1 = record(1_700_000_000_000_000_003, 0, "0a1b2c3d4e5f6073", b"after");
    write_two_segment_queue(&dir, &name, &seg0, &seg1, 3);
    let flag = data_flag(&dir);
    let b = Broker::start(&[&flag, "--cores=2"]);
    let got = drain(&b, &topic, "c", 2, Duration::from_secs(20));
    assert!(
        got.contains_key(&b"before"[..]) && got.contains_key(&b"after"[..]),
        "{got:?}"
    );
    assert!(
        dir.join(format!("{name}.diskqueue.000000.dat.bad"))
            .exists()
    );
    // go-diskqueue's lines (the bad record starts after the 36-byte "before" record), so a
    // log watch written for nsqd still fires.
    let log = b.log();
    let seg0_path = dir.join(format!("{name}.diskqueue.000000.dat"));
    let reading = format!(
        "ERROR: DISKQUEUE({name}) reading at 36 of {} - invalid message read size (2147483647)",
        seg0_path.display()
    );
    let jump = format!(
        "WARNING: DISKQUEUE({name}) jump to next file and saving bad file as {}.bad",
        seg0_path.display()
    );
    assert!(log.contains(&reading), "{reading}\n{log}");
    assert!(log.contains(&jump), "{jump}\n{log}");
    drop(b);
}

#[test]
fn second_broker_on_the_same_data_path_fails_with_nsqds_lock_error() {
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let b = Broker::start(&[&flag, "--cores=1"]);
    let err = Broker::try_start(&[&flag, "--cores=1"])
        .err()
        .expect("refused");
    // nsqd's line: its FATAL level, the same prefix, Go's text for EWOULDBLOCK.
    let want = format!(
        "FATAL: failed to instantiate nsqd - failed to lock data-path: cannot flock directory {} - resource temporarily unavailable (possibly in use by another instance of nsqd)",
        dir.display()
    );
    assert!(err.contains(&want), "{err}");
    drop(b);
}

#[test]
fn unparseable_nsqd_dat_is_fatal_with_nsqds_message() {
    let dir = temp_dir();
    std::fs::write(dir.join("nsqd.dat"), "{not json").unwrap();
    let flag = data_flag(&dir);
    let err = Broker::try_start(&[&flag, "--cores=1"])
        .err()
        .expect("refused");
    let want = format!(
        "FATAL: failed to load metadata - failed to parse metadata in {}",
        dir.join("nsqd.dat").display()
    );
    assert!(err.contains(&want), "{err}");
}

/// Go decodes bytes that are not UTF-8 as U+FFFD, so nsqd skips such a topic name as invalid
/// and starts; it must not be a fatal parse error here.
#[test]
fn nsqd_dat_names_that_are_not_utf8_are_skipped_not_fatal() {
    let dir = temp_dir();
    let kept = unique("kept");
    let mut text = br#"{"topics":[{"name":"k"#.to_vec();
    text.push(0xff);
    text.extend_from_slice(format!(r#"","paused":false,"channels":[]}},{{"name":"{kept}","paused":true,"channels":[]}}],"version":"1.3.0"}}"#).as_bytes());
    std::fs::write(dir.join("nsqd.dat"), text).unwrap();
    let flag = data_flag(&dir);
    let b = Broker::start(&[&flag, "--cores=1"]);
    let log = b.log();
    assert!(log.contains("skipping creation of invalid topic"), "{log}");
    drop(b);
    let saved = std::fs::read_to_string(dir.join("nsqd.dat")).unwrap();
    assert!(saved.contains(&kept), "the valid topic is kept: {saved}");
}

#[test]
fn durable_ack_kill_9_during_a_publish_storm_loses_no_acknowledged_message() {
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let args = [flag.as_str(), "--cores=2", "--durable-ack"];
    let topics: Vec<String> = (0..2).map(|i| unique(&format!("durable{i}_"))).collect();
    let mut b = Broker::start(&args);
    for t in &topics {
        let mut c = b.client();
        c.sub(t, "c");
    }
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let addr = b.tcp;
            let topic = topics[p % topics.len()].clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let (mut sent, mut acked) = (0usize, Vec::new());
                // Bounded by count and by the storm's end; the kill ends it early.
                for i in 0..1_000_000 {
                    if Instant::now() > stop_at + Duration::from_secs(10) {
                        break;
                    }
                    let body = format!("p{p}-{i:07}");
                    let mut bytes = format!("PUB {topic}\n").into_bytes();
                    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
                    bytes.extend_from_slice(body.as_bytes());
                    if std::io::Write::write_all(&mut c.stream, &bytes).is_err() {
                        break;
                    }
                    sent += 1;
                    match c.try_frame() {
                        Ok(Frame::Response(r)) if r == b"OK" => acked.push(body.into_bytes()),
                        _ => break,
                    }
                }
                (topic, sent, acked)
            })
        })
        .collect();
    while Instant::now() < stop_at {
        std::thread::sleep(Duration::from_millis(20));
    }
    b.kill9();
    let results: Vec<_> = publishers.into_iter().map(|h| h.join().unwrap()).collect();
    let sent: usize = results.iter().map(|r| r.1).sum();
    let acked: usize = results.iter().map(|r| r.2.len()).sum();
    assert!(
        acked > 0,
        "some publishes were acknowledged before the kill"
    );

    let b = Broker::start(&args);
    let mut recovered = 0;
    for t in &topics {
        let want: BTreeSet<Vec<u8>> = results
            .iter()
            .filter(|r| &r.0 == t)
            .flat_map(|r| r.2.iter().cloned())
            .collect();
        let got = drain_all_of(&b, t, "c", &want, Duration::from_secs(60));
        let missing: Vec<_> = want.iter().filter(|w| !got.contains_key(*w)).collect();
        assert!(
            missing.is_empty(),
            "{t}: {} acknowledged messages missing, e.g. {:?}",
            missing.len(),
            String::from_utf8_lossy(missing[0])
        );
        recovered += got.len();
    }
    eprintln!("durable-ack kill -9: sent {sent}, acked {acked}, recovered {recovered}");
    drop(b);
}

/// nsqd writes a message that goes to its disk queue before it answers the PUB, so with
/// `--mem-queue-size=0` a kill -9 right after the `OK`s keeps every acknowledged message
/// (`--sync-every=1` makes the meta file as current as it gets). Pipelined PUBs (one read, one write of 300 `OK`s)
/// to a topic created over HTTP with a channel, and to one the PUBs themselves create (its
/// nsqd.dat entry must be on disk too), on both cores; the kill comes as the last `OK` is read.
#[test]
fn kill_9_right_after_pipelined_oks_keeps_what_went_to_disk() {
    if !common::http_supported() {
        eprintln!("no HTTP in this build; skipped");
        return;
    }
    for cores in [1, 2] {
        let dir = temp_dir();
        let flag = data_flag(&dir);
        let cores_flag = format!("--cores={cores}");
        let args = [
            flag.as_str(),
            cores_flag.as_str(),
            "--mem-queue-size=0",
            "--sync-every=1",
        ];
        let made = common::unique_on_core("k9made", 0, cores);
        let fresh = common::unique_on_core("k9fresh", cores - 1, cores);
        let mut b = Broker::start(&args);
        assert_eq!(http_post(&b, &format!("/topic/create?topic={made}")), 200);
        let create = format!("/channel/create?topic={made}&channel=c");
        assert_eq!(http_post(&b, &create), 200);
        let mut all = Vec::new();
        let mut pipelined = Vec::new();
        for (i, body) in bodies("k9", 300).into_iter().enumerate() {
            // The new topic last: its creation and its OK are the last things before the kill.
            let topic = if i < 299 { &made } else { &fresh };
            pipelined.extend_from_slice(format!("PUB {topic}\n").as_bytes());
            pipelined.extend_from_slice(&(body.len() as u32).to_be_bytes());
            pipelined.extend_from_slice(&body);
            all.push((topic.clone(), body));
        }
        let mut c = b.client();
        c.send(&pipelined);
        for _ in 0..all.len() {
            c.expect_ok();
        }
        b.kill9();

        let b = Broker::start(&args);
        // Restored from nsqd.dat before anyone asks for them.
        let stats = stats_json(&b);
        let depth = |topic: &str| {
            stats["topics"].as_array().and_then(|ts| {
                ts.iter().find(|t| t["topic_name"] == topic).map(|t| {
                    t["depth"].as_i64().unwrap_or(0)
                        + t["channels"][0]["depth"].as_i64().unwrap_or(0)
                })
            })
        };
        assert_eq!(depth(&made), Some(299), "x{cores} {stats}");
        assert_eq!(
            depth(&fresh),
            Some(1),
            "x{cores}: the new topic is in nsqd.dat {stats}"
        );
        for topic in [&made, &fresh] {
            let want: BTreeSet<Vec<u8>> = all
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, body)| body.clone())
                .collect();
            let got = drain_all_of(&b, topic, "c", &want, Duration::from_secs(10));
            let missing = want.iter().filter(|w| !got.contains_key(*w)).count();
            assert_eq!(
                missing,
                0,
                "x{cores} {topic}: {missing} of {} acknowledged messages lost\n{}",
                want.len(),
                b.log()
            );
        }
        drop(b);
    }
}

/// The broker's `/stats?format=json`.
fn stats_json(b: &Broker) -> serde_json::Value {
    let addr = b.http.expect("HTTP listener");
    let text = ureq::get(&format!("http://{addr}/stats?format=json"))
        .call()
        .expect("/stats")
        .into_string()
        .expect("body");
    serde_json::from_str(&text).expect("JSON")
}

/// The PID of the broker started with `arg` (found through /proc, as the helper keeps it).
fn pid_with_arg(arg: &str) -> Option<String> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let is_nsqd = cmd.split(|b| *b == 0).any(|a| a == arg.as_bytes());
        is_nsqd.then(|| e.file_name().to_string_lossy().into_owned())
    })
}

fn prlimit_fsize(pid: &str, limit: &str) -> bool {
    std::process::Command::new("prlimit")
        .args(["--pid", pid, &format!("--fsize={limit}")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn full_disk_refuses_publishes_keeps_earlier_messages_and_recovers() {
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let topic = unique("full");
    let b = Broker::start(&[&flag, "--cores=1", "--mem-queue-size=0"]);
    let pid = pid_with_arg(&flag).expect("broker pid");
    // A file-size limit stands in for a full disk: writes past it fail with EFBIG.
    if !prlimit_fsize(&pid, "20000:unlimited") {
        eprintln!("prlimit unavailable; skipped");
        return;
    }
    let body = vec![b'x'; 1000];
    let mut acked = Vec::new();
    let mut refused = None;
    let mut c = b.client();
    for i in 0..200 {
        let mut m = format!("{i:04}").into_bytes();
        m.extend_from_slice(&body);
        c.with_body(&format!("PUB {topic}"), &m);
        match c.next() {
            Frame::Response(r) if r == b"OK" => acked.push(m),
            Frame::Error(e) => {
                refused = Some(e);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let refused = refused.expect("publishes refused once the disk is full");
    assert!(refused.starts_with("E_PUB_FAILED"), "{refused}");
    // The broker logs the write error before it answers, but the log reaches this process
    // through a pipe and a reader thread, which may lag behind the answer.
    assert!(
        wait_until(Duration::from_secs(5), || b
            .log()
            .contains("File too large")),
        "{}",
        b.log()
    );
    assert!(prlimit_fsize(&pid, "unlimited"));
    // Space is back: the next storage round writes what was held, and publishing works again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut recovered = false;
    while !recovered && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let mut p = b.client();
        p.with_body(&format!("PUB {topic}"), b"after-recovery-0000000000000");
        recovered = matches!(p.next(), Frame::Response(r) if r == b"OK");
    }
    assert!(recovered, "publishes accepted again after space returned");
    // The refused publish's record is kept and retried with the rest (a duplicate if the
    // client publishes it again, never a loss), so wait for the bodies, not a count.
    let after = b"after-recovery-0000000000000".to_vec();
    let want: BTreeSet<Vec<u8>> = acked.iter().cloned().chain([after]).collect();
    let got = drain_all_of(&b, &topic, "c", &want, Duration::from_secs(20));
    for m in &acked {
        assert!(
            got.contains_key(m),
            "acknowledged message {:?} lost",
            &m[..4]
        );
    }
    assert!(got.contains_key(&b"after-recovery-0000000000000"[..]));
    drop(b);
}

#[test]
fn nsqd_dat_is_rewritten_when_topics_and_channels_are_created_so_kill_9_keeps_them() {
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let args = [flag.as_str(), "--cores=2"];
    let topics: Vec<String> = (0..4).map(|i| unique(&format!("created{i}_"))).collect();
    let mut b = Broker::start(&args);
    for t in &topics {
        for ch in ["ch", "ch2"] {
            let mut c = b.client();
            c.sub(t, ch);
        }
    }
    let mut p = b.client();
    p.publish(&format!("{}#ephemeral", unique("gone")), b"x");
    let listed = |text: &str| {
        let entry = |t: &String| format!(r#"{{"name":"{t}","paused":false,"channels":["#);
        topics.iter().all(|t| text.contains(&entry(t)))
            && text.matches(r#"{"name":"ch2","paused":false}"#).count() == topics.len()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(dir.join("nsqd.dat")).unwrap_or_default();
        if listed(&text) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(listed(&text), "{text}");
    assert!(!text.contains("ephemeral"), "{text}");
    b.kill9();
    let b = Broker::start(&args);
    let mut p = b.client();
    for t in &topics {
        p.publish(t, b"after");
    }
    // Both channels exist again before any SUB: each got its own copy (without the restore,
    // the topic would have kept the message for the first channel created).
    for t in &topics {
        for ch in ["ch", "ch2"] {
            let got = drain(&b, t, ch, 1, Duration::from_secs(10));
            assert!(got.contains_key(&b"after"[..]), "{t}:{ch}");
        }
    }
    drop(b);
}

fn http_post(b: &Broker, path: &str) -> u16 {
    let addr = b.http.expect("HTTP listener");
    match ureq::post(&format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .call()
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{path}: {e}"),
    }
}

/// With `--durable-ack` a deferred message still waits out its deferral: in a channel, and in
/// a topic that holds its messages (paused, or without channels), where it used to go to the
/// disk queue like a non-deferred one and came out at once on unpause. (Deferred messages are
/// held in memory as in nsqd: a disk queue record has no room for a deferral; see README.)
#[test]
fn durable_ack_keeps_a_deferral_in_a_paused_topic_and_in_a_channel() {
    if !common::http_supported() {
        eprintln!("no HTTP in this build; skipped");
        return;
    }
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let b = Broker::start(&[flag.as_str(), "--cores=2", "--durable-ack"]);
    let (paused, fanning) = (unique("dpubpaused"), unique("dpubchannel"));
    let mut p = b.client();
    p.sub(&fanning, "c");
    drop(p);
    assert_eq!(http_post(&b, &format!("/topic/create?topic={paused}")), 200);
    assert_eq!(http_post(&b, &format!("/topic/pause?topic={paused}")), 200);
    let mut p = b.client();
    let sent = Instant::now();
    for topic in [&paused, &fanning] {
        p.with_body(&format!("DPUB {topic} 1500"), b"later");
        p.expect_ok();
    }
    assert_eq!(
        http_post(&b, &format!("/topic/unpause?topic={paused}")),
        200
    );
    for topic in [&paused, &fanning] {
        let mut c = b.consumer(topic, "c", 1);
        let early = Duration::from_millis(1000).saturating_sub(sent.elapsed());
        if !early.is_zero() {
            c.expect_silence(early);
        }
        let m = c.expect_message();
        assert_eq!(m.body, b"later");
        assert!(
            sent.elapsed() >= Duration::from_millis(1400),
            "{topic}: delivered {:?} after a 1500 ms DPUB",
            sent.elapsed()
        );
    }
}

/// nsqd writes nsqd.dat before it answers a pause or unpause ("so in case of process failure
/// nsqd won't suddenly (un)pause a topic"): the file holds the new state as soon as the
/// answer arrives, for topics owned by either core (the request lands on either listener).
#[test]
fn a_pause_is_in_nsqd_dat_when_its_answer_arrives() {
    if !common::http_supported() {
        eprintln!("no HTTP in this build; skipped");
        return;
    }
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let b = Broker::start(&[flag.as_str(), "--cores=2"]);
    let topics = [
        common::unique_on_core("pnow", 0, 2),
        common::unique_on_core("pnow", 1, 2),
    ];
    for t in &topics {
        assert_eq!(http_post(&b, &format!("/topic/create?topic={t}")), 200);
        assert_eq!(
            http_post(&b, &format!("/channel/create?topic={t}&channel=c")),
            200
        );
    }
    let saved = || std::fs::read_to_string(dir.join("nsqd.dat")).unwrap();
    for t in &topics {
        for (action, flag) in [("pause", true), ("unpause", false)] {
            assert_eq!(http_post(&b, &format!("/topic/{action}?topic={t}")), 200);
            let topic_entry = format!(r#"{{"name":"{t}","paused":{flag},"#);
            assert!(saved().contains(&topic_entry), "{action} {t}: {}", saved());
            let path = format!("/channel/{action}?topic={t}&channel=c");
            assert_eq!(http_post(&b, &path), 200);
            let channel_entry = format!(r#"[{{"name":"c","paused":{flag}}}]"#);
            let text = saved();
            let entry = &text[text.find(&format!(r#""name":"{t}""#)).expect("listed")..];
            assert!(entry.contains(&channel_entry), "{action} {t}/c: {text}");
        }
    }
    drop(b);
}

#[test]
fn pause_state_survives_a_restart() {
    if !common::http_supported() {
        eprintln!("no HTTP in this build; skipped");
        return;
    }
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let args = [flag.as_str(), "--cores=2"];
    let (paused_topic, paused_channel) = (unique("ptopic"), unique("pchan"));
    let mut b = Broker::start(&args);
    for t in [&paused_topic, &paused_channel] {
        let mut c = b.client();
        c.sub(t, "c");
    }
    assert_eq!(
        http_post(&b, &format!("/topic/pause?topic={paused_topic}")),
        200
    );
    assert_eq!(
        http_post(
            &b,
            &format!("/channel/pause?topic={paused_channel}&channel=c")
        ),
        200
    );
    stop(&mut b);
    let text = std::fs::read_to_string(dir.join("nsqd.dat")).unwrap();
    assert!(
        text.contains(&format!(r#"{{"name":"{paused_topic}","paused":true,"#)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"{{"name":"{paused_channel}","paused":false,"channels":[{{"name":"c","paused":true}}]}}"#
        )),
        "{text}"
    );
    drop(b);

    let b = Broker::start(&args);
    let mut consumers = Vec::new();
    for t in [&paused_topic, &paused_channel] {
        let mut c = b.client();
        c.sub(t, "c");
        c.line("RDY 10");
        let mut p = b.client();
        p.publish(t, b"held");
        c.expect_silence(Duration::from_millis(300));
        consumers.push(c);
    }
    assert_eq!(
        http_post(&b, &format!("/topic/unpause?topic={paused_topic}")),
        200
    );
    assert_eq!(
        http_post(
            &b,
            &format!("/channel/unpause?topic={paused_channel}&channel=c")
        ),
        200
    );
    for c in &mut consumers {
        assert_eq!(c.expect_message().body, b"held");
    }
    drop(b);
}

fn queue_files(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{name}.diskqueue.")))
        .collect()
}

fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// In nsqd an `#ephemeral` topic has no disk queue, but a channel of it without the suffix
/// has one: past `--mem-queue-size` its messages go to disk instead of being refused, a clean
/// stop keeps them there, and since nsqd.dat never lists the topic they come back only when
/// the topic and channel are created again.
#[test]
fn durable_channel_of_an_ephemeral_topic_overflows_to_disk() {
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let args = [flag.as_str(), "--cores=2", "--mem-queue-size=10"];
    let topic = format!("{}#ephemeral", unique("ephdur"));
    let all = bodies("eph", 30);
    let mut b = Broker::start(&args);
    // A consumer keeps the topic alive (it is deleted with its last channel otherwise).
    let mut keeper = b.client();
    keeper.sub(&topic, "dur");
    for body in &all {
        let mut c = b.client();
        c.publish(&topic, body);
    }
    stop(&mut b);
    drop(keeper);
    let name = format!("{topic}:dur");
    let files = queue_files(&dir, &name);
    assert!(
        files.iter().any(|f| f.ends_with(".000000.dat")),
        "{name}: {files:?}"
    );
    let saved = std::fs::read_to_string(dir.join("nsqd.dat")).unwrap();
    assert!(
        !saved.contains(&topic),
        "ephemeral topics are not listed: {saved}"
    );

    let b = Broker::start(&args);
    let want: BTreeSet<Vec<u8>> = all.iter().cloned().collect();
    let got = drain_all_of(&b, &topic, "dur", &want, Duration::from_secs(10));
    let missing = want.iter().filter(|w| !got.contains_key(*w)).count();
    assert_eq!(
        missing,
        0,
        "{} of 30 came back with the channel",
        30 - missing
    );
    drop(b);
}

#[test]
fn empty_and_delete_remove_disk_queues_and_update_nsqd_dat() {
    if !common::http_supported() {
        eprintln!("no HTTP in this build; skipped");
        return;
    }
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let topic = unique("del");
    let b = Broker::start(&[&flag, "--cores=2", "--mem-queue-size=0"]);
    for ch in ["keep", "drop"] {
        let mut c = b.client();
        c.sub(&topic, ch);
    }
    let mut p = b.client();
    mpub_all(&mut p, &topic, &bodies("d", 50));
    let (keep, drop_q) = (format!("{topic}:keep"), format!("{topic}:drop"));
    assert!(wait_until(Duration::from_secs(10), || {
        !queue_files(&dir, &drop_q).is_empty() && !queue_files(&dir, &keep).is_empty()
    }));
    // Empty: the backlog is gone, later messages still arrive.
    assert_eq!(
        http_post(&b, &format!("/channel/empty?topic={topic}&channel=keep")),
        200
    );
    p.publish(&topic, b"after-empty");
    let got = drain(&b, &topic, "keep", 1, Duration::from_secs(10));
    assert!(got.contains_key(&b"after-empty"[..]), "{got:?}");
    assert!(!got.contains_key(&b"d-00000"[..]), "emptied messages gone");
    // Delete: the channel's files and its nsqd.dat entry go.
    assert_eq!(
        http_post(&b, &format!("/channel/delete?topic={topic}&channel=drop")),
        200
    );
    assert!(
        wait_until(Duration::from_secs(10), || queue_files(&dir, &drop_q)
            .is_empty()),
        "{:?}",
        queue_files(&dir, &drop_q)
    );
    assert!(wait_until(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(dir.join("nsqd.dat")).unwrap_or_default();
        text.contains(r#""name":"keep""#) && !text.contains(r#""name":"drop""#)
    }));
    drop(b);
}

/// nsqd deletes a topic's or channel's files before its name can be used again, so a name
/// re-created at once starts empty. Ours deletes files in the storage task, after the HTTP
/// answer: a topic or channel re-created before it got there must still start empty (no
/// deleted message back, the deleted read position not inherited, nothing published after
/// the re-creation lost), on one core and across two.
#[test]
fn a_name_re_created_right_after_its_deletion_starts_empty() {
    if !common::http_supported() {
        eprintln!("no HTTP in this build; skipped");
        return;
    }
    for cores in [1, 2] {
        let dir = temp_dir();
        let flag = data_flag(&dir);
        let args = [
            flag.as_str(),
            &format!("--cores={cores}"),
            "--mem-queue-size=0",
            "--max-bytes-per-file=1024",
        ];
        let mut b = Broker::start(&args);
        // A topic with no channel keeps its messages in its own disk queue.
        let topic = unique("recreated");
        let mut p = b.client();
        mpub_all(&mut p, &topic, &bodies("old", 50));
        assert!(wait_until(Duration::from_secs(10), || queue_files(
            &dir, &topic
        )
        .len()
            > 2));
        assert_eq!(http_post(&b, &format!("/topic/delete?topic={topic}")), 200);
        let fresh = bodies("new", 3);
        for body in &fresh {
            p.publish(&topic, body);
        }
        // The same channel, deleted and created again between two publishes.
        let other = unique("recreated");
        for path in [
            format!("/topic/create?topic={other}"),
            format!("/channel/create?topic={other}&channel=c"),
        ] {
            assert_eq!(http_post(&b, &path), 200, "{path}");
        }
        mpub_all(&mut p, &other, &bodies("old", 50));
        let channel_queue = format!("{other}:c");
        assert!(wait_until(Duration::from_secs(10), || queue_files(
            &dir,
            &channel_queue
        )
        .len()
            > 2));
        for action in ["delete", "create"] {
            let path = format!("/channel/{action}?topic={other}&channel=c");
            assert_eq!(http_post(&b, &path), 200, "{path}");
        }
        for body in &fresh {
            p.publish(&other, body);
        }
        let got = drain(&b, &other, "c", fresh.len() + 1, Duration::from_secs(2));
        let want: BTreeSet<Vec<u8>> = fresh.iter().cloned().collect();
        let keys: BTreeSet<Vec<u8>> = got.keys().cloned().collect();
        assert_eq!(
            keys, want,
            "x{cores}: channel re-created after its deletion"
        );
        // The topic's queue goes through a restart: its meta file must be the new queue's.
        drop(p);
        stop(&mut b);
        let b = Broker::start(&args);
        let got = drain(&b, &topic, "c", fresh.len() + 1, Duration::from_secs(2));
        let keys: BTreeSet<Vec<u8>> = got.keys().cloned().collect();
        assert_eq!(keys, want, "x{cores}: topic re-created after its deletion");
        assert!(
            !b.log().contains("ERROR"),
            "x{cores}: no disk error expected\n{}",
            b.log()
        );
        drop(b);
    }
}

/// Whether this process runs as root (a private mount namespace and a tmpfs need it).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Starts the broker in a private mount namespace (`unshare -m`) on a tmpfs mounted at
/// `mount` and seeded with a copy of `seed`: the test can flip that file system read-only
/// under the running broker ([`remount`]) without touching the host's mounts, and the mount
/// goes away with the broker.
fn broker_on_tmpfs(mount: &Path, seed: &Path, args: &[&str]) -> Broker {
    let script =
        r#"mount -t tmpfs -o size=64m tmpfs "$1" && cp -a "$2"/. "$1"/ && shift 2 && exec "$@""#;
    let wrapper: Vec<String> = ["unshare", "-m", "sh", "-c", script, "sh"]
        .into_iter()
        .map(String::from)
        .chain([mount.display().to_string(), seed.display().to_string()])
        .collect();
    let flag = data_flag(mount);
    let mut all = vec![flag.as_str()];
    all.extend_from_slice(args);
    Broker::try_start_wrapped(&wrapper, &all)
        .unwrap_or_else(|e| panic!("nsqd on a private tmpfs did not start: {e}"))
}

/// Remounts the broker's data file system `ro` or `rw` from inside its mount namespace.
/// Linux refuses `ro` (EBUSY) while a file on it is open for writing: the broker holds none
/// until it writes a disk queue, but nsqd.dat's temporary file may be open for a moment.
fn remount(pid: u32, mount: &Path, mode: &str) {
    let mut last = String::new();
    for _ in 0..50 {
        let out = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "mount", "-o"])
            .arg(format!("remount,{mode}"))
            .arg(mount)
            .output()
            .expect("run nsenter");
        if out.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("remount,{mode} failed: {last}");
}

/// `GET /ping`: status and body.
fn ping(b: &Broker) -> (u16, String) {
    let addr = b.http.expect("HTTP listener");
    match ureq::get(&format!("http://{addr}/ping"))
        .timeout(Duration::from_secs(5))
        .call()
    {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("/ping: {e}"),
    }
}

/// Writes a data directory as a stopped nsqd leaves it: `topic:channel` listed in nsqd.dat,
/// its backlog of `all` in go-diskqueue segments of `per_segment` records.
fn write_backlog(dir: &Path, topic: &str, channel: &str, all: &[Vec<u8>], per_segment: usize) {
    std::fs::write(
        dir.join("nsqd.dat"),
        format!(
            r#"{{"topics":[{{"name":"{topic}","paused":false,"channels":[{{"name":"{channel}","paused":false}}]}}],"version":"1.3.0"}}"#
        ),
    )
    .unwrap();
    let name = format!("{topic}:{channel}");
    let mut end = (0, 0);
    for (n, chunk) in all.chunks(per_segment).enumerate() {
        let mut seg = Vec::new();
        for (i, body) in chunk.iter().enumerate() {
            let k = n * per_segment + i;
            seg.extend(record(
                1_700_000_000_000_000_000 + k as i64,
                0,
                &format!("{k:016x}"),
                body,
            ));
        }
        std::fs::write(dir.join(format!("{name}.diskqueue.{n:06}.dat")), &seg).unwrap();
        end = (n, seg.len());
    }
    std::fs::write(
        dir.join(format!("{name}.diskqueue.meta.dat")),
        format!("{}\n0,0\n{},{}\n", all.len(), end.0, end.1),
    )
    .unwrap();
}

/// PUBs `body` on `c`; `Err` carries the error frame's text.
fn try_publish(c: &mut Client, topic: &str, body: &[u8]) -> Result<(), String> {
    c.with_body(&format!("PUB {topic}"), body);
    match c.next() {
        Frame::Response(r) if r == b"OK" => Ok(()),
        Frame::Error(e) => Err(e),
        other => panic!("unexpected {other:?}"),
    }
}

/// Publishes `n` messages to `topic` and has `consumer` (subscribed, RDY ≥ `n`) receive and
/// FIN exactly those.
fn publish_and_receive(b: &Broker, consumer: &mut Client, topic: &str, prefix: &str, n: usize) {
    let sent = bodies(prefix, n);
    let mut p = b.client();
    for m in &sent {
        p.publish(topic, m);
    }
    let mut got = Vec::new();
    for _ in 0..n {
        let m = consumer.expect_message();
        consumer.line(&format!("FIN {}", m.id));
        got.push(m.body);
    }
    got.sort();
    assert_eq!(got, sent, "{topic}");
}

/// PUBs one message at a time (up to `max`) until the broker refuses one, which must close
/// the connection (a fatal error, as in nsqd); returns the acknowledged bodies and the
/// refusal.
fn publish_until_refused(b: &Broker, topic: &str, max: usize) -> (Vec<Vec<u8>>, Option<String>) {
    let mut c = b.client();
    let mut acked = Vec::new();
    for m in bodies("spill", max) {
        match try_publish(&mut c, topic, &m) {
            Ok(()) => acked.push(m),
            Err(e) => {
                c.expect_closed();
                return (acked, Some(e));
            }
        }
        // Time for the storage task to try the write the message may have queued.
        std::thread::sleep(Duration::from_millis(2));
    }
    (acked, None)
}

/// The data directory turns read-only under a serving broker (`mount -o remount,ro`, which
/// Linux allows only while no file on it is open for writing: the broker opens a segment for
/// writing only when a disk queue is written, so the flip comes while its disk backlog is
/// being read, as after a restart). Reading that backlog goes on; publishes that fit in
/// memory are accepted, as in nsqd; one that needs the disk gets nsqd's E_PUB_FAILED (and the
/// connection is closed, as in nsqd) and /ping reports the error; once the file system is
/// writable again, what was acknowledged is written and delivered, and health recovers.
#[test]
fn read_only_disk_while_serving_refuses_what_needs_the_disk_and_recovers() {
    if !is_root() {
        eprintln!("not root: cannot mount a private tmpfs to make read-only; skipped");
        return;
    }
    let (seed, mount) = (temp_dir(), temp_dir());
    let (backlog, spill, mem) = (unique("robacklog"), unique("rospill"), unique("romem"));
    let stored = bodies("stored", 1000);
    write_backlog(&seed, &backlog, "c", &stored, 100);
    let b = broker_on_tmpfs(&mount, &seed, &["--cores=1", "--mem-queue-size=100"]);
    // Created while writable; `idle` never gets a consumer, so past 100 messages it needs disk.
    b.client().sub(&spill, "idle");
    let mut mem_consumer = b.client();
    mem_consumer.sub(&mem, "c");
    mem_consumer.line("RDY 100");
    remount(b.pid(), &mount, "ro");

    let got = drain(&b, &backlog, "c", stored.len(), Duration::from_secs(30));
    assert_eq!(
        got.len(),
        stored.len(),
        "the disk backlog is read while read-only"
    );
    publish_and_receive(&b, &mut mem_consumer, &mem, "before", 50);
    let (acked, refused) = publish_until_refused(&b, &spill, 500);
    let refused = refused.expect("a publish needing the disk is refused");
    assert!(refused.starts_with("E_PUB_FAILED PUB failed"), "{refused}");
    assert!(refused.contains("Read-only file system"), "{refused}");
    assert!(acked.len() >= 100, "the memory queue's share is accepted");
    let (status, health) = ping(&b);
    assert_eq!(status, 500, "{health}");
    assert!(
        health.starts_with("NOK - ") && health.contains("Read-only file system"),
        "{health}"
    );
    publish_and_receive(&b, &mut mem_consumer, &mem, "during", 50);

    remount(b.pid(), &mount, "rw");
    let recovered_at = Instant::now();
    let after = b"after-read-only".to_vec();
    assert!(
        wait_until(Duration::from_secs(10), || {
            try_publish(&mut b.client(), &spill, &after).is_ok()
        }),
        "publishes accepted again once writable"
    );
    assert!(
        wait_until(Duration::from_secs(10), || ping(&b) == (200, "OK".into())),
        "{:?}",
        ping(&b)
    );
    let healthy_after = recovered_at.elapsed();
    let want: BTreeSet<Vec<u8>> = acked.iter().cloned().chain([after]).collect();
    let got = drain_all_of(&b, &spill, "idle", &want, Duration::from_secs(30));
    let missing = want.iter().filter(|w| !got.contains_key(*w)).count();
    eprintln!(
        "FIGURE read_only_disk: backlog read while read-only {}/{}; memory topic 100/100; spill topic acked {} then {refused:?}; /ping 500 {health:?}; healthy {healthy_after:?} after remount rw; acknowledged lost {missing}",
        stored.len(),
        stored.len(),
        acked.len()
    );
    assert_eq!(missing, 0, "acknowledged messages lost");
    drop(b);
}

/// Bodies of exactly 100 bytes, so that each record takes 130 bytes on disk.
fn fixed_bodies(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut b = format!("{i:05}").into_bytes();
            b.resize(100, b'x');
            b
        })
        .collect()
}

/// The depth the broker reported as unreadable when its reader reached the writer.
fn reported_unreadable(log: &str, queue: &str) -> Option<usize> {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("DISKQUEUE({queue}) positive depth at tail (")))?;
    let after = line.split("at tail (").nth(1)?;
    after.split(')').next()?.trim().parse().ok()
}

/// Segments of a live channel's disk backlog are damaged while the broker serves it (one
/// overwritten with garbage from its 21st record, one truncated inside its 11th, one
/// deleted), past what the broker has read ahead. As go-diskqueue does, the broker renames a
/// damaged segment `.bad` (a missing one is just passed), skips the rest of it and keeps
/// serving; when its reader reaches the writer it logs the depth it could not read, which
/// must be exactly the number of messages lost.
#[test]
fn segments_damaged_while_serving_are_skipped_renamed_bad_and_counted() {
    const RECORD: usize = 4 + 26 + 100;
    const PER_SEGMENT: usize = 50;
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let max_bytes = format!("--max-bytes-per-file={}", RECORD * PER_SEGMENT);
    let topic = unique("damaged");
    let name = format!("{topic}:c");
    let b = Broker::start(&[&flag, "--cores=2", "--mem-queue-size=0", &max_bytes]);
    b.client().sub(&topic, "c");
    let all = fixed_bodies(1500);
    mpub_all(&mut b.client(), &topic, &all);
    let seg = |n: usize| dir.join(format!("{name}.diskqueue.{n:06}.dat"));
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::metadata(seg(29)).is_ok_and(|m| m.len() as usize == RECORD * PER_SEGMENT)
    }));
    // Exactly the first 300 delivered (all in flight before any FIN, then RDY 0, so no
    // more): the broker then holds up to 256 more read ahead (segments up to 11); segments
    // 15, 22 and 26 are read only after the damage.
    let mut c = b.client();
    c.sub(&topic, "c");
    c.line("RDY 300");
    let first: Vec<_> = (0..300).map(|_| c.expect_message()).collect();
    c.line("RDY 0");
    let mut got = BTreeSet::new();
    for m in first {
        c.line(&format!("FIN {}", m.id));
        got.insert(m.body);
    }
    c.line("NOP");
    c.expect_silence(Duration::from_millis(200));
    let garbage_at = 20 * RECORD;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(seg(15))
            .unwrap();
        f.seek(SeekFrom::Start(garbage_at as u64)).unwrap();
        f.write_all(&[0xff; 64]).unwrap();
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg(22))
        .unwrap();
    f.set_len((10 * RECORD + 60) as u64).unwrap();
    drop(f);
    std::fs::remove_file(seg(26)).unwrap();
    let lost_expected: BTreeSet<Vec<u8>> = (15 * PER_SEGMENT + 20..16 * PER_SEGMENT)
        .chain(22 * PER_SEGMENT + 10..23 * PER_SEGMENT)
        .chain(26 * PER_SEGMENT..27 * PER_SEGMENT)
        .map(|i| all[i].clone())
        .collect();
    let want: BTreeSet<Vec<u8>> = all
        .iter()
        .filter(|m| !lost_expected.contains(*m) && !got.contains(*m))
        .cloned()
        .collect();
    drop(c);
    got.extend(drain_all_of(&b, &topic, "c", &want, Duration::from_secs(30)).into_keys());
    let lost: BTreeSet<Vec<u8>> = all.iter().filter(|m| !got.contains(*m)).cloned().collect();
    let index = |set: &BTreeSet<Vec<u8>>| -> Vec<String> {
        set.iter()
            .map(|m| String::from_utf8_lossy(&m[..5]).into_owned())
            .collect()
    };
    let reported = wait_until(Duration::from_secs(5), || {
        reported_unreadable(&b.log(), &name).is_some()
    })
    .then(|| reported_unreadable(&b.log(), &name))
    .flatten();
    eprintln!(
        "FIGURE damaged_segments: published 1500, delivered {}, lost {} (expected {}: 30 after garbage, 40 after truncation, 50 in a deleted file), broker reported {reported:?} unreadable",
        got.len(),
        lost.len(),
        lost_expected.len()
    );
    let log = b.log();
    assert_eq!(
        index(&lost),
        index(&lost_expected),
        "exactly the damaged records are lost"
    );
    assert!(
        bad_path_exists(&seg(15)) && bad_path_exists(&seg(22)),
        "{log}"
    );
    assert_eq!(reported, Some(lost.len()), "{log}");
    // Still serving the same channel.
    let mut p = b.client();
    p.publish(&topic, b"still serving");
    let got = drain(&b, &topic, "c", 1, Duration::from_secs(10));
    assert!(got.contains_key(&b"still serving"[..]));
    drop(b);
}

fn bad_path_exists(segment: &Path) -> bool {
    let mut s = segment.as_os_str().to_owned();
    s.push(".bad");
    Path::new(&s).exists()
}

/// More channels holding messages than the broker may open files (nsqd keeps a descriptor per
/// disk queue): a SIGTERM must still write every message (writing them all at once failed
/// with `Too many open files` past the limit and lost the rest), and the restarted broker,
/// under the same limit, must serve clients and read every backlog back: it used to keep
/// each lagging queue's segment open (every accept then failed) and to rename segments it
/// could not open `.bad` (as nsqd does).
#[test]
fn stop_and_restart_with_more_queues_than_open_files_loses_nothing() {
    // Channels per topic; one topic on each core, so both cores write at once.
    const CHANNELS: usize = 200;
    // More than a queue reads ahead (256), so no queue catches up with its writer at start.
    const PER_CHANNEL: usize = 300;
    let dir = temp_dir();
    let topics = [
        common::unique_on_core("fds", 0, 2),
        common::unique_on_core("fds", 1, 2),
    ];
    let channels: Vec<String> = (0..CHANNELS)
        .map(|i| format!(r#"{{"name":"c{i}","paused":false}}"#))
        .collect();
    let listed: Vec<String> = topics
        .iter()
        .map(|t| {
            format!(
                r#"{{"name":"{t}","paused":false,"channels":[{}]}}"#,
                channels.join(",")
            )
        })
        .collect();
    std::fs::write(
        dir.join("nsqd.dat"),
        format!(r#"{{"topics":[{}],"version":"1.3.0"}}"#, listed.join(",")),
    )
    .unwrap();
    let flag = data_flag(&dir);
    let args = [flag.as_str(), "--cores=2"];
    let limited = ["prlimit".to_string(), "--nofile=160:160".to_string()];
    let channel_depth = |b: &Broker| -> i64 {
        let stats = stats_json(b);
        let topics = stats["topics"].as_array().cloned().unwrap_or_default();
        topics
            .iter()
            .filter_map(|t| t["channels"].as_array())
            .flatten()
            .map(|c| c["depth"].as_i64().unwrap_or(0))
            .sum()
    };

    let mut b = Broker::try_start_wrapped(&limited, &args).expect("starts under the limit");
    let bodies: Vec<Vec<u8>> = (0..PER_CHANNEL)
        .map(|i| format!("kept-{i}").into_bytes())
        .collect();
    let mut c = b.client();
    for topic in &topics {
        c.mpub(topic, &bodies.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }
    drop(c);
    let total = (2 * CHANNELS * PER_CHANNEL) as i64;
    assert_eq!(channel_depth(&b), total, "{}", b.log());
    stop(&mut b);
    assert!(
        !b.log().contains("Too many open files"),
        "stop ran out of descriptors:\n{}",
        b.log()
    );
    drop(b);
    for topic in &topics {
        for i in 0..CHANNELS {
            let seg = dir.join(format!("{topic}:c{i}.diskqueue.000000.dat"));
            assert!(seg.exists(), "{} was not written", seg.display());
        }
    }

    let mut b = Broker::try_start_wrapped(&limited, &args).expect("restarts under the limit");
    for topic in &topics {
        let got = drain(
            &b,
            topic,
            &format!("c{}", CHANNELS - 1),
            PER_CHANNEL,
            Duration::from_secs(10),
        );
        assert_eq!(got.len(), PER_CHANNEL, "{}", b.log());
        assert!(bodies.iter().all(|body| got.contains_key(body)));
    }
    assert_eq!(
        channel_depth(&b),
        total - 2 * PER_CHANNEL as i64,
        "{}",
        b.log()
    );
    let bad: Vec<String> = std::fs::read_dir(&*dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".bad"))
        .collect();
    assert!(bad.is_empty(), "segments renamed bad: {bad:?}\n{}", b.log());
    stop(&mut b);
}

/// A stop cut short between writing a meta file's (or nsqd.dat's) temporary sibling and
/// renaming it (kill -9, a second stop signal) leaves `<file>.<digits>.tmp`; the next start
/// removes those, and nothing else.
#[test]
fn start_removes_temporaries_an_interrupted_stop_left() {
    let dir = temp_dir();
    let stale = [
        "nsqd.dat.3150721751.tmp",
        "t:c.diskqueue.meta.dat.2568602742.tmp",
    ];
    for name in stale {
        std::fs::write(dir.join(name), "1\n0,0\n0,42\n").unwrap();
    }
    std::fs::write(dir.join("notes.1.tmp"), "not ours").unwrap();
    let flag = data_flag(&dir);
    let mut b = Broker::start(&[&flag]);
    for name in stale {
        assert!(!dir.join(name).exists(), "{name} is still there");
    }
    assert!(
        dir.join("notes.1.tmp").exists(),
        "another program's file went"
    );
    stop(&mut b);
}

/// A second SIGTERM/SIGINT while the shutdown writes memory to disk is ignored, as nsqd ignores
/// it: every message is still written and the broker exits 0. (It used to exit 1 at once and
/// lose what was not written yet, so a supervisor or shell that signals twice lost messages.)
#[test]
fn a_second_stop_signal_does_not_cut_the_write_to_disk_short() {
    // 100 MB to write at the stop (20 channels × 5,000 × 1 KiB, 5 MB published), so the
    // shutdown is still writing when the second signal is looked at.
    const CHANNELS: usize = 20;
    const MESSAGES: usize = 5_000;
    let dir = temp_dir();
    let flag = data_flag(&dir);
    let mut b = Broker::start(&[flag.as_str(), "--cores=2"]);
    let topic = unique("twice");
    assert_eq!(http_post(&b, &format!("/topic/create?topic={topic}")), 200);
    for i in 0..CHANNELS {
        let path = format!("/channel/create?topic={topic}&channel=c{i}");
        assert_eq!(http_post(&b, &path), 200, "{path}");
    }
    let bodies: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| format!("{i:05}").repeat(205).into_bytes())
        .collect();
    mpub_all(&mut b.client(), &topic, &bodies);

    let pid = nix::unistd::Pid::from_raw(b.pid() as i32);
    // Both stay pending until the broker takes them: one starts the stop, the other comes
    // while it writes.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    stop(&mut b);
    assert!(
        b.log().contains("while stopping; still writing"),
        "the second signal was not seen during the stop:\n{}",
        b.log()
    );
    drop(b);

    let b = Broker::start(&[flag.as_str(), "--cores=2"]);
    let stats = stats_json(&b);
    let depths: Vec<i64> = stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["topic_name"] == topic.as_str())
        .flat_map(|t| t["channels"].as_array().unwrap().clone())
        .map(|c| c["depth"].as_i64().unwrap())
        .collect();
    assert_eq!(depths, vec![MESSAGES as i64; CHANNELS], "{}", b.log());
}
