//! What a guest prints on stdout or stderr (a Rust panic message, a
//! Python traceback): the first [`KEPT`] bytes are kept for the crash
//! report, the rest is dropped. Writing never fails, so a chatty guest is
//! not broken by it, and nothing reaches the host's own terminal or logs
//! unasked.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per run.
pub const KEPT: usize = 16 << 10;

/// A shared, bounded capture of a guest's output.
#[derive(Clone, Default)]
pub struct GuestOutput {
    kept: Arc<Mutex<Vec<u8>>>,
}

impl GuestOutput {
    fn keep(&self, bytes: &[u8]) {
        if let Ok(mut kept) = self.kept.lock() {
            let room = KEPT.saturating_sub(kept.len());
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// What the guest printed, lossily decoded, trimmed.
    pub fn text(&self) -> String {
        self.kept
            .lock()
            .map(|k| String::from_utf8_lossy(&k).trim().to_owned())
            .unwrap_or_default()
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_never_fails() {
        let mut out = GuestOutput::default();
        OutputStream::write(
            &mut out,
            Bytes::from_static(b"panicked at src/lib.rs: boom\n"),
        )
        .unwrap();
        for _ in 0..10_000 {
            OutputStream::write(&mut out, Bytes::from_static(b"noise noise noise\n")).unwrap();
        }
        let text = out.text();
        assert!(text.starts_with("panicked at src/lib.rs: boom"));
        assert!(text.len() <= KEPT);
    }
}
