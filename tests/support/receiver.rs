//! An HTTP receiver on loopback that records every request exactly as it
//! arrived (method, path, headers, body) and answers as the test says: the
//! stand-in for PagerDuty, a Slack webhook, a flag admin API, or a flaky,
//! slow or oversized upstream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    /// A `Location` header (for redirects).
    pub location: Option<String>,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
            location: None,
        }
    }

    pub fn status(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            location: None,
        }
    }

    /// A redirect to `location` with `status` (301, 302, 307, 308).
    pub fn redirect(status: u16, location: impl Into<String>) -> Reply {
        Reply {
            location: Some(location.into()),
            ..Reply::status(status, "")
        }
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// Answers the n-th request (0-based) given what arrived.
pub type Responder = Arc<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    requests: Arc<Mutex<Vec<Received>>>,
    responder: Responder,
}

pub struct Receiver {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shared: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    pub async fn start(
        responder: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let shared = Shared {
            requests: Arc::new(Mutex::new(Vec::new())),
            responder: Arc::new(responder),
        };
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Receiver {
            url,
            shared,
            shutdown: Some(tx),
        }
    }

    /// A receiver that answers every request with `reply`.
    pub async fn always(reply: Reply) -> Receiver {
        Receiver::start(move |_, _| reply.clone()).await
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn record(
    axum::extract::State(shared): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let received = Received {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let n = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(received.clone());
        requests.len() - 1
    };
    let reply = (shared.responder)(&received, n);
    tokio::time::sleep(reply.delay).await;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    if let Some(location) = &reply.location {
        headers.insert("location", location.parse().unwrap());
    }
    (
        StatusCode::from_u16(reply.status).unwrap(),
        headers,
        reply.body,
    )
}
