//! Pager sinks that post to a service: PagerDuty Events API v2, a
//! Slack-compatible incoming webhook, and a generic JSON webhook.
//!
//! All three go through the shared HTTP transport. A PagerDuty trigger
//! carries `dedup_key` = run id + call sequence, so PagerDuty folds a
//! retried page into the first: it is the only sink that retries. URLs,
//! routing keys and headers are secrets and never appear in an error.
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

async fn post(
    transport: &Transport,
    body: &Json,
    idempotent: bool,
    what: &str,
) -> Result<Vec<u8>, BackendError> {
    let request = Request {
        method: Method::POST,
        path: "",
        headers: &[],
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
}

impl PagerDuty {
    pub fn new(transport: Transport, routing_key: String, source: &str) -> PagerDuty {
        PagerDuty {
            transport,
            routing_key,
            source: source.to_owned(),
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
    fn idempotent(&self) -> bool {
        true
    }

    async fn page(&self, page: &Page<'_>) -> Result<String, BackendError> {
        let answer = post(&self.transport, &self.event(page), true, "page").await?;
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

/// A Slack-compatible incoming webhook (`{"text": ...}`).
pub struct Slack {
    transport: Transport,
}

impl Slack {
    pub fn new(transport: Transport) -> Slack {
        Slack { transport }
    }
}

#[async_trait::async_trait]
impl PagerSink for Slack {
    async fn page(&self, page: &Page<'_>) -> Result<String, BackendError> {
        let text = format!(
            "[{}] page for {}: {}\n{}\n(dedup key {})",
            page.severity.to_ascii_uppercase(),
            inert::slack(page.target),
            inert::slack(page.summary),
            inert::slack(page.details),
            page.dedup_key
        );
        post(&self.transport, &json!({ "text": text }), false, "page").await?;
        Ok(page.dedup_key.clone())
    }

    async fn notify(&self, _: &str, message: &str, _: &str) -> Result<(), BackendError> {
        post(
            &self.transport,
            &json!({ "text": inert::slack(message) }),
            false,
            "notice",
        )
        .await?;
        Ok(())
    }
}

/// Any JSON webhook: the page or notice as one object.
pub struct Webhook {
    transport: Transport,
}

impl Webhook {
    pub fn new(transport: Transport) -> Webhook {
        Webhook { transport }
    }
}

#[async_trait::async_trait]
impl PagerSink for Webhook {
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
        post(&self.transport, &body, false, "page").await?;
        Ok(page.dedup_key.clone())
    }

    async fn notify(
        &self,
        channel: &str,
        message: &str,
        dedup_key: &str,
    ) -> Result<(), BackendError> {
        let body = json!({ "kind": "notice", "channel": channel, "message": inert::text(message), "dedup_key": dedup_key });
        post(&self.transport, &body, false, "notice").await?;
        Ok(())
    }
}
