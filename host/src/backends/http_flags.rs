//! Flags behind a service's feature-flag admin API, e.g. loa-finn's
//! `POST /api/v1/admin/feature-flags {"flag": "credits", "enabled": false}`.
//!
//! The request shape comes from the config: the set request's method and
//! JSON body template, and a JSON pointer to a flag's value in the answer
//! to `GET {url}`. Values are put into the body as JSON values, never by
//! text substitution, so a flag name or value cannot change the body's
//! shape. A set reads the value first so the journal shows before → after.

use reqwest::Method;
use serde_json::Value as Json;

use super::http::{Request, Transport};
use super::{BackendError, FlagStore};

pub struct HttpFlags {
    transport: Transport,
    value_pointer: String,
    set_method: Method,
    set_body: Json,
}

/// Bytes an admin API's answer may take.
const MAX_ANSWER: u64 = 1 << 20;

impl HttpFlags {
    pub fn new(
        transport: Transport,
        value_pointer: &str,
        set_method: Method,
        set_body: Json,
    ) -> HttpFlags {
        HttpFlags {
            transport,
            value_pointer: value_pointer.to_owned(),
            set_method,
            set_body,
        }
    }

    fn failed(&self, what: impl std::fmt::Display) -> BackendError {
        BackendError::Failed(format!("flag store `{}`: {what}", self.transport.name()))
    }

    /// The pointer for one flag, with the name escaped as RFC 6901 says.
    fn pointer(&self, name: &str) -> String {
        let escaped = name.replace('~', "~0").replace('/', "~1");
        self.value_pointer.replace("{name}", &escaped)
    }

    /// The set body: `"{name}"` and `"{value}"` strings replaced by values.
    fn body(&self, name: &str, value: &str) -> Json {
        fn fill(template: &Json, name: &str, value: &Json) -> Json {
            match template {
                Json::String(s) if s == "{name}" => Json::String(name.to_owned()),
                Json::String(s) if s == "{value}" => value.clone(),
                Json::Array(items) => {
                    Json::Array(items.iter().map(|i| fill(i, name, value)).collect())
                }
                Json::Object(map) => Json::Object(
                    map.iter()
                        .map(|(k, v)| (k.clone(), fill(v, name, value)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }
        // "false" goes out as false, "3" as 3, anything else as a string.
        let typed = match serde_json::from_str::<Json>(value) {
            Ok(v @ (Json::Bool(_) | Json::Number(_))) => v,
            _ => Json::String(value.to_owned()),
        };
        fill(&self.set_body, name, &typed)
    }
}

/// The GET that reads every flag (a flag's read, and doctor's probe).
const READ_FLAGS: Request<'static> = Request {
    method: Method::GET,
    path: "",
    headers: &[],
    body: None,
    json: false,
    idempotent: true,
    max_bytes: MAX_ANSWER,
    what: "GET flags",
};

#[async_trait::async_trait]
impl FlagStore for HttpFlags {
    /// The same GET a read of a flag makes.
    async fn probe(&self) -> Result<String, BackendError> {
        let answers = self.transport.reach(&READ_FLAGS).await;
        let (via, response) = answers
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(BackendError::Failed("no URL".to_owned())))?;
        if !response.status.is_success() {
            return Err(BackendError::Failed(format!(
                "{via}: GET answered HTTP {}",
                response.status.as_u16()
            )));
        }
        Ok(format!(
            "{via}: GET answers HTTP {}",
            response.status.as_u16()
        ))
    }

    async fn get(&self, name: &str) -> Result<Option<String>, BackendError> {
        let answered = self.transport.send(&READ_FLAGS).await?;
        let response = answered.value;
        if !response.status.is_success() {
            return Err(self.failed(format!("GET answered HTTP {}", response.status)));
        }
        let body: Json = serde_json::from_slice(&response.body)
            .map_err(|e| self.failed(format!("GET answered a body that is not JSON: {e}")))?;
        Ok(match body.pointer(&self.pointer(name)) {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(other) => Some(crate::canonical::json_text(other)),
        })
    }

    async fn set(&self, name: &str, value: &str) -> Result<Option<String>, BackendError> {
        let previous = self.get(name).await?;
        let body = self.body(name, value).to_string().into_bytes();
        let what = format!("{} flag {name}", self.set_method);
        let request = Request {
            method: self.set_method.clone(),
            path: "",
            headers: &[],
            body: Some(body),
            json: true,
            idempotent: false,
            max_bytes: MAX_ANSWER,
            what: &what,
        };
        let response = self.transport.send(&request).await?.value;
        if !response.status.is_success() {
            return Err(self.failed(format!(
                "setting `{name}` answered HTTP {}",
                response.status
            )));
        }
        Ok(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_template_fills_values_not_text() {
        let flags = HttpFlags::new(
            Transport::new(
                "loa",
                vec![],
                Default::default(),
                std::time::Duration::from_secs(1),
                0,
                std::time::Duration::ZERO,
            ),
            "/{name}",
            Method::POST,
            serde_json::json!({ "flag": "{name}", "enabled": "{value}", "by": "stepgate" }),
        );
        assert_eq!(
            flags.body("credits", "false"),
            serde_json::json!({ "flag": "credits", "enabled": false, "by": "stepgate" })
        );
        assert_eq!(
            flags.body("x\", \"admin\": true", "on"),
            serde_json::json!({ "flag": "x\", \"admin\": true", "enabled": "on", "by": "stepgate" })
        );
        assert_eq!(flags.pointer("a/b~c"), "/a~1b~0c");
    }
}
