//! Wiring each mode into executors: which connections an executor opens, the set-up steps every
//! executor must pass together (subscribed, preloaded, ready), and the tasks it runs once the
//! clock says go. The main thread runs the clock (`run::clock`) meanwhile.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use glommio::Task;

use super::publish::{Publisher, preload, publish_loop};
use super::{connections_of, consume, idle, latency, raw, subscribe, until_stopped};
use crate::bench::args::{LoadArgs, Mode, RawReply};
use crate::bench::client::Conn;
use crate::bench::histogram::Latencies;
use crate::bench::run::{self, Measured, Phase, Shared, barrier, wait_until};
use crate::bench::schedule::Schedule;

/// How long to wait for the raw echo servers to bind.
const SERVER_START: Duration = Duration::from_secs(10);

/// Runs `mode` with `args` to completion: executors, clock, merged result.
pub fn run(mode: Mode, args: LoadArgs) -> Result<(Arc<Shared>, Measured), String> {
    args.validate(mode)?;
    crate::runtime::limits::raise_memlock()?;
    crate::runtime::limits::raise_nofile();
    let cpus = run::pick_cpus(&args.cpus, args.cores)?;
    let shared = Shared::new(args, mode, cpus.len());
    let rss_before = shared
        .args
        .broker_pid
        .and_then(super::super::proc_stat::rss_kib);
    let (servers, raw_addrs) = if mode == Mode::Raw {
        start_raw_servers(&shared)?
    } else {
        (Vec::new(), Vec::new())
    };
    let raw_addrs = Arc::new(raw_addrs);
    let s = shared.clone();
    let spin = Duration::from_micros(shared.args.spin_before_park_us);
    let handles = run::spawn_executors("nsq-bench", &cpus, spin, move |core| {
        core_main(s.clone(), core, raw_addrs.clone())
    })?;
    let mut measured = run::clock(&shared, handles);
    if rss_before.is_some() {
        measured.broker_rss_before_kib = rss_before;
    }
    for s in servers {
        let _ = s.join();
    }
    Ok((shared, measured))
}

fn start_raw_servers(
    shared: &Arc<Shared>,
) -> Result<(Vec<std::thread::JoinHandle<Latencies>>, Vec<SocketAddr>), String> {
    if shared.args.server_cpus.is_empty() {
        // An external `nsq-bench raw-server` already listens where a broker would.
        return Ok((Vec::new(), vec![shared.args.nsqd_tcp_address]));
    }
    let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (handles, addr) = spawn_raw_servers(shared, &shared.args.server_cpus, any_port)?;
    Ok((handles, vec![addr]))
}

/// Starts one echo server executor per CPU, all on one port: the first binds `addr` (port 0
/// picks one), the others join it.
fn spawn_raw_servers(
    shared: &Arc<Shared>,
    cpus: &[usize],
    addr: SocketAddr,
) -> Result<(Vec<std::thread::JoinHandle<Latencies>>, SocketAddr), String> {
    let mut handles = Vec::new();
    let mut bound = addr;
    for &cpu in cpus {
        let (tx, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        let spin = Duration::from_micros(shared.args.spin_before_park_us);
        handles.extend(run::spawn_executors(
            "nsq-bench-echo",
            &[cpu],
            spin,
            move |_| {
                let (s, tx) = (s.clone(), tx.clone());
                async move {
                    raw::serve(&s, bound, tx).await;
                    Latencies::new()
                }
            },
        )?);
        bound = rx
            .recv_timeout(SERVER_START)
            .map_err(|_| format!("raw echo server on cpu {cpu} did not start"))?;
    }
    Ok((handles, bound))
}

/// `nsq-bench raw-server`: the raw baseline in its own process, pinned and measured like a
/// broker; stops after `--duration` (or when killed).
pub fn raw_server(args: LoadArgs) -> Result<(), String> {
    crate::runtime::limits::raise_memlock()?;
    crate::runtime::limits::raise_nofile();
    let cpus = run::pick_cpus(&args.cpus, args.cores)?;
    let (addr, lifetime) = (args.nsqd_tcp_address, args.duration);
    let shared = Shared::new(args, Mode::RawServer, cpus.len());
    let (handles, bound) = spawn_raw_servers(&shared, &cpus, addr)?;
    eprintln!("TCP: listening on {bound}");
    std::thread::sleep(lifetime);
    shared.stop();
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

async fn core_main(shared: Arc<Shared>, core: usize, raw_addrs: Arc<Vec<SocketAddr>>) -> Latencies {
    let tasks = match shared.mode {
        Mode::Pub => pub_core(&shared, core).await,
        Mode::Sub => sub_core(&shared, core).await,
        Mode::Pubsub => pubsub_core(&shared, core).await,
        Mode::Latency => latency_core(&shared, core).await,
        Mode::Raw => raw_core(&shared, core, &raw_addrs).await,
        Mode::Idle => idle_core(&shared, core).await,
        Mode::RawServer => Vec::new(),
    };
    let mut all = Latencies::new();
    for t in tasks {
        all.merge(&t.await);
    }
    all
}

type Tasks = Vec<Task<Latencies>>;

fn mine(shared: &Shared, core: usize) -> std::ops::Range<usize> {
    connections_of(core, shared.cores(), shared.args.connections)
}

/// Counts this executor as ready and waits for the clock's go; false if the run stopped.
async fn ready_and_go(shared: &Shared) -> bool {
    shared.ready.fetch_add(1, Ordering::AcqRel);
    wait_until(shared, || shared.phase() >= Phase::Warmup).await
}

async fn connect_all(shared: &Shared, core: usize) -> Vec<(usize, Conn)> {
    let mut conns = Vec::new();
    for i in mine(shared, core) {
        match Conn::connect(shared.args.nsqd_tcp_address).await {
            Ok(c) => conns.push((i, c)),
            Err(e) => shared.error(format!("connect: {e}")),
        }
    }
    conns
}

async fn subscribe_all(shared: &Shared, core: usize) -> Vec<Conn> {
    let mut conns = Vec::new();
    for i in mine(shared, core) {
        let obt = shared.args.output_buffer_timeout;
        match subscribe(shared, &shared.args.topic_for(i), obt).await {
            Ok(c) => conns.push(c),
            Err(e) => shared.error(format!("subscribe: {e}")),
        }
    }
    conns
}

fn publisher(args: &LoadArgs, i: usize, stamp: bool, windowed: bool) -> Publisher {
    Publisher {
        topic: args.topic_for(i),
        size: args.size,
        batch: args.batch,
        pipeline: args.pipeline,
        stamp,
        windowed,
    }
}

/// One task per item (a connection), each returning the latencies it recorded.
fn spawn_each<T, F, Fut>(shared: &Arc<Shared>, items: Vec<T>, work: F) -> Tasks
where
    F: Fn(Arc<Shared>, T) -> Fut,
    Fut: Future<Output = Latencies> + 'static,
{
    items
        .into_iter()
        .map(|item| glommio::spawn_local(work(shared.clone(), item)))
        .collect()
}

fn spawn_publishers(
    shared: &Arc<Shared>,
    core: usize,
    conns: Vec<(usize, Conn)>,
    pubsub: bool,
) -> Tasks {
    spawn_each(shared, conns, move |s, (i, mut conn)| async move {
        let p = publisher(&s.args, i, pubsub, pubsub);
        until_stopped(&s, publish_loop(&s, core, &mut conn, &p)).await;
        Latencies::new()
    })
}

fn spawn_consumers(shared: &Arc<Shared>, core: usize, conns: Vec<Conn>, timed: bool) -> Tasks {
    spawn_each(shared, conns, move |s, mut conn| async move {
        let mut lat = Latencies::new();
        let record = timed.then_some(&mut lat);
        until_stopped(&s, consume::consume_loop(&s, core, &mut conn, record)).await;
        lat
    })
}

async fn pub_core(shared: &Arc<Shared>, core: usize) -> Tasks {
    let conns = connect_all(shared, core).await;
    if !ready_and_go(shared).await {
        return Vec::new();
    }
    spawn_publishers(shared, core, conns, false)
}

async fn sub_core(shared: &Arc<Shared>, core: usize) -> Tasks {
    let consumers = subscribe_all(shared, core).await;
    // Every channel exists before anything is published, so the preload lands in it.
    if !barrier(shared, &shared.subscribed).await {
        return Vec::new();
    }
    let args = &shared.args;
    let mut preloads = Vec::new();
    for i in mine(shared, core) {
        let share = connections_of(i, args.connections, args.count as usize).len() as u64;
        let s = shared.clone();
        preloads.push(glommio::spawn_local(async move {
            let args = &s.args;
            let batch = if args.batch > 1 { args.batch } else { 100 };
            let done = match Conn::connect(args.nsqd_tcp_address).await {
                Ok(mut c) => preload(&mut c, &args.topic_for(i), args.size, batch, share).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                s.error(format!("preload: {e}"));
            }
        }));
    }
    for p in preloads {
        p.await;
    }
    if !ready_and_go(shared).await {
        return Vec::new();
    }
    spawn_consumers(shared, core, consumers, false)
}

/// Consumers subscribed (on every executor) before publishers connect, then the go: what
/// pubsub and latency share. `None` if the run stopped during set-up.
async fn both_sides(shared: &Shared, core: usize) -> Option<(Vec<Conn>, Vec<(usize, Conn)>)> {
    let consumers = subscribe_all(shared, core).await;
    if !barrier(shared, &shared.subscribed).await {
        return None;
    }
    let publishers = connect_all(shared, core).await;
    ready_and_go(shared)
        .await
        .then_some((consumers, publishers))
}

async fn pubsub_core(shared: &Arc<Shared>, core: usize) -> Tasks {
    let Some((consumers, publishers)) = both_sides(shared, core).await else {
        return Vec::new();
    };
    let mut tasks = spawn_consumers(shared, core, consumers, true);
    tasks.extend(spawn_publishers(shared, core, publishers, true));
    tasks
}

async fn latency_core(shared: &Arc<Shared>, core: usize) -> Tasks {
    let Some((consumers, publishers)) = both_sides(shared, core).await else {
        return Vec::new();
    };
    let start = shared.now_ns();
    let mut tasks = spawn_consumers(shared, core, consumers, true);
    let total = shared.args.connections;
    for (i, conn) in publishers {
        let (rate, offset) = Schedule::share(shared.args.rate, total, i);
        let schedule = Schedule::new(start + offset as u64, rate);
        let s = shared.clone();
        let topic = s.args.topic_for(i);
        tasks.push(glommio::spawn_local(async move {
            until_stopped(&s, latency::open_loop(&s, core, conn, topic, schedule)).await;
            Latencies::new()
        }));
    }
    tasks
}

async fn raw_core(shared: &Arc<Shared>, core: usize, addrs: &[SocketAddr]) -> Tasks {
    let mut conns = Vec::new();
    for i in mine(shared, core) {
        let Some(&addr) = addrs.get(i % addrs.len().max(1)) else {
            break;
        };
        match Conn::connect_plain(addr).await {
            Ok(c) => conns.push((i, c)),
            Err(e) => shared.error(format!("raw connect: {e}")),
        }
    }
    if !ready_and_go(shared).await {
        return Vec::new();
    }
    if shared.args.rate > 0 {
        return raw_open_loop(shared, core, conns);
    }
    let window = (shared.args.window / shared.args.connections.max(1) as u64).max(1);
    spawn_each(shared, conns, move |s, (_, mut conn)| async move {
        let mut lat = Latencies::new();
        match s.args.raw_reply {
            RawReply::Echo => {
                let work = raw::echo_client(&s, core, &mut conn, window, &mut lat);
                until_stopped(&s, work).await
            }
            RawReply::Ack => until_stopped(&s, raw::ack_client(&s, core, &mut conn)).await,
        }
        lat
    })
}

/// Raw echo at `--rate` over all connections, each on its share of the schedule, as the latency
/// mode's publishers: the open-loop latency floor of this machine.
fn raw_open_loop(shared: &Arc<Shared>, core: usize, conns: Vec<(usize, Conn)>) -> Tasks {
    let start = shared.now_ns();
    let total = shared.args.connections;
    conns
        .into_iter()
        .map(|(i, conn)| {
            let (rate, offset) = Schedule::share(shared.args.rate, total, i);
            let schedule = Schedule::new(start + offset as u64, rate);
            let s = shared.clone();
            glommio::spawn_local(async move {
                let mut lat = Latencies::new();
                let work = raw::open_loop_echo_client(&s, core, conn, schedule, &mut lat);
                until_stopped(&s, work).await;
                lat
            })
        })
        .collect()
}

async fn idle_core(shared: &Arc<Shared>, core: usize) -> Tasks {
    let held = idle::open(shared, mine(shared, core).len()).await;
    if !ready_and_go(shared).await {
        return Vec::new();
    }
    let s = shared.clone();
    vec![glommio::spawn_local(async move {
        idle::hold(&s, held).await;
        Latencies::new()
    })]
}
