//! Plain HTTP APIs (`rpc.http`) over the shared [`Transport`]: the
//! playbook gives method, path, headers and body; the host adds the
//! endpoint's secret headers and answers with status, headers and body.
//! Which routes a playbook may use is the scope's business, not this
//! module's.

use reqwest::Method;

use super::http::{Answered, Request, Transport};
use super::{BackendError, RpcEndpoint};
use crate::bindings::stepgate::playbook::rpc::{HttpRequest, HttpResponse};
use crate::gate::Effect;

/// Response headers a playbook never sees: they can carry session secrets.
const HIDDEN_RESPONSE_HEADERS: &[&str] = &["set-cookie", "authorization", "proxy-authenticate"];

pub struct HttpApi {
    transport: Transport,
}

impl HttpApi {
    pub fn new(transport: Transport) -> HttpApi {
        HttpApi { transport }
    }
}

#[async_trait::async_trait]
impl RpcEndpoint for HttpApi {
    async fn probe(&self) -> Vec<Result<String, BackendError>> {
        self.transport.reach_head().await
    }

    async fn call(
        &self,
        _id: u64,
        method: &str,
        _params: serde_json::Value,
        _effect: Effect,
        _max_bytes: u64,
    ) -> Result<Answered<serde_json::Value>, BackendError> {
        Err(BackendError::Invalid(format!(
            "endpoint `{}` is an HTTP API, not JSON-RPC; send `{method}` with rpc.http",
            self.transport.name()
        )))
    }

    async fn http(
        &self,
        request: &HttpRequest,
        effect: Effect,
        max_bytes: u64,
    ) -> Result<Answered<HttpResponse>, BackendError> {
        let method =
            Method::from_bytes(request.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                BackendError::Invalid(format!("`{}` is not an HTTP method", request.method))
            })?;
        let what = format!("{} {}", method, request.path);
        let outgoing = Request {
            method,
            path: &request.path,
            headers: &request.headers,
            body: (!request.body.is_empty()).then(|| request.body.clone()),
            json: false,
            idempotent: effect == Effect::Read,
            max_bytes,
            what: &what,
        };
        let answered = self.transport.send(&outgoing).await?;
        let response = answered.value;
        let headers = response
            .headers
            .iter()
            .filter(|(name, _)| !HIDDEN_RESPONSE_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        Ok(Answered {
            value: HttpResponse {
                status: response.status.as_u16(),
                headers,
                body: response.body,
            },
            via: answered.via,
        })
    }
}
