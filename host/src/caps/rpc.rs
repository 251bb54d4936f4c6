//! `stepgate:playbook/rpc`: scope is the endpoint and the JSON-RPC method
//! or HTTP route; the call's class (read or write) comes from the
//! endpoint's config, never from the playbook. The journal records which
//! of the endpoint's URLs answered.

use serde_json::json;

use super::{Action, Call, CallCtx, CapError};
use crate::backends::http_path;
use crate::bindings::WitError;
use crate::bindings::stepgate::playbook::rpc::{Host, HttpRequest, HttpResponse};
use crate::gate::Effect;

/// The request headers a playbook may set: content negotiation,
/// conditional requests, idempotency and tracing. Every other header is
/// refused, because headers are where servers and the proxies in front of
/// them hide other meanings: method and URL overrides, forwarded client
/// addresses, impersonation and tenant selectors, encodings that hide the
/// body from its approver. The host owns auth (the endpoint's `headers`)
/// and framing.
const ALLOWED_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-type",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "idempotency-key",
    "x-idempotency-key",
    "x-request-id",
    "x-correlation-id",
    "traceparent",
    "tracestate",
];

/// Why a playbook may not send header `name` with `value`, if it may not.
fn refused_header(name: &str, value: &str) -> Option<String> {
    if !ALLOWED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Some(format!(
            "header `{}` is not one a playbook may set (only {}); auth headers come from the endpoint's config",
            crate::inert::line(name),
            ALLOWED_HEADERS.join(", ")
        ));
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Some(format!(
            "the value of header `{name}` holds a control character; header values are one line"
        ));
    }
    None
}

impl Host for CallCtx {
    async fn call(
        &mut self,
        endpoint: String,
        method: String,
        params_json: String,
        reason: String,
    ) -> Result<String, CapError> {
        let scope = self.scope.rpc(&endpoint, &method);
        let effect = *scope.as_ref().unwrap_or(&Effect::Write);
        let call = Call {
            interface: "rpc",
            op: "call",
            effect,
            target: endpoint.clone(),
            args: json!({ "endpoint": endpoint, "method": method, "params": params_json, "reason": reason }),
            reason,
            keyed: false,
            finer: vec![method.clone()],
            rows: None,
        };
        let scope = scope.map(|_| ());
        let params: serde_json::Value = match serde_json::from_str(&params_json) {
            Ok(p @ (serde_json::Value::Array(_) | serde_json::Value::Object(_))) => p,
            Ok(_) | Err(_) => {
                let why = format!("params-json for {method} must be a JSON array or object");
                return self.reject(call, scope, WitError::Invalid(why)).await;
            }
        };
        let backends = self.backends.clone();
        self.call_via(call, scope, async move |action, info| {
            if action == Action::Simulate {
                // A write method in a dry run: nothing is sent.
                return Ok((json!({ "dry_run": true }).to_string(), None));
            }
            let answered = backends
                .rpc(&endpoint)?
                .call(info.seq, &method, params, effect, info.result_limit)
                .await?;
            Ok((
                crate::canonical::json_text(&answered.value),
                Some(answered.via),
            ))
        })
        .await
    }

    async fn http(
        &mut self,
        endpoint: String,
        request: HttpRequest,
        reason: String,
    ) -> Result<HttpResponse, CapError> {
        let mut request = request;
        // The scope checks the normal form of the path, and that form is
        // what is sent; a path without one is refused.
        let normal = http_path::normalise(&request.path);
        let scope = match &normal {
            Ok(normal) => self.scope.http(&endpoint, &request.method, normal),
            Err(_) => Ok(Effect::Write),
        };
        if let Ok(normal) = &normal {
            request.path = normal.target();
        }
        let effect = *scope.as_ref().unwrap_or(&Effect::Write);
        let call = Call {
            interface: "rpc",
            op: "http",
            effect,
            target: endpoint.clone(),
            args: json!({
                "endpoint": endpoint,
                "method": request.method,
                "path": request.path,
                // Names and values: the approver sees every header sent,
                // and they count against the argument limit.
                "headers": request.headers,
                "body": String::from_utf8_lossy(&request.body),
                "reason": reason,
            }),
            reason,
            keyed: false,
            finer: Vec::new(),
            rows: None,
        };
        let scope = scope.map(|_| ());
        if let Err(why) = normal {
            return self.reject(call, scope, WitError::Invalid(why)).await;
        }
        let mut seen = std::collections::BTreeSet::new();
        let duplicate = request
            .headers
            .iter()
            .find(|(name, _)| !seen.insert(name.to_ascii_lowercase()))
            .map(|(name, _)| {
                format!(
                    "header `{}` is set twice; a proxy and the server may read different ones",
                    crate::inert::line(name)
                )
            });
        if let Some(why) = duplicate.or_else(|| {
            request
                .headers
                .iter()
                .find_map(|(name, value)| refused_header(name, value))
        }) {
            return self.reject(call, scope, WitError::Invalid(why)).await;
        }
        let backends = self.backends.clone();
        self.call_via(call, scope, async move |action, info| {
            if action == Action::Simulate {
                // A write in a dry run: nothing is sent.
                let response = HttpResponse {
                    status: 0,
                    headers: vec![("x-stepgate-dry-run".to_owned(), "true".to_owned())],
                    body: Vec::new(),
                };
                return Ok((response, None));
            }
            let answered = backends
                .rpc(&endpoint)?
                .http(&request, effect, info.result_limit)
                .await?;
            Ok((answered.value, Some(answered.via)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::refused_header;

    #[test]
    fn headers_that_change_a_requests_meaning_are_refused() {
        for name in [
            "Authorization",
            "X-HTTP-Method-Override",
            "X-Method-Override",
            "x-http-method",
            "X-Original-URL",
            "X-Rewrite-URL",
            "X-Forwarded-For",
            "X-Forwarded-Host",
            "Forwarded",
            "Proxy-Authorization",
            "X-Real-IP",
            "Transfer-Encoding",
            "Upgrade",
            "Sec-WebSocket-Key",
            "X_Forwarded_For",
            "Impersonate-User",
            "X-Remote-User",
            "Content-Profile",
            "Content-Encoding",
            "Prefer",
            "Client-IP",
            "bad name",
            "x:y",
            "",
        ] {
            assert!(refused_header(name, "v").is_some(), "{name} was allowed");
        }
    }

    #[test]
    fn ordinary_headers_pass_and_values_stay_one_line() {
        for name in ["Content-Type", "Accept", "Idempotency-Key", "X-Request-Id"] {
            assert_eq!(refused_header(name, "a\tb"), None, "{name}");
        }
        assert!(refused_header("X-Request-Id", "a\r\nX-Injected: 1").is_some());
        assert!(refused_header("X-Request-Id", "a\0b").is_some());
    }
}
