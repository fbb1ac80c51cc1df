//! Keeping nsqlookupd informed. Every core compares the topics and channels it owns with what
//! it last announced and sends the difference to the first core, whose lookupd task tells every
//! nsqlookupd. Comparing state, rather than hooking each place a topic or channel is created or
//! deleted (SUB, publish, HTTP, start-up restore), means no path can forget to announce.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

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
    /// The lookupd task (first core only).
    lookupd: RefCell<Option<LookupdHandle>>,
}

/// The events that turn `old` into `new`, in nsqd's order: a new topic before its channels; a
/// deleted topic before its channels.
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
            events.push(LookupdEvent::Unregister(Registration::topic(topic)));
            for c in channels {
                events.push(LookupdEvent::Unregister(Registration::channel(topic, c)));
            }
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
        let addrs = self.settings.lookupd.addresses.clone();
        let handle = lookupd::spawn(identity, addrs, self.settings.limits.max_body_size);
        *self.registration.lookupd.borrow_mut() = Some(handle);
    }

    /// Announces what changed among this core's topics and channels since the last call.
    pub fn announce_registrations(&self) {
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
                LookupdEvent::Unregister(reg("gone", None)),
                LookupdEvent::Unregister(reg("gone", Some("c1"))),
                LookupdEvent::Unregister(reg("gone", Some("c2"))),
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
