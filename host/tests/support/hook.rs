//! A webhook receiver on loopback that records what reaches it: the
//! pager the crash and replica tests count writes on.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A webhook that records requests and answers the first after `delay`
/// (or, [`Hook::slow`], every one).
pub struct Hook {
    pub url: String,
    received: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    /// The `Idempotency-Key` header of each request that had one.
    keys: Arc<Mutex<Vec<String>>>,
    /// Each request's body as it came.
    raw: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Hook {
    pub fn start(delay_first: Duration) -> Hook {
        Hook::answering(delay_first, Duration::ZERO)
    }

    /// A webhook that answers each request after `delay`: a write is in
    /// flight that long.
    pub fn slow(delay: Duration) -> Hook {
        Hook::answering(delay, delay)
    }

    fn answering(delay_first: Duration, delay_each: Duration) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let keys = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let counter = received.clone();
        let recorded_raw = raw.clone();
        let recorded = bodies.clone();
        let recorded_keys = keys.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let counter = counter.clone();
                let recorded = recorded.clone();
                let recorded_keys = recorded_keys.clone();
                let recorded_raw = recorded_raw.clone();
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Headers, then the body by content-length.
                    loop {
                        let Ok(n) = stream.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let header = |name: &str| {
                                text[..end].lines().find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                                })
                            };
                            let length = header("content-length")
                                .and_then(|v| v.parse::<usize>().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                if let Some(key) = header("idempotency-key") {
                                    recorded_keys.lock().unwrap().push(key);
                                }
                                let bytes = &request[end + 4..end + 4 + length];
                                recorded_raw.lock().unwrap().push(bytes.to_vec());
                                let body = serde_json::from_slice(bytes)
                                    .unwrap_or(serde_json::Value::Null);
                                recorded.lock().unwrap().push(body);
                                break;
                            }
                        }
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(if n == 0 { delay_first } else { delay_each });
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                    );
                });
            }
        });
        Hook {
            url,
            received,
            bodies,
            keys,
            raw,
        }
    }

    /// The bodies received, as bytes, in order.
    pub fn raw_bodies(&self) -> Vec<Vec<u8>> {
        self.raw.lock().unwrap().clone()
    }

    /// The `Idempotency-Key` headers received, in order.
    pub fn idempotency_keys(&self) -> Vec<String> {
        self.keys.lock().unwrap().clone()
    }

    /// The distinct `dedup_key`s received.
    pub fn dedup_keys(&self) -> std::collections::BTreeSet<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| b["dedup_key"].as_str().map(str::to_owned))
            .collect()
    }

    /// The JSON bodies received, in order.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    pub fn wait_for(&self, n: usize) {
        let started = Instant::now();
        while self.count() < n {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the webhook never saw request {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
