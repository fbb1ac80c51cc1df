//! The hand-over point between a topic or channel (synchronous, on the owner shard) and its
//! disk queue's IO (asynchronous, the shard's storage task). The broker appends encoded
//! records and pops read-ahead messages without waiting; the storage task writes the former
//! and refills the latter. No IO here.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

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
    /// The broker emptied the queue; the storage task drops its files.
    empty_requested: bool,
    /// Listed for the storage task's next round (see [`Registry::take_active`]).
    active: bool,
}

/// One disk queue as the broker sees it. Cheap to clone (shared with the storage task); a
/// clone does not carry ownership, only the handle [`Registry::open`] returned does.
#[derive(Debug)]
pub struct DiskBacklog {
    name: Rc<str>,
    buffers: Rc<RefCell<Buffers>>,
    registry: Rc<RegistryCore>,
    /// Held only by the topic or channel that opened the queue: once it is dropped (the
    /// topic or channel was deleted), the storage task deletes the queue's files.
    _owner: Option<Rc<()>>,
}

impl Clone for DiskBacklog {
    fn clone(&self) -> Self {
        DiskBacklog {
            name: self.name.clone(),
            buffers: self.buffers.clone(),
            registry: self.registry.clone(),
            _owner: None,
        }
    }
}

impl Drop for DiskBacklog {
    fn drop(&mut self) {
        // The last owning handle: its topic or channel is gone, so is its name (one opened
        // again gets a new queue), and the storage task deletes the files.
        if let Some(owner) = self._owner.take()
            && Rc::strong_count(&owner) == 1
        {
            self.registry.retire(&self.name, &self.buffers);
        }
    }
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
        self.list_for_round(&mut b);
        drop(b);
        self.registry.written.set(self.registry.written.get() + 1);
        self.registry.poke();
    }

    /// Lists this queue for the storage task's next round (once), which then visits only
    /// the queues that have something to do rather than every queue of the core.
    pub fn mark_active(&self) {
        self.list_for_round(&mut self.buffers.borrow_mut());
    }

    /// [`DiskBacklog::mark_active`] under a borrow the caller already holds.
    fn list_for_round(&self, b: &mut Buffers) {
        if !b.active {
            b.active = true;
            self.registry
                .active
                .borrow_mut()
                .push((self.name.clone(), self.buffers.clone()));
        }
    }

    /// Takes the next read-ahead message, if the storage task has one ready.
    pub fn pop(&self) -> Option<Message> {
        let mut b = self.buffers.borrow_mut();
        let (msg, end) = b.ready.pop_front()?;
        b.consumed = Some(end);
        b.depth -= 1;
        b.taken += 1;
        let low = b.ready.len() < READ_AHEAD / 2;
        // The consumed position is applied at the next round, a refill asked for when low.
        self.list_for_round(&mut b);
        drop(b);
        if low {
            self.registry.poke();
        }
        Some(msg)
    }

    /// Whether every message goes through this queue before it is acknowledged
    /// (`--durable-ack`): then memory is bypassed.
    pub fn durable(&self) -> bool {
        self.registry.durable_writes
    }

    /// nsqd's empty: drops every queued record now; the storage task deletes the files.
    pub fn empty(&self) {
        let mut b = self.buffers.borrow_mut();
        b.pending.clear();
        b.pending_count = 0;
        b.ready.clear();
        b.depth = 0;
        b.consumed = None;
        b.empty_requested = true;
        self.list_for_round(&mut b);
        drop(b);
        self.registry.poke();
    }

    /// For the storage task: whether the broker emptied the queue since the last call.
    pub fn take_empty_request(&self) -> bool {
        std::mem::take(&mut self.buffers.borrow_mut().empty_requested)
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

    /// For the storage task: puts back `count` encoded records a failed write did not store,
    /// ahead of anything queued since.
    pub fn unwrite(&self, records: &[u8], count: i64) {
        let mut b = self.buffers.borrow_mut();
        let mut all = Vec::with_capacity(records.len() + b.pending.len());
        all.extend_from_slice(records);
        all.extend_from_slice(&b.pending);
        b.pending = all;
        b.pending_count += count;
    }

    /// Why the last storage round failed, while it keeps failing (nsqd's unhealthy state).
    pub fn health_error(&self) -> Option<String> {
        self.registry.failing.borrow().clone()
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
    /// Records read before an empty that has not been applied yet are dropped.
    pub fn extend_ready(&self, records: impl IntoIterator<Item = (Message, Position)>) {
        let mut b = self.buffers.borrow_mut();
        if !b.empty_requested {
            b.ready.extend(records);
        }
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

/// A queue's name and buffers, as the registry lists them (for the next round, by name, or
/// retired) without holding a [`DiskBacklog`], which would hold the registry in turn.
type ActiveQueue = (Rc<str>, Rc<RefCell<Buffers>>);

/// Shared by every backlog of one shard: wakes the storage task, and tracks which writes
/// are on disk for `--durable-ack`.
#[derive(Debug, Default)]
struct RegistryCore {
    wakeup: Wakeup,
    dirty: Cell<bool>,
    /// Records pushed so far (a ticket is this count after a publish).
    written: Cell<u64>,
    /// Records pushed before the last completed write + fsync round.
    durable: Cell<u64>,
    /// The last round's failure, for the publishes it covered: (covered up to, reason).
    failed: RefCell<Option<(u64, String)>>,
    /// Publishes waiting for their records to be fsynced.
    waiters: RefCell<Vec<Waker>>,
    /// The last round's error, cleared by a round without one.
    failing: RefCell<Option<String>>,
    /// `--durable-ack`.
    durable_writes: bool,
    /// Bumped when the topic/channel list changes (a queue opened, a pause): nsqd.dat needs
    /// rewriting.
    meta_changed: Cell<u64>,
    /// `meta_changed` when the storage task last took it for a snapshot.
    meta_taken: Cell<u64>,
    /// `meta_changed` as of the newest snapshot the storage task finished writing.
    meta_written: Cell<u64>,
    /// Waiting for nsqd.dat to hold a change (a pause, which nsqd persists before it answers).
    meta_waiters: RefCell<Vec<Waker>>,
    /// Queues with something for the next round to do (written, read, emptied, opened),
    /// each listed once.
    active: RefCell<Vec<ActiveQueue>>,
    /// The queues of live topics and channels, by name, each with a weak link to its owner
    /// token (see [`DiskBacklog`]).
    queues: RefCell<BTreeMap<String, (ActiveQueue, Weak<()>)>>,
    /// Queues whose topic or channel was deleted: the storage task deletes their files
    /// before it loads any queue, so a name opened again meanwhile starts empty.
    retired: RefCell<Vec<ActiveQueue>>,
}

impl RegistryCore {
    fn poke(&self) {
        self.dirty.set(true);
        self.wakeup.wake();
    }

    fn bump_metadata(&self) {
        self.meta_changed.set(self.meta_changed.get() + 1);
    }

    /// The owner of `name`'s queue `buffers` is gone: the name is free again and the files
    /// are for the storage task to delete.
    fn retire(&self, name: &Rc<str>, buffers: &Rc<RefCell<Buffers>>) {
        let mut queues = self.queues.borrow_mut();
        if queues
            .get(&**name)
            .is_some_and(|((_, b), _)| Rc::ptr_eq(b, buffers))
        {
            queues.remove(&**name);
        }
        drop(queues);
        self.retired
            .borrow_mut()
            .push((name.clone(), buffers.clone()));
        self.poke();
    }
}

/// The disk queues of one shard, by name: what its storage task serves.
#[derive(Debug, Default)]
pub struct Registry {
    core: Rc<RegistryCore>,
}

impl Registry {
    /// A registry; with `durable_writes` every message of its queues goes to disk first.
    pub fn new(durable_writes: bool) -> Self {
        Registry {
            core: Rc::new(RegistryCore {
                durable_writes,
                ..RegistryCore::default()
            }),
        }
    }

    /// Why the shard's storage is failing right now, if it is (nsqd's unhealthy state, which
    /// `/ping` and `/stats` report).
    pub fn health_error(&self) -> Option<String> {
        self.core.failing.borrow().clone()
    }

    /// A handle without ownership on a listed queue.
    fn handle(&self, (name, buffers): &ActiveQueue) -> DiskBacklog {
        DiskBacklog {
            name: name.clone(),
            buffers: buffers.clone(),
            registry: self.core.clone(),
            _owner: None,
        }
    }

    /// Opens (or returns the already open) backlog of `name`; the storage task loads its files.
    /// The queue lives while any handle this returned for it does; once the last is dropped
    /// (its topic or channel was deleted) the name is free, and opening it again gives a new,
    /// empty backlog, loaded only after the old files are deleted (as in nsqd, which deletes
    /// them before the name can be used again).
    pub fn open(&self, name: &str) -> DiskBacklog {
        let mut queues = self.core.queues.borrow_mut();
        let (queue, weak) = queues.entry(name.to_string()).or_insert_with(|| {
            self.core.bump_metadata();
            ((Rc::from(name), Rc::default()), Weak::new())
        });
        // A live name shares its owner token, so the queue stays owned while any handle lives.
        let owner = weak.upgrade().unwrap_or_else(|| {
            let owner = Rc::new(());
            *weak = Rc::downgrade(&owner);
            owner
        });
        let mut q = self.handle(queue);
        q._owner = Some(owner);
        drop(queues);
        q.mark_active();
        self.core.poke();
        q
    }

    /// Every backlog of a live topic or channel.
    pub fn all(&self) -> Vec<DiskBacklog> {
        self.core
            .queues
            .borrow()
            .values()
            .map(|(q, _)| self.handle(q))
            .collect()
    }

    /// For the storage task: the live queues listed since the last call (see
    /// [`DiskBacklog::mark_active`]). A retired queue's listing is dropped
    /// ([`Registry::take_retired`] covers it), so it never stands for a new queue of its name.
    pub fn take_active(&self) -> Vec<DiskBacklog> {
        let listed = std::mem::take(&mut *self.core.active.borrow_mut());
        let queues = self.core.queues.borrow();
        listed
            .into_iter()
            .filter_map(|(name, buffers)| {
                buffers.borrow_mut().active = false;
                let (q, _) = queues.get(&*name)?;
                Rc::ptr_eq(&q.1, &buffers).then(|| self.handle(q))
            })
            .collect()
    }

    /// For the storage task, before it loads any queue: the queues of deleted topics and
    /// channels, whose files it deletes.
    pub fn take_retired(&self) -> Vec<DiskBacklog> {
        let retired = std::mem::take(&mut *self.core.retired.borrow_mut());
        retired.iter().map(|q| self.handle(q)).collect()
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

    /// Marks the topic/channel list as changed (pause, delete) and wakes the storage task.
    pub fn metadata_changed(&self) {
        self.core.bump_metadata();
        self.core.poke();
    }

    /// Marks the topic/channel list as changed and waits until an nsqd.dat written since holds
    /// it (nsqd persists a pause before it answers, so a crash cannot undo it).
    pub async fn metadata_persisted(&self) {
        self.metadata_changed();
        let c = &self.core;
        let ticket = c.meta_changed.get();
        poll_fn(|cx| {
            if c.meta_written.get() >= ticket {
                return Poll::Ready(());
            }
            c.meta_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// For the storage task: whether the topic/channel list changed since the last call, and
    /// the change count a snapshot taken now covers (for [`Registry::metadata_written`]).
    pub fn take_metadata_changed(&self) -> (bool, u64) {
        let c = &self.core;
        let now = c.meta_changed.get();
        (c.meta_taken.replace(now) < now, now)
    }

    /// Whether the topic/channel list changed since [`Registry::take_metadata_changed`] last
    /// looked (a topic created meanwhile may be missing from the nsqd.dat being written).
    pub fn metadata_pending(&self) -> bool {
        self.core.meta_changed.get() > self.core.meta_taken.get()
    }

    /// For the storage task: nsqd.dat was written from a snapshot covering `covered` changes
    /// (or the storage is closing: `u64::MAX`); wakes whoever waited for them.
    pub fn metadata_written(&self, covered: u64) {
        let c = &self.core;
        c.meta_written.set(c.meta_written.get().max(covered));
        for w in c.meta_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Records pushed so far: a publish that moved this number pushed records to disk, and
    /// waits with [`Registry::on_disk`] for the round that writes them.
    pub fn pushed(&self) -> u64 {
        self.core.written.get()
    }

    /// For the storage task, before a round: every record pushed so far is in this round.
    pub fn round_start(&self) -> u64 {
        self.core.written.get()
    }

    /// For the storage task, after a round's writes and fsyncs: releases the waiting publishes
    /// covered by it, with the round's error if a write or fsync failed.
    pub fn round_done(&self, covered: u64, error: Option<String>) {
        let c = &self.core;
        match &error {
            Some(e) => tracing::error!("storage: unhealthy - {e}"),
            None if c.failing.borrow().is_some() => tracing::info!("storage: healthy again"),
            None => {}
        }
        *c.failing.borrow_mut() = error.clone();
        self.release(covered, error);
    }

    /// For the storage task: releases the publishes waiting for records pushed before
    /// `covered` (refused with `error`), without touching the health state; a round calls it
    /// as soon as its writes are done when nothing else has to be on disk first (nsqd answers
    /// a publish after its write, and syncs before the next one).
    pub fn release(&self, covered: u64, error: Option<String>) {
        let c = &self.core;
        if let Some(e) = error {
            *c.failed.borrow_mut() = Some((covered, e));
        }
        c.durable.set(c.durable.get().max(covered));
        for w in c.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Group commit: waits until every record pushed before this call was written by a
    /// storage round (as nsqd writes a message to its disk queue before it answers the
    /// publish, so a kill -9 after the answer keeps it), and with `--durable-ack` fsynced too.
    /// Publishes arriving while a round is in flight share the next round.
    pub async fn on_disk(&self) -> Result<(), String> {
        let c = &self.core;
        let ticket = c.written.get();
        c.dirty.set(true);
        c.wakeup.wake();
        poll_fn(|cx| {
            if c.durable.get() >= ticket {
                return Poll::Ready(());
            }
            c.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await;
        match &*c.failed.borrow() {
            Some((upto, e)) if *upto >= ticket => Err(e.clone()),
            _ => Ok(()),
        }
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
    fn durable_waits_for_the_round_covering_its_records() {
        let r = Rc::new(Registry::default());
        let q = r.open("t");
        q.push(&msg(1));
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async move {
            let r2 = r.clone();
            let done = Rc::new(Cell::new(false));
            let d2 = done.clone();
            let waiter = glommio::spawn_local(async move {
                let out = r2.on_disk().await;
                d2.set(true);
                out
            });
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            assert!(!done.get(), "not before the round");
            let covered = r.round_start();
            r.round_done(covered, None);
            assert_eq!(waiter.await, Ok(()));
            q.push(&msg(2));
            let r3 = r.clone();
            let failing = glommio::spawn_local(async move { r3.on_disk().await });
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            r.round_done(r.round_start(), Some("disk full".into()));
            assert_eq!(failing.await, Err("disk full".into()));
            assert_eq!(
                r.on_disk().await,
                Err("disk full".into()),
                "nothing new: same round"
            );
        });
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

    #[test]
    fn a_deleted_name_opened_again_gets_a_new_backlog_and_retires_the_old() {
        let r = Registry::default();
        let old = r.open("t");
        old.push(&msg(1));
        let _ = r.take_active();
        old.push(&msg(2)); // listed again, then deleted before the storage task looked
        drop(old); // the topic was deleted; the storage task has not seen it yet
        assert!(r.all().is_empty(), "a deleted queue is no longer served");
        let new = r.open("t");
        assert_eq!(new.depth(), 0, "nothing of the deleted queue carries over");
        let retired = r.take_retired();
        assert_eq!(retired.len(), 1);
        assert_eq!(retired[0].depth(), 2);
        assert!(r.take_retired().is_empty(), "taken once");
        // The old queue's listing must not stand for the new queue: one entry, the new one.
        let listed = r.take_active();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].depth(), 0);
        // A live name is shared, not replaced, and stays owned while either handle lives.
        let again = r.open("t");
        again.push(&msg(3));
        assert_eq!(new.depth(), 1);
        drop(again);
        assert!(
            r.take_retired().is_empty(),
            "still owned by the first handle"
        );
        assert_eq!(r.all().len(), 1);
        drop(new);
        assert_eq!(r.take_retired().len(), 1, "the last handle retires it");
    }

    #[test]
    fn only_queues_with_something_to_do_are_listed_for_a_round() {
        let r = Registry::default();
        let names = |v: Vec<DiskBacklog>| -> Vec<String> {
            v.into_iter().map(|q| q.name().to_string()).collect()
        };
        let (a, b, c) = (r.open("a"), r.open("b"), r.open("c"));
        assert_eq!(
            names(r.take_active()).len(),
            3,
            "opened: loaded by the next round"
        );
        assert!(r.take_active().is_empty(), "listed once");
        b.push(&msg(1));
        b.push(&msg(2));
        assert_eq!(names(r.take_active()), ["b"]);
        c.set_depth(1);
        c.extend_ready([(
            msg(3),
            Position {
                file_num: 0,
                pos: 31,
            },
        )]);
        c.pop().unwrap();
        a.empty();
        let mut got = names(r.take_active());
        got.sort();
        assert_eq!(got, ["a", "c"]);
        assert_eq!(r.all().len(), 3, "a full round sees every queue");
        drop(a);
        assert!(
            r.take_active().is_empty(),
            "a deleted queue is retired, not listed"
        );
        assert_eq!(names(r.take_retired()), ["a"]);
        assert_eq!(names(r.all()), ["b", "c"]);
    }
}
