//! A small HTTP/1.1 server on loopback for tests: one thread per connection, `connection:
//! close`. The http adapter's unit tests and the integration tests both use it (feature
//! `test-server`); it is not part of the crate's interface.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Without the feature, only the adapter's unit tests use it, and not all of it.
#![cfg_attr(not(feature = "test-server"), allow(dead_code))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answers.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send `body` this many times: a large answer without holding it.
    pub repeat: usize,
    /// Announce the length; without it the answer is streamed until the client hangs up.
    pub content_length: bool,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
            repeat: 1,
            content_length: true,
        }
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self::new(status, "application/json", body.to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = dyn Fn(&Received, usize) -> Reply + Send + Sync;

/// The server on a free loopback port; its requests in order, and how many body bytes it
/// managed to write. Dropping it stops accepting.
#[derive(Debug)]
pub struct Server {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Serves `handler(request, how many requests came before it)`.
    pub fn start(handler: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("a loopback port");
        let port = listener.local_addr().expect("the bound address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (log, count, halt) = (received.clone(), written.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("http-test-server-{port}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if halt.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (handler, log, count) = (handler.clone(), log.clone(), count.clone());
                    std::thread::spawn(move || serve(stream, &*handler, &log, &count));
                }
            })
            .expect("a server thread");
        Self {
            port,
            received,
            written,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Body bytes written so far, over all requests.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accepting thread so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Received>>, written: &AtomicU64) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Received {
        method,
        target,
        headers,
        body,
    };
    let nth = {
        let mut log = log.lock().unwrap();
        log.push(request.clone());
        log.len() - 1
    };
    let reply = handler(&request, nth);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} Test\r\nconnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.content_length {
        let length = reply.body.len() * reply.repeat;
        head.push_str(&format!("content-length: {length}\r\n"));
    }
    head.push_str("\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    for _ in 0..reply.repeat {
        if out.write_all(&reply.body).is_err() {
            return;
        }
        written.fetch_add(reply.body.len() as u64, Ordering::Relaxed);
    }
    let _ = out.flush();
}
