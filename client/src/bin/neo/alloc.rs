//! The CLI's allocator settings: keep freed heap memory instead of handing it back to
//! the kernel after every write.
//!
//! Measured (docs/BENCHMARKS.md, "Security on vs off", the client's page faults):
//! `neo bench produce` over TLS, 300 000 x 1 KiB, took 135 000 minor page faults
//! against 3 500 without TLS, and its system time was 3-5x. rustls encrypts each
//! ≤ 16 KiB record into a buffer of its own; freeing them after each write lets glibc's
//! heap top cross its trim threshold, so it `madvise`s ~450 KiB back to the kernel on
//! every flush and the next write faults those pages in again. With the thresholds
//! below: 2 500 faults and the system time of a plaintext run.
//!
//! Process-wide settings belong to the program, not to a library, so the client
//! library leaves this to applications (docs/security.md says how).

/// Raises glibc's mmap and trim thresholds (freed memory up to these sizes stays in the
/// process for reuse). Call first thing in `main`, before any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    /// Allocations below this come from the heap (reused), not from `mmap` (a fresh
    /// mapping, faulted in page by page, on every allocation).
    const MMAP_THRESHOLD: libc::c_int = 16 << 20;
    /// Free memory at the heap top is returned to the kernel only above this.
    const TRIM_THRESHOLD: libc::c_int = 64 << 20;
    // SAFETY: mallopt only changes allocator parameters; it is called before the
    // runtime starts any thread, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Other platforms: their allocators keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
