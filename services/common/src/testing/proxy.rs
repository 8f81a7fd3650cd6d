//! A TCP proxy a test puts in front of a server (RabbitMQ, PostgreSQL) to
//! simulate network faults without touching the shared server.
//!
//! Three states: *up* forwards; *down* closes every open connection and
//! refuses new ones (accepts and closes them at once: a crashed peer);
//! *blackhole* keeps every connection open but forwards nothing in either
//! direction, and holds new connections open without ever answering (a peer
//! behind a dead network path: nothing is refused, nothing arrives).
//! Switching up again closes what the blackhole held.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const UP: u8 = 0;
const DOWN: u8 = 1;
const BLACKHOLE: u8 = 2;

/// The tokens of the connections opened since the last state change.
#[derive(Clone, Default)]
struct Generation {
    /// Closes the connections.
    kill: CancellationToken,
    /// Stops forwarding, keeps the sockets open.
    freeze: CancellationToken,
}

/// A TCP proxy that a test switches between up, down and blackhole.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<AtomicU8>,
    generation: Arc<Mutex<Generation>>,
    stop: CancellationToken,
}

impl Proxy {
    /// A proxy to `upstream` (host:port), switched on.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("binding the proxy: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("the proxy's address: {error}"));
        let proxy = Self {
            addr,
            state: Arc::new(AtomicU8::new(UP)),
            generation: Arc::new(Mutex::new(Generation::default())),
            stop: CancellationToken::new(),
        };
        let (state, generation, stop) = (
            Arc::clone(&proxy.state),
            Arc::clone(&proxy.generation),
            proxy.stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else {
                    continue;
                };
                let tokens = generation
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match state.load(Ordering::SeqCst) {
                    DOWN => drop(inbound),
                    BLACKHOLE => {
                        tokio::spawn(async move {
                            let _held = inbound;
                            tokens.kill.cancelled().await;
                        });
                    }
                    _ => {
                        tokio::spawn(forward(inbound, upstream.clone(), tokens));
                    }
                }
            }
        });
        proxy
    }

    /// Switches the proxy off: open connections die, new ones are refused.
    pub fn down(&self) {
        self.state.store(DOWN, Ordering::SeqCst);
        self.next_generation().kill.cancel();
    }

    /// Stops forwarding on every open connection (they stay open) and holds
    /// new ones silently.
    pub fn blackhole(&self) {
        self.state.store(BLACKHOLE, Ordering::SeqCst);
        let generation = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        generation.freeze.cancel();
    }

    /// Switches the proxy back on; connections a blackhole held are closed.
    pub fn up(&self) {
        let frozen = self.state.swap(UP, Ordering::SeqCst) == BLACKHOLE;
        if frozen {
            self.next_generation().kill.cancel();
        }
    }

    /// Starts a new generation of connections; the previous one's tokens.
    fn next_generation(&self) -> Generation {
        let mut generation = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *generation)
    }
}

async fn forward(mut inbound: TcpStream, upstream: String, tokens: Generation) {
    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
        return;
    };
    tokio::select! {
        () = tokens.kill.cancelled() => {}
        // Frozen: keep both sockets, forward nothing, until killed.
        () = tokens.freeze.cancelled() => tokens.kill.cancelled().await,
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        let generation = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        generation.kill.cancel();
    }
}
