//! Replies a connection awaits from another core (publishes and subscriptions answered by the
//! topic's owner). Generic over the reply type so each kind of request keeps its own table.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use rustc_hash::FxHashMap;

/// Outcome of a remote subscribe: `Err` carries nsqd's failure text.
pub type RemoteResult = Result<(), String>;

struct Slot<T> {
    result: RefCell<Option<T>>,
    waker: Cell<Option<Waker>>,
}

/// Pending replies of one kind on one shard, by token.
pub struct PendingReplies<T> {
    next_token: Cell<u64>,
    slots: RefCell<FxHashMap<u64, Rc<Slot<T>>>>,
}

impl<T> Default for PendingReplies<T> {
    fn default() -> Self {
        PendingReplies {
            next_token: Cell::new(0),
            slots: RefCell::new(FxHashMap::default()),
        }
    }
}

impl<T> PendingReplies<T> {
    /// Registers a wait; returns the token to send and a future for the reply.
    pub fn register(&self) -> (u64, impl std::future::Future<Output = T> + use<T>) {
        let token = self.next_token.get() + 1;
        self.next_token.set(token);
        let slot = Rc::new(Slot {
            result: RefCell::new(None),
            waker: Cell::new(None),
        });
        self.slots.borrow_mut().insert(token, slot.clone());
        let fut = poll_fn(move |cx| match slot.result.borrow_mut().take() {
            Some(r) => Poll::Ready(r),
            None => {
                slot.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        });
        (token, fut)
    }

    /// Delivers a reply to its waiter (a reply for a vanished waiter is dropped).
    pub fn complete(&self, token: u64, result: T) {
        if let Some(slot) = self.slots.borrow_mut().remove(&token) {
            *slot.result.borrow_mut() = Some(result);
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }

    /// Answers every waiter with `make()` (shutdown: the other core is gone).
    pub fn fail_all(&self, make: impl Fn() -> T) {
        let slots: Vec<_> = self.slots.borrow_mut().drain().collect();
        for (_, slot) in slots {
            *slot.result.borrow_mut() = Some(make());
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }
}
