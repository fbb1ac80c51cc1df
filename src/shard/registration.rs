//! Keeping nsqlookupd informed. Every core compares the topics and channels it owns with what
//! it last announced and sends the difference to the first core, whose lookupd task tells every
//! nsqlookupd. Comparing state, rather than hooking each place a topic or channel is created or
//! deleted (SUB, publish, HTTP, start-up restore), means no path can forget to announce.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use super::Shard;
use crate::lookupd::wire::{Identity, Registration};
use crate::lookupd::{self, LookupdEvent, LookupdHandle};
use crate::mesh::MeshMsg;

/// Topics → channels, as announced.
pub type RegistrySet = BTreeMap<String, BTreeSet<String>>;

/// A core's announcement state.
#[derive(Default)]
pub struct RegistrationState {
    announced: RefCell<RegistrySet>,
    /// [`Shard::topology_changes`] when `announced` was taken: while it is the same, nothing
    /// was added or removed and there is nothing to compare (a core with 50,000 channels
    /// spent a quarter of an idle CPU cloning and comparing their names every 100 ms).
    announced_at: std::cell::Cell<Option<u64>>,
    /// The lookupd task (first core only).
    lookupd: RefCell<Option<LookupdHandle>>,
    /// New topics whose channels must first be fetched from nsqlookupd.
    precreate: RefCell<Vec<String>>,
    /// Wakes [`Shard::run_channel_precreation`] when a topic is queued.
    precreate_queued: crate::wakeup::Wakeup,
}

/// The events that turn `old` into `new`: a new topic before its channels; a deleted topic
/// after its channels. nsqlookupd treats channels still registered when their topic is
/// unregistered as a client error (`unexpected UNREGISTER` warnings in its log), and nsqd's
/// deleted channels in practice reach it first.
pub fn diff(old: &RegistrySet, new: &RegistrySet) -> Vec<LookupdEvent> {
    let mut events = Vec::new();
    let empty = BTreeSet::new();
    for (topic, channels) in new {
        let before = match old.get(topic) {
            Some(b) => b,
            None => {
                events.push(LookupdEvent::Register(Registration::topic(topic)));
                &empty
            }
        };
        for c in channels.difference(before) {
            events.push(LookupdEvent::Register(Registration::channel(topic, c)));
        }
        for c in before.difference(channels) {
            events.push(LookupdEvent::Unregister(Registration::channel(topic, c)));
        }
    }
    for (topic, channels) in old {
        if !new.contains_key(topic) {
            for c in channels {
                events.push(LookupdEvent::Unregister(Registration::channel(topic, c)));
            }
            events.push(LookupdEvent::Unregister(Registration::topic(topic)));
        }
    }
    events
}

impl Shard {
    /// Starts the lookupd task; only the first core runs it.
    pub fn start_lookupd(&self, identity: Identity) {
        if self.id != 0 {
            return;
        }
        let l = &self.settings.lookupd;
        let handle = lookupd::spawn(
            identity,
            l.addresses.clone(),
            self.settings.limits.max_body_size,
            l.http_endpoints.clone(),
        );
        *self.registration.lookupd.borrow_mut() = Some(handle);
    }

    /// Announces what changed among this core's topics and channels since the last call.
    pub fn announce_registrations(&self) {
        let changes = self.topology_changes();
        if self.registration.announced_at.get() == Some(changes) {
            return;
        }
        self.registration.announced_at.set(Some(changes));
        let current: RegistrySet = self.with_topics(|topics| {
            topics
                .iter()
                .map(|(name, t)| (name.clone(), t.channels.keys().cloned().collect()))
                .collect()
        });
        let events = diff(&self.registration.announced.borrow(), &current);
        if events.is_empty() {
            return;
        }
        *self.registration.announced.borrow_mut() = current;
        self.send_lookupd(events);
    }

    /// Whether any nsqlookupd is connected (then a new topic first asks for its channels).
    pub(super) fn lookupd_knows_peers(&self) -> bool {
        self.settings
            .lookupd
            .http_endpoints
            .lock()
            .map(|e| !e.is_empty())
            .unwrap_or(false)
    }

    /// Notes a new topic whose channels nsqlookupd should be asked for.
    pub(super) fn queue_channel_precreation(&self, topic: &str) {
        self.registration
            .precreate
            .borrow_mut()
            .push(topic.to_string());
        self.registration.precreate_queued.wake();
    }

    /// Starts each new topic's nsqlookupd query as soon as the topic is created: while it
    /// runs the topic holds its messages for the channels it will learn of (nsqd blocks the
    /// first publish for that long instead), so the window must stay as short as the query.
    pub async fn run_channel_precreation(self: Rc<Self>) {
        loop {
            let queued = &self.registration;
            queued
                .precreate_queued
                .until(|| !queued.precreate.borrow().is_empty() || self.is_shutting_down())
                .await;
            if self.is_shutting_down() {
                return;
            }
            self.start_channel_precreation();
        }
    }

    /// Starts the nsqlookupd queries for topics created since the last call.
    pub fn start_channel_precreation(self: &Rc<Self>) {
        let topics = std::mem::take(&mut *self.registration.precreate.borrow_mut());
        for topic in topics {
            glommio::spawn_local(self.clone().precreate_channels(topic)).detach();
        }
    }

    /// nsqd's topic start: asks every nsqlookupd for the topic's channels (`/channels?topic=`),
    /// creates the non-ephemeral ones, then lets the topic deliver its backlog to all of them.
    async fn precreate_channels(self: Rc<Self>, topic: String) {
        let endpoints = self
            .settings
            .lookupd
            .http_endpoints
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        let (connect, request) = self.settings.lookupd.http_timeouts;
        let timeouts = crate::auth::client::Timeouts { connect, request };
        let mut channels = BTreeSet::new();
        for endpoint in endpoints {
            let url = format!("{endpoint}/channels?topic={}", topic.replace('#', "%23"));
            match crate::auth::client::get(&url, timeouts).await {
                Ok((status, body)) if status.is_success() => channels.extend(channel_names(&body)),
                Ok((status, _)) => tracing::error!("LOOKUPD: {url} answered {status}"),
                Err(e) => tracing::error!("LOOKUPD: {e}"),
            }
        }
        self.finish_topic_start(&topic, channels);
    }

    /// Creates the channels nsqlookupd named, then starts the topic's delivery.
    fn finish_topic_start(&self, topic: &str, channels: BTreeSet<String>) {
        let now = std::time::Instant::now();
        let mqs = self.settings.mem_queue_size;
        let mut topics = self.topics.borrow_mut();
        let Some(t) = topics.get_mut(topic) else {
            return;
        };
        for c in channels {
            if !t.channels.contains_key(&c) {
                tracing::info!("TOPIC({topic}): new channel({c}) (known to nsqlookupd)");
                t.channel_mut(&c, mqs);
            }
        }
        t.starting = false;
        t.drain_backlog(mqs);
        for ch in t.channels.values_mut() {
            self.pump_channel(ch, now);
        }
    }

    /// `PUT /config/nsqlookupd_tcp_addresses`: replaces the lookupd peers.
    pub fn set_lookupd_peers(&self, addrs: Vec<String>) {
        self.send_lookupd(vec![LookupdEvent::SetPeers(addrs)]);
    }

    fn send_lookupd(&self, events: Vec<LookupdEvent>) {
        if self.id == 0 {
            self.deliver_lookupd(events);
        } else {
            self.outboxes.push(0, MeshMsg::Lookupd(events));
        }
    }

    /// Hands events to the lookupd task (on the first core).
    pub(super) fn deliver_lookupd(&self, events: Vec<LookupdEvent>) {
        if let Some(h) = self.registration.lookupd.borrow().as_ref() {
            for e in events {
                h.send(e);
            }
        }
    }
}

/// The channel names of an nsqlookupd `/channels` reply (`{"channels":[…]}`, or the older
/// `{"data":{"channels":[…]}}`), keeping valid, non-ephemeral names only.
pub fn channel_names(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let list = v.get("channels").or_else(|| v.get("data")?.get("channels"));
    list.and_then(|l| l.as_array())
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str())
                .filter(|n| {
                    crate::protocol::names::is_valid_name(n.as_bytes())
                        && !crate::protocol::names::is_ephemeral(n)
                })
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[(&str, &[&str])]) -> RegistrySet {
        entries
            .iter()
            .map(|(t, cs)| (t.to_string(), cs.iter().map(|c| c.to_string()).collect()))
            .collect()
    }

    #[test]
    fn channel_names_from_both_reply_shapes() {
        assert_eq!(
            channel_names(br#"{"channels":["a","b#ephemeral","c d"]}"#),
            vec!["a"]
        );
        assert_eq!(channel_names(br#"{"data":{"channels":["x"]}}"#), vec!["x"]);
        assert!(channel_names(b"nope").is_empty());
    }

    #[test]
    fn diff_orders_like_nsqd() {
        let old = set(&[("gone", &["c1", "c2"]), ("kept", &["a", "b"])]);
        let new = set(&[("kept", &["b", "c"]), ("new", &["x"])]);
        let reg = |t: &str, c: Option<&str>| match c {
            None => Registration::topic(t),
            Some(c) => Registration::channel(t, c),
        };
        assert_eq!(
            diff(&old, &new),
            vec![
                LookupdEvent::Register(reg("kept", Some("c"))),
                LookupdEvent::Unregister(reg("kept", Some("a"))),
                LookupdEvent::Register(reg("new", None)),
                LookupdEvent::Register(reg("new", Some("x"))),
                LookupdEvent::Unregister(reg("gone", Some("c1"))),
                LookupdEvent::Unregister(reg("gone", Some("c2"))),
                LookupdEvent::Unregister(reg("gone", None)),
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
