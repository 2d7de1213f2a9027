//! A loopback TCP proxy for fault tests: it forwards bytes until told to
//! freeze (stop forwarding without closing: a frozen peer or a network that
//! silently eats packets) or to cut (reset every connection at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// A running proxy; dropping it closes every connection through it.
pub struct Proxy {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    thawed: Arc<Notify>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards `127.0.0.1:<free port>` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy on loopback");
        let addr = listener.local_addr().expect("the proxy's address");
        let frozen = Arc::new(AtomicBool::new(false));
        let thawed = Arc::new(Notify::new());
        let (cut, cuts) = watch::channel(0u64);
        let task = {
            let frozen = frozen.clone();
            let thawed = thawed.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        return;
                    };
                    let frozen = frozen.clone();
                    let thawed = thawed.clone();
                    let mut cuts = cuts.clone();
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        cuts.mark_unchanged();
                        tokio::select! {
                            _ = pump(ri, wo, frozen.clone(), thawed.clone()) => {}
                            _ = pump(ro, wi, frozen, thawed) => {}
                            _ = cuts.changed() => {}
                        }
                    });
                }
            })
        };
        Self {
            addr,
            frozen,
            thawed,
            cut,
            task,
        }
    }

    /// Stops forwarding in both directions; sockets stay open.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Resumes forwarding.
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
        self.thawed.notify_waiters();
    }

    /// Drops every connection through the proxy at once.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    thawed: Arc<Notify>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) {
            let wake = thawed.notified();
            if !frozen.load(Ordering::SeqCst) {
                break;
            }
            wake.await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just as the freeze began are swallowed, as a dead
        // network would.
        if frozen.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
