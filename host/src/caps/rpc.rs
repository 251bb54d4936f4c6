//! `stepgate:playbook/rpc`: scope is the endpoint and the method; the
//! method's class (read or write) comes from the endpoint's config, never
//! from the playbook.

use serde_json::json;

use super::{Action, Call, CallCtx, CapError};
use crate::bindings::WitError;
use crate::bindings::stepgate::playbook::rpc::{Host, HttpRequest, HttpResponse};
use crate::config::Effect;
use crate::scope::NotGranted;

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
        self.call(call, scope, async move |action, info| {
            if action == Action::Simulate {
                // A write method in a dry run: nothing is sent.
                return Ok(json!({ "dry_run": true }).to_string());
            }
            let result = backends
                .rpc(&endpoint)?
                .call(info.seq, &method, params, info.result_limit)
                .await?;
            Ok(result.to_string())
        })
        .await
    }

    async fn http(
        &mut self,
        endpoint: String,
        request: HttpRequest,
        reason: String,
    ) -> Result<HttpResponse, CapError> {
        let effect = if matches!(request.method.as_str(), "GET" | "HEAD") {
            Effect::Read
        } else {
            Effect::Write
        };
        let call = Call {
            interface: "rpc",
            op: "http",
            effect,
            target: endpoint.clone(),
            args: json!({ "endpoint": endpoint, "method": request.method, "path": request.path, "reason": reason }),
            reason,
        };
        let scope = Err(NotGranted {
            playbook: self.playbook.clone(),
            what: format!("HTTP endpoint `{endpoint}`"),
            hint: "an HTTP endpoint; this host only has JSON-RPC endpoints so far".to_owned(),
        });
        self.reject(call, scope, WitError::Invalid(String::new()))
            .await
    }
}
