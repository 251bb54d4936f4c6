//! `stepgate:playbook/rpc`: scope is the endpoint and the JSON-RPC method
//! or HTTP route; the call's class (read or write) comes from the
//! endpoint's config, never from the playbook. The journal records which
//! of the endpoint's URLs answered.

use serde_json::json;

use super::{Action, Call, CallCtx, CapError};
use crate::backends::http_path;
use crate::bindings::WitError;
use crate::bindings::stepgate::playbook::rpc::{Host, HttpRequest, HttpResponse};
use crate::config::Effect;

/// Request headers a playbook may not set: the host owns auth and framing.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

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
            Ok((answered.value.to_string(), Some(answered.via)))
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
        let header_names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        let call = Call {
            interface: "rpc",
            op: "http",
            effect,
            target: endpoint.clone(),
            args: json!({
                "endpoint": endpoint,
                "method": request.method,
                "path": request.path,
                "headers": header_names,
                "body": String::from_utf8_lossy(&request.body),
                "reason": reason,
            }),
            reason,
            keyed: false,
            finer: Vec::new(),
        };
        let scope = scope.map(|_| ());
        if let Err(why) = normal {
            return self.reject(call, scope, WitError::Invalid(why)).await;
        }
        if let Some(reserved) = request
            .headers
            .iter()
            .find(|(name, _)| RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
        {
            let why = format!(
                "header `{}` is set by the host from the endpoint's config, not by a playbook",
                reserved.0
            );
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
