//! Fault injection for tests: make a chosen segment write or `fdatasync` fail or slow
//! down. Compiled in only with the `failpoints` feature (tests enable it); without it
//! [`hit`] is an empty inline function and nothing can be configured.
//!
//! Rules come from the `NEO_FAILPOINTS` environment variable (read at the first hit) or
//! from [`configure`]: `;`-separated, each `point=action[,after=N][,times=M][,path=S]`:
//!
//! - `point`: `segment.write` (the `pwrite` of an append) or `segment.sync` (the
//!   `fdatasync` of a group-commit round);
//! - `action`: `eio` or `enospc` (the call returns that OS error and does nothing),
//!   `delay=MS` (the call sleeps that long first: a slow disk);
//! - `after=N`: let the first N matching hits pass; `times=M`: fire at most M times
//!   (default: every time); `path=S`: only files whose path contains `S` (for example
//!   `/groups/7/`).
//!
//! Example: `NEO_FAILPOINTS='segment.sync=eio,after=100,times=1,path=/groups/5/'`.

#[cfg(not(feature = "failpoints"))]
use std::io;
#[cfg(not(feature = "failpoints"))]
use std::path::Path;

/// A place in the storage code where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    /// The `pwrite` of a batch.
    SegmentWrite,
    /// The `fdatasync` of a group-commit round.
    SegmentSync,
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_point: Point, _path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(feature = "failpoints")]
pub use imp::{clear, configure, init};

#[cfg(feature = "failpoints")]
pub(crate) use imp::hit;

#[cfg(feature = "failpoints")]
mod imp {
    use super::Point;
    use std::io;
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Action {
        Errno(i32),
        Delay(Duration),
    }

    #[derive(Debug)]
    struct Rule {
        point: Point,
        action: Action,
        after: u64,
        times: Option<u64>,
        path: Option<String>,
        hits: AtomicU64,
        fired: AtomicU64,
    }

    const EIO: i32 = 5;
    const ENOSPC: i32 = 28;

    fn rules() -> &'static Mutex<Vec<Rule>> {
        static RULES: OnceLock<Mutex<Vec<Rule>>> = OnceLock::new();
        RULES.get_or_init(|| {
            let rules = match std::env::var("NEO_FAILPOINTS") {
                Ok(spec) => match parse(&spec) {
                    Ok(rules) => {
                        tracing::warn!(spec = %spec, "storage failpoints armed");
                        rules
                    }
                    Err(e) => {
                        tracing::error!(spec = %spec, "NEO_FAILPOINTS ignored: {e}");
                        Vec::new()
                    }
                },
                Err(_) => Vec::new(),
            };
            Mutex::new(rules)
        })
    }

    /// Reads `NEO_FAILPOINTS` now (a node calls it at start, so that its log says at
    /// once whether faults are armed) instead of at the first hit.
    pub fn init() {
        let _ = rules();
    }

    /// Replaces every rule with those of `spec` (see the module docs).
    pub fn configure(spec: &str) -> Result<(), String> {
        let parsed = parse(spec)?;
        *crate::log::lock(rules()) = parsed;
        Ok(())
    }

    /// Removes every rule.
    pub fn clear() {
        crate::log::lock(rules()).clear();
    }

    /// Called before the real operation: `Err` makes the caller fail as if the OS had
    /// answered it; a delay sleeps on the caller's thread (a storage thread).
    pub(crate) fn hit(point: Point, path: &Path) -> io::Result<()> {
        let mut delay = None;
        {
            let rules = crate::log::lock(rules());
            for r in rules.iter().filter(|r| r.point == point) {
                if r.path
                    .as_deref()
                    .is_some_and(|p| !path.to_string_lossy().contains(p))
                {
                    continue;
                }
                if r.hits.fetch_add(1, Ordering::Relaxed) < r.after {
                    continue;
                }
                if r.times
                    .is_some_and(|t| r.fired.load(Ordering::Relaxed) >= t)
                {
                    continue;
                }
                r.fired.fetch_add(1, Ordering::Relaxed);
                match r.action {
                    Action::Errno(errno) => {
                        tracing::warn!(?point, path = %path.display(), errno, "failpoint fired");
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                    Action::Delay(d) => delay = Some(d),
                }
            }
        }
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        Ok(())
    }

    fn parse(spec: &str) -> Result<Vec<Rule>, String> {
        let mut out = Vec::new();
        for rule in spec.split(';').map(str::trim).filter(|r| !r.is_empty()) {
            let mut parts = rule.split(',');
            let head = parts.next().unwrap_or_default();
            let (point, action) = head
                .split_once('=')
                .ok_or_else(|| format!("`{head}`: expected point=action"))?;
            let point = match point {
                "segment.write" => Point::SegmentWrite,
                "segment.sync" => Point::SegmentSync,
                other => return Err(format!("unknown failpoint `{other}`")),
            };
            let action = match action {
                "eio" => Action::Errno(EIO),
                "enospc" => Action::Errno(ENOSPC),
                a => match a.strip_prefix("delay=") {
                    Some(ms) => Action::Delay(Duration::from_millis(
                        ms.parse().map_err(|_| format!("bad delay `{ms}`"))?,
                    )),
                    None => return Err(format!("unknown action `{a}`")),
                },
            };
            let mut r = Rule {
                point,
                action,
                after: 0,
                times: None,
                path: None,
                hits: AtomicU64::new(0),
                fired: AtomicU64::new(0),
            };
            for p in parts {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| format!("`{p}`: expected key=value"))?;
                let num = || v.parse::<u64>().map_err(|_| format!("bad number `{v}`"));
                match k {
                    "after" => r.after = num()?,
                    "times" => r.times = Some(num()?),
                    "path" => r.path = Some(v.to_string()),
                    other => return Err(format!("unknown failpoint option `{other}`")),
                }
            }
            out.push(r);
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn specs_parse_or_say_why_not() {
            let r =
                parse("segment.sync=eio,after=3,times=1,path=/groups/5/; segment.write=delay=20")
                    .unwrap();
            assert_eq!(r.len(), 2);
            assert_eq!(r[0].point, Point::SegmentSync);
            assert_eq!(r[0].action, Action::Errno(EIO));
            assert_eq!((r[0].after, r[0].times), (3, Some(1)));
            assert_eq!(r[0].path.as_deref(), Some("/groups/5/"));
            assert_eq!(r[1].action, Action::Delay(Duration::from_millis(20)));
            assert!(parse("segment.sync").is_err());
            assert!(parse("disk.melt=eio").is_err());
            assert!(parse("segment.sync=eio,after=x").is_err());
            assert!(parse("segment.sync=boom").is_err());
        }
    }
}
