//! The hand-over point between a topic or channel (synchronous, on the owner shard) and its
//! disk queue's IO (asynchronous, the shard's storage task). The broker appends encoded
//! records and pops read-ahead messages without waiting; the storage task writes the former
//! and refills the latter. No IO here.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use crate::broker::message::Message;
use crate::wakeup::Wakeup;

use super::diskqueue::Position;
use super::record::encode_record;

/// How many decoded records the storage task keeps ready per queue.
pub const READ_AHEAD: usize = 256;

#[derive(Debug, Default)]
struct Buffers {
    /// Encoded records not yet written.
    pending: Vec<u8>,
    pending_count: i64,
    /// Records read ahead, each with the position just after it.
    ready: VecDeque<(Message, Position)>,
    /// Records in the queue and not yet taken (pending + on disk + ready).
    depth: i64,
    /// End of the last record taken by the broker.
    consumed: Option<Position>,
    /// Records taken since the storage task last looked (for `--sync-every`).
    taken: u64,
}

/// One disk queue as the broker sees it. Cheap to clone (shared with the storage task).
#[derive(Debug, Clone)]
pub struct DiskBacklog {
    name: Rc<str>,
    buffers: Rc<RefCell<Buffers>>,
    registry: Rc<RegistryCore>,
}

impl DiskBacklog {
    /// The go-diskqueue name (`topic` or `topic:channel`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues a message for writing (counted in the depth at once).
    pub fn push(&self, msg: &Message) {
        let mut b = self.buffers.borrow_mut();
        encode_record(msg, &mut b.pending);
        b.pending_count += 1;
        b.depth += 1;
        drop(b);
        self.registry.poke();
    }

    /// Takes the next read-ahead message, if the storage task has one ready.
    pub fn pop(&self) -> Option<Message> {
        let mut b = self.buffers.borrow_mut();
        let (msg, end) = b.ready.pop_front()?;
        b.consumed = Some(end);
        b.depth -= 1;
        b.taken += 1;
        let low = b.ready.len() < READ_AHEAD / 2;
        drop(b);
        if low {
            self.registry.poke();
        }
        Some(msg)
    }

    /// Records in the queue (nsqd's `backend_depth`).
    pub fn depth(&self) -> i64 {
        self.buffers.borrow().depth
    }

    /// Whether a message can be popped right now.
    pub fn has_ready(&self) -> bool {
        !self.buffers.borrow().ready.is_empty()
    }

    /// For the storage task: the encoded records to write and how many they are.
    pub fn take_pending(&self) -> (Vec<u8>, i64) {
        let mut b = self.buffers.borrow_mut();
        let n = std::mem::take(&mut b.pending_count);
        (std::mem::take(&mut b.pending), n)
    }

    /// For the storage task: records still waiting to be written.
    pub fn pending_count(&self) -> i64 {
        self.buffers.borrow().pending_count
    }

    /// For the storage task: read-ahead records held.
    pub fn ready_len(&self) -> usize {
        self.buffers.borrow().ready.len()
    }

    /// For the storage task: hands over records read from disk.
    pub fn extend_ready(&self, records: impl IntoIterator<Item = (Message, Position)>) {
        self.buffers.borrow_mut().ready.extend(records);
    }

    /// For the storage task: the consumed position and the count taken since the last call.
    pub fn take_consumed(&self) -> (Option<Position>, u64) {
        let mut b = self.buffers.borrow_mut();
        (b.consumed, std::mem::take(&mut b.taken))
    }

    /// For the storage task: sets the depth (loading a meta file, or after skipping a bad file).
    pub fn set_depth(&self, depth: i64) {
        self.buffers.borrow_mut().depth = depth;
    }
}

/// Shared by every backlog of one shard: wakes the storage task.
#[derive(Debug, Default)]
struct RegistryCore {
    wakeup: Wakeup,
    dirty: Cell<bool>,
}

impl RegistryCore {
    fn poke(&self) {
        self.dirty.set(true);
        self.wakeup.wake();
    }
}

/// The disk queues of one shard, by name: what its storage task serves.
#[derive(Debug, Default)]
pub struct Registry {
    core: Rc<RegistryCore>,
    queues: RefCell<BTreeMap<String, DiskBacklog>>,
}

impl Registry {
    /// Opens (or returns the already open) backlog of `name`; the storage task loads its files.
    pub fn open(&self, name: &str) -> DiskBacklog {
        let mut queues = self.queues.borrow_mut();
        let q = queues
            .entry(name.to_string())
            .or_insert_with(|| DiskBacklog {
                name: Rc::from(name),
                buffers: Rc::default(),
                registry: self.core.clone(),
            });
        let q = q.clone();
        drop(queues);
        self.core.poke();
        q
    }

    /// Every open backlog.
    pub fn all(&self) -> Vec<DiskBacklog> {
        self.queues.borrow().values().cloned().collect()
    }

    /// Waits until some backlog changed since the last call (or `stop()` holds).
    pub async fn changed(&self, mut stop: impl FnMut() -> bool) {
        let core = &self.core;
        core.wakeup.until(|| core.dirty.get() || stop()).await;
        core.dirty.set(false);
    }

    /// Wakes the storage task (shutdown).
    pub fn poke(&self) {
        self.core.poke();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(n: u8) -> Message {
        Message::new(*b"0000000000000000", n as i64, Bytes::from(vec![n]))
    }

    #[test]
    fn push_counts_depth_and_pending_bytes() {
        let r = Registry::default();
        let q = r.open("t");
        q.push(&msg(1));
        q.push(&msg(2));
        assert_eq!(q.depth(), 2);
        let (bytes, n) = q.take_pending();
        assert_eq!(n, 2);
        assert_eq!(bytes.len(), 2 * (4 + 26 + 1));
        assert_eq!(q.take_pending().1, 0);
    }

    #[test]
    fn pop_takes_ready_in_order_and_records_position() {
        let r = Registry::default();
        let q = r.open("t:c");
        q.set_depth(2);
        let p = |pos| Position { file_num: 0, pos };
        q.extend_ready([(msg(1), p(31)), (msg(2), p(62))]);
        assert_eq!(q.pop().unwrap().timestamp, 1);
        assert_eq!(q.take_consumed(), (Some(p(31)), 1));
        assert_eq!(q.pop().unwrap().timestamp, 2);
        assert!(q.pop().is_none());
        assert_eq!(q.depth(), 0);
        assert_eq!(r.all().len(), 1, "open is idempotent per name");
        assert_eq!(r.open("t:c").depth(), 0);
        assert_eq!(r.all().len(), 1);
    }
}
