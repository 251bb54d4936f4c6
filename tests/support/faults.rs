//! Failures a real server cannot be asked for: a TCP proxy in front of
//! PostgreSQL that, once armed, lets the next COMMIT through, waits for
//! the server's answer, and drops it with the connection. The transaction
//! is committed; the client is told the connection failed. That is what a
//! network cut at the worst moment looks like to the host.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy to a PostgreSQL port on loopback; see the module doc.
pub struct CommitCutter {
    pub port: u16,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl CommitCutter {
    /// A proxy to `127.0.0.1:upstream`, unarmed.
    pub async fn start(upstream: u16) -> CommitCutter {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (armed, cuts) = (armed.clone(), cuts.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        continue;
                    };
                    tokio::spawn(relay(client, server, armed.clone(), cuts.clone()));
                }
            })
        };
        CommitCutter {
            port,
            armed,
            cuts,
            accept,
        }
    }

    /// The next COMMIT through the proxy, on any connection, is committed
    /// and its answer lost.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many answers were dropped so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut up, mut down) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        tokio::select! {
            read = client.read(&mut up) => {
                let Ok(n @ 1..) = read else { return };
                let sent = &up[..n];
                let cut = contains(sent, b"COMMIT") && armed.swap(false, Ordering::SeqCst);
                if server.write_all(sent).await.is_err() {
                    return;
                }
                if cut {
                    // The server commits, then answers; the answer is
                    // read and dropped, and both connections close.
                    let _ = server.read(&mut down).await;
                    cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            read = server.read(&mut down) => {
                let Ok(n @ 1..) = read else { return };
                if client.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
