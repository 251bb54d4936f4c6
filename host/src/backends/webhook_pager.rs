//! Pager sinks that post to a service: PagerDuty Events API v2, a
//! Slack-compatible incoming webhook, and a generic JSON webhook.
//!
//! All three go through the shared HTTP transport. Every page and notice
//! carries a `dedup_key` = run id + call sequence. PagerDuty folds a
//! repeated trigger into the first, so it is idempotent by default; a
//! Slack or webhook sink is only when its config says its receiver drops
//! repeats (`idempotent = true`; a webhook then also sends the key as
//! `Idempotency-Key`). An idempotent sink's requests are retried, and a
//! page or notice in doubt after a crash is sent again with the same key;
//! any other is sent at most once. URLs, routing keys and headers are
//! secrets and never appear in an error.
//!
//! Every text in a page or notice came from a playbook or an alert: Slack
//! gets it through [`inert::slack`] (no mention or link markup survives),
//! PagerDuty and webhooks through [`inert::text`] (no control or bidi
//! character).

use reqwest::Method;
use serde_json::{Value as Json, json};

use super::http::{Request, Transport};
use super::{BackendError, Page, PagerSink};
use crate::inert;

/// Bytes a sink's answer may take.
const MAX_ANSWER: u64 = 64 << 10;

/// Posts `body`, retried if the receiver drops repeats (`idempotent`),
/// with `key` as its `Idempotency-Key` header if given.
async fn post(
    transport: &Transport,
    body: &Json,
    idempotent: bool,
    key: Option<&str>,
    what: &str,
) -> Result<Vec<u8>, BackendError> {
    let headers: Vec<(String, String)> = key
        .map(|key| ("idempotency-key".to_owned(), key.to_owned()))
        .into_iter()
        .collect();
    let request = Request {
        method: Method::POST,
        path: "",
        headers: &headers,
        body: Some(body.to_string().into_bytes()),
        json: true,
        idempotent,
        max_bytes: MAX_ANSWER,
        what,
    };
    let response = transport.send(&request).await?.value;
    if !response.status.is_success() {
        return Err(BackendError::Failed(format!(
            "{what} via `{}` answered HTTP {}: {}",
            transport.name(),
            response.status,
            String::from_utf8_lossy(&response.body)
                .chars()
                .take(200)
                .collect::<String>()
        )));
    }
    Ok(response.body)
}

/// PagerDuty Events API v2.
pub struct PagerDuty {
    transport: Transport,
    routing_key: String,
    source: String,
    idempotent: bool,
}

impl PagerDuty {
    pub fn new(
        transport: Transport,
        routing_key: String,
        source: &str,
        idempotent: bool,
    ) -> PagerDuty {
        PagerDuty {
            transport,
            routing_key,
            source: source.to_owned(),
            idempotent,
        }
    }

    /// The `trigger` event for a page.
    pub fn event(&self, page: &Page<'_>) -> Json {
        json!({
            "routing_key": self.routing_key,
            "event_action": "trigger",
            "dedup_key": page.dedup_key,
            "payload": {
                "summary": inert::text(page.summary),
                "source": self.source,
                "severity": page.severity,
                "custom_details": {
                    "target": page.target,
                    "details": inert::text(page.details),
                },
            },
        })
    }
}

#[async_trait::async_trait]
impl PagerSink for PagerDuty {
    /// A HEAD of the URL: nothing is delivered.
    async fn probe(&self) -> Result<String, BackendError> {
        first(self.transport.reach_head().await)
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }

    async fn page(&self, page: &Page<'_>) -> Result<String, BackendError> {
        // PagerDuty takes the key in the body.
        let event = self.event(page);
        let answer = post(&self.transport, &event, self.idempotent, None, "page").await?;
        // PagerDuty answers {"status": "success", "dedup_key": ...}.
        let key = serde_json::from_slice::<Json>(&answer)
            .ok()
            .and_then(|a| a.get("dedup_key")?.as_str().map(str::to_owned));
        Ok(key.unwrap_or_else(|| page.dedup_key.clone()))
    }

    async fn notify(&self, channel: &str, _: &str, _: &str) -> Result<(), BackendError> {
        Err(BackendError::Invalid(format!(
            "channel `{channel}` is a PagerDuty integration, which pages; post notices to a slack or webhook channel"
        )))
    }
}

/// The answer of a single-URL transport.
fn first(answers: Vec<Result<String, BackendError>>) -> Result<String, BackendError> {
    answers
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(BackendError::Failed("no URL".to_owned())))
}

/// A Slack-compatible incoming webhook (`{"text": ...}`).
pub struct Slack {
    transport: Transport,
    idempotent: bool,
}

impl Slack {
    pub fn new(transport: Transport, idempotent: bool) -> Slack {
        Slack {
            transport,
            idempotent,
        }
    }

    /// `{"text": text}`, with the dedup key beside it for a receiver that
    /// drops repeats.
    fn body(&self, text: String, dedup_key: &str) -> Json {
        let mut body = json!({ "text": text });
        if self.idempotent {
            body["dedup_key"] = json!(dedup_key);
        }
        body
    }
}

#[async_trait::async_trait]
impl PagerSink for Slack {
    /// A HEAD of the URL: nothing is delivered.
    async fn probe(&self) -> Result<String, BackendError> {
        first(self.transport.reach_head().await)
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }

    async fn page(&self, page: &Page<'_>) -> Result<String, BackendError> {
        let text = format!(
            "[{}] page for {}: {}\n{}\n(dedup key {})",
            page.severity.to_ascii_uppercase(),
            inert::slack(page.target),
            inert::slack(page.summary),
            inert::slack(page.details),
            page.dedup_key
        );
        let body = self.body(text, &page.dedup_key);
        post(&self.transport, &body, self.idempotent, None, "page").await?;
        Ok(page.dedup_key.clone())
    }

    async fn notify(&self, _: &str, message: &str, dedup_key: &str) -> Result<(), BackendError> {
        let body = self.body(inert::slack(message), dedup_key);
        post(&self.transport, &body, self.idempotent, None, "notice").await?;
        Ok(())
    }
}

/// Any JSON webhook: the page or notice as one object.
pub struct Webhook {
    transport: Transport,
    idempotent: bool,
}

impl Webhook {
    pub fn new(transport: Transport, idempotent: bool) -> Webhook {
        Webhook {
            transport,
            idempotent,
        }
    }

    async fn post(&self, body: &Json, dedup_key: &str, what: &str) -> Result<(), BackendError> {
        let key = self.idempotent.then_some(dedup_key);
        post(&self.transport, body, self.idempotent, key, what).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl PagerSink for Webhook {
    /// A HEAD of the URL: nothing is delivered.
    async fn probe(&self) -> Result<String, BackendError> {
        first(self.transport.reach_head().await)
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }

    async fn page(&self, page: &Page<'_>) -> Result<String, BackendError> {
        let mut body = serde_json::to_value(page)
            .map_err(|e| BackendError::Failed(format!("cannot encode the page: {e}")))?;
        body["kind"] = json!("page");
        for field in ["summary", "details"] {
            let shown = body.get(field).and_then(Json::as_str).map(inert::text);
            if let Some(shown) = shown.map(|t| t.into_owned()) {
                body[field] = json!(shown);
            }
        }
        self.post(&body, &page.dedup_key, "page").await?;
        Ok(page.dedup_key.clone())
    }

    async fn notify(
        &self,
        channel: &str,
        message: &str,
        dedup_key: &str,
    ) -> Result<(), BackendError> {
        let body = json!({ "kind": "notice", "channel": channel, "message": inert::text(message), "dedup_key": dedup_key });
        self.post(&body, dedup_key, "notice").await
    }
}
