//! A pager sink that appends one JSON object a line to a file: the demo's
//! and the tests' pager, and a simple audit trail of who was told what.

use std::path::PathBuf;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{BackendError, Page, PagerSink};

pub struct FilePager {
    path: PathBuf,
    /// Lines from concurrent runs must not interleave.
    lock: Mutex<()>,
}

impl FilePager {
    pub fn new(path: PathBuf) -> FilePager {
        FilePager {
            path,
            lock: Mutex::new(()),
        }
    }

    async fn append(&self, line: serde_json::Value) -> Result<(), BackendError> {
        let _guard = self.lock.lock().await;
        let fail = |e: std::io::Error| {
            BackendError::Failed(format!("pager file {}: {e}", self.path.display()))
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(fail)?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(fail)?;
        let mut text = line.to_string();
        text.push('\n');
        file.write_all(text.as_bytes()).await.map_err(fail)?;
        file.flush().await.map_err(fail)
    }
}

#[async_trait::async_trait]
impl PagerSink for FilePager {
    /// The file's directory exists and takes new files.
    async fn probe(&self) -> Result<String, BackendError> {
        let dir = match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir.to_owned(),
            None => PathBuf::from("."),
        };
        let probe = dir.join(format!(".stepgate-doctor-{}", std::process::id()));
        let fail = |e: std::io::Error| {
            BackendError::Failed(format!("pager file {}: {e}", self.path.display()))
        };
        tokio::fs::File::create(&probe).await.map_err(fail)?;
        tokio::fs::remove_file(&probe).await.map_err(fail)?;
        Ok(format!("{} can be written", self.path.display()))
    }

    async fn page(&self, page: &Page<'_>) -> Result<String, BackendError> {
        let id = format!("page-{}", page.dedup_key);
        self.append(json!({ "kind": "page", "id": id, "page": page }))
            .await?;
        Ok(id)
    }

    async fn notify(
        &self,
        channel: &str,
        message: &str,
        dedup_key: &str,
    ) -> Result<(), BackendError> {
        self.append(json!({
            "kind": "notify",
            "channel": channel,
            "message": message,
            "dedup_key": dedup_key,
        }))
        .await
    }
}
