//! Brokers whose connection just failed (refused, closed, silent, timed out): the
//! broker-agnostic calls (metadata refreshes, admin) ask them last for a while, so
//! that a frozen node (a paused process, a cut link) that the cache still names as the
//! controller does not hold every refresh for a heartbeat timeout while the others
//! can answer. Pure bookkeeping; [`crate::Client`] marks and orders.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// How long an address whose connection failed is asked last.
pub(crate) const SUSPECT_FOR: Duration = Duration::from_secs(10);

/// Addresses whose connection failed, with the time of the last failure.
#[derive(Debug, Default)]
pub(crate) struct Suspects {
    since: HashMap<String, Instant>,
}

impl Suspects {
    /// `address`'s connection failed at `now`.
    pub(crate) fn mark(&mut self, address: &str, now: Instant) {
        self.since.insert(address.to_string(), now);
    }

    /// `addresses` with the suspects (marked less than [`SUSPECT_FOR`] before `now`)
    /// moved to the end, each part in its original order. Forgets expired marks.
    pub(crate) fn order(&mut self, addresses: Vec<String>, now: Instant) -> Vec<String> {
        self.since
            .retain(|_, at| now.saturating_duration_since(*at) < SUSPECT_FOR);
        if self.since.is_empty() {
            return addresses;
        }
        let (suspect, fine): (Vec<String>, Vec<String>) = addresses
            .into_iter()
            .partition(|a| self.since.contains_key(a));
        fine.into_iter().chain(suspect).collect()
    }
}

/// Whether `err` says the connection to the broker failed (as opposed to the broker
/// answering with an error): refused, closed, silent past its heartbeats, timed out.
pub(crate) fn is_connection_failure(err: &Error) -> bool {
    matches!(
        err,
        Error::Transport(
            neo_protocol::Error::Connect { .. }
                | neo_protocol::Error::ConnectionClosed
                | neo_protocol::Error::PeerUnresponsive { .. }
                | neo_protocol::Error::Io(_)
                | neo_protocol::Error::Timeout { .. }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn suspects_go_last_until_their_mark_expires() {
        let t0 = Instant::now();
        let mut s = Suspects::default();
        let all = addrs(&["a:1", "b:1", "c:1"]);
        assert_eq!(s.order(all.clone(), t0), all);
        s.mark("a:1", t0);
        assert_eq!(s.order(all.clone(), t0), addrs(&["b:1", "c:1", "a:1"]));
        s.mark("b:1", t0 + Duration::from_secs(1));
        assert_eq!(
            s.order(all.clone(), t0 + Duration::from_secs(2)),
            addrs(&["c:1", "a:1", "b:1"])
        );
        // a's mark expired, b's not yet.
        assert_eq!(
            s.order(all.clone(), t0 + SUSPECT_FOR),
            addrs(&["a:1", "c:1", "b:1"])
        );
        assert_eq!(s.order(all.clone(), t0 + SUSPECT_FOR * 2), all);
        assert!(s.since.is_empty(), "expired marks are forgotten");
    }

    #[test]
    fn only_connection_failures_make_suspects() {
        assert!(is_connection_failure(&Error::from(
            neo_protocol::Error::PeerUnresponsive {
                silent_for: Duration::from_secs(2)
            }
        )));
        assert!(is_connection_failure(&Error::from(
            neo_protocol::Error::ConnectionClosed
        )));
        assert!(is_connection_failure(&Error::from(
            neo_protocol::Error::Timeout {
                after: Duration::from_secs(15)
            }
        )));
        // The broker answered: it is alive.
        assert!(!is_connection_failure(&Error::from(
            neo_protocol::Error::Rpc(neo_protocol::RpcError::not_leader(None))
        )));
        assert!(!is_connection_failure(&Error::LeaderNotAvailable {
            topic: "t".into(),
            partition: 0
        }));
    }
}
