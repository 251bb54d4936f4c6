//! JSON-RPC 2.0 over the shared HTTP [`Transport`] (fail-over, retries of
//! reads, secret headers, size cap).
//!
//! A JSON-RPC error object is an answer, not an outage: it is returned at
//! once and never sent to the next URL.

use reqwest::Method;
use serde_json::{Value as Json, json};

use super::http::{Answered, Request, Transport};
use super::{BackendError, RpcEndpoint};
use crate::gate::Effect;

pub struct JsonRpc {
    transport: Transport,
}

impl JsonRpc {
    pub fn new(transport: Transport) -> JsonRpc {
        JsonRpc { transport }
    }

    fn name(&self) -> &str {
        self.transport.name()
    }

    /// The `result` of a JSON-RPC answer, or its error.
    fn result(&self, method: &str, body: &[u8]) -> Result<Json, BackendError> {
        let mut answer: Json = serde_json::from_slice(body).map_err(|e| {
            BackendError::Failed(format!(
                "endpoint `{}` sent a body that is not JSON: {e}",
                self.name()
            ))
        })?;
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            let code = error.get("code").cloned().unwrap_or(Json::Null);
            let message = error.get("message").and_then(Json::as_str).unwrap_or("");
            return Err(BackendError::Failed(format!(
                "{method} on `{}` returned JSON-RPC error {code}: {message}",
                self.name()
            )));
        }
        match answer.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => Err(BackendError::Failed(format!(
                "endpoint `{}` answered without `result` or `error`",
                self.name()
            ))),
        }
    }
}

/// The POST of one JSON-RPC call; `idempotent` (a read) may be retried.
fn request(id: u64, method: &str, params: Json, idempotent: bool, max_bytes: u64) -> Request<'_> {
    let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
    Request {
        method: Method::POST,
        path: "",
        headers: &[],
        body: Some(body.to_string().into_bytes()),
        json: true,
        idempotent,
        max_bytes,
        what: method,
    }
}

#[async_trait::async_trait]
impl RpcEndpoint for JsonRpc {
    async fn call(
        &self,
        id: u64,
        method: &str,
        params: Json,
        effect: Effect,
        max_bytes: u64,
    ) -> Result<Answered<Json>, BackendError> {
        let request = request(id, method, params, effect == Effect::Read, max_bytes);
        let answered = self.transport.send(&request).await?;
        let status = answered.value.status;
        if !status.is_success() {
            return Err(BackendError::Failed(format!(
                "endpoint `{}` answered HTTP {status} ({})",
                self.name(),
                answered.via
            )));
        }
        Ok(Answered {
            value: self.result(method, &answered.value.body)?,
            via: answered.via,
        })
    }

    /// `web3_clientVersion` to each URL: a JSON-RPC answer, a result or an
    /// error object ("method not found" on a node that is not Ethereum's),
    /// shows the node answers.
    async fn probe(&self) -> Vec<Result<String, BackendError>> {
        let request = request(0, "web3_clientVersion", json!([]), true, 1 << 16);
        self.transport
            .reach(&request)
            .await
            .into_iter()
            .map(|answer| {
                let (via, response) = answer?;
                let answer: Json = serde_json::from_slice(&response.body).map_err(|_| {
                    BackendError::Failed(format!(
                        "{via}: HTTP {} with no JSON-RPC answer",
                        response.status.as_u16()
                    ))
                })?;
                match (answer.get("result"), answer.get("error")) {
                    (Some(Json::String(client)), _) => Ok(format!(
                        "{via}: answers ({})",
                        crate::inert::line(&client.chars().take(80).collect::<String>())
                    )),
                    (Some(_), _) | (_, Some(_)) => Ok(format!("{via}: answers JSON-RPC")),
                    _ => Err(BackendError::Failed(format!(
                        "{via}: answered without `result` or `error`"
                    ))),
                }
            })
            .collect()
    }
}
