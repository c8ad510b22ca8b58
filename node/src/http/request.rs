//! Parsing of one HTTP/1.1 request: the request line, headers, the bounded
//! `Content-Length` body of a state-changing request and its CSRF guard. Pure functions
//! over bytes, so that every refusal is unit-tested; the socket side is in `super`.

use serde::de::DeserializeOwned;

/// Largest request body read (a POST's JSON).
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// The custom header every state-changing request must carry (with `Content-Type:
/// application/json`): a cross-site form or `<img>` cannot set it, and a cross-site
/// `fetch` that sets it needs a CORS preflight this server never grants.
pub const CSRF_HEADER: &str = "x-neo-console";

/// The methods the admin listener knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Reads.
    Get,
    /// Actions (JSON body).
    Post,
}

/// A request refused before routing: the status and a short reason (the client's
/// fault: every one is a 4xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRequest {
    pub status: u16,
    pub reason: String,
}

impl BadRequest {
    pub(crate) fn new(status: u16, reason: impl Into<String>) -> BadRequest {
        BadRequest {
            status,
            reason: reason.into(),
        }
    }
}

/// A parsed request head (the body is read afterwards, `body_len` bytes of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub method: Method,
    /// The path, still percent-encoded.
    pub path: String,
    /// What follows `?` (empty when none).
    pub query: String,
    /// The whole head as text (request line and headers), for header lookups.
    pub text: String,
    /// The body length to read (`Content-Length`; 0 for a GET).
    pub body_len: usize,
}

impl Head {
    /// The value of the first header called `name` (case-insensitive), trimmed.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header(&self.text, name)
    }
}

/// The value of the first header called `name` in `head` (the request line is skipped).
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// Parse a request head (the bytes before the blank line).
pub(crate) fn parse_head(bytes: &[u8]) -> Result<Head, BadRequest> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| BadRequest::new(400, "request head is not UTF-8"))?;
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::new(400, "bad request line"));
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(BadRequest::new(400, "bad request line"));
    }
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        _ => return Err(BadRequest::new(405, "GET or POST only")),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if header(text, "transfer-encoding").is_some() {
        return Err(BadRequest::new(
            411,
            "chunked bodies are not accepted: send Content-Length",
        ));
    }
    let body_len = match (method, header(text, "content-length")) {
        (Method::Get, None) => 0,
        (Method::Post, None) => return Err(BadRequest::new(411, "Content-Length required")),
        (_, Some(v)) => v
            .parse::<usize>()
            .map_err(|_| BadRequest::new(400, "Content-Length is not a number"))?,
    };
    if body_len > REQUEST_BODY_BYTES_MAX {
        return Err(BadRequest::new(
            413,
            format!("request body larger than {REQUEST_BODY_BYTES_MAX} bytes"),
        ));
    }
    Ok(Head {
        method,
        path: path.to_string(),
        query: query.to_string(),
        text: text.to_string(),
        body_len,
    })
}

/// The CSRF guard of a state-changing request: `Content-Type: application/json` and
/// the [`CSRF_HEADER`] set to `1` (neither can come from a cross-site HTML form).
pub(crate) fn check_csrf(head: &Head) -> Result<(), BadRequest> {
    let json = head
        .header("content-type")
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(BadRequest::new(
            415,
            "Content-Type must be application/json",
        ));
    }
    if head.header(CSRF_HEADER) != Some("1") {
        return Err(BadRequest::new(
            403,
            format!("state-changing requests need the header {CSRF_HEADER}: 1"),
        ));
    }
    Ok(())
}

/// A JSON body as `T` (400 naming what is wrong otherwise).
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|e| BadRequest::new(400, format!("bad JSON body: {e}")))
}

/// The value of query parameter `name` (percent-decoded), if present.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(&v.replace('+', " ")))
    })
}

/// A numeric query parameter: `default` when absent, 400 when not a number.
pub(crate) fn query_u64(query: &str, name: &str, default: u64) -> Result<u64, BadRequest> {
    match query_param(query, name) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| BadRequest::new(400, format!("{name} is not a number"))),
    }
}

/// `%XX` escapes of a path segment decoded (invalid escapes are kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(headers: &str) -> Vec<u8> {
        format!("POST /v1/topics HTTP/1.1\r\nHost: x\r\n{headers}").into_bytes()
    }

    #[test]
    fn decodes_escapes_and_keeps_bad_ones() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%é"), "%zz%é");
        assert_eq!(percent_decode("x%4"), "x%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn get_has_no_body_and_keeps_the_query() {
        let h = parse_head(b"GET /v1/topics/t/messages?partition=1&offset=5 HTTP/1.1\r\nHost: x")
            .unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/v1/topics/t/messages");
        assert_eq!(h.body_len, 0);
        assert_eq!(query_u64(&h.query, "offset", 0), Ok(5));
        assert_eq!(query_u64(&h.query, "limit", 20), Ok(20));
        assert_eq!(query_u64("limit=x", "limit", 20).unwrap_err().status, 400);
        assert_eq!(query_param("a=%3Cb%3E+c", "a").as_deref(), Some("<b> c"));
    }

    #[test]
    fn post_bodies_are_bounded() {
        let h = parse_head(&post("Content-Length: 12\r\n")).unwrap();
        assert_eq!((h.method, h.body_len), (Method::Post, 12));
        let max = format!("Content-Length: {REQUEST_BODY_BYTES_MAX}\r\n");
        assert!(parse_head(&post(&max)).is_ok());
        let over = format!("Content-Length: {}\r\n", REQUEST_BODY_BYTES_MAX + 1);
        assert_eq!(parse_head(&post(&over)).unwrap_err().status, 413);
        assert_eq!(parse_head(&post("")).unwrap_err().status, 411);
        assert_eq!(
            parse_head(&post("Content-Length: -1\r\n"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse_head(&post("Transfer-Encoding: chunked\r\n"))
                .unwrap_err()
                .status,
            411
        );
    }

    #[test]
    fn bad_request_lines_are_refused() {
        assert_eq!(parse_head(b"PUT / HTTP/1.1").unwrap_err().status, 405);
        assert_eq!(parse_head(b"GET /").unwrap_err().status, 400);
        assert_eq!(parse_head(b"GET x HTTP/1.1").unwrap_err().status, 400);
        assert_eq!(parse_head(b"\xff\xfe").unwrap_err().status, 400);
    }

    #[test]
    fn state_changes_need_json_and_the_console_header() {
        let ok = parse_head(&post(
            "Content-Length: 2\r\ncontent-type: application/json; charset=utf-8\r\nX-Neo-Console: 1\r\n",
        ))
        .unwrap();
        assert_eq!(check_csrf(&ok), Ok(()));
        // A cross-site form can send neither.
        let form = parse_head(&post(
            "Content-Length: 2\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Neo-Console: 1\r\n",
        ))
        .unwrap();
        assert_eq!(check_csrf(&form).unwrap_err().status, 415);
        let text = parse_head(&post("Content-Length: 2\r\nContent-Type: text/plain\r\n")).unwrap();
        assert_eq!(check_csrf(&text).unwrap_err().status, 415);
        let no_header = parse_head(&post(
            "Content-Length: 2\r\nContent-Type: application/json\r\n",
        ))
        .unwrap();
        assert_eq!(check_csrf(&no_header).unwrap_err().status, 403);
    }

    #[test]
    fn bad_json_is_a_typed_400() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Create {
            name: String,
            partitions: u32,
        }
        assert!(json_body::<Create>(br#"{"name":"t","partitions":3}"#).is_ok());
        let e = json_body::<Create>(b"{not json").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.reason.starts_with("bad JSON body"), "{}", e.reason);
        let e = json_body::<Create>(br#"{"name":"t","partitions":-1}"#).unwrap_err();
        assert_eq!(e.status, 400);
        let e = json_body::<Create>(br#"{"name":"t"}"#).unwrap_err();
        assert!(e.reason.contains("partitions"), "{}", e.reason);
    }
}
