//! A minimal HTTP/1.x server for one resource, `/metrics`: `GET` and `HEAD` only, one
//! connection at a time, `Connection: close` after every answer, reads and writes bounded
//! by [`IO_TIMEOUT`] and requests by [`MAX_REQUEST_BYTES`]. Anything else gets the fitting
//! error status (400, 404, 405, 431), never a panic.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::Exposition;

/// How long a connection may take to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest request head (request line and headers) read.
pub const MAX_REQUEST_BYTES: usize = 8 << 10;

/// The path metrics are served at.
const METRICS_PATH: &str = "/metrics";

/// A bound scrape endpoint, not yet serving.
#[derive(Debug)]
pub struct ScrapeServer {
    listener: TcpListener,
    addr: SocketAddr,
}

/// The request methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    /// Answered like `GET`, without the body.
    Head,
}

/// A parsed request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The path, without a query string.
    pub path: &'a str,
    /// The `Accept` header's value, if any.
    pub accept: Option<&'a str>,
}

/// Why a request is refused: an HTTP status and its reason phrase.
type Refusal = (u16, &'static str);

impl ScrapeServer {
    /// Binds `addr` (port 0: any free port; see [`ScrapeServer::local_addr`]).
    pub fn bind(addr: SocketAddr) -> io::Result<ScrapeServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(ScrapeServer { listener, addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves on a new thread named `thread` until the process exits. `render` is called
    /// once per scrape of `/metrics` with the exposition asked for; `None` (the metrics
    /// could not be gathered in time) is answered 503.
    pub fn spawn(
        self,
        thread: &str,
        render: impl FnMut(Exposition) -> Option<String> + Send + 'static,
    ) -> io::Result<()> {
        std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || self.serve(render))
            .map(drop)
    }

    /// Serves forever on the calling thread (see [`ScrapeServer::spawn`]).
    pub fn serve(self, mut render: impl FnMut(Exposition) -> Option<String>) {
        for stream in self.listener.incoming() {
            match stream {
                // A client that goes away mid-answer costs nothing but its connection.
                Ok(stream) => {
                    let _ = answer(stream, &mut render);
                }
                // Out of descriptors, say: do not spin.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// Reads one request from `stream` and answers it.
fn answer(
    mut stream: TcpStream,
    render: &mut impl FnMut(Exposition) -> Option<String>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = [0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    let head = loop {
        if let Some(end) = head_end(&buf[..len]) {
            break &buf[..end];
        }
        if len == buf.len() {
            return respond(&mut stream, (431, "Request Header Fields Too Large"), false);
        }
        match stream.read(&mut buf[len..])? {
            // The client closed before finishing its request: nobody to answer.
            0 => return Ok(()),
            n => len += n,
        }
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return respond(&mut stream, (400, "Bad Request"), false);
    };
    let request = match parse_request(head) {
        Ok(request) => request,
        Err(refusal) => return respond(&mut stream, refusal, false),
    };
    let head_only = request.method == Method::Head;
    if request.path != METRICS_PATH {
        return respond(&mut stream, (404, "Not Found"), head_only);
    }
    let exposition = Exposition::from_accept(request.accept);
    match render(exposition) {
        Some(body) => write_response(
            &mut stream,
            (200, "OK"),
            exposition.content_type(),
            body.as_bytes(),
            head_only,
        ),
        None => respond(&mut stream, (503, "Service Unavailable"), head_only),
    }
}

/// Where the request head ends (after its blank line), if it has.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a request head: `METHOD TARGET HTTP/1.x`, then headers. Only `GET` and `HEAD`
/// are served (405 otherwise); anything that is not such a request is 400.
pub fn parse_request(head: &str) -> Result<Request<'_>, Refusal> {
    const BAD: Refusal = (400, "Bad Request");
    let mut lines = head.lines();
    let mut words = lines.next().ok_or(BAD)?.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(BAD);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(BAD);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            return Err((405, "Method Not Allowed"))
        }
        _ => return Err(BAD),
    };
    let mut accept = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(BAD)?;
        if name.eq_ignore_ascii_case("accept") {
            accept = Some(value.trim());
        }
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Request {
        method,
        path,
        accept,
    })
}

/// Answers `status` with a one-line plain-text body.
fn respond(stream: &mut TcpStream, status: Refusal, head_only: bool) -> io::Result<()> {
    let body = match status.0 {
        404 => format!("{} {}: metrics are at {METRICS_PATH}\n", status.0, status.1),
        _ => format!("{} {}\n", status.0, status.1),
    };
    write_response(
        stream,
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        head_only,
    )
}

fn write_response(
    stream: &mut TcpStream,
    (code, reason): Refusal,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;
    use std::net::{Ipv4Addr, Shutdown};

    #[test]
    fn requests_parse_and_bad_ones_are_refused() {
        let r = parse_request("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n")
            .unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.accept, Some("text/plain"));
        let r = parse_request("HEAD / HTTP/1.0\n\n").unwrap();
        assert_eq!((r.method, r.path, r.accept), (Method::Head, "/", None));
        assert_eq!(
            parse_request("POST /metrics HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .0,
            405
        );
        for bad in [
            "",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /metrics SPDY/3\r\n\r\n",
            "GET /metrics HTTP/1.1 extra\r\n\r\n",
            "get /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad).unwrap_err().0, 400, "{bad:?}");
        }
    }

    /// Sends `request` to `addr`, returns the whole answer.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request).unwrap();
        let _ = stream.shutdown(Shutdown::Write);
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn scrapes_are_answered_over_tcp() {
        let server = ScrapeServer::bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let addr = server.local_addr();
        let mut calls = 0;
        server
            .spawn("test-scrape", move |exposition| {
                calls += 1;
                (calls != 3).then(|| format!("scrape {calls} as {exposition:?}\n"))
            })
            .unwrap();
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 23\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nscrape 1 as Prometheus\n"), "{ok}");
        let open = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n",
        );
        assert!(open.ends_with("scrape 2 as OpenMetrics\n"), "{open}");
        let unavailable = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(unavailable.starts_with("HTTP/1.1 503 "), "{unavailable}");
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body for HEAD: {head}");
        let missing = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD"));
        let huge = exchange(addr, &[b'a'; MAX_REQUEST_BYTES]);
        assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
        let garbage = exchange(addr, b"\xff\xfe\r\n\r\n");
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
        // A client that says nothing and goes away leaves the server serving.
        drop(TcpStream::connect(addr).unwrap());
        let again = exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
        // (HEAD rendered too, for its Content-Length.)
        assert!(again.ends_with("scrape 5 as Prometheus\n"), "{again}");
    }

    #[test]
    fn an_address_in_use_is_an_error() {
        let first = ScrapeServer::bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let err = ScrapeServer::bind(first.local_addr()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
