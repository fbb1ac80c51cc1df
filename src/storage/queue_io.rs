//! The IO half of one disk queue, run by its shard's storage task through glommio's buffered
//! files (io_uring): writes pending records with the v1.1.0 roll rule, reads ahead, deletes
//! consumed segments, renames corrupt ones `.bad`, syncs and rewrites the meta file.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{BufferedFile, OpenOptions};

use super::backlog::{DiskBacklog, READ_AHEAD};
use super::diskqueue::{Meta, Position, bad_path, meta_path, must_roll, segment_path};
use super::files::SegmentFile;
pub use super::files::SegmentFiles;
use super::record::{LEN_PREFIX, Parsed, WalkStop, next_record, walk_records};

/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 256 * 1024;

/// Disk queue settings (`--max-bytes-per-file`, `--max-msg-size`, `--sync-every`).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The data directory.
    pub dir: PathBuf,
    /// Roll threshold.
    pub max_bytes_per_file: i64,
    /// Largest body; bounds record lengths on read.
    pub max_msg_size: usize,
    /// Sync after this many reads + writes.
    pub sync_every: u64,
    /// `--durable-ack`: fsync what each round wrote before the round completes.
    pub durable: bool,
    /// The shard's open segment files and their budget.
    pub files: Rc<SegmentFiles>,
}

type IoResult<T> = Result<T, String>;

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {} - {e}", path.display())
}

/// The positions and open files of one queue.
pub struct QueueIo {
    cfg: Rc<QueueConfig>,
    backlog: DiskBacklog,
    /// Confirmed read position (end of the last record the broker took).
    read: Position,
    /// Read-ahead cursor.
    next_read: Position,
    /// Where the next record goes.
    write: Position,
    write_file: Option<SegmentFile>,
    read_file: Option<(i64, SegmentFile)>,
    /// Reads + writes since the last sync.
    since_sync: u64,
    /// Anything changed since the last sync.
    dirty: bool,
    /// What the broker had consumed when the current round began (see [`QueueIo::stage`]),
    /// applied only once the round's writes of every queue are on disk.
    staged: Option<Position>,
    /// Records taken up to `staged` and not yet counted for `--sync-every`.
    staged_taken: u64,
    /// A segment was rolled or skipped, or a sync failed, since the last sync: the meta file
    /// must follow at the next round.
    rolled: bool,
    /// The last read could not open its segment for want of descriptors or memory (logged
    /// once until a read succeeds again).
    read_blocked: bool,
}

/// Why a read of a segment failed.
enum ReadFailure {
    /// The segment is missing or unreadable: go-diskqueue renames it `.bad` and goes on.
    Bad(String),
    /// The process ran out of descriptors or memory (`EMFILE`, `ENFILE`, `ENOMEM`): the
    /// segment is fine and is read later. nsqd renames it `.bad`, losing its records.
    Transient(String),
}

/// Whether `e` is the process or system running out of a resource rather than a fault of
/// the file.
fn out_of_resources<T>(e: &glommio::GlommioError<T>) -> bool {
    let source = match e {
        glommio::GlommioError::IoError(io) => io,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        _ => return false,
    };
    matches!(
        source.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOMEM)
    )
}

async fn open_rw(path: &Path) -> IoResult<BufferedFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .buffered_open(path)
        .await
        .map_err(|e| io_err("cannot open", path, e))
}

async fn file_size(path: &Path) -> Option<u64> {
    let Ok(f) = BufferedFile::open(path).await else {
        // Not only "missing": a segment that cannot be opened right now still holds data.
        return std::fs::metadata(path).ok().map(|m| m.len());
    };
    let size = f.file_size().await.ok();
    let _ = f.close().await;
    size
}

/// Reads a whole small file, `None` if it does not exist.
async fn read_small(path: &Path) -> IoResult<Option<Vec<u8>>> {
    let f = match BufferedFile::open(path).await {
        Ok(f) => f,
        Err(e) if matches!(&e, glommio::GlommioError::IoError(io) if io.kind() == std::io::ErrorKind::NotFound) =>
        {
            return Ok(None);
        }
        Err(e) => {
            if std::fs::metadata(path).is_err() {
                return Ok(None);
            }
            return Err(io_err("cannot open", path, e));
        }
    };
    let data = f
        .read_at(0, 64 * 1024)
        .await
        .map_err(|e| io_err("cannot read", path, e))?;
    let out = data.to_vec();
    let _ = f.close().await;
    Ok(Some(out))
}

/// Writes `data` to `path` as go-diskqueue does: a `.tmp` sibling, fsync, rename.
pub async fn write_atomically(path: &Path, data: Vec<u8>) -> IoResult<()> {
    let tmp = write_synced_temp(path, data).await?;
    glommio::io::rename(&tmp, path)
        .await
        .map_err(|e| io_err("cannot rename", &tmp, e))
}

/// The first half of [`write_atomically`]: writes and fsyncs a `<path>.<rand>.tmp` sibling
/// and returns its path, for the caller to rename.
pub async fn write_synced_temp(path: &Path, data: Vec<u8>) -> IoResult<PathBuf> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", rand::random::<u32>()));
    let tmp = PathBuf::from(tmp);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .buffered_open(&tmp)
        .await
        .map_err(|e| io_err("cannot create", &tmp, e))?;
    let written = match f.write_at(data, 0).await {
        Ok(_) => f
            .fdatasync()
            .await
            .map_err(|e| io_err("cannot sync", &tmp, e)),
        Err(e) => Err(io_err("cannot write", &tmp, e)),
    };
    let _ = f.close().await;
    if let Err(e) = written {
        let _ = glommio::io::remove(&tmp).await;
        return Err(e);
    }
    Ok(tmp)
}

/// Whole records from `from` to the end of each segment before `to_file` (the writer's new
/// file at load): those written after the last meta sync, which the reader will deliver,
/// counted up to where it would stop (a bad length or a torn record).
async fn count_unsynced(cfg: &QueueConfig, name: &str, from: Position, to_file: i64) -> i64 {
    let mut total = 0;
    for num in from.file_num..to_file {
        let Ok(f) = BufferedFile::open(&segment_path(&cfg.dir, name, num)).await else {
            continue;
        };
        let mut pos = if num == from.file_num { from.pos } else { 0 } as u64;
        let mut want = READ_CHUNK;
        // Bounded: each pass moves `pos` on, or grows `want` to one record and then moves on.
        loop {
            let Ok(data) = f.read_at(pos, want).await else {
                break;
            };
            let walk = walk_records(&data, cfg.max_msg_size);
            total += walk.records;
            pos += walk.used as u64;
            let at_end = data.len() < want;
            match walk.stop {
                WalkStop::BadLength => break,
                WalkStop::End { .. } if at_end => break,
                WalkStop::End { needs } => want = needs.unwrap_or(LEN_PREFIX).max(READ_CHUNK),
            }
        }
        let _ = f.close().await;
    }
    total
}

impl QueueIo {
    /// Loads the queue's meta file (missing = empty queue) and sets the broker's depth.
    pub async fn load(cfg: Rc<QueueConfig>, backlog: DiskBacklog) -> QueueIo {
        let name = backlog.name().to_string();
        let mpath = meta_path(&cfg.dir, &name);
        let meta = match read_small(&mpath).await {
            Ok(None) => Meta::default(),
            Ok(Some(bytes)) => match Meta::parse(&String::from_utf8_lossy(&bytes)) {
                Ok(m) => m,
                Err(e) => {
                    let bad = bad_path(&mpath);
                    tracing::error!(
                        "DISKQUEUE({name}): corrupt meta file {} ({e}), renamed to {}; starting empty",
                        mpath.display(),
                        bad.display()
                    );
                    let _ = glommio::io::rename(&mpath, &bad).await;
                    Meta::default()
                }
            },
            Err(e) => {
                tracing::error!("DISKQUEUE({name}): {e}; starting empty");
                Meta::default()
            }
        };
        let mut write = meta.write;
        // Bytes past the recorded write position (written, and with `--durable-ack` fsynced
        // and acknowledged, after the last meta sync): leave them to the reader and write
        // anew, past every segment that already holds data (a crash right after a roll leaves
        // the next one too), so nothing written before the crash is overwritten.
        loop {
            let wpath = segment_path(&cfg.dir, &name, write.file_num);
            match file_size(&wpath).await {
                Some(size) if size as i64 > write.pos => {
                    tracing::warn!(
                        "DISKQUEUE({name}) {} metadata writePos {} < file size of {size}, skipping to new file",
                        wpath.display(),
                        write.pos
                    );
                    write = Position {
                        file_num: write.file_num + 1,
                        pos: 0,
                    };
                }
                _ => {
                    // The write file is complete and the next one holds data: the crash came
                    // after a roll, before the meta file followed.
                    let next = segment_path(&cfg.dir, &name, write.file_num + 1);
                    if file_size(&next).await.unwrap_or(0) == 0 {
                        break;
                    }
                    tracing::warn!(
                        "DISKQUEUE({name}): {} exists past the write file of its meta, writing after it",
                        next.display()
                    );
                    write = Position {
                        file_num: write.file_num + 1,
                        pos: 0,
                    };
                }
            }
        }
        // Records written after the last meta sync are delivered too: count them, or the
        // depth would read low and go negative as they are consumed.
        let unsynced = count_unsynced(&cfg, &name, meta.write, write.file_num).await;
        backlog.set_depth(meta.depth + unsynced + backlog.pending_count());
        QueueIo {
            cfg,
            backlog,
            read: meta.read,
            next_read: meta.read,
            write,
            write_file: None,
            read_file: None,
            since_sync: 0,
            dirty: false,
            staged: None,
            staged_taken: 0,
            rolled: false,
            read_blocked: false,
        }
    }

    fn name(&self) -> String {
        self.backlog.name().to_string()
    }

    /// Whether this queue has work left after a round: records a failed write put back, a
    /// sync to retry or still owed (written or read since the last one), or a read-ahead the
    /// round's bounded refill did not fill.
    pub fn needs_another_round(&self) -> bool {
        self.rolled
            || self.dirty
            || self.backlog.pending_count() > 0
            || (self.backlog.ready_len() < READ_AHEAD / 2 && self.next_read < self.write)
            || (self.holds_files() && self.cfg.files.over_budget())
    }

    /// Lists this queue for the next round (see [`DiskBacklog::mark_active`]).
    pub fn mark_active(&self) {
        self.backlog.mark_active();
    }

    fn segment(&self, file_num: i64) -> PathBuf {
        segment_path(&self.cfg.dir, self.backlog.name(), file_num)
    }

    /// One round for this queue alone: [`QueueIo::stage`], [`QueueIo::write`],
    /// [`QueueIo::advance`]. Returns whether records were read.
    pub async fn step(&mut self, force_sync: bool) -> IoResult<bool> {
        self.stage();
        self.write().await?;
        let (read, synced) = self.advance(force_sync, true).await;
        synced.map(|()| read)
    }

    /// Round phase 1 (no IO, so no other task runs in between for the queues of one shard):
    /// notes how far the broker consumed. Whatever it consumed up to here and moved elsewhere
    /// (a topic's backlog fanned out to its channels) is already queued for writing in the
    /// other queue, so it is on disk once phase 2 of every queue is done.
    pub fn stage(&mut self) {
        let (consumed, taken) = self.backlog.take_consumed();
        if consumed.is_some() {
            self.staged = consumed;
        }
        self.staged_taken += taken;
    }

    /// Round phase 2: writes what the broker queued (fsynced with `--durable-ack`).
    pub async fn write(&mut self) -> IoResult<()> {
        let wrote = self.backlog.pending_count() > 0;
        self.rolled |= self.flush_writes().await?;
        if wrote
            && self.cfg.durable
            && let Some(f) = &self.write_file
        {
            f.get()
                .fdatasync()
                .await
                .map_err(|e| io_err("cannot sync", &self.segment(self.write.file_num), e))?;
        }
        Ok(())
    }

    /// Round phase 3, once every queue of the round is written: applies the staged consumed
    /// position (if `apply_consumed`; a round whose writes failed keeps it for later, so a
    /// topic never records as consumed what its channels could not store), reads ahead, and
    /// syncs when `--sync-every` is reached, a segment rolled, or `force_sync`.
    /// Returns whether records were read, and the sync's failure. Records read before a
    /// failed sync are still the broker's to deliver: a read-only or full disk that cannot
    /// take the meta file must not stall consumers of the backlog already on it. A failed
    /// sync is retried at every round until it succeeds, so the storage stays unhealthy
    /// (rather than healthy again at the next round that had no reason to sync) until then.
    pub async fn advance(
        &mut self,
        force_sync: bool,
        apply_consumed: bool,
    ) -> (bool, IoResult<()>) {
        if apply_consumed {
            self.apply_consumed().await;
        }
        let mut rolled = std::mem::take(&mut self.rolled);
        let read_any = self.refill(&mut rolled).await;
        let mut synced = Ok(());
        if rolled || (self.dirty && (force_sync || self.since_sync >= self.cfg.sync_every)) {
            synced = self.sync().await;
            self.rolled = synced.is_err();
        }
        self.release_over_budget().await;
        (read_any, synced)
    }

    async fn apply_consumed(&mut self) {
        self.since_sync += std::mem::take(&mut self.staged_taken);
        let Some(pos) = self.staged.take() else {
            return;
        };
        if pos == self.read {
            return;
        }
        self.dirty = true;
        // Segments before the consumed one are finished: go-diskqueue deletes them.
        for num in self.read.file_num..pos.file_num {
            let path = self.segment(num);
            if let Err(e) = glommio::io::remove(&path).await {
                tracing::error!(
                    "DISKQUEUE({}) failed to Remove({}) - {e}",
                    self.name(),
                    path.display()
                );
            }
            self.since_sync = self.cfg.sync_every;
        }
        self.read = pos;
    }

    /// Writes pending records; returns true if a segment was rolled. On a write error the
    /// records not yet written go back to the front of the pending buffer, to be retried by
    /// a later round (bytes past the write position are overwritten then).
    async fn flush_writes(&mut self) -> IoResult<bool> {
        let (pending, count) = self.backlog.take_pending();
        if count == 0 {
            return Ok(false);
        }
        self.dirty = true;
        let mut rolled = false;
        let (mut start, mut chunk_start) = (0, 0);
        let (mut done, mut in_chunk) = (0i64, 0i64);
        let mut pos = self.write.pos;
        while start + LEN_PREFIX <= pending.len() {
            let len = i32::from_be_bytes([
                pending[start],
                pending[start + 1],
                pending[start + 2],
                pending[start + 3],
            ]) as usize;
            if must_roll(pos, len, self.cfg.max_bytes_per_file) {
                if let Err(e) = self.write_chunk(&pending[chunk_start..start]).await {
                    self.backlog.unwrite(&pending[chunk_start..], count - done);
                    return Err(e);
                }
                done += in_chunk;
                in_chunk = 0;
                self.roll().await;
                rolled = true;
                chunk_start = start;
                pos = 0;
            }
            start += LEN_PREFIX + len;
            pos += (LEN_PREFIX + len) as i64;
            in_chunk += 1;
        }
        if let Err(e) = self.write_chunk(&pending[chunk_start..start]).await {
            self.backlog.unwrite(&pending[chunk_start..], count - done);
            return Err(e);
        }
        self.since_sync += count as u64;
        Ok(rolled)
    }

    /// Writes `bytes` at the write position and advances it.
    async fn write_chunk(&mut self, bytes: &[u8]) -> IoResult<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.write_file.is_none() {
            let path = self.segment(self.write.file_num);
            self.write_file = Some(SegmentFile::new(open_rw(&path).await?, &self.cfg.files));
        }
        let f = self.write_file.as_ref().expect("opened above").get();
        let mut written = 0;
        while written < bytes.len() {
            let at = (self.write.pos as usize + written) as u64;
            let n = f
                .write_at(bytes[written..].to_vec(), at)
                .await
                .map_err(|e| io_err("cannot write", &self.segment(self.write.file_num), e))?;
            if n == 0 {
                return Err(format!(
                    "short write to {}",
                    self.segment(self.write.file_num).display()
                ));
            }
            written += n;
        }
        self.write.pos += bytes.len() as i64;
        Ok(())
    }

    /// Closes the current segment (synced) and moves writing to the next one.
    async fn roll(&mut self) {
        if let Some(f) = self.write_file.take() {
            let _ = f.get().fdatasync().await;
            f.close().await;
        }
        self.write = Position {
            file_num: self.write.file_num + 1,
            pos: 0,
        };
    }

    /// Reads records until the read-ahead is full or the reader reaches the writer.
    async fn refill(&mut self, rolled: &mut bool) -> bool {
        let mut any = false;
        let mut need = READ_CHUNK;
        // Bounded: each pass reads records, grows the read to fit one record, moves to a
        // later file, or stops.
        for _ in 0..64 {
            if self.backlog.ready_len() >= READ_AHEAD || self.next_read >= self.write {
                break;
            }
            let num = self.next_read.file_num;
            // At most one chunk (or the one record that is larger): reading up to the write
            // position in one go made every refill copy the whole unread rest of the segment
            // (tens of MB) to take READ_AHEAD records from it, 137 µs per message consumed.
            let want = if num == self.write.file_num {
                ((self.write.pos - self.next_read.pos) as usize).clamp(LEN_PREFIX, need)
            } else {
                need
            };
            let data = match self.read_at(num, self.next_read.pos, want).await {
                Ok(d) => d,
                Err(ReadFailure::Bad(e)) => {
                    self.skip_bad(num, &e, rolled).await;
                    continue;
                }
                Err(ReadFailure::Transient(e)) => {
                    // Out of descriptors or memory says nothing about the segment: it stays,
                    // and a later round reads it (the queue stays listed while it lags).
                    if !self.read_blocked {
                        tracing::error!("DISKQUEUE({}) {e}; will retry", self.name());
                        self.read_blocked = true;
                    }
                    break;
                }
            };
            self.read_blocked = false;
            let eof = data.len() < want;
            let mut off = 0;
            let mut batch = Vec::new();
            let mut bad = None;
            let mut short = None;
            while batch.len() + self.backlog.ready_len() < READ_AHEAD {
                match next_record(&data.slice(off..), self.cfg.max_msg_size) {
                    Ok(Parsed::Record(mut msg, used)) => {
                        off += used;
                        // Own the body: a slice would pin the whole read chunk for as long as
                        // the message lives (in flight to a slow consumer, 256 KiB per message).
                        msg.body = Bytes::copy_from_slice(&msg.body);
                        let end = Position {
                            file_num: num,
                            pos: self.next_read.pos + off as i64,
                        };
                        batch.push((msg, end));
                    }
                    Ok(Parsed::Incomplete) => {
                        short = Some(data.len() - off);
                        break;
                    }
                    Err(e) => {
                        bad = Some(e.to_string());
                        break;
                    }
                }
            }
            self.next_read.pos += off as i64;
            if !batch.is_empty() {
                any = true;
                self.backlog.extend_ready(batch);
            }
            if let Some(e) = bad {
                self.skip_bad(num, &e, rolled).await;
            } else if off == 0 && short.is_some() {
                let left = short.unwrap_or(0);
                if left == 0 && eof && num < self.write.file_num {
                    // Finished this segment; the next one starts at 0.
                    self.next_read = Position {
                        file_num: num + 1,
                        pos: 0,
                    };
                    self.read_file = None;
                } else if eof {
                    // Go's io errors for a record cut short (its reader hits end of file).
                    let why = if left == 0 { "EOF" } else { "unexpected EOF" };
                    self.skip_bad(num, why, rolled).await;
                } else {
                    // One record larger than the chunk: read exactly enough next time.
                    let len = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                    need = LEN_PREFIX + len.max(0) as usize;
                }
            } else {
                need = READ_CHUNK;
            }
        }
        if self.next_read >= self.write
            && self.backlog.ready_len() == 0
            && self.backlog.pending_count() == 0
            && self.backlog.depth() != 0
        {
            let depth = self.backlog.depth();
            let (sign, what) = if depth < 0 {
                ("negative", "metadata corruption")
            } else {
                ("positive", "data loss")
            };
            tracing::error!(
                "DISKQUEUE({}) {sign} depth at tail ({depth}), {what}, resetting 0...",
                self.name()
            );
            self.backlog.set_depth(0);
            self.dirty = true;
        }
        self.release_read_file().await;
        any
    }

    /// Reads from segment `num`: through the write file when that is the one open (a reader
    /// that keeps up needs no second descriptor), else through the read file, opened here.
    async fn read_at(&mut self, num: i64, pos: i64, size: usize) -> Result<Bytes, ReadFailure> {
        let through_write_file = num == self.write.file_num && self.write_file.is_some();
        if !through_write_file && self.read_file.as_ref().map(|(n, _)| *n) != Some(num) {
            let path = self.segment(num);
            let f = BufferedFile::open(&path).await.map_err(|e| {
                let transient = out_of_resources(&e);
                let message = io_err("cannot open", &path, e);
                if transient {
                    ReadFailure::Transient(message)
                } else {
                    ReadFailure::Bad(message)
                }
            })?;
            self.read_file = Some((num, SegmentFile::new(f, &self.cfg.files)));
        }
        let f = match (&self.write_file, &self.read_file) {
            (Some(w), _) if through_write_file => w.get(),
            (_, Some((_, r))) => r.get(),
            _ => unreachable!("a file was chosen or opened above"),
        };
        let r = f
            .read_at(pos as u64, size)
            .await
            .map_err(|e| ReadFailure::Bad(io_err("cannot read", &self.segment(num), e)))?;
        Ok(Bytes::copy_from_slice(&r))
    }

    /// Closes the read file once the reader has caught up with the writer: a queue with
    /// nothing unread holds no descriptor for reading, so many idle queues cannot use up the
    /// open-file limit (nsqd keeps one open per queue).
    async fn release_read_file(&mut self) {
        if self.next_read >= self.write
            && let Some((_, f)) = self.read_file.take()
        {
            f.close().await;
        }
    }

    fn holds_files(&self) -> bool {
        self.read_file.is_some() || self.write_file.is_some()
    }

    /// Past the shard's [`SegmentFiles`] budget, gives this queue's files back: the read file
    /// at once, the write file once what it wrote is synced (so no fsync is lost or added).
    async fn release_over_budget(&mut self) {
        if !self.cfg.files.over_budget() {
            return;
        }
        if let Some((_, f)) = self.read_file.take() {
            f.close().await;
        }
        if !self.dirty
            && let Some(f) = self.write_file.take()
        {
            f.close().await;
        }
    }

    /// go-diskqueue's handleReadError: rename the segment `.bad` and go on with the next one.
    async fn skip_bad(&mut self, num: i64, why: &str, rolled: &mut bool) {
        let path = self.segment(num);
        let bad = bad_path(&path);
        // go-diskqueue's two lines, so log watches written for nsqd still match.
        tracing::error!(
            "DISKQUEUE({}) reading at {} of {} - {why}",
            self.name(),
            self.next_read.pos,
            path.display()
        );
        tracing::warn!(
            "DISKQUEUE({}) jump to next file and saving bad file as {}",
            self.name(),
            bad.display()
        );
        self.read_file = None;
        if num == self.write.file_num {
            if let Some(f) = self.write_file.take() {
                f.close().await;
            }
            self.write = Position {
                file_num: num + 1,
                pos: 0,
            };
            *rolled = true;
        }
        if let Err(e) = glommio::io::rename(&path, &bad).await {
            tracing::error!(
                "DISKQUEUE({}) failed to rename bad diskqueue file {} to {} - {e}",
                self.name(),
                path.display(),
                bad.display()
            );
        }
        self.next_read = Position {
            file_num: num + 1,
            pos: 0,
        };
        self.dirty = true;
    }

    /// Deletes the segments from the read file to the write file, and the meta file.
    async fn remove_files(&mut self) {
        self.write_file = None;
        self.read_file = None;
        for num in self.read.file_num.min(self.next_read.file_num)..=self.write.file_num {
            let _ = glommio::io::remove(self.segment(num)).await;
        }
        let _ = glommio::io::remove(meta_path(&self.cfg.dir, self.backlog.name())).await;
    }

    /// nsqd's diskqueue empty: files deleted, writing continues in the next file number,
    /// the meta file reappears at the next sync.
    pub async fn empty(&mut self) {
        self.remove_files().await;
        let next = Position {
            file_num: self.write.file_num + 1,
            pos: 0,
        };
        (self.read, self.next_read, self.write) = (next, next, next);
        (self.staged, self.staged_taken) = (None, 0);
        self.backlog.set_depth(self.backlog.pending_count());
        self.dirty = false;
        tracing::info!("DISKQUEUE({}): emptying", self.name());
    }

    /// The queue's topic or channel was deleted: remove every file.
    pub async fn delete_files(mut self) {
        self.remove_files().await;
        tracing::info!("DISKQUEUE({}): deleting", self.name());
    }

    /// fsync the current segment and rewrite the meta file.
    pub async fn sync(&mut self) -> IoResult<()> {
        if let Some(f) = &self.write_file {
            f.get()
                .fdatasync()
                .await
                .map_err(|e| io_err("cannot sync", &self.segment(self.write.file_num), e))?;
        }
        let meta = Meta {
            depth: (self.backlog.depth() - self.backlog.pending_count()).max(0),
            read: self.read,
            write: self.write,
        };
        let path = meta_path(&self.cfg.dir, self.backlog.name());
        write_atomically(&path, meta.encode().into_bytes()).await?;
        self.since_sync = 0;
        self.dirty = false;
        Ok(())
    }

    /// Final sync and close (shutdown) of this queue alone: every queue gets a meta file, as
    /// in nsqd.
    pub async fn close(mut self) -> IoResult<()> {
        self.stage();
        self.finish(true).await
    }

    /// Final write, sync and close, after [`QueueIo::stage`] and [`QueueIo::write`] of every
    /// queue of the shard (so what a topic handed to its channels is written before the
    /// topic's position moves); the staged position is kept out of the meta file unless
    /// `apply_consumed` (see [`QueueIo::advance`]).
    pub async fn finish(mut self, apply_consumed: bool) -> IoResult<()> {
        self.flush_writes().await?;
        if apply_consumed {
            self.apply_consumed().await;
        }
        self.sync().await?;
        if let Some(f) = self.write_file.take() {
            f.close().await;
        }
        if let Some((_, f)) = self.read_file.take() {
            f.close().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::Message;
    use crate::storage::backlog::Registry;
    use crate::storage::record::encode_record;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nsqd-dq-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn cfg(dir: &Path, max_bytes: i64) -> Rc<QueueConfig> {
        Rc::new(QueueConfig {
            dir: dir.to_path_buf(),
            max_bytes_per_file: max_bytes,
            max_msg_size: 1024,
            sync_every: 2500,
            durable: false,
            files: SegmentFiles::new(0),
        })
    }

    fn msg(i: u32) -> Message {
        let mut id = *b"0000000000000000";
        id[8..].copy_from_slice(format!("{i:08}").as_bytes());
        Message {
            id,
            timestamp: 1_700_000_000_000_000_000 + i as i64,
            attempts: (i % 3) as u16,
            body: bytes::Bytes::from(format!("body-{i:03}")),
        }
    }

    fn run<F: std::future::Future<Output = ()>>(f: F) {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(f);
    }

    fn drain(q: &crate::storage::backlog::DiskBacklog) -> Vec<Message> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn writes_roll_like_nsqd_and_deletes_consumed_segments() {
        let dir = temp_dir();
        let d = dir.clone();
        run(async move {
            let reg = Registry::default();
            let q = reg.open("t:c");
            let mut io = QueueIo::load(cfg(&d, 100), q.clone()).await;
            for i in 0..5 {
                q.push(&msg(i));
            }
            io.step(false).await.unwrap();
            // 38-byte records, 100-byte files: two per file, as nsqd v1.3.0 writes them.
            let size = |n| std::fs::metadata(segment_path(&d, "t:c", n)).unwrap().len();
            assert_eq!((size(0), size(1), size(2)), (76, 76, 38));
            assert_eq!(drain(&q), (0..5).map(msg).collect::<Vec<_>>());
            io.close().await.unwrap();
        });
        assert!(!segment_path(&dir, "t:c", 0).exists());
        assert!(!segment_path(&dir, "t:c", 1).exists());
        assert!(segment_path(&dir, "t:c", 2).exists(), "current file stays");
        let meta = std::fs::read_to_string(meta_path(&dir, "t:c")).unwrap();
        assert_eq!(meta, "0\n2,38\n2,38\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nsqd_written_fixture_loads_and_unread_survives_restart() {
        let dir = temp_dir();
        // Fixture in go-diskqueue's format, written from the format description.
        let mut seg0 = Vec::new();
        for i in 0..3 {
            encode_record(&msg(i), &mut seg0);
        }
        let mut seg1 = Vec::new();
        encode_record(&msg(3), &mut seg1);
        std::fs::write(segment_path(&dir, "t", 0), &seg0).unwrap();
        std::fs::write(segment_path(&dir, "t", 1), &seg1).unwrap();
        std::fs::write(
            meta_path(&dir, "t"),
            format!("3\n0,{}\n1,{}\n", seg0.len() / 3, seg1.len()),
        )
        .unwrap();
        let d = dir.clone();
        run(async move {
            let reg = Registry::default();
            let q = reg.open("t");
            let mut io = QueueIo::load(cfg(&d, 1 << 20), q.clone()).await;
            assert_eq!(q.depth(), 3);
            io.step(false).await.unwrap();
            assert_eq!(q.pop(), Some(msg(1)));
            io.close().await.unwrap();
            let reg = Registry::default();
            let q = reg.open("t");
            let mut io = QueueIo::load(cfg(&d, 1 << 20), q.clone()).await;
            assert_eq!(q.depth(), 2);
            io.step(false).await.unwrap();
            assert_eq!(drain(&q), vec![msg(2), msg(3)]);
            io.step(false).await.unwrap();
            io.close().await.unwrap();
        });
        assert!(
            !segment_path(&dir, "t", 0).exists(),
            "consumed file deleted"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_segment_is_renamed_bad_and_the_rest_served() {
        let dir = temp_dir();
        let mut seg0 = Vec::new();
        encode_record(&msg(0), &mut seg0);
        seg0.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]);
        let mut seg1 = Vec::new();
        encode_record(&msg(1), &mut seg1);
        std::fs::write(segment_path(&dir, "t", 0), &seg0).unwrap();
        std::fs::write(segment_path(&dir, "t", 1), &seg1).unwrap();
        std::fs::write(meta_path(&dir, "t"), format!("3\n0,0\n1,{}\n", seg1.len())).unwrap();
        let d = dir.clone();
        run(async move {
            let reg = Registry::default();
            let q = reg.open("t");
            let mut io = QueueIo::load(cfg(&d, 1 << 20), q.clone()).await;
            io.step(false).await.unwrap();
            assert_eq!(drain(&q), vec![msg(0), msg(1)]);
            io.step(false).await.unwrap();
            assert_eq!(q.depth(), 0, "depth reset once the reader meets the writer");
            io.close().await.unwrap();
        });
        assert!(bad_path(&segment_path(&dir, "t", 0)).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_deletes_files_and_writing_continues_in_the_next_file() {
        let dir = temp_dir();
        let d = dir.clone();
        run(async move {
            let reg = Registry::default();
            let q = reg.open("t");
            let mut io = QueueIo::load(cfg(&d, 1 << 20), q.clone()).await;
            q.push(&msg(0));
            q.push(&msg(1));
            io.step(true).await.unwrap();
            assert!(segment_path(&d, "t", 0).exists());
            q.empty();
            assert!(q.take_empty_request());
            io.empty().await;
            assert_eq!(q.depth(), 0);
            assert!(!segment_path(&d, "t", 0).exists());
            assert!(!meta_path(&d, "t").exists());
            q.push(&msg(2));
            io.step(true).await.unwrap();
            assert_eq!(drain(&q), vec![msg(2)]);
            assert!(segment_path(&d, "t", 1).exists());
            io.close().await.unwrap();
            let reg2 = Registry::default();
            let q2 = reg2.open("gone");
            let io2 = QueueIo::load(cfg(&d, 1 << 20), q2.clone()).await;
            q2.push(&msg(3));
            drop(q2);
            assert_eq!(reg2.take_retired().len(), 1, "the owner dropped its handle");
            io2.delete_files().await;
        });
        assert!(!meta_path(&dir, "gone").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `--durable-ack` acknowledges once a round's records are written and fsynced; the meta
    /// file follows only at the next sync. A crash in between (the queue is dropped without
    /// closing) must lose none of them: nsqd's rule (a write file larger than the meta says
    /// makes writing move on and the reader salvage the tail) applies, whatever the meta
    /// file's depth and positions say, and even with no meta file at all.
    #[test]
    fn records_fsynced_after_the_last_meta_sync_are_read_after_a_crash() {
        let dir = temp_dir();
        let d = dir.clone();
        run(async move {
            let durable = |max_bytes| {
                let mut c = (*cfg(&d, max_bytes)).clone();
                c.durable = true;
                Rc::new(c)
            };
            // "a": meta synced with depth 0 after everything was read, then 4 more records.
            // "b": no meta file ever written.
            // "c": meta synced mid-segment; the crash came after a roll, so the next segment
            //      holds records as well.
            let reg = Registry::default();
            let (a, b, c) = (reg.open("a"), reg.open("b"), reg.open("c"));
            let mut ia = QueueIo::load(durable(1 << 20), a.clone()).await;
            let mut ib = QueueIo::load(durable(1 << 20), b.clone()).await;
            let mut ic = QueueIo::load(durable(38 * 3), c.clone()).await;
            for i in 0..3 {
                a.push(&msg(i));
                c.push(&msg(i));
            }
            ia.step(false).await.unwrap();
            assert_eq!(drain(&a).len(), 3);
            ia.step(true).await.unwrap();
            ic.step(true).await.unwrap();
            assert_eq!(
                std::fs::read_to_string(meta_path(&d, "a")).unwrap(),
                "0\n0,114\n0,114\n"
            );
            assert_eq!(
                std::fs::read_to_string(meta_path(&d, "c")).unwrap(),
                "3\n0,0\n0,114\n"
            );
            for i in 3..7 {
                a.push(&msg(i));
                b.push(&msg(i));
                c.push(&msg(i));
            }
            for io in [&mut ia, &mut ib, &mut ic] {
                io.stage();
                io.write().await.unwrap();
            }
            // The crash: no sync, no close.
            drop((ia, ib, ic));
            assert!(!meta_path(&d, "b").exists());
            assert!(segment_path(&d, "c", 1).exists());

            let reg = Registry::default();
            for (name, want) in [("a", 3..7), ("b", 3..7), ("c", 0..7)] {
                let q = reg.open(name);
                let mut io = QueueIo::load(durable(38 * 3), q.clone()).await;
                assert_eq!(q.depth(), want.len() as i64, "{name}: depth counts them");
                let mut got = Vec::new();
                for _ in 0..4 {
                    io.step(false).await.unwrap();
                    got.extend(drain(&q));
                }
                assert_eq!(got, want.clone().map(msg).collect::<Vec<_>>(), "{name}");
                // New writes go past every segment holding data: nothing is overwritten.
                q.push(&msg(9));
                io.step(false).await.unwrap();
                assert_eq!(drain(&q), vec![msg(9)], "{name}");
                io.close().await.unwrap();
            }
        });
        let seg = |name, n| std::fs::metadata(segment_path(&dir, name, n)).ok();
        // "c" held segments 0 to 2 (the last with one record): all salvaged, consumed and
        // deleted; the new record went to segment 3.
        assert!((0..3).all(|n| seg("c", n).is_none()));
        assert_eq!(seg("c", 3).map(|m| m.len()), Some(38), "written past them");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_meta_starts_empty() {
        let dir = temp_dir();
        std::fs::write(meta_path(&dir, "t"), "garbage").unwrap();
        let d = dir.clone();
        run(async move {
            let reg = Registry::default();
            let q = reg.open("t");
            let io = QueueIo::load(cfg(&d, 1 << 20), q.clone()).await;
            assert_eq!(q.depth(), 0);
            io.close().await.unwrap();
        });
        assert!(bad_path(&meta_path(&dir, "t")).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
