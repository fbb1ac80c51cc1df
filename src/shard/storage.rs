//! A shard's disk side: restoring its topics from `nsqd.dat` and their disk queues at
//! start-up, the storage task that does every disk queue IO of the shard on its own executor,
//! and the shutdown flush of memory to disk.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;

use super::Shard;
use crate::broker::topic::Topic;
use crate::mesh::PublishOutcome;
use crate::settings::DiskSettings;
use crate::storage::backlog::{DiskBacklog, Registry};
use crate::storage::board::MetadataBoard;
use crate::storage::metadata::{ChannelMeta, Metadata, TopicMeta};
use crate::storage::queue_io::{QueueConfig, QueueIo, SegmentFiles, write_synced_temp};

/// The disk queues of one shard and the IO state behind them.
pub struct ShardDisk {
    /// Backlogs the broker side uses.
    pub registry: Rc<Registry>,
    cfg: Rc<QueueConfig>,
    sync_timeout: Duration,
    /// Open files and positions, by queue name; touched only under `io_lock`.
    io: RefCell<BTreeMap<String, QueueIo>>,
    io_lock: Semaphore,
    closed: Cell<bool>,
    board: Option<Arc<MetadataBoard>>,
    /// The last nsqd.dat write failed: the periodic round retries it.
    metadata_failed: Cell<bool>,
}

impl ShardDisk {
    /// Disk state for one shard (no IO yet).
    pub fn new(s: &DiskSettings, max_msg_size: usize) -> Self {
        ShardDisk {
            registry: Rc::new(Registry::new(s.durable_ack)),
            cfg: Rc::new(QueueConfig {
                dir: s.data_path.clone(),
                max_bytes_per_file: s.max_bytes_per_file,
                max_msg_size,
                sync_every: s.sync_every.max(1),
                durable: s.durable_ack,
                files: SegmentFiles::new(s.segment_file_budget),
            }),
            sync_timeout: s.sync_timeout.max(Duration::from_millis(1)),
            io: RefCell::new(BTreeMap::new()),
            io_lock: Semaphore::new(1),
            closed: Cell::new(false),
            board: s.board.clone(),
            metadata_failed: Cell::new(false),
        }
    }

    /// Loads new queues, deletes those of deleted topics and channels, applies empties; returns
    /// the live queues the round visits, taken out of `io` (the caller holds `io_lock`): every
    /// queue of the shard when `all` (closing), else only those listed active since the last
    /// round, so a round's cost follows the queues in use, not the queues that exist. A queue
    /// that owes a sync stays listed (see [`QueueIo::needs_another_round`]), so the periodic
    /// sync needs no visit of every queue either: 60,000 idle queues cost a core 3 % of a CPU
    /// that way.
    async fn open_queues(&self, all: bool) -> Vec<(String, QueueIo)> {
        // Deleted topics' and channels' queues: their files go before a new queue of the same
        // name is loaded (in this round or a later one, both after this).
        for old in self.registry.take_retired() {
            self.delete_queue(old).await;
        }
        let mut live = Vec::new();
        // Taken either way: taking clears the queues' listed flags.
        let active = self.registry.take_active();
        let visit = if all { self.registry.all() } else { active };
        for backlog in visit {
            let name = backlog.name().to_string();
            let emptied = backlog.take_empty_request();
            let mut io = self.take_or_load(backlog).await;
            if emptied {
                io.empty().await;
            }
            live.push((name, io));
        }
        live
    }

    /// The queue's IO state, taken out of `io`, or loaded from its files if it has none yet.
    async fn take_or_load(&self, backlog: DiskBacklog) -> QueueIo {
        let existing = self.io.borrow_mut().remove(backlog.name());
        match existing {
            Some(io) => io,
            None => QueueIo::load(self.cfg.clone(), backlog).await,
        }
    }

    /// Its topic or channel was deleted: so are its files, as in nsqd.
    async fn delete_queue(&self, backlog: DiskBacklog) {
        self.take_or_load(backlog).await.delete_files().await;
        self.registry.metadata_changed();
    }

    /// One pass over the queues listed active (a queue that owes a sync stays listed): load
    /// new ones, write, read ahead, sync when due (each dirty queue when `force_sync`).
    /// Returns whether anything was read (the broker should deliver it), which records the
    /// round covered and its failure, for [`Registry::round_done`]; `None` once closed.
    ///
    /// A topic's disk backlog is consumed by moving its records into its channels' queues, so
    /// the round goes in phases across all queues: note every consumed position (no IO in
    /// between, so nothing moves meanwhile), write (and with `--durable-ack` fsync) every
    /// queue, and only then let positions advance, segments be deleted and meta files be
    /// rewritten. A crash at any point thus finds each record in the topic's queue, in its
    /// channels' queues, or in both (redelivered), never in neither.
    ///
    /// With `release_after_write` the publishes it covers are released once its writes are
    /// done, before its syncs, as nsqd answers a publish after writing it and syncs before it
    /// writes the next one (the next round waits for this one's syncs the same way).
    async fn round(&self, force_sync: bool, release_after_write: bool) -> Option<RoundEnd> {
        let Ok(_permit) = self.io_lock.acquire_permit(1).await else {
            return None;
        };
        if self.closed.get() {
            return None;
        }
        let covered = self.registry.round_start();
        let mut read_any = false;
        let mut live = self.open_queues(false).await;
        let (failed, mut failure) = stage_and_write(&mut live, "").await;
        if release_after_write {
            self.registry.release(covered, failure.clone());
        }
        for (name, io) in &mut live {
            let apply_consumed = !feeds_failed_queue(name, &failed);
            let (read, synced) = io.advance(force_sync, apply_consumed).await;
            read_any |= read;
            if let Err(e) = synced {
                tracing::error!("DISKQUEUE({name}): {e}");
                failure = Some(e);
            }
            if io.needs_another_round() {
                io.mark_active();
            }
        }
        self.io.borrow_mut().extend(live);
        Some(RoundEnd {
            read_any,
            covered,
            failure,
        })
    }

    /// Rewrites nsqd.dat when this shard's topics or channels changed (nsqd writes it on
    /// every create, delete and pause), through the board so other shards' topics stay.
    async fn write_metadata(&self, shard: usize, part: Vec<TopicMeta>) {
        let Some(board) = &self.board else { return };
        board.update(shard, part);
        if !board.unwritten() {
            self.metadata_failed.set(false);
            return;
        }
        let (meta, generation) = board.snapshot();
        let path = crate::storage::metadata::path(&self.cfg.dir);
        let data = meta.encode().into_bytes();
        let tmp = match write_synced_temp(&path, data).await {
            Ok(tmp) => tmp,
            Err(e) => {
                tracing::error!("failed to persist metadata - {e}");
                self.metadata_failed.set(true);
                return;
            }
        };
        // Renamed under the board's lock (a quick blocking call), so that another shard's
        // newer file is never replaced by this older one.
        let renamed = board.commit(generation, || std::fs::rename(&tmp, &path));
        self.metadata_failed.set(renamed.is_err());
        if !matches!(renamed, Ok(true)) {
            if let Err(e) = renamed {
                tracing::error!(
                    "failed to persist metadata - cannot rename {} - {e}",
                    tmp.display()
                );
            }
            let _ = glommio::io::remove(&tmp).await;
        }
    }

    /// Writes everything still pending, syncs, writes every meta file and closes the files.
    /// Channels' queues are finished before topics' (the phases of [`ShardDisk::round`]: what
    /// a topic handed its channels is on disk before the topic's position moves), a batch at
    /// a time so that the files open at once stay far below the open-file limit whatever the
    /// number of queues, while io_uring still runs a batch's writes and fsyncs together.
    async fn close(&self) {
        let Ok(_permit) = self.io_lock.acquire_permit(1).await else {
            return;
        };
        self.closed.set(true);
        let covered = self.registry.round_start();
        let mut live = self.open_queues(true).await;
        for (_, io) in &mut live {
            io.stage();
        }
        let (channels, topics): (Vec<_>, Vec<_>) =
            live.into_iter().partition(|(name, _)| name.contains(':'));
        let batch = self.cfg.files.close_batch();
        let (failed, failure) = finish_in_batches(channels, &[], batch).await;
        let (_, topic_failure) = finish_in_batches(topics, &failed, batch).await;
        self.registry.round_done(covered, topic_failure.or(failure));
    }
}

/// Finishes `queues` ([`QueueIo::finish`]), `batch` at a time: enough for io_uring to overlap
/// their writes and fsyncs, few enough (see [`SegmentFiles::close_batch`]) that the files they
/// hold stay under the open-file limit. Closing them all at once took a descriptor per queue
/// and lost every record past the limit (`Too many open files`). A topic's queue keeps its
/// consumed position when one of its channels' queues is in `failed_channels`. Returns the
/// queues that failed and the last error.
async fn finish_in_batches(
    queues: Vec<(String, QueueIo)>,
    failed_channels: &[String],
    batch: usize,
) -> (Vec<String>, Option<String>) {
    let mut failed = Vec::new();
    let mut failure = None;
    let mut queues = queues.into_iter().peekable();
    while queues.peek().is_some() {
        let batch: Vec<_> = queues
            .by_ref()
            .take(batch)
            .map(|(name, io)| {
                let apply_consumed = !feeds_failed_queue(&name, failed_channels);
                glommio::spawn_local(async move { (io.finish(apply_consumed).await, name) })
            })
            .collect();
        for task in batch {
            if let (Err(e), name) = task.await {
                tracing::error!("DISKQUEUE({name}): failed to close - {e}");
                failed.push(name);
                failure = Some(e);
            }
        }
    }
    (failed, failure)
}

impl Shard {
    /// The disk-queue ticket before a publish is applied, for [`Shard::durable_outcome`].
    pub(super) fn disk_ticket(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.registry.pushed())
    }

    /// Whether a publish applied since `ticket` has to wait for the storage task: it pushed
    /// records to a disk queue (nsqd writes those before it answers, so a kill -9 after the
    /// `OK` keeps them), or `--durable-ack` is on (group commit: every publish applied before
    /// the storage task's next round shares its writes and fsyncs).
    fn must_wait_for_disk(&self, ticket: u64) -> Option<Rc<Registry>> {
        let d = self.disk.as_ref()?;
        (d.cfg.durable || d.registry.pushed() > ticket).then(|| d.registry.clone())
    }

    /// Holds a publish outcome until the records it pushed to disk are written (and with
    /// `--durable-ack` fsynced; see [`Registry::on_disk`]). A failed write turns the outcome
    /// into a refusal. `ticket` is [`Shard::disk_ticket`] from before the publish.
    pub(super) async fn durable_outcome(
        &self,
        outcome: PublishOutcome,
        ticket: u64,
    ) -> PublishOutcome {
        match self.must_wait_for_disk(ticket) {
            Some(registry) => durable_result(registry.on_disk().await, outcome),
            None => outcome,
        }
    }

    /// Like [`Shard::durable_outcome`] for a publish from another core: `send` runs once the
    /// outcome is final, without holding up this core's mesh receiver.
    pub(super) fn reply_when_durable(
        &self,
        outcome: PublishOutcome,
        ticket: u64,
        send: impl FnOnce(PublishOutcome) + 'static,
    ) {
        match self.must_wait_for_disk(ticket) {
            Some(registry) => {
                glommio::spawn_local(async move {
                    send(durable_result(registry.on_disk().await, outcome));
                })
                .detach();
            }
            None => send(outcome),
        }
    }

    /// Start-up: creates the topics and channels of `meta` that this shard owns, with their
    /// pause flags, then loads their disk queues before the shard accepts clients.
    pub async fn restore(&self, meta: &Metadata) {
        let owned: Vec<&TopicMeta> = meta
            .topics
            .iter()
            .filter(|t| self.owner_of(&t.name) == self.id)
            .collect();
        {
            let mut topics = self.topics.borrow_mut();
            let mqs = self.settings.mem_queue_size;
            for tm in &owned {
                tracing::info!("TOPIC({}): restoring (shard {})", tm.name, self.id);
                let t = topics
                    .entry(tm.name.clone())
                    .or_insert_with(|| self.new_topic(&tm.name));
                // Channels first, so the backlog is not handed to the first one alone.
                t.paused = true;
                for cm in &tm.channels {
                    t.channel_mut(&cm.name, mqs).paused = cm.paused;
                }
                t.paused = tm.paused;
            }
        }
        if let Some(disk) = &self.disk {
            self.storage_round(disk, false, true).await;
        }
        self.pump_from_disk();
    }

    /// A new topic wired to this shard's disk queues (if any).
    pub(super) fn new_topic(&self, name: &str) -> Topic {
        let mut topic = Topic::with_disk(
            name,
            self.settings.node_id,
            self.disk.as_ref().map(|d| d.registry.clone()),
        );
        topic.track_latency(self.settings.e2e_latency.clone());
        topic
    }

    /// The storage task: serves every disk queue of the shard until shutdown.
    pub async fn run_storage(self: Rc<Self>) {
        let Some(disk) = &self.disk else { return };
        let mut last_sync = Instant::now();
        while !self.is_shutting_down() {
            let timeout = disk.sync_timeout.min(Duration::from_millis(200));
            futures_lite::future::or(
                disk.registry.changed(|| self.is_shutting_down()),
                glommio::timer::sleep(timeout),
            )
            .await;
            if self.is_shutting_down() {
                break;
            }
            let force = last_sync.elapsed() >= disk.sync_timeout;
            if force {
                last_sync = Instant::now();
            }
            // Creations, deletions and pauses flag a change; the periodic round retries a
            // failed nsqd.dat write.
            let retry_metadata = force && disk.metadata_failed.get();
            if self.storage_round(disk, force, retry_metadata).await {
                self.pump_from_disk();
            }
        }
    }

    /// One storage round, with nsqd.dat rewritten beside it when the topic/channel list
    /// changed (or `force_meta`: start-up, a failed write to retry). Only then are the names
    /// of every topic and channel snapshotted: with 90,000 of them that took milliseconds.
    /// When it is rewritten, the publishes the round covers are released only once both are
    /// done, so an acknowledged record on disk always has its topic in nsqd.dat (a kill -9 in
    /// between would otherwise leave it in files no restart loads); records of a topic created
    /// after nsqd.dat's snapshot wait for the next round, which follows at once. Returns
    /// whether anything was read.
    async fn storage_round(&self, disk: &ShardDisk, force_sync: bool, force_meta: bool) -> bool {
        let (meta_changed, meta_covered) = disk.registry.take_metadata_changed();
        let meta_due = meta_changed || force_meta;
        // Taken together, with no await between: every record pushed before `meta_ticket`
        // belongs to a topic this snapshot (or an earlier, written one) lists.
        let snapshot = meta_due.then(|| self.metadata());
        let meta_ticket = disk.registry.pushed();
        let write_meta = async {
            if let Some(part) = snapshot {
                disk.write_metadata(self.id, part).await;
            }
        };
        // Only `--durable-ack` promises an fsync before the OK; a new nsqd.dat must be in
        // place before what its new topics were sent is acknowledged.
        let release_after_write = !disk.cfg.durable && !meta_due;
        let round = disk.round(force_sync, release_after_write);
        let (end, ()) = futures_lite::future::zip(round, write_meta).await;
        if meta_due {
            disk.registry.metadata_written(meta_covered);
        }
        let Some(end) = end else { return false };
        let covered = if disk.registry.metadata_pending() {
            end.covered.min(meta_ticket)
        } else {
            end.covered
        };
        disk.registry.round_done(covered, end.failure);
        end.read_any
    }

    /// Shutdown: memory, in-flight and deferred messages to disk, files synced and closed.
    /// Returns this shard's part of nsqd.dat.
    pub async fn close_storage(&self) -> Vec<TopicMeta> {
        let Some(disk) = &self.disk else {
            return Vec::new();
        };
        for t in self.topics.borrow_mut().values_mut() {
            t.flush_to_disk();
        }
        disk.close().await;
        // The final nsqd.dat is written from what this returns; nobody waits any longer.
        disk.registry.metadata_written(u64::MAX);
        self.metadata()
    }

    /// Rewrites nsqd.dat now and waits until it is in place (after a pause or unpause, which
    /// nsqd persists before it answers).
    pub async fn persist_metadata(&self) {
        if let Some(disk) = &self.disk {
            disk.registry.metadata_persisted().await;
        }
    }

    /// Like [`Shard::persist_metadata`] for a request from another core: `then` runs once
    /// nsqd.dat is in place, without holding up this core's mesh receiver.
    pub(super) fn when_metadata_persisted(&self, then: impl FnOnce() + 'static) {
        match &self.disk {
            Some(d) => {
                let registry = d.registry.clone();
                glommio::spawn_local(async move {
                    registry.metadata_persisted().await;
                    then();
                })
                .detach();
            }
            None => then(),
        }
    }

    /// The owned topics and channels as nsqd.dat lists them (ephemeral ones left out).
    pub fn metadata(&self) -> Vec<TopicMeta> {
        self.topics
            .borrow()
            .values()
            .filter(|t| !t.ephemeral)
            .map(|t| TopicMeta {
                name: t.name.clone(),
                paused: t.paused,
                channels: t
                    .channels
                    .values()
                    .filter(|c| !c.ephemeral)
                    .map(|c| ChannelMeta {
                        name: c.name.clone(),
                        paused: c.paused,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Delivers what the storage task just read: topic disk backlogs fan out, channels pump.
    fn pump_from_disk(&self) {
        let now = Instant::now();
        let mqs = self.settings.mem_queue_size;
        let mut topics = self.topics.borrow_mut();
        for t in topics.values_mut() {
            t.drain_backlog(mqs);
            for ch in t.channels.values_mut() {
                self.pump_channel(ch, now);
            }
        }
    }
}

/// What a storage round did, for its caller to release the publishes it covered.
struct RoundEnd {
    /// Records were read ahead (the broker should deliver them).
    read_any: bool,
    /// Every record pushed before this ticket was in the round.
    covered: u64,
    /// The round's write or sync failure.
    failure: Option<String>,
}

/// Whether `queue` is a topic's queue (`topic`; channels' are `topic:channel`) one of whose
/// channels' queues failed to write this round: what the topic handed them may not be on
/// disk, so the topic's consumed position must not advance yet (redelivery, not loss).
/// A channel's own consumption goes to clients and always advances, so consumed segments
/// are still deleted while some other queue cannot be written (a full disk frees up).
fn feeds_failed_queue(queue: &str, failed: &[String]) -> bool {
    !queue.contains(':')
        && failed.iter().any(|f| {
            f.strip_prefix(queue)
                .is_some_and(|rest| rest.starts_with(':'))
        })
}

/// A publish whose messages could not be made durable is refused as a whole.
fn durable_result(synced: Result<(), String>, outcome: PublishOutcome) -> PublishOutcome {
    match synced {
        Ok(()) => outcome,
        Err(e) => PublishOutcome {
            accepted: 0,
            error: Some(format!("disk write failed - {e}")),
        },
    }
}

/// The first two phases of a round (and of close): note every consumed position with no IO in
/// between, then write and sync every queue. Returns the queues whose write failed and the
/// last error; `context` prefixes the log line.
async fn stage_and_write(
    live: &mut [(String, QueueIo)],
    context: &str,
) -> (Vec<String>, Option<String>) {
    for (_, io) in live.iter_mut() {
        io.stage();
    }
    let mut failed = Vec::new();
    let mut failure = None;
    for (name, io) in live.iter_mut() {
        if let Err(e) = io.write().await {
            tracing::error!("DISKQUEUE({name}): {context}{e}");
            failed.push(name.clone());
            failure = Some(e);
        }
    }
    (failed, failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::Message;
    use crate::storage::diskqueue::segment_path;

    fn msg(i: u8) -> Message {
        Message::new(
            *b"0000000000000000",
            i as i64,
            bytes::Bytes::from(vec![b'a' + i]),
        )
    }

    /// A round with its covered publishes released, as the storage task's would be.
    async fn round(disk: &ShardDisk) {
        let end = disk.round(false, false).await.expect("open");
        disk.registry.round_done(end.covered, end.failure);
    }

    fn disk(dir: &std::path::Path) -> ShardDisk {
        let s = DiskSettings {
            data_path: dir.to_path_buf(),
            max_bytes_per_file: 1 << 20,
            sync_every: 1,
            sync_timeout: Duration::from_secs(2),
            durable_ack: true,
            board: None,
            segment_file_budget: 0,
        };
        ShardDisk::new(&s, 1024)
    }

    /// A topic's acknowledged backlog moves into a new channel's queue: the topic's queue must
    /// not record it as consumed (meta file, deleted segment) before the channel's queue has
    /// it on disk. The channel's write fails here, standing in for a kill -9 between the
    /// two: what the restarted broker finds must still hold every record.
    #[test]
    fn topic_backlog_stays_consumable_until_its_channels_wrote_it() {
        crate::storage::run_in_temp_dir("nsqd-shard", |d| async move {
            let disk = disk(&d);
            let topic = disk.registry.open("t");
            for i in 0..3 {
                topic.push(&msg(i));
            }
            round(&disk).await;
            assert!(disk.registry.on_disk().await.is_ok(), "acknowledged");
            let channel = disk.registry.open("t:c");
            round(&disk).await;
            // The channel's segment cannot be written (a directory is in the way).
            std::fs::create_dir(segment_path(&d, "t:c", 0)).unwrap();
            // The broker fans the topic's backlog out to the new channel.
            let mut moved = 0;
            while let Some(m) = topic.pop() {
                channel.push(&m);
                moved += 1;
            }
            assert_eq!(moved, 3);
            round(&disk).await;
            assert!(disk.registry.health_error().is_some(), "the write failed");
            // Crash: no close. Restart with the obstacle gone.
            drop((topic, channel, disk));
            std::fs::remove_dir(segment_path(&d, "t:c", 0)).unwrap();
            let disk = self::disk(&d);
            let topic = disk.registry.open("t");
            let channel = disk.registry.open("t:c");
            round(&disk).await;
            let mut got: Vec<_> = std::iter::from_fn(|| topic.pop())
                .chain(std::iter::from_fn(|| channel.pop()))
                .map(|m| m.body)
                .collect();
            got.sort();
            got.dedup();
            assert_eq!(got, (0..3).map(|i| msg(i).body).collect::<Vec<_>>());
        });
    }
}
