//! glibc malloc settings for a broker's allocation pattern.
//!
//! A large MPUB being read and a consumer's backlog of large messages make megabyte-sized
//! buffers that live for a moment. glibc serves those from `mmap` and gives them back with
//! `munmap`, so every one of them is faulted in and zeroed by the kernel again; kept on the
//! heap they are reused warm. Measured (PERF.md): 15–25 % less CPU per message consuming
//! 1 KiB and 16 KiB messages, 6 % publishing 16 KiB ones, no change at 200 B. The price: freed
//! buffers stay with the process (in the heap, up to [`TRIM_THRESHOLD`] at its top): after the
//! fan-out soak's 10,000,000-delivery backlog RSS settles at ~820 MiB instead of ~640 MiB
//! (RELIABILITY.md). `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` set glibc's own.

/// Allocations below this come from the heap, not from their own `mmap` (glibc's maximum).
pub const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of a heap returned to the system only above this.
pub const TRIM_THRESHOLD: i32 = 128 << 20;

/// Applies the settings above, except where the operator set glibc's own environment variable
/// for one (that choice wins). Call before any other thread starts.
pub fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    for (param, env, value) in [
        (
            nix::libc::M_MMAP_THRESHOLD,
            "MALLOC_MMAP_THRESHOLD_",
            MMAP_THRESHOLD,
        ),
        (
            nix::libc::M_TRIM_THRESHOLD,
            "MALLOC_TRIM_THRESHOLD_",
            TRIM_THRESHOLD,
        ),
    ] {
        if std::env::var_os(env).is_some() {
            continue;
        }
        // SAFETY: mallopt only changes glibc's allocator parameters; it runs at start-up,
        // before any executor thread allocates.
        if unsafe { nix::libc::mallopt(param, value) } != 1 {
            tracing::warn!("malloc tuning: mallopt({env}) refused {value}");
        }
    }
}
