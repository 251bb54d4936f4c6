//! Flags kept in the host's own state database (`kind = "builtin"`).

use std::sync::Arc;

use super::{BackendError, FlagStore};
use crate::state::StateStore;

pub struct StateFlags {
    state: Arc<StateStore>,
}

impl StateFlags {
    pub fn new(state: Arc<StateStore>) -> StateFlags {
        StateFlags { state }
    }
}

fn failed(e: crate::state::StateError) -> BackendError {
    BackendError::Failed(format!("built-in flag store: {e}"))
}

#[async_trait::async_trait]
impl FlagStore for StateFlags {
    async fn get(&self, name: &str) -> Result<Option<String>, BackendError> {
        self.state.flag(name).await.map_err(failed)
    }

    async fn set(&self, name: &str, value: &str) -> Result<Option<String>, BackendError> {
        self.state.set_flag(name, value).await.map_err(failed)
    }

    async fn probe(&self) -> Result<String, BackendError> {
        self.state.flag("STEPGATE_DOCTOR").await.map_err(failed)?;
        Ok("in the state store, which answers".to_owned())
    }
}
