//! One core's executor: its listener, its mesh links, its housekeeping tick, and the shutdown
//! of everything it serves.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;

use crate::broker::settle::SETTLE_EVERY;
use crate::http::{self, HttpShared};
use crate::mesh::MeshBatch;
use crate::protocol::connection;
use crate::settings::Settings;
use crate::shard::Shard;
use crate::storage::metadata::{Metadata, TopicMeta};

/// Process-wide connection IDs (nsqd's client IDs start at 1).
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// How often a shard checks heartbeats and the shutdown flag. In-flight timeouts and deferred
/// messages are scanned on `queue_scan_interval`.
const HOUSEKEEPING_TICK: Duration = Duration::from_millis(100);

/// What a starting executor tells the main thread.
#[derive(Debug)]
pub enum StartReport {
    /// Its TCP listener (and HTTP and HTTPS listeners, if any) are bound at these addresses.
    Bound(usize, SocketAddr, Option<SocketAddr>, Option<SocketAddr>),
    /// It is serving.
    Started(usize),
    /// It could not start.
    Failed(usize, String),
    /// It stopped; its topics and channels for nsqd.dat.
    Stopped(usize, Vec<TopicMeta>),
}

/// Everything one executor needs to start.
pub struct ShardPlan {
    /// Core index (shard ID).
    pub id: usize,
    /// Number of shards.
    pub nr_shards: usize,
    /// Where to listen (port already resolved for shards after the first).
    pub tcp_address: SocketAddr,
    /// Where to serve HTTP (`None`: `--http-address=""`), resolved like `tcp_address`.
    pub http_address: Option<SocketAddr>,
    /// Where to serve HTTPS (`None` without a certificate or with `--https-address=""`).
    pub https_address: Option<SocketAddr>,
    /// What every core's HTTP API shares.
    pub http: Arc<HttpShared>,
    /// Shared settings.
    pub settings: Arc<Settings>,
    /// The mesh to join when more than one core serves.
    pub mesh: Option<MeshBuilder<MeshBatch, Full>>,
    /// Set when the process must stop.
    pub shutdown: Arc<AtomicBool>,
    /// Start-up reports to the main thread.
    pub reports: mpsc::Sender<StartReport>,
    /// nsqd.dat as loaded: each shard restores the topics it owns.
    pub restore: Option<Arc<Metadata>>,
    /// Shards done closing their clients; disk flushing waits for all of them, so no
    /// publish from another core lands after a shard flushed its memory.
    pub clients_closed: Arc<AtomicUsize>,
}

/// The executor's main future: returns when the shard has shut down.
pub async fn run_shard(plan: ShardPlan) {
    let id = plan.id;
    if id == 0
        && let Err(msg) = [
            Some(plan.tcp_address),
            plan.http_address,
            plan.https_address,
        ]
        .into_iter()
        .flatten()
        .try_for_each(ensure_not_listened_on)
    {
        let _ = plan.reports.send(StartReport::Failed(id, msg));
        return;
    }
    let listener = match TcpListener::bind(plan.tcp_address) {
        Ok(l) => l,
        Err(e) => {
            let msg = format!("listen ({}) failed - {e}", plan.tcp_address);
            let _ = plan.reports.send(StartReport::Failed(id, msg));
            return;
        }
    };
    let local = listener.local_addr().unwrap_or(plan.tcp_address);
    let optional = bind_optional(plan.http_address)
        .and_then(|http| Ok((http, bind_optional(plan.https_address)?)));
    let (http_bound, https_bound) = match optional {
        Ok(bound) => bound,
        Err(msg) => {
            let _ = plan.reports.send(StartReport::Failed(id, msg));
            return;
        }
    };
    let http_local = http_bound.as_ref().map(|b| b.1);
    let https_local = https_bound.as_ref().map(|b| b.1);
    let (http_listener, https_listener) = (http_bound.map(|b| b.0), https_bound.map(|b| b.0));
    if id == 0 {
        plan.http
            .listening(local.port(), http_local.map(|a| a.port()));
        if let Some(a) = https_local {
            plan.http.set_https_port(a.port());
        }
    }
    let _ = plan
        .reports
        .send(StartReport::Bound(id, local, http_local, https_local));
    let shard = Rc::new(Shard::new(
        id,
        plan.nr_shards,
        plan.settings.clone(),
        plan.shutdown.clone(),
    ));
    if let Some(mesh) = plan.mesh {
        let Ok((senders, mut receivers)) = mesh.join().await else {
            let _ = plan.reports.send(StartReport::Failed(
                id,
                "could not join the core mesh".into(),
            ));
            return;
        };
        let senders = Rc::new(senders);
        for peer in (0..plan.nr_shards).filter(|&p| p != id) {
            let flusher = shard.outboxes.clone().flush_loop(senders.clone(), peer);
            glommio::spawn_local(flusher).detach();
        }
        for (peer, receiver) in receivers.streams() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(batch) = receiver.recv().await {
                    // One clock read per batch: the batch is handled without yielding.
                    let now = std::time::Instant::now();
                    shard.handle_mesh_batch(peer, batch, now);
                }
            })
            .detach();
        }
    }
    if let Some(meta) = &plan.restore {
        shard.restore(meta).await;
    }
    shard.start_lookupd(lookupd_identity(&plan.settings, local, http_local));
    glommio::spawn_local(shard.clone().run_channel_precreation()).detach();
    if id == 0 && !plan.http.options().statsd_address.is_empty() {
        glommio::spawn_local(crate::statsd::run(shard.clone(), plan.http.clone())).detach();
    }
    let storage = glommio::spawn_local(shard.clone().run_storage());
    let accept = glommio::spawn_local(accept_loop(shard.clone(), listener));
    let http_server = http_listener
        .map(|l| glommio::spawn_local(http::serve(shard.clone(), plan.http.clone(), l, None)));
    let tls = plan.settings.features.tls.clone();
    let https_server = https_listener
        .map(|l| glommio::spawn_local(http::serve(shard.clone(), plan.http.clone(), l, tls)));
    let _ = plan.reports.send(StartReport::Started(id));
    housekeeping(&shard).await;
    // Shutdown: stop accepting, close every client after its pending output, then leave.
    drop(accept);
    drop(http_server);
    drop(https_server);
    for client in shard.clients() {
        client.close();
    }
    let deadline = Instant::now() + connection::SHUTDOWN_FLUSH;
    while shard.client_count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    plan.clients_closed.fetch_add(1, Ordering::AcqRel);
    while plan.clients_closed.load(Ordering::Acquire) < plan.nr_shards && Instant::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    storage.await;
    let persisted = shard.close_storage().await;
    let _ = plan.reports.send(StartReport::Stopped(id, persisted));
    shard.fail_pending();
    shard.outboxes.close();
    tracing::debug!("shard {id}: stopped");
}

/// Fails with nsqd's `listen (<addr>) failed - <error>` when another socket already listens
/// on `addr`. Our listeners set `SO_REUSEPORT` (one per core), so a second broker started on
/// the same ports would otherwise bind them too and the kernel would split the clients
/// between the two; a plain bind (`SO_REUSEADDR` only, as Go's) is refused by any listener,
/// as nsqd's is. Port 0 picks a free port and needs no check.
///
/// A broker killed with kill -9 keeps its listeners for a few tens of milliseconds after it is
/// reaped (the kernel tears its io_uring rings down afterwards), so a supervisor restarting it
/// at once would meet them: the check waits up to [`PORT_RELEASE_WAIT`] for the port to come
/// free before it fails. A broker that is still running never lets go, and is refused then.
fn ensure_not_listened_on(addr: SocketAddr) -> Result<(), String> {
    if addr.port() == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("listen ({addr}) failed - {e}")),
        }
    }
}

/// How long [`ensure_not_listened_on`] waits for a port a dead broker's listeners still hold.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Binds an optional listener (HTTP, HTTPS) and reads back its address; `Err` is nsqd's
/// `listen (<addr>) failed - <error>`.
fn bind_optional(addr: Option<SocketAddr>) -> Result<Option<(TcpListener, SocketAddr)>, String> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).map_err(|e| format!("listen ({addr}) failed - {e}"))?;
    let local = listener.local_addr().unwrap_or(addr);
    Ok(Some((listener, local)))
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
                glommio::spawn_local(connection::serve(shard.clone(), stream, conn_id)).detach();
            }
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving the others.
                tracing::error!("TCP: accept error - {e}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Heartbeats, queue scans, settle passes, and watching for shutdown; returns when shutdown is requested.
async fn housekeeping(shard: &Rc<Shard>) {
    let scan_every = shard.settings.queue_scan_interval;
    let mut next_scan = Instant::now() + scan_every;
    let mut next_settle = Instant::now() + SETTLE_EVERY;
    while !shard.is_shutting_down() {
        glommio::timer::sleep(HOUSEKEEPING_TICK.min(scan_every)).await;
        let now = Instant::now();
        for client in shard.clients() {
            client.heartbeat_if_due(now);
        }
        if now >= next_scan {
            shard.scan_queues(now);
            next_scan = now + scan_every;
        }
        if now >= next_settle {
            shard.settle_messages(now);
            next_settle = now + SETTLE_EVERY;
        }
        shard.announce_registrations();
        shard.start_channel_precreation();
    }
}

/// What this nsqd tells nsqlookupd about itself: broadcast ports default to the real ones.
fn lookupd_identity(
    settings: &Settings,
    tcp: SocketAddr,
    http: Option<SocketAddr>,
) -> crate::lookupd::wire::Identity {
    let l = &settings.lookupd;
    let pick = |configured: u16, actual: u16| if configured != 0 { configured } else { actual };
    crate::lookupd::wire::Identity {
        broadcast_address: l.broadcast_address.clone(),
        hostname: l.hostname.clone(),
        http_port: pick(l.broadcast_http_port, http.map(|a| a.port()).unwrap_or(0)),
        tcp_port: pick(l.broadcast_tcp_port, tcp.port()),
        topology_region: l.topology_region.clone(),
        topology_zone: l.topology_zone.clone(),
        version: crate::settings::NSQD_VERSION.to_string(),
    }
}
