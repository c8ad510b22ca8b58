//! Free space on the filesystem of a data directory, and the reserve writes must leave.
//!
//! A log that hits `ENOSPC` fails (see the crate docs: after a failed write nothing is
//! retried), and a Raft group whose log fails stops. A broker should not get there: it
//! refuses new data while less than a reserve is free, so that what is already stored
//! stays readable, Raft's own small writes (votes, membership, control entries) and the
//! metadata group still fit, and writes resume by themselves once space is freed
//! (retention, a deleted topic). [`DiskSpace::admit`] is that check; it reads the
//! filesystem's free space at most every [`REFRESH_MS`] (one `statvfs`, no disk I/O) and
//! counts bytes admitted since, so a burst between two reads cannot overshoot.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How old a free-space reading may be.
pub const REFRESH_MS: u64 = 100;

/// The refusal of [`DiskSpace::admit`]: not enough free space above the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("storage full: {free} bytes free, {wanted} wanted, reserve {reserve}")]
pub struct StorageFull {
    /// Bytes free to this process, as last read (minus admissions since).
    pub free: u64,
    /// Bytes the write needs.
    pub wanted: u64,
    /// Bytes that must stay free.
    pub reserve: u64,
}

/// Free space of the filesystem holding a directory, against a reserve.
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    reserve: u64,
    reading: Mutex<Reading>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Option<Instant>,
    free: u64,
}

impl DiskSpace {
    /// Watches the filesystem of `dir`; writes must leave `reserve` bytes free (0: no
    /// check).
    pub fn new(dir: impl AsRef<Path>, reserve: u64) -> DiskSpace {
        DiskSpace {
            dir: dir.as_ref().to_path_buf(),
            reserve,
            reading: Mutex::new(Reading { at: None, free: 0 }),
        }
    }

    /// The reserve, in bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Bytes free to this process on the filesystem, read now (`statvfs`).
    pub fn free_now(&self) -> std::io::Result<u64> {
        fs2::available_space(&self.dir)
    }

    /// Admits a write of `len` bytes if at least `reserve` bytes stay free after it. A
    /// filesystem that cannot be read admits (the write itself then reports any error).
    pub fn admit(&self, len: u64) -> Result<(), StorageFull> {
        if self.reserve == 0 {
            return Ok(());
        }
        let mut r = crate::log::lock(&self.reading);
        let stale =
            r.at.is_none_or(|at| at.elapsed() >= Duration::from_millis(REFRESH_MS));
        if stale {
            match self.free_now() {
                Ok(free) => {
                    *r = Reading {
                        at: Some(Instant::now()),
                        free,
                    }
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "statvfs failed");
                    return Ok(());
                }
            }
        }
        if r.free < self.reserve.saturating_add(len) {
            return Err(StorageFull {
                free: r.free,
                wanted: len,
                reserve: self.reserve,
            });
        }
        r.free -= len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_zero_admits() {
        let dir = tempfile::tempdir().unwrap();
        let off = DiskSpace::new(dir.path(), 0);
        assert_eq!(off.admit(u64::MAX / 2), Ok(()));
        let huge = DiskSpace::new(dir.path(), u64::MAX / 4);
        let err = huge.admit(10).unwrap_err();
        assert_eq!(err.wanted, 10);
        assert_eq!(err.reserve, u64::MAX / 4);
    }

    #[test]
    fn admissions_between_readings_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), 1);
        let free = space.free_now().unwrap();
        assert!(free > 2);
        // Within one reading, the second admission of most of the space fails.
        let half = free / 2 + 1;
        assert_eq!(space.admit(half), Ok(()));
        assert!(space.admit(half).is_err());
    }
}
