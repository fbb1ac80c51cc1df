//! Per-peer outboxes: cross-core messages accumulate here and leave in batches.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use glommio::channels::channel_mesh::Senders;

use crate::mesh::{MeshBatch, MeshMsg};
use crate::wakeup::Wakeup;

/// Mesh traffic figures of one shard (exported in stats).
#[derive(Debug, Default)]
pub struct MeshCounters {
    /// Messages sent to other cores.
    pub messages_out: Cell<u64>,
    /// Mesh items (batches) sent.
    pub batches_out: Cell<u64>,
    /// Messages received from other cores.
    pub messages_in: Cell<u64>,
    /// Batches sent, by size class: entry `i` counts batches of at most `BATCH_SIZE_BOUNDS[i]`
    /// messages (the last one: any size).
    pub batch_sizes: [Cell<u64>; BATCH_SIZE_BOUNDS.len() + 1],
}

/// Upper bounds of the batch-size classes in [`MeshCounters::batch_sizes`] (`/metrics`).
pub const BATCH_SIZE_BOUNDS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

impl MeshCounters {
    fn count_batch(&self, n: u64) {
        self.messages_out.set(self.messages_out.get() + n);
        self.batches_out.set(self.batches_out.get() + 1);
        let class = BATCH_SIZE_BOUNDS
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(BATCH_SIZE_BOUNDS.len());
        let c = &self.batch_sizes[class];
        c.set(c.get() + 1);
    }

    /// Sent batches by size as cumulative `(upper bound, count)` pairs; `u64::MAX` is `+Inf`.
    pub fn batch_size_histogram(&self) -> Vec<(u64, u64)> {
        let bounds = BATCH_SIZE_BOUNDS.iter().copied().chain([u64::MAX]);
        let mut total = 0;
        bounds
            .zip(&self.batch_sizes)
            .map(|(bound, c)| {
                total += c.get();
                (bound, total)
            })
            .collect()
    }
}

/// One outbox per peer shard.
pub struct Outboxes {
    boxes: Vec<RefCell<MeshBatch>>,
    wakeups: Vec<Wakeup>,
    closed: Cell<bool>,
    /// Traffic figures.
    pub counters: MeshCounters,
}

impl Outboxes {
    /// Outboxes for `nr_shards` peers (the own index stays unused).
    pub fn new(nr_shards: usize) -> Self {
        Outboxes {
            boxes: (0..nr_shards).map(|_| RefCell::new(Vec::new())).collect(),
            wakeups: (0..nr_shards).map(|_| Wakeup::default()).collect(),
            closed: Cell::new(false),
            counters: MeshCounters::default(),
        }
    }

    /// Queues a message for `peer`; its flusher sends it with whatever else accumulates.
    pub fn push(&self, peer: usize, msg: MeshMsg) {
        let mut b = self.boxes[peer].borrow_mut();
        b.push(msg);
        if b.len() == 1 {
            self.wakeups[peer].wake();
        }
    }

    /// Messages waiting in all outboxes (not yet handed to the mesh).
    pub fn queued(&self) -> usize {
        self.boxes.iter().map(|b| b.borrow().len()).sum()
    }

    /// Stops the flushers.
    pub fn close(&self) {
        self.closed.set(true);
        for w in &self.wakeups {
            w.wake();
        }
    }

    /// The flusher of one peer: sends the accumulated outbox as one mesh item, repeatedly.
    pub async fn flush_loop(self: Rc<Self>, senders: Rc<Senders<MeshBatch>>, peer: usize) {
        let mut spare: MeshBatch = Vec::new();
        loop {
            self.wakeups[peer]
                .until(|| self.closed.get() || !self.boxes[peer].borrow().is_empty())
                .await;
            if self.closed.get() {
                return;
            }
            std::mem::swap(&mut *self.boxes[peer].borrow_mut(), &mut spare);
            let batch = std::mem::take(&mut spare);
            self.counters.count_batch(batch.len() as u64);
            if senders.send_to(peer, batch).await.is_err() {
                return;
            }
        }
    }
}
