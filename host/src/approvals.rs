//! Durable approvals: the [`Approver`] that files a request in the state
//! store and answers from the decisions recorded there. A request that is
//! not decided yet is `Pending`, which parks the run (no instance is held
//! while humans decide); the run resumes from its journal once the request
//! is decided. Deciding is [`StateStore::decide_approval`]'s business.

use std::sync::Arc;

use crate::gate::{Answer, Approver, WriteRequest};
use crate::state::StateStore;
use crate::state::approvals::ApprovalStatus;

pub struct StoredApprover {
    store: Arc<StateStore>,
    /// Who started the run: may not approve its writes.
    started_by: String,
}

impl StoredApprover {
    pub fn new(store: Arc<StateStore>, started_by: &str) -> StoredApprover {
        StoredApprover {
            store,
            started_by: started_by.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl Approver for StoredApprover {
    async fn decide(&self, request: &WriteRequest) -> Result<(), String> {
        match self.answer(request).await {
            Answer::Approved => Ok(()),
            Answer::Refused(why) => Err(why),
            Answer::Pending => Err("the approval is pending".to_owned()),
        }
    }

    async fn answer(&self, request: &WriteRequest) -> Answer {
        match self.store.request_approval(request, &self.started_by).await {
            Ok(ApprovalStatus::Approved { .. }) => Answer::Approved,
            Ok(ApprovalStatus::Denied { by, reason }) => {
                Answer::Refused(format!("denied by {by}: {reason}"))
            }
            Ok(ApprovalStatus::Pending { .. }) => Answer::Pending,
            // No record, no write: refuse rather than perform unrecorded.
            Err(e) => Answer::Refused(format!("the approval could not be recorded: {e}")),
        }
    }
}
