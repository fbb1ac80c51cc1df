//! A single-waiter wake-up between tasks on one core: one task sleeps until a condition holds,
//! others change state and call [`Wakeup::wake`]. No lock, no allocation.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// One waiting task's waker slot.
#[derive(Default)]
pub struct Wakeup {
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Wakeup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wakeup")
    }
}

impl Wakeup {
    /// Wakes the waiting task, if any.
    pub fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits until `ready()` returns true; it is re-checked after every wake.
    pub async fn until(&self, mut ready: impl FnMut() -> bool) {
        poll_fn(|cx| {
            if ready() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}
