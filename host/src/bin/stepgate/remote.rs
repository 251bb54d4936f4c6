//! The CLI against a running `stepgate serve` (`--server URL`): the same
//! commands through the REST API, with the caller's bearer token, so the
//! server's rules (roles, self-approval, resuming) apply as they do there.

use anyhow::{Context, Result, anyhow};
use serde_json::Value as Json;

pub struct Remote {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl Remote {
    pub fn new(url: &str, token: String) -> Remote {
        Remote {
            url: url.trim_end_matches('/').to_owned(),
            token,
            client: reqwest::Client::new(),
        }
    }

    async fn answer(response: reqwest::Response, what: &str) -> Result<Json> {
        let status = response.status();
        let body: Json = response.json().await.unwrap_or(Json::Null);
        if status.is_success() {
            return Ok(body);
        }
        let why = body["error"].as_str().unwrap_or("no reason given");
        Err(anyhow!(
            "the server refused {what} (HTTP {}): {why}",
            status.as_u16()
        ))
    }

    pub async fn get(&self, path: &str) -> Result<Json> {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.url))?;
        Remote::answer(response, &format!("GET {path}")).await
    }

    pub async fn post(&self, path: &str, body: &Json) -> Result<Json> {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.url))?;
        Remote::answer(response, &format!("POST {path}")).await
    }
}
