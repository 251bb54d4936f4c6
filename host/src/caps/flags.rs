//! `stepgate:playbook/flags`: scope is the flag name, by the grant's globs.
//! `set` returns the previous value, so the journal shows before and after.

use serde_json::json;

use super::{Action, Call, CallCtx, CapError};
use crate::bindings::stepgate::playbook::flags::Host;

impl Host for CallCtx {
    async fn get(&mut self, name: String) -> Result<Option<String>, CapError> {
        let call = Call::read("flags", "get", &name, json!({ "name": name }));
        let scope = self.scope.flag_read(&name);
        let backends = self.backends.clone();
        self.call(call, scope, async move |_, _| {
            backends.flag_store(&name)?.get(&name).await
        })
        .await
    }

    async fn set(
        &mut self,
        name: String,
        value: String,
        reason: String,
    ) -> Result<Option<String>, CapError> {
        let call = Call::write(
            "flags",
            "set",
            &name,
            json!({ "name": name, "value": value, "reason": reason }),
            &reason,
        );
        let scope = self.scope.flag_write(&name);
        let backends = self.backends.clone();
        self.call(call, scope, async move |action, _| {
            let store = backends.flag_store(&name)?;
            match action {
                Action::Perform => store.set(&name, &value).await,
                // A dry run changes nothing and shows what the value is now.
                Action::Simulate => store.get(&name).await,
            }
        })
        .await
    }
}
