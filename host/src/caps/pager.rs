//! `stepgate:playbook/pager`: scope is the target or channel. Both calls
//! are writes; the summary or message is their reason.

use serde_json::json;

use super::{Action, Call, CallCtx, CapError, idempotency_key as dedup_key};
use crate::backends::{Page, severity_name};
use crate::bindings::stepgate::playbook::pager::{Host, Severity};

impl Host for CallCtx {
    async fn page(
        &mut self,
        target: String,
        severity: Severity,
        summary: String,
        details: String,
    ) -> Result<String, CapError> {
        let severity = severity_name(severity);
        let call = Call::write(
            "pager",
            "page",
            &target,
            json!({ "target": target, "severity": severity, "summary": summary, "details": details }),
            &summary,
        )
        .keyed(self.backends.target(&target).is_ok_and(|sink| sink.idempotent()));
        let scope = self.scope.page(&target);
        let backends = self.backends.clone();
        let run_id = self.run_id.clone();
        self.call(call, scope, async move |action, info| {
            let dedup_key = dedup_key(&run_id, info.seq);
            if action == Action::Simulate {
                return Ok(format!("dry-run-{dedup_key}"));
            }
            let page = Page {
                dedup_key,
                target: &target,
                severity,
                summary: &summary,
                details: &details,
            };
            backends.target(&target)?.page(&page).await
        })
        .await
    }

    async fn notify(&mut self, channel: String, message: String) -> Result<(), CapError> {
        let call = Call::write(
            "pager",
            "notify",
            &channel,
            json!({ "channel": channel, "message": message }),
            &message,
        )
        .keyed(
            self.backends
                .channel(&channel)
                .is_ok_and(|sink| sink.idempotent()),
        );
        let scope = self.scope.notify(&channel);
        let backends = self.backends.clone();
        let run_id = self.run_id.clone();
        self.call(call, scope, async move |action, info| {
            if action == Action::Simulate {
                return Ok(());
            }
            let dedup_key = dedup_key(&run_id, info.seq);
            backends
                .channel(&channel)?
                .notify(&channel, &message, &dedup_key)
                .await
        })
        .await
    }
}
