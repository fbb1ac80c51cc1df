//! Starting and stopping the thread-per-core runtime: one pinned glommio executor per core,
//! each with its own SO_REUSEPORT listener, joined by a channel mesh; signals; exit status.

pub mod allocator;
pub mod executor;
pub mod limits;
pub mod signals;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use crate::http::HttpShared;
use crate::options::Options;
use crate::settings::Settings;
use crate::storage::board::MetadataBoard;
use crate::storage::{lock, metadata};
use executor::{ShardPlan, StartReport, run_shard};

/// Mesh items (batches) that may queue between two cores before a sender waits.
const MESH_CAPACITY: usize = 1024;
/// io_uring registered-buffer memory per executor (only socket IO uses the rings so far).
const IO_MEMORY: usize = 1 << 20;
/// How long executors may take to start before nsqd gives up.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a shutdown still writing to disk says so. It is never cut short, by a timer or by
/// another SIGTERM/SIGINT (nsqd's is not either): that would lose what is not written yet.
const STOP_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What the runtime needs from the command line.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// `--cores` (0 = every core the process may run on).
    pub cores: usize,
    /// `--tcp-address`.
    pub tcp_address: String,
    /// `--http-address` (empty: no HTTP listener, as in nsqd).
    pub http_address: String,
    /// `--https-address` (served only with `--tls-cert`/`--tls-key`, as in nsqd).
    pub https_address: String,
    /// Resolved settings.
    pub settings: Settings,
    /// Every option as given, for the HTTP API (`/info`, `/config`).
    pub options: Options,
}

/// The CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Runs nsqd until SIGTERM/SIGINT. `Err` carries the message for a startup failure (exit 1).
pub fn run(config: RuntimeConfig) -> Result<(), String> {
    let cpus = allowed_cpus();
    if cpus.is_empty() {
        return Err("cannot read this process's CPU affinity mask".into());
    }
    let nr = if config.cores == 0 {
        cpus.len()
    } else {
        config.cores
    };
    if nr > cpus.len() {
        return Err(format!(
            "--cores={nr} but this process may only run on {} core(s) ({cpus:?})",
            cpus.len()
        ));
    }
    limits::raise_memlock()?;
    limits::raise_nofile();
    allocator::tune_malloc();
    signals::block_stop_signals().map_err(|e| format!("cannot block signals: {e}"))?;
    let addr = resolve("tcp-address", &config.tcp_address)?;
    let http_addr = match config.http_address.as_str() {
        "" => None,
        a => Some(resolve("http-address", a)?),
    };
    let https_addr = match config.https_address.as_str() {
        _ if config.settings.features.tls.is_none() => None,
        "" => None,
        a => Some(resolve("https-address", a)?),
    };
    let http = Arc::new(HttpShared::new(config.options.clone()));
    // nsqd's order: lock the data path, listen, load nsqd.dat, re-persist it, serve.
    let data_path = config.settings.disk.as_ref().map(|d| d.data_path.clone());
    let _dir_lock = data_path
        .as_deref()
        .map(lock::lock)
        .transpose()
        .map_err(|e| format!("failed to instantiate nsqd - {e}"))?;
    if let Some(dir) = &data_path {
        let removed = metadata::remove_stale_temps(dir);
        if removed > 0 {
            tracing::info!("removed {removed} temporary file(s) an earlier stop left unrenamed");
        }
    }
    let restore = match &data_path {
        Some(dir) => metadata::load(dir)
            .map_err(|e| format!("failed to load metadata - {e}"))?
            .map(Arc::new),
        None => None,
    };
    let clients_closed = Arc::new(AtomicUsize::new(0));
    let mut config = config;
    let board = config.settings.disk.as_mut().map(|d| {
        let loaded = restore.as_ref().map_or(&[][..], |m| &m.topics[..]);
        let board = Arc::new(MetadataBoard::new(nr, loaded, |t| {
            crate::mesh::owner_of(t, nr)
        }));
        d.board = Some(board.clone());
        d.segment_file_budget = limits::segment_file_budget(nr);
        board
    });
    let settings = Arc::new(config.settings);
    let shutdown = Arc::new(AtomicBool::new(false));
    let mesh = (nr > 1).then(|| MeshBuilder::full(nr, MESH_CAPACITY));
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(nr);
    let mut bound = (addr, http_addr, https_addr);
    for (id, &cpu) in cpus.iter().take(nr).enumerate() {
        let plan = ShardPlan {
            id,
            nr_shards: nr,
            tcp_address: bound.0,
            http_address: bound.1,
            https_address: bound.2,
            http: http.clone(),
            settings: settings.clone(),
            mesh: mesh.clone(),
            shutdown: shutdown.clone(),
            reports: tx.clone(),
            restore: restore.clone(),
            clients_closed: clients_closed.clone(),
        };
        threads.push(start_executor(id, cpu, plan)?);
        // The first shard resolves port 0; the others bind the same port (SO_REUSEPORT).
        if id == 0 {
            bound = wait_bound(&rx, &shutdown, &threads)?;
            tracing::info!("TCP: listening on {}", bound.0);
            if let Some(http) = bound.1 {
                tracing::info!("HTTP: listening on {http}");
            }
            if let Some(https) = bound.2 {
                tracing::info!("HTTPS: listening on {https}");
            }
        } else {
            wait_bound(&rx, &shutdown, &threads)?;
        }
    }
    wait_started(&rx, nr, &shutdown, &threads)?;
    // Shards rewrite nsqd.dat after restoring; this covers a start with nothing to restore.
    if let (Some(dir), Some(board)) = (&data_path, &board)
        && board.unwritten()
    {
        let (meta, generation) = board.snapshot();
        if board.claim(generation) {
            persist(dir, meta.topics);
        }
    }
    tracing::info!("nsqd-uring: serving on {nr} core(s) {:?}", &cpus[..nr]);
    let outcome = supervise(&shutdown, &threads);
    wait_for_shards(&threads);
    if let Some(dir) = &data_path {
        let mut topics = Vec::new();
        let mut stopped = 0;
        while let Ok(report) = rx.try_recv() {
            if let StartReport::Stopped(_, mut part) = report {
                topics.append(&mut part);
                stopped += 1;
            }
        }
        if stopped == nr {
            persist(dir, topics);
        } else {
            tracing::error!(
                "only {stopped} of {nr} cores stopped cleanly; nsqd.dat left as it was"
            );
        }
    }
    outcome
}

/// Waits for every shard thread to finish its shutdown (closing clients, then writing memory
/// to disk), with a log line every [`STOP_PROGRESS_EVERY`] while it lasts. Another SIGTERM or
/// SIGINT meanwhile is logged and otherwise ignored, as nsqd ignores it: a supervisor or a
/// shell that signals twice must not lose the messages still being written (SIGKILL remains
/// for an operator who chooses that).
fn wait_for_shards(threads: &[JoinHandle<()>]) {
    let mut next_report = Instant::now() + STOP_PROGRESS_EVERY;
    loop {
        let running = threads.iter().filter(|t| !t.is_finished()).count();
        if running == 0 {
            return;
        }
        if let Some(sig) = signals::wait_for_stop(Duration::from_millis(10)) {
            tracing::warn!(
                "nsqd: received signal {sig} while stopping; still writing {running} core(s)' messages to disk (SIGKILL stops at once and loses them)"
            );
        }
        if Instant::now() >= next_report {
            tracing::info!("nsqd: waiting for {running} core(s) to finish writing to disk");
            next_report += STOP_PROGRESS_EVERY;
        }
    }
}

/// Writes nsqd.dat (start-up re-persist and shutdown), logging rather than failing.
fn persist(dir: &std::path::Path, topics: Vec<metadata::TopicMeta>) {
    let meta = metadata::Metadata {
        topics,
        version: crate::settings::NSQD_VERSION.to_string(),
    };
    if let Err(e) = metadata::save(dir, &meta) {
        tracing::error!("failed to persist metadata - {e}");
    }
}

fn resolve(flag: &str, addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("--{flag}={addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("--{flag}={addr}: no address"))
}

fn start_executor(id: usize, cpu: usize, plan: ShardPlan) -> Result<JoinHandle<()>, String> {
    let reports = plan.reports.clone();
    let spin_before_park = plan.settings.spin_before_park;
    std::thread::Builder::new()
        .name(format!("nsqd-core-{id}"))
        .spawn(move || {
            let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("nsqd-core-{id}"))
                .io_memory(IO_MEMORY)
                .spin_before_park(spin_before_park);
            match builder.make() {
                Ok(ex) => ex.run(run_shard(plan)),
                Err(e) => {
                    let (soft, _) =
                        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
                            .unwrap_or((0, 0));
                    let msg = format!(
                        "cannot start the io_uring executor on cpu {cpu}: {e}. {}",
                        limits::memlock_advice(soft)
                    );
                    let _ = reports.send(StartReport::Failed(id, msg));
                }
            }
        })
        .map_err(|e| format!("cannot spawn thread for core {id}: {e}"))
}

fn next_report(
    rx: &mpsc::Receiver<StartReport>,
    shutdown: &AtomicBool,
    threads: &[JoinHandle<()>],
) -> Result<StartReport, String> {
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(StartReport::Failed(_, msg)) => {
                shutdown.store(true, Ordering::Relaxed);
                return Err(msg);
            }
            Ok(report) => return Ok(report),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if threads.iter().any(|t| t.is_finished()) || started.elapsed() > START_TIMEOUT {
                    shutdown.store(true, Ordering::Relaxed);
                    return Err("an executor thread exited during start-up".into());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn wait_bound(
    rx: &mpsc::Receiver<StartReport>,
    shutdown: &AtomicBool,
    threads: &[JoinHandle<()>],
) -> Result<(SocketAddr, Option<SocketAddr>, Option<SocketAddr>), String> {
    loop {
        if let StartReport::Bound(_, tcp, http, https) = next_report(rx, shutdown, threads)? {
            return Ok((tcp, http, https));
        }
    }
}

fn wait_started(
    rx: &mpsc::Receiver<StartReport>,
    nr: usize,
    shutdown: &AtomicBool,
    threads: &[JoinHandle<()>],
) -> Result<(), String> {
    let mut started = 0;
    while started < nr {
        if let StartReport::Started(_) = next_report(rx, shutdown, threads)? {
            started += 1;
        }
    }
    Ok(())
}

/// Waits for a stop signal, or for an executor to die (an error: exit 1).
fn supervise(shutdown: &AtomicBool, threads: &[JoinHandle<()>]) -> Result<(), String> {
    loop {
        if let Some(sig) = signals::wait_for_stop(Duration::from_millis(200)) {
            tracing::info!("nsqd: received signal {sig}, exiting");
            shutdown.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if threads.iter().any(|t| t.is_finished()) {
            shutdown.store(true, Ordering::Relaxed);
            return Err("an executor thread stopped unexpectedly".into());
        }
    }
}
