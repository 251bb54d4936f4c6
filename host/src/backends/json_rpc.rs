//! JSON-RPC 2.0 over HTTP with reqwest.
//!
//! URLs are tried in order; a URL that cannot be reached, times out or
//! answers 5xx passes the call to the next. A JSON-RPC error object is an
//! answer, not an outage: it is returned at once. Errors name the URL by
//! its position ("url #2"), never by its text, which may carry a key.

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::{BackendError, RpcEndpoint};

pub struct JsonRpc {
    name: String,
    urls: Vec<String>,
    client: reqwest::Client,
    timeout: Duration,
}

impl JsonRpc {
    pub fn new(name: &str, urls: Vec<String>, timeout: Duration) -> JsonRpc {
        JsonRpc {
            name: name.to_owned(),
            urls,
            client: reqwest::Client::new(),
            timeout,
        }
    }

    /// One attempt on one URL. `Err(Ok(e))` ends the call; `Err(Err(e))`
    /// lets the next URL try.
    async fn attempt(
        &self,
        url: &str,
        body: &Json,
        method: &str,
        max_bytes: u64,
    ) -> Result<Json, Result<BackendError, BackendError>> {
        let send = self
            .client
            .post(url)
            .json(body)
            .timeout(self.timeout)
            .send();
        let mut response = match send.await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(Err(BackendError::Timeout(format!(
                    "no answer within {:?}",
                    self.timeout
                ))));
            }
            Err(e) => return Err(Err(BackendError::Failed(e.without_url().to_string()))),
        };
        let status = response.status();
        if status.is_server_error() {
            return Err(Err(BackendError::Failed(format!("HTTP {status}"))));
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > max_bytes {
                        return Err(Ok(BackendError::TooLarge {
                            what: format!("rpc.call {method} on `{}`", self.name),
                        }));
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => {
                    return Err(Err(BackendError::Timeout(format!(
                        "answer not complete within {:?}",
                        self.timeout
                    ))));
                }
                Err(e) => return Err(Err(BackendError::Failed(e.without_url().to_string()))),
            }
        }
        if !status.is_success() {
            return Err(Ok(BackendError::Failed(format!(
                "endpoint `{}` answered HTTP {status}",
                self.name
            ))));
        }
        let mut answer: Json = serde_json::from_slice(&bytes).map_err(|e| {
            Ok(BackendError::Failed(format!(
                "endpoint `{}` sent a body that is not JSON: {e}",
                self.name
            )))
        })?;
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            let code = error.get("code").cloned().unwrap_or(Json::Null);
            let message = error.get("message").and_then(Json::as_str).unwrap_or("");
            return Err(Ok(BackendError::Failed(format!(
                "{method} on `{}` returned JSON-RPC error {code}: {message}",
                self.name
            ))));
        }
        match answer.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => Err(Ok(BackendError::Failed(format!(
                "endpoint `{}` answered without `result` or `error`",
                self.name
            )))),
        }
    }
}

#[async_trait::async_trait]
impl RpcEndpoint for JsonRpc {
    async fn call(
        &self,
        id: u64,
        method: &str,
        params: Json,
        max_bytes: u64,
    ) -> Result<Json, BackendError> {
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut failures = Vec::new();
        for (i, url) in self.urls.iter().enumerate() {
            match self.attempt(url, &body, method, max_bytes).await {
                Ok(result) => return Ok(result),
                Err(Ok(final_error)) => return Err(final_error),
                Err(Err(e)) => failures.push((i + 1, e)),
            }
        }
        let all_timeouts = failures
            .iter()
            .all(|(_, e)| matches!(e, BackendError::Timeout(_)));
        let detail = failures
            .iter()
            .map(|(i, e)| format!("url #{i}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        let message = format!("{method} on `{}`: no URL answered ({detail})", self.name);
        Err(if all_timeouts {
            BackendError::Timeout(message)
        } else {
            BackendError::Failed(message)
        })
    }
}
