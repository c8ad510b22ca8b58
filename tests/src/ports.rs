//! Free loopback ports for processes that bind them later (and again on every
//! restart), shared by every test and harness that starts `neo-node` processes.
//!
//! A port is taken below the kernel's ephemeral range when there is room: a port picked
//! from that range (`bind` to port 0, read it, close) can be grabbed by any outgoing
//! connection (the nodes make many) before the node binds it, which failed a CI run
//! with "Address already in use". Distinct for every call in a process; processes
//! running side by side (one per test file) start at different points of the range.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out (below it: well-known and registered services).
const LOW: u32 = 20_000;

/// A loopback port nothing listens on right now, preferably below the ephemeral range.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = ephemeral_low();
    if ephemeral_low > LOW + 1_000 {
        let span = ephemeral_low - LOW;
        // Spread the processes over the span.
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let port = LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, port as u16))
                && let Ok(a) = l.local_addr()
            {
                return a.port();
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// The first port of the kernel's ephemeral range (0 if unknown), read once.
fn ephemeral_low() -> u32 {
    static LOW_EPHEMERAL: OnceLock<u32> = OnceLock::new();
    *LOW_EPHEMERAL.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(0)
    })
}

/// [`free_port`] on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ephemeral_low = Some(ephemeral_low() as u16).filter(|&l| l > 0);
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for p in &ports {
            if let Some(low) = ephemeral_low.filter(|&l| u32::from(l) > LOW + 1_000) {
                assert!(*p >= LOW as u16 && *p < low, "{p} outside [{LOW}, {low})");
            }
            TcpListener::bind((Ipv4Addr::LOCALHOST, *p)).expect("bindable");
        }
    }
}
