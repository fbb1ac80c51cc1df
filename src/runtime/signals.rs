//! SIGTERM/SIGINT handling: blocked in every thread and awaited by the main thread, which then
//! tells the shards to shut down.

use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

/// The signals that stop nsqd.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Blocks the stop signals in this thread; threads spawned afterwards inherit the mask, so
/// only [`wait_for_stop`] ever sees them.
pub fn block_stop_signals() -> nix::Result<()> {
    let mut set = stop_signals();
    // SIGXFSZ (a file-size limit reached) would kill the process; blocked, the write fails
    // with EFBIG instead and the disk queue reports it like a full disk.
    set.add(Signal::SIGXFSZ);
    set.thread_block()
}

/// Waits up to `timeout` for a stop signal; returns it if one arrived.
pub fn wait_for_stop(timeout: Duration) -> Option<Signal> {
    let set = stop_signals();
    let ts = nix::sys::time::TimeSpec::from_duration(timeout);
    let mut info = std::mem::MaybeUninit::<nix::libc::siginfo_t>::uninit();
    // SAFETY: `set` and `ts` are valid for the call; `info` is an out-parameter the kernel
    // fills on success and is not read otherwise.
    let rc = unsafe { nix::libc::sigtimedwait(set.as_ref(), info.as_mut_ptr(), ts.as_ref()) };
    if rc > 0 {
        Signal::try_from(rc).ok()
    } else {
        None
    }
}
