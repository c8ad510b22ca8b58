//! The process-wide sync pool: the threads that run the group-commit rounds of every
//! segment log opened with [`FsyncPolicy::Always`](crate::FsyncPolicy::Always).
//!
//! Before it, each such log had a flusher thread of its own, so a node with 1 000
//! partition replicas ran 1 000 threads that mostly slept (docs/BENCHMARKS.md,
//! "Partitions per node: the footprint"). Now a log with something to sync queues
//! itself here once (its `queued` flag dedups), and one of at most
//! [`SYNC_THREADS_MAX`] threads runs that log's rounds: the same `sync_round` as before,
//! one `fdatasync` covering every batch the log appended since its previous round, the
//! same durable offset and notifications. A thread stays on a log while it has more to
//! sync (no hand-off between rounds, as with a thread per log) unless other logs wait,
//! then the log goes to the back of the queue. Idle logs cost no thread.
//!
//! Threads start on demand (a log is queued and no thread is idle) up to the bound and
//! then stay; the first log with `Always` starts one, and its open fails if even that
//! cannot be spawned (nothing would ever sync it). A round that blocks on a slow disk
//! holds one thread; the others go on with other logs. Up to the bound, as many logs
//! sync at once as before (each had its thread); beyond it, rounds queue.
//!
//! Lock order: a log's state lock, then the pool's (logs queue themselves while
//! appending). A pool thread holds no lock of the pool while it runs a round.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crate::error::{Error, Result};
use crate::log::Shared;

/// Most threads the pool runs: concurrent `fdatasync` rounds of different logs.
pub(crate) const SYNC_THREADS_MAX: usize = 32;

struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a log is queued and a thread is idle.
    ready: Condvar,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Arc<Shared>>,
    threads: usize,
    idle: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(PoolState::default()),
        ready: Condvar::new(),
    })
}

fn lock(pool: &Pool) -> MutexGuard<'_, PoolState> {
    pool.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes sure at least one pool thread runs (called when a log with `Always` opens).
pub(crate) fn ensure_started(dir: &std::path::Path) -> Result<()> {
    let pool = pool();
    let mut st = lock(pool);
    if st.threads == 0 {
        spawn(pool, &mut st).map_err(|e| Error::io("spawn sync thread", dir, e))?;
    }
    Ok(())
}

/// Queues `log` for a sync round. The caller has set the log's `queued` flag, so a log
/// is in the queue at most once.
pub(crate) fn schedule(log: Arc<Shared>) {
    let pool = pool();
    let mut st = lock(pool);
    st.queue.push_back(log);
    if st.idle > 0 {
        pool.ready.notify_one();
    } else if st.threads < SYNC_THREADS_MAX {
        // No thread is free: one more. If the OS refuses, the running threads (there is
        // at least one: `ensure_started`) get to it after their current round.
        if let Err(e) = spawn(pool, &mut st) {
            tracing::warn!(error = %e, threads = st.threads, "cannot start another sync thread");
        }
    }
}

fn spawn(pool: &'static Pool, st: &mut PoolState) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("neo-log-sync".into())
        .spawn(move || worker(pool))?;
    st.threads += 1;
    Ok(())
}

fn worker(pool: &'static Pool) {
    // A round that panics (a bug) ends this thread: count it out, so that `schedule`
    // starts another one for the logs still queued.
    struct Exit(&'static Pool);
    impl Drop for Exit {
        fn drop(&mut self) {
            lock(self.0).threads -= 1;
        }
    }
    let _exit = Exit(pool);
    let mut st = lock(pool);
    loop {
        let Some(log) = st.queue.pop_front() else {
            st.idle += 1;
            st = pool.ready.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
            continue;
        };
        drop(st);
        // Rounds of this log while it has more to sync (as its own flusher thread
        // did: no hand-off between rounds), unless other logs wait: then it takes
        // its turn again at the back, still flagged, so it is queued once.
        loop {
            let again = log.sync_step();
            st = lock(pool);
            if !again {
                break;
            }
            if !st.queue.is_empty() {
                st.queue.push_back(log);
                if st.idle > 0 {
                    pool.ready.notify_one();
                }
                break;
            }
            drop(st);
        }
    }
}
