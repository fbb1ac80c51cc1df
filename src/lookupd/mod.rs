//! nsqlookupd registration: one task on the first core keeps the set of topics and channels
//! every core owns and tells each configured nsqlookupd about them (protocol V1), with a PING
//! every 15 s and a full replay after any reconnect, as nsqd does.

pub mod peer;
pub mod wire;

use std::time::Duration;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use peer::{Peer, Registry};
use wire::{Identity, Registration};

/// nsqd pings every lookupd this often.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// What the registration task is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupdEvent {
    /// A topic or channel was created.
    Register(Registration),
    /// A topic or channel was deleted.
    Unregister(Registration),
    /// `PUT /config/nsqlookupd_tcp_addresses`: the new peer list.
    SetPeers(Vec<String>),
    /// Time to PING.
    Ping,
}

/// The sending side, held by the first core's shard.
#[derive(Clone)]
pub struct LookupdHandle {
    tx: std::rc::Rc<LocalSender<LookupdEvent>>,
}

impl LookupdHandle {
    /// Queues an event (never blocks: the channel is unbounded and registrations are rare).
    pub fn send(&self, ev: LookupdEvent) {
        let _ = self.tx.try_send(ev);
    }
}

/// Starts the registration task and its PING ticker on the current executor.
pub fn spawn(
    identity: Identity,
    addrs: Vec<String>,
    max_body_size: i64,
    endpoints: HttpEndpoints,
) -> LookupdHandle {
    let (tx, rx) = local_channel::new_unbounded();
    let handle = LookupdHandle {
        tx: std::rc::Rc::new(tx),
    };
    glommio::spawn_local(run(identity, addrs, rx, max_body_size, endpoints)).detach();
    let ticker = handle.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(PING_INTERVAL).await;
            ticker.send(LookupdEvent::Ping);
        }
    })
    .detach();
    handle
}

fn dedup(addrs: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// `http://host:port` of every connected nsqlookupd, shared with the cores that create topics.
pub type HttpEndpoints = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Publishes where the connected peers serve HTTP (from their IDENTIFY replies).
fn publish_endpoints(peers: &[Peer], endpoints: &HttpEndpoints) {
    let list: Vec<String> = peers
        .iter()
        .filter(|p| p.is_connected())
        .filter_map(|p| p.info.as_ref())
        .filter(|i| i.http_port != 0 && !i.broadcast_address.is_empty())
        .map(|i| format!("http://{}:{}", i.broadcast_address, i.http_port))
        .collect();
    if let Ok(mut e) = endpoints.lock() {
        *e = list;
    }
}

async fn run(
    identity: Identity,
    addrs: Vec<String>,
    rx: LocalReceiver<LookupdEvent>,
    max_body_size: i64,
    endpoints: HttpEndpoints,
) {
    let mut peers: Vec<Peer> = dedup(addrs).into_iter().map(Peer::new).collect();
    let mut registry = Registry::default();
    for p in &mut peers {
        if let Err(e) = p.connect(&identity, &registry, max_body_size).await {
            tracing::error!("LOOKUPD({}): {e}", p.addr);
        }
    }
    publish_endpoints(&peers, &endpoints);
    while let Some(ev) = rx.recv().await {
        let line = match &ev {
            LookupdEvent::Register(r) => {
                registry.add(r);
                tracing::info!("LOOKUPD: REGISTER {r:?}");
                r.register_line()
            }
            LookupdEvent::Unregister(r) => {
                registry.remove(r);
                tracing::info!("LOOKUPD: UNREGISTER {r:?}");
                r.unregister_line()
            }
            LookupdEvent::Ping => wire::PING.to_vec(),
            LookupdEvent::SetPeers(addrs) => {
                let addrs = dedup(addrs.clone());
                peers.retain(|p| addrs.contains(&p.addr));
                for a in addrs {
                    if !peers.iter().any(|p| p.addr == a) {
                        let mut p = Peer::new(a);
                        if let Err(e) = p.connect(&identity, &registry, max_body_size).await {
                            tracing::error!("LOOKUPD({}): {e}", p.addr);
                        }
                        peers.push(p);
                    }
                }
                publish_endpoints(&peers, &endpoints);
                continue;
            }
        };
        for p in &mut peers {
            // Errors are logged by the peer; the next command or PING reconnects.
            let _ = p.command(&line, &identity, &registry, max_body_size).await;
        }
        publish_endpoints(&peers, &endpoints);
    }
}
