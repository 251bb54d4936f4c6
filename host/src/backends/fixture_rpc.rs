//! DEMO ONLY: an RPC endpoint that answers from a JSON file.
//!
//! It lets the embedded demo run with no network and no node. The file maps
//! each method to a list of answers; the first whose `params` equal the
//! call's (or that has no `params`) answers. Never configure it in
//! production: the config kind is named `fixture` so nobody does by
//! accident.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use super::http::Answered;
use super::{BackendError, RpcEndpoint};
use crate::gate::Effect;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    params: Option<Json>,
    #[serde(default)]
    result: Json,
    error: Option<String>,
}

pub struct FixtureRpc {
    name: String,
    file: PathBuf,
    answers: OnceCell<std::collections::BTreeMap<String, Vec<Answer>>>,
}

impl FixtureRpc {
    pub fn new(name: &str, file: PathBuf) -> FixtureRpc {
        FixtureRpc {
            name: name.to_owned(),
            file,
            answers: OnceCell::new(),
        }
    }

    /// The fixture file's answers by method, read once.
    async fn answers(
        &self,
    ) -> Result<&std::collections::BTreeMap<String, Vec<Answer>>, BackendError> {
        self.answers
            .get_or_try_init(|| async {
                let text = tokio::fs::read_to_string(&self.file).await.map_err(|e| {
                    BackendError::Failed(format!(
                        "fixture endpoint `{}`: cannot read {}: {e}",
                        self.name,
                        self.file.display()
                    ))
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    BackendError::Failed(format!(
                        "fixture endpoint `{}`: {} is not valid: {e}",
                        self.name,
                        self.file.display()
                    ))
                })
            })
            .await
    }
}

#[async_trait::async_trait]
impl RpcEndpoint for FixtureRpc {
    async fn probe(&self) -> Vec<Result<String, BackendError>> {
        vec![self.answers().await.map(|answers| {
            format!(
                "fixture file {}: answers for {} methods",
                self.file.display(),
                answers.len()
            )
        })]
    }

    async fn call(
        &self,
        _id: u64,
        method: &str,
        params: Json,
        _effect: Effect,
        _max_bytes: u64,
    ) -> Result<Answered<Json>, BackendError> {
        let answers = self.answers().await?;
        let answer = answers
            .get(method)
            .and_then(|list| {
                list.iter()
                    .find(|a| a.params.as_ref().is_none_or(|p| *p == params))
            })
            .ok_or_else(|| {
                BackendError::Failed(format!(
                    "fixture endpoint `{}` has no answer for {method} {params}",
                    self.name
                ))
            })?;
        match &answer.error {
            Some(error) => Err(BackendError::Failed(error.clone())),
            None => Ok(Answered {
                value: answer.result.clone(),
                via: format!("fixture {}", self.file.display()),
            }),
        }
    }
}
