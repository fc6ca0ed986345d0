//! The opening handshake, server side (RFC 6455 section 4.2), and plain HTTP requests on the
//! same port.

use super::{HttpRequest, HttpResponse, MAX_HANDSHAKE_HEADERS, MAX_HANDSHAKE_LEN, WsOptions};
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};
use std::fmt::Write as _;

/// The GUID that the RFC appends to the client's key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the bytes received so far amount to.
pub(crate) enum Outcome {
    /// The request has not arrived whole yet.
    Incomplete,
    /// An upgrade, accepted: write the 101 response, then frames follow.
    Upgrade(Bytes),
    /// Anything else: write the response (with this status) and close.
    Answer(u16, Bytes),
}

/// Reads the request at the start of `buf` (consuming it once whole).
pub(crate) fn read(buf: &mut BytesMut, options: &WsOptions) -> Outcome {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HANDSHAKE_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(buf);
    let consumed = match parsed {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HANDSHAKE_LEN => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HANDSHAKE_LEN => {
            return Outcome::Incomplete;
        }
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return answer(431, "request header fields too large\n");
        }
        Err(_) => return answer(400, "bad request\n"),
    };
    let request = HttpRequest {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    };
    buf.advance(consumed);
    if !has_token(request.header("upgrade"), "websocket") {
        let resp = match &options.http {
            Some(serve) => serve(&request),
            None => HttpResponse::new(426, "text/plain; charset=utf-8", "upgrade required\n")
                .header("Upgrade", "websocket")
                .header("Sec-WebSocket-Version", "13"),
        };
        return Outcome::Answer(resp.status, render(&resp));
    }
    if request.method != "GET" || !has_token(request.header("connection"), "upgrade") {
        return answer(400, "bad upgrade request\n");
    }
    if request.header("sec-websocket-version").map(str::trim) != Some("13") {
        let resp = HttpResponse::new(426, "text/plain; charset=utf-8", "version 13 only\n")
            .header("Sec-WebSocket-Version", "13");
        return Outcome::Answer(426, render(&resp));
    }
    let Some(key) = request.header("sec-websocket-key").map(str::trim) else {
        return answer(400, "no Sec-WebSocket-Key\n");
    };
    let valid_key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16);
    if !valid_key {
        return answer(400, "bad Sec-WebSocket-Key\n");
    }
    if let Some(check) = &options.check
        && !check(&request)
    {
        return answer(403, "forbidden\n");
    }
    Outcome::Upgrade(Bytes::from(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )))
}

/// `Sec-WebSocket-Accept` for a client's key.
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Whether a comma-separated header value holds `token` (without regard to case).
fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A plain-text answer with `status`.
fn answer(status: u16, body: &'static str) -> Outcome {
    let resp = HttpResponse::new(status, "text/plain; charset=utf-8", body);
    Outcome::Answer(status, render(&resp))
}

/// The bytes of a response that closes the connection.
fn render(resp: &HttpResponse) -> Bytes {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (name, value) in &resp.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(
        head,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body.len()
    );
    let mut out = BytesMut::with_capacity(head.len() + resp.body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&resp.body);
    out.freeze()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(req: &str, options: &WsOptions) -> (String, usize) {
        let mut buf = BytesMut::from(req.as_bytes());
        let out = match read(&mut buf, options) {
            Outcome::Incomplete => "incomplete".to_owned(),
            Outcome::Upgrade(b) => format!("upgrade {}", String::from_utf8_lossy(&b)),
            Outcome::Answer(_, b) => format!("answer {}", String::from_utf8_lossy(&b)),
        };
        (out, buf.len())
    }

    const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn the_rfc_example_key_gets_the_rfc_example_answer() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let (out, left) = answer(&format!("{UPGRADE}\u{81}"), &WsOptions::new());
        assert!(
            out.starts_with("upgrade HTTP/1.1 101 Switching Protocols\r\n"),
            "{out}"
        );
        assert!(out.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert_eq!(left, 2, "the bytes after the request stay for the frames");
    }

    #[test]
    fn a_request_in_pieces_waits_and_an_endless_one_is_refused() {
        let (out, _) = answer(&UPGRADE[..40], &WsOptions::new());
        assert_eq!(out, "incomplete");
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HANDSHAKE_LEN));
        let (out, _) = answer(&endless, &WsOptions::new());
        assert!(out.starts_with("answer HTTP/1.1 431 "), "{out}");
    }

    #[test]
    fn the_origin_check_decides_before_the_answer() {
        let only = WsOptions::new().check_request(|r| r.origin() == Some("https://good.example"));
        let (out, _) = answer(UPGRADE, &only);
        assert!(out.starts_with("answer HTTP/1.1 403 Forbidden"), "{out}");
        let (out, _) = answer(
            &UPGRADE.replace("http://example.com", "https://good.example"),
            &only,
        );
        assert!(out.starts_with("upgrade "), "{out}");
    }

    #[test]
    fn bad_upgrades_are_refused_and_plain_requests_served() {
        for (what, req, status) in [
            ("no key", UPGRADE.replace("Sec-WebSocket-Key", "X-Key"), 400),
            (
                "short key",
                UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "YWJj"),
                400,
            ),
            (
                "version 8",
                UPGRADE.replace("Version: 13", "Version: 8"),
                426,
            ),
            ("POST", UPGRADE.replace("GET", "POST"), 400),
            ("garbage", "\u{1}\u{2} nonsense\r\n\r\n".to_owned(), 400),
            (
                "plain GET",
                "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
                426,
            ),
        ] {
            let (out, _) = answer(&req, &WsOptions::new());
            assert!(
                out.starts_with(&format!("answer HTTP/1.1 {status} ")),
                "{what}: {out}"
            );
        }
        let page = WsOptions::new().http(|r| match r.path() {
            "/" => HttpResponse::ok("text/html", "<p>hi</p>"),
            _ => HttpResponse::not_found(),
        });
        let (out, _) = answer("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &page);
        assert!(out.starts_with("answer HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("Content-Length: 9\r\nConnection: close\r\n\r\n<p>hi</p>"));
        let (out, _) = answer("GET /x HTTP/1.1\r\n\r\n", &page);
        assert!(out.starts_with("answer HTTP/1.1 404 "), "{out}");
    }
}
