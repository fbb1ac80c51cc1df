//! Replies a connection awaits from another core (PUB/SUB answered by the topic's owner).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use rustc_hash::FxHashMap;

/// Outcome of a remote publish or subscribe: `Err` carries nsqd's failure text.
pub type RemoteResult = Result<(), String>;

#[derive(Default)]
struct Slot {
    result: RefCell<Option<RemoteResult>>,
    waker: Cell<Option<Waker>>,
}

/// Pending replies of one shard, by token.
#[derive(Default)]
pub struct PendingReplies {
    next_token: Cell<u64>,
    slots: RefCell<FxHashMap<u64, Rc<Slot>>>,
}

impl PendingReplies {
    /// Registers a wait; returns the token to send and a future for the reply.
    pub fn register(&self) -> (u64, impl std::future::Future<Output = RemoteResult>) {
        let token = self.next_token.get() + 1;
        self.next_token.set(token);
        let slot = Rc::new(Slot::default());
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
    pub fn complete(&self, token: u64, result: RemoteResult) {
        if let Some(slot) = self.slots.borrow_mut().remove(&token) {
            *slot.result.borrow_mut() = Some(result);
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }

    /// Fails every waiter (shutdown: the other core is gone).
    pub fn fail_all(&self, why: &str) {
        let slots: Vec<_> = self.slots.borrow_mut().drain().collect();
        for (_, slot) in slots {
            *slot.result.borrow_mut() = Some(Err(why.to_string()));
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }
}
