//! hyper's runtime traits over glommio: socket IO on the core's io_uring reactor and timers on
//! its timer wheel, so each HTTP connection is one task of the core that accepted it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use hyper::rt::{ReadBufCursor, Sleep, Timer};

/// A glommio socket (or a TLS stream over one) as hyper's `Read`/`Write`.
pub struct GlommioIo<S = TcpStream>(pub S);

impl<S: AsyncRead + Unpin> hyper::rt::Read for GlommioIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let dst = buf.initialize_unfilled();
        let n = match Pin::new(&mut self.0).poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => n.min(dst.len()),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        // SAFETY: `initialize_unfilled` initialized the whole unfilled region and the read wrote
        // its first `n` bytes (`n` is capped at the region's length).
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> hyper::rt::Write for GlommioIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// hyper's timer on the current core's glommio timers (header read timeouts).
#[derive(Debug, Clone, Copy, Default)]
pub struct GlommioTimer;

impl Timer for GlommioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(GlommioSleep::new(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }
}

/// A glommio timer that hyper may hold in its `Send + Sync` slot. The timer belongs to the
/// reactor of the thread that created it; it is only ever touched on that thread (checked on
/// every poll and on drop), so the type is safe to move and share.
struct GlommioSleep {
    timer: Option<glommio::timer::Timer>,
    owner: ThreadId,
}

// SAFETY: the inner glommio timer (which is !Send because it refers to its thread's reactor)
// is polled and dropped only when the current thread is `owner`, the thread that created it;
// on any other thread `poll` reports the sleep as elapsed and `drop` leaks the timer instead of
// touching another thread's reactor. hyper drives HTTP/1 connections on the task that owns
// them, which glommio never moves between threads, so in practice both checks always pass.
unsafe impl Send for GlommioSleep {}
// SAFETY: no method reads or writes the timer through a shared reference.
unsafe impl Sync for GlommioSleep {}

impl GlommioSleep {
    fn new(duration: Duration) -> Self {
        GlommioSleep {
            timer: Some(glommio::timer::Timer::new(duration)),
            owner: std::thread::current().id(),
        }
    }

    fn on_owner_thread(&self) -> bool {
        std::thread::current().id() == self.owner
    }
}

impl Future for GlommioSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.on_owner_thread() {
            return Poll::Ready(());
        }
        match self.timer.as_mut() {
            Some(timer) => Pin::new(timer).poll(cx).map(drop),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for GlommioSleep {
    fn drop(&mut self) {
        if !self.on_owner_thread() {
            std::mem::forget(self.timer.take());
        }
    }
}

impl Sleep for GlommioSleep {}
