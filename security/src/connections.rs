//! The `connections` quota: how many connections a principal (or a client address) has
//! open on this node, against its limit. Pure counting; the node opens a slot when a
//! handshake succeeds and closes it when the connection ends (a guard it attaches to
//! the connection).
//!
//! Every connection is counted, limited or not, so that a limit set while connections
//! are open applies to them at once (the next handshake over it is refused; open ones
//! are never cut). An entry is dropped when its count reaches zero, so the map never
//! holds more keys than the node has connections (bounded by the node's
//! `--connections-max`).
//!
//! A principal's limit is resolved like its rates ([`QuotaConfig::resolve`]): its own
//! override, else the most generous of its roles', else the default. A client
//! address's limit is the per-IP quota's `connections`; it counts every connection from
//! the address that reaches the handshake, whoever it authenticates as, and is checked
//! before the credential (so a flood of bad tokens from one address is bounded too).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use crate::error::SecurityError;
use crate::rate::QuotaConfig;

/// Open connections per principal and per client address.
#[derive(Debug, Clone, Default)]
pub struct ConnectionCounts {
    principals: HashMap<String, u64>,
    ips: HashMap<IpAddr, u64>,
}

fn open<K: Hash + Eq>(
    map: &mut HashMap<K, u64>,
    key: K,
    limit: Option<u64>,
    who: impl FnOnce() -> String,
) -> Result<(), SecurityError> {
    let count = map.entry(key).or_insert(0);
    if let Some(max) = limit
        && *count >= max
    {
        let who = who();
        if *count == 0 {
            // Never leave an empty entry behind (only a limit of 0 could get here,
            // and validation refuses it).
            map.retain(|_, n| *n > 0);
        }
        return Err(SecurityError::TooManyConnections { who, max });
    }
    *count += 1;
    Ok(())
}

fn close<K: Hash + Eq>(map: &mut HashMap<K, u64>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

impl ConnectionCounts {
    /// Counts a new connection of `principal` (holding `roles`, assigned and stated),
    /// or refuses it if the principal already has its limit open.
    pub fn open_principal(
        &mut self,
        config: &QuotaConfig,
        principal: &str,
        roles: &[String],
    ) -> Result<(), SecurityError> {
        let limit = config.resolve(principal, roles).connections;
        if let Some(count) = self.principals.get_mut(principal) {
            // The common path: no allocation for a known principal.
            if limit.is_some_and(|max| *count >= max) {
                return Err(SecurityError::TooManyConnections {
                    who: format!("principal {principal}"),
                    max: limit.unwrap_or_default(),
                });
            }
            *count += 1;
            return Ok(());
        }
        open(&mut self.principals, principal.to_string(), limit, || {
            format!("principal {principal}")
        })
    }

    /// A connection of `principal` ended.
    pub fn close_principal(&mut self, principal: &str) {
        if let Some(count) = self.principals.get_mut(principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.principals.remove(principal);
            }
        }
    }

    /// Counts a new connection from `ip`, or refuses it if the address already has its
    /// per-IP limit open.
    pub fn open_ip(&mut self, config: &QuotaConfig, ip: IpAddr) -> Result<(), SecurityError> {
        open(&mut self.ips, ip, config.per_ip.connections, || {
            format!("client address {ip}")
        })
    }

    /// A connection from `ip` ended.
    pub fn close_ip(&mut self, ip: IpAddr) {
        close(&mut self.ips, &ip);
    }

    /// Open connections of `principal`.
    pub fn of_principal(&self, principal: &str) -> u64 {
        self.principals.get(principal).copied().unwrap_or(0)
    }

    /// Open connections from `ip`.
    pub fn of_ip(&self, ip: IpAddr) -> u64 {
        self.ips.get(&ip).copied().unwrap_or(0)
    }

    /// Keys tracked (principals plus addresses).
    pub fn tracked(&self) -> usize {
        self.principals.len() + self.ips.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::Quota;

    fn limited(n: u64) -> Quota {
        Quota {
            connections: Some(n),
            ..Quota::default()
        }
    }

    #[test]
    fn a_principal_gets_its_limit_and_a_slot_back_when_one_closes() {
        let mut config = QuotaConfig::default();
        config.per_principal.insert("alice".into(), limited(2));
        let mut counts = ConnectionCounts::default();
        counts.open_principal(&config, "alice", &[]).unwrap();
        counts.open_principal(&config, "alice", &[]).unwrap();
        let err = counts.open_principal(&config, "alice", &[]).unwrap_err();
        assert_eq!(
            err,
            SecurityError::TooManyConnections {
                who: "principal alice".into(),
                max: 2
            }
        );
        let wire = err.to_rpc_error();
        assert_eq!(wire.error_code(), Some(neo_protocol::ErrorCode::Throttled));
        assert_eq!(wire.details, b"1000");
        assert_eq!(counts.of_principal("alice"), 2);
        counts.close_principal("alice");
        counts.open_principal(&config, "alice", &[]).unwrap();
        // Others are not limited (no default), but counted.
        for _ in 0..10 {
            counts.open_principal(&config, "bob", &[]).unwrap();
        }
        assert_eq!(counts.of_principal("bob"), 10);
        for _ in 0..10 {
            counts.close_principal("bob");
        }
        counts.close_principal("alice");
        counts.close_principal("alice");
        assert_eq!(counts.tracked(), 0, "entries go at zero");
        counts.close_principal("alice");
        assert_eq!(counts.of_principal("alice"), 0, "no underflow");
    }

    #[test]
    fn precedence_is_the_rates_one() {
        let mut config = QuotaConfig {
            principal_default: limited(1),
            ..QuotaConfig::default()
        };
        config.per_role.insert("batch".into(), limited(3));
        config.per_role.insert("small".into(), limited(2));
        config.per_principal.insert("carol".into(), limited(5));
        let roles = vec!["small".to_string(), "batch".to_string()];
        assert_eq!(config.resolve("dave", &[]).connections, Some(1));
        assert_eq!(config.resolve("dave", &roles).connections, Some(3));
        assert_eq!(config.resolve("carol", &roles).connections, Some(5));
        // An override that sets only a rate leaves connections to the roles.
        config.per_principal.insert(
            "erin".into(),
            Quota {
                requests_per_sec: Some(10),
                ..Quota::default()
            },
        );
        assert_eq!(config.resolve("erin", &roles).connections, Some(3));
        assert_eq!(config.resolve("erin", &[]).connections, Some(1));
        let mut counts = ConnectionCounts::default();
        counts.open_principal(&config, "dave", &[]).unwrap();
        assert!(counts.open_principal(&config, "dave", &[]).is_err());
        assert!(counts.open_principal(&config, "dave", &roles).is_ok());
        // 0 is refused by validation, not taken as "no connections".
        config.principal_default = limited(0);
        assert!(config.validate().is_err());
    }

    #[test]
    fn client_addresses_are_counted_apart() {
        let config = QuotaConfig {
            per_ip: limited(1),
            ..QuotaConfig::default()
        };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut counts = ConnectionCounts::default();
        counts.open_ip(&config, a).unwrap();
        let err = counts.open_ip(&config, a).unwrap_err();
        assert!(err.to_string().contains("client address 10.0.0.1"), "{err}");
        counts.open_ip(&config, b).unwrap();
        counts.close_ip(a);
        counts.open_ip(&config, a).unwrap();
        assert_eq!((counts.of_ip(a), counts.of_ip(b)), (1, 1));
        // The per-IP limit is not a principal's default.
        assert_eq!(config.resolve("alice", &[]).connections, None);
    }
}
