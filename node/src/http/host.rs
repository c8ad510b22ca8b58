//! The DNS-rebinding guard: the web console and the `/v1` API answer only requests
//! whose `Host` names this node the way an operator would reach it.
//!
//! A page on an attacker's domain can make that domain resolve to a node's address
//! (DNS rebinding); the browser then treats the node's answers as the attacker's own
//! origin, and the CSRF header (`request::check_csrf`) no longer helps. What such a
//! request cannot change is its `Host` header: the attacker's name. So a request is
//! answered when its `Host` is absent (not a browser), an IP address, `localhost` (or
//! a name under `.localhost`), the host of any cluster node's client or cluster
//! address (`neo1` in the compose cluster), or a name of `--http-allowed-hosts` (`*`:
//! any, for a node behind a proxy that checks names itself). Probes and `/metrics` are
//! not guarded (no browser reads them, and scrapers use whatever name their service
//! discovery found), nor are requests that do not come from a browser (no `Origin`,
//! no `Sec-Fetch-*` header, no `Mozilla/` user agent: curl, scripts, monitoring), since
//! only a browser can be rebound: every browser sends `Mozilla/` in its user agent and
//! current ones `Sec-Fetch-Site` on every request, headers a page cannot remove.

use std::net::IpAddr;

use super::request::{BadRequest, Head};

/// The host part of a `Host` header value, lowercase, without port or IPv6 brackets.
pub(crate) fn host_name(value: &str) -> String {
    let value = value.trim();
    let host = if let Some(rest) = value.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if value.matches(':').count() == 1 {
        value.split(':').next().unwrap_or(value)
    } else {
        // No port, or a bare IPv6 address (not valid in Host, but harmless).
        value
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The host of a `HOST:PORT` address, lowercase.
pub(crate) fn host_of(address: &str) -> String {
    host_name(address)
}

/// Whether a request comes from a web browser (see the module docs).
pub(crate) fn from_browser(head: &Head) -> bool {
    head.header("origin").is_some()
        || head.header("sec-fetch-site").is_some()
        || head.header("sec-fetch-mode").is_some()
        || head
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("Mozilla/"))
}

/// `Ok` when `head` may be answered (see the module docs); `known` says whether a host
/// name is one of the cluster's nodes.
pub(crate) fn check_host(
    head: &Head,
    allowed: &[String],
    known: impl Fn(&str) -> bool,
) -> Result<(), BadRequest> {
    if !from_browser(head) {
        return Ok(());
    }
    let Some(value) = head.header("host") else {
        return Ok(());
    };
    let host = host_name(value);
    let ok = host.parse::<IpAddr>().is_ok()
        || host == "localhost"
        || host.ends_with(".localhost")
        || allowed.iter().any(|a| a == "*" || *a == host)
        || known(&host);
    if ok {
        Ok(())
    } else {
        Err(BadRequest::new(
            403,
            format!(
                "this node does not answer to the host name {host:?}: use its address, or \
                 add the name to --http-allowed-hosts (NEO_HTTP_ALLOWED_HOSTS)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::parse_head;
    use super::*;

    /// A browser's GET (its user agent and `Sec-Fetch-Site`).
    fn get(host: Option<&str>) -> Head {
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        parse_head(
            format!(
                "GET /v1/topics HTTP/1.1\r\n{host}User-Agent: Mozilla/5.0 (X11; Linux)\r\n\
                 Sec-Fetch-Site: same-origin\r\nAccept: */*"
            )
            .as_bytes(),
        )
        .expect("valid head")
    }

    #[test]
    fn host_names_lose_ports_brackets_and_case() {
        assert_eq!(host_name("Neo1:7072"), "neo1");
        assert_eq!(host_name("127.0.0.1:7072"), "127.0.0.1");
        assert_eq!(host_name("[::1]:7072"), "::1");
        assert_eq!(host_name("example.COM."), "example.com");
        assert_eq!(host_of("neo2:7071"), "neo2");
    }

    #[test]
    fn addresses_localhost_cluster_names_and_allowed_names_pass() {
        let known = |h: &str| h == "neo1";
        for host in [
            None,
            Some("127.0.0.1:7072"),
            Some("10.1.2.3"),
            Some("[::1]:7072"),
            Some("localhost:7072"),
            Some("console.localhost"),
            Some("NEO1:7072"),
            Some("neo.example.com"),
        ] {
            check_host(&get(host), &["neo.example.com".into()], known)
                .unwrap_or_else(|e| panic!("{host:?} refused: {}", e.reason));
        }
    }

    #[test]
    fn a_rebound_attacker_name_is_refused_unless_any_is_allowed() {
        let known = |h: &str| h == "neo1";
        let head = get(Some("evil.example:7072"));
        let e = check_host(&head, &[], known).expect_err("attacker's name");
        assert_eq!(e.status, 403);
        assert!(e.reason.contains("--http-allowed-hosts"), "{}", e.reason);
        assert!(check_host(&get(Some("neo1.evil.example")), &[], known).is_err());
        check_host(&head, &["*".into()], known).expect("* allows any");
    }

    #[test]
    fn tools_that_are_not_browsers_are_not_guarded() {
        let known = |_: &str| false;
        for extra in [
            "",
            "User-Agent: curl/8.5.0\r\n",
            "User-Agent: Prometheus/2.42\r\n",
        ] {
            let head = parse_head(
                format!("GET /v1/cluster HTTP/1.1\r\nHost: some.name:7072\r\n{extra}Accept: */*")
                    .as_bytes(),
            )
            .expect("valid head");
            assert!(!from_browser(&head), "{extra:?}");
            check_host(&head, &[], known).expect("not a browser");
        }
        for browser in [
            "Origin: http://evil.example",
            "Sec-Fetch-Mode: cors",
            "User-Agent: Mozilla/5.0 (Macintosh)",
        ] {
            let head = parse_head(
                format!("GET /v1/cluster HTTP/1.1\r\nHost: evil.example\r\n{browser}").as_bytes(),
            )
            .expect("valid head");
            assert!(from_browser(&head), "{browser}");
            assert!(check_host(&head, &[], known).is_err(), "{browser}");
        }
    }
}
