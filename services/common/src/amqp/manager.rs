//! The background task that keeps one session alive, fails over between
//! nodes and replaces the channel when a publisher asks for it; and its two
//! handles, [`ConnectionManager`] (start, stop) and [`BrokerLink`] (read the
//! current session, ask for a redeclare or a new channel).
//!
//! Every wait of the task is bounded: connecting and setting up by
//! [`CONNECT_TIMEOUT`], a redeclare by the same, closing a channel or a
//! connection by [`CLOSE_TIMEOUT`], pauses by their own length. Before each
//! wait the task records by when it will be back ([`BrokerLink::is_stalled`]
//! reports a task past that point), so liveness can follow it.
//!
//! **Why a fresh channel.** RabbitMQ 3.10's channel keeps one quorum-queue
//! client per queue, created at the channel's first publish from the queue
//! record, with the leader the record names listed first. That client's first
//! publish asks the *listed* leader's node for its machine version; when the
//! node is down the publish is refused (a nack) and nothing in the client
//! changes, so every later publish on that channel asks the dead node again
//! and is nacked too, for as long as the channel lives (rabbit_fifo_client
//! `enqueue/3`, `{badrpc, nodedown} -> {reject_publish, State0}`). A client
//! that reconnects to another node within milliseconds of its node dying
//! publishes before the queue has elected a new leader and meets exactly
//! that. RabbitMQ 3.11/3.12 take the leader from the Ra leaderboard
//! (rabbitmq-server #9241) and later releases register the publisher with
//! every member instead of asking one node. The client-side cure works on
//! every version: a channel whose publishes are nacked is replaced, paced by
//! [`RenewGate`], and the new channel builds its queue client from the
//! updated record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::Event;
use prometheus::{IntGauge, Registry};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backoff::{Backoff, RenewGate};
use super::{
    AmqpError, CLOSE_TIMEOUT, CONNECT_TIMEOUT, ChannelRole, MISMATCH_RETRY, Session, close_channel,
    close_connection, open_session, renew_channel,
};
use crate::config::AmqpConfig;
use crate::topology::declare_topology;

/// How often the manager polls connection and channel state.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a replaced channel stays open for the confirms still due on it.
pub const RETIRE_AFTER: Duration = Duration::from_secs(10);
/// How often a replaced channel looks whether a publish still holds it.
const RETIRE_POLL: Duration = Duration::from_millis(10);
/// Slack on top of each bounded wait before the task counts as stalled
/// (a loaded machine, scheduling).
pub const STALL_SLACK: Duration = Duration::from_secs(10);

/// The gauges that mirror the link: `<prefix>_broker_connected` (1 while a
/// session is live) and `<prefix>_broker_address` (position of the node in
/// use in the configured address list, `-1` while disconnected).
#[derive(Clone)]
pub struct LinkGauges {
    /// 1 while connected, else 0.
    pub connected: IntGauge,
    /// 0-based position in `RABBITMQ_ADDRESSES` of the node in use, or -1.
    pub address: IntGauge,
}

impl LinkGauges {
    /// Registers both gauges on `registry` under `prefix`.
    pub fn register(registry: &Registry, prefix: &str) -> prometheus::Result<Self> {
        let connected = crate::metrics::gauge(
            registry,
            prefix,
            "broker_connected",
            "1 while the AMQP connection is up, else 0.",
        )?;
        let address = crate::metrics::gauge(
            registry,
            prefix,
            "broker_address",
            "0-based position in RABBITMQ_ADDRESSES of the broker node in use; -1 while disconnected.",
        )?;
        address.set(-1);
        Ok(Self { connected, address })
    }

    fn show(&self, position: Option<usize>) {
        match position {
            Some(position) => {
                self.connected.set(1);
                self.address.set(position.try_into().unwrap_or(i64::MAX));
            }
            None => {
                self.connected.set(0);
                self.address.set(-1);
            }
        }
    }
}

/// When the manager task promised to be back: milliseconds since `origin`.
#[derive(Debug)]
struct Deadline {
    origin: Instant,
    millis: AtomicU64,
}

impl Deadline {
    fn new() -> Self {
        let deadline = Self {
            origin: Instant::now(),
            millis: AtomicU64::new(0),
        };
        deadline.expect_within(CONNECT_TIMEOUT);
        deadline
    }

    /// The task is about to wait at most `bound`.
    fn expect_within(&self, bound: Duration) {
        let due = self.origin.elapsed() + bound + STALL_SLACK;
        self.millis.store(
            due.as_millis().try_into().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The task stopped for good: never stalled.
    fn finish(&self) {
        self.millis.store(u64::MAX, Ordering::Relaxed);
    }

    fn passed(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.origin).as_millis();
        elapsed > u128::from(self.millis.load(Ordering::Relaxed))
    }
}

/// A publisher's request for a fresh channel, for the session it names.
#[derive(Debug, Default)]
struct RenewRequest {
    session: AtomicU64,
    notify: Notify,
}

/// Read side of the manager: the current session, if connected.
#[derive(Clone)]
pub struct BrokerLink {
    rx: watch::Receiver<Option<Arc<Session>>>,
    redeclare: Arc<Notify>,
    renew: Arc<RenewRequest>,
    deadline: Arc<Deadline>,
}

impl BrokerLink {
    /// The current live session, if any.
    pub fn session(&self) -> Option<Arc<Session>> {
        self.rx.borrow().as_ref().filter(|s| s.is_alive()).cloned()
    }

    /// The node of the current live session, if any (for readiness).
    pub fn node(&self) -> Option<crate::address::BrokerAddress> {
        self.session().map(|session| session.address.clone())
    }

    /// Whether a live session exists right now.
    pub fn is_connected(&self) -> bool {
        self.session().is_some()
    }

    /// Asks the manager to declare the topology again on the live session
    /// (e.g. after a publish came back unroutable because someone deleted
    /// the queue). Requests made while one is pending are coalesced.
    pub fn request_redeclare(&self) {
        self.redeclare.notify_one();
    }

    /// Asks the manager to replace the channel of session `session_id` (a
    /// [`Session::id`]) with a fresh one on the same connection, e.g. after
    /// the broker nacked a publish on it. Ignored when that session is no
    /// longer the current one; paced by [`RenewGate`].
    pub fn request_new_channel(&self, session_id: u64) {
        self.renew.session.store(session_id, Ordering::Relaxed);
        self.renew.notify.notify_one();
    }

    /// Whether the manager task is past the point by which it promised to
    /// be back from its current (bounded) wait: it is stuck, and only a
    /// restart helps. For `/healthz`.
    pub fn is_stalled(&self) -> bool {
        self.deadline.passed(Instant::now())
    }

    /// A receiver that is notified at every change of session.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Session>>> {
        self.rx.clone()
    }
}

/// Handle on the background connection manager.
pub struct ConnectionManager {
    link: BrokerLink,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl ConnectionManager {
    /// Starts the manager task. `gauges` mirror the connection state;
    /// `name` is the AMQP connection name.
    pub fn spawn(config: AmqpConfig, role: ChannelRole, name: String, gauges: LinkGauges) -> Self {
        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let link = BrokerLink {
            rx,
            redeclare: Arc::new(Notify::new()),
            renew: Arc::new(RenewRequest::default()),
            deadline: Arc::new(Deadline::new()),
        };
        let manager = Manager {
            config,
            role,
            name,
            tx,
            gauges,
            link: link.clone(),
            stop: stop.clone(),
        };
        let task = tokio::spawn(manager.run());
        Self { link, stop, task }
    }

    /// The read side, for publishers, consumers and readiness.
    pub fn link(&self) -> BrokerLink {
        self.link.clone()
    }

    /// Stops reconnecting and closes the channel and connection gracefully
    /// (each close bounded by [`CLOSE_TIMEOUT`]).
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "connection manager task failed");
        }
    }
}

enum SessionEnd {
    Stopped,
    Lost(String),
}

/// What interrupted watching a session.
enum Watched {
    End(SessionEnd),
    RenewChannel,
}

struct Manager {
    config: AmqpConfig,
    role: ChannelRole,
    name: String,
    tx: watch::Sender<Option<Arc<Session>>>,
    gauges: LinkGauges,
    link: BrokerLink,
    stop: CancellationToken,
}

impl Manager {
    fn expect_within(&self, bound: Duration) {
        self.link.deadline.expect_within(bound);
    }

    async fn run(self) {
        let addresses = self.config.addresses.clone();
        let mut backoff = Backoff::default();
        let mut position = 0usize;
        // Attempts that failed since the last session (or start).
        let mut failed_in_round = 0usize;
        loop {
            let address = addresses.get(position);
            // open_session is bounded by CONNECT_TIMEOUT, its clean-up by CLOSE_TIMEOUT.
            self.expect_within(CONNECT_TIMEOUT + CLOSE_TIMEOUT);
            let attempt = tokio::select! {
                result = open_session(&self.config, address, self.role, &self.name) => result,
                () = self.stop.cancelled() => break,
            };
            let wait = match attempt {
                Ok(session) => {
                    backoff.reset();
                    failed_in_round = 0;
                    match self.hold(Arc::new(session), position).await {
                        SessionEnd::Stopped => break,
                        SessionEnd::Lost(reason) => {
                            tracing::warn!(node = %address, position, %reason, "lost the broker connection, failing over to the next node");
                        }
                    }
                    None
                }
                Err(error) if error.is_permanent() => {
                    tracing::error!(kind = error.kind(), node = %address, %error, "cannot use the configured queue");
                    Some(MISMATCH_RETRY)
                }
                Err(error) => {
                    failed_in_round += 1;
                    tracing::warn!(kind = error.kind(), node = %address, position, %error, "broker node not available");
                    // Every node failed once in a row: back off before the next round.
                    (failed_in_round >= addresses.len()).then(|| {
                        failed_in_round = 0;
                        backoff.next_jittered()
                    })
                }
            };
            position = (position + 1) % addresses.len();
            if let Some(delay) = wait {
                tracing::debug!(
                    delay_ms = delay.as_millis() as u64,
                    "waiting before reconnecting"
                );
                self.expect_within(delay);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.stop.cancelled() => break,
                }
            }
        }
        self.gauges.show(None);
        self.link.deadline.finish();
        tracing::info!("connection manager stopped");
    }

    /// Publishes `session` (and the sessions that replace its channel) until
    /// the connection is lost or the manager stops.
    async fn hold(&self, first: Arc<Session>, position: usize) -> SessionEnd {
        let address = self.config.addresses.get(position);
        let mut session = first;
        self.tx.send_replace(Some(Arc::clone(&session)));
        self.gauges.show(Some(position));
        tracing::info!(node = %address, position, queue = %self.config.queue, queue_type = %self.config.queue_type, partitions = %self.config.partitions, "connected to the broker");
        let mut gate = RenewGate::default();
        let end = loop {
            match self.watch(&session).await {
                Watched::End(end) => break end,
                Watched::RenewChannel => {
                    if !gate.try_renew(Instant::now()) {
                        continue;
                    }
                    self.expect_within(CONNECT_TIMEOUT);
                    match renew_channel(&session, self.role).await {
                        Ok(fresh) => {
                            let old = std::mem::replace(&mut session, Arc::new(fresh));
                            self.tx.send_replace(Some(Arc::clone(&session)));
                            tracing::warn!(node = %address, old_channel = old.channel.id(), channel = session.channel.id(), "replaced the publishing channel after the broker refused a publish");
                            retire(old);
                        }
                        // The connection is probably going: the watch sees it next.
                        Err(error) => {
                            tracing::warn!(kind = error.kind(), %error, "could not open a new channel")
                        }
                    }
                }
            }
        };
        self.tx.send_replace(None);
        self.gauges.show(None);
        self.expect_within(2 * CLOSE_TIMEOUT);
        match &end {
            SessionEnd::Stopped => {
                close_channel(&session.channel, "shutdown").await;
                close_connection(&session.connection, "shutdown").await;
                tracing::info!("closed the broker connection");
            }
            // Release whatever is left of the old connection.
            SessionEnd::Lost(_) => close_connection(&session.connection, "reconnecting").await,
        }
        end
    }

    /// Watches `session` until it ends or a new channel is asked for it.
    async fn watch(&self, session: &Session) -> Watched {
        let queues = self.config.queues();
        let queue = &self.config.queue;
        let mut events = session.connection.events_listener();
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        loop {
            self.expect_within(POLL_INTERVAL);
            tokio::select! {
                () = self.stop.cancelled() => return Watched::End(SessionEnd::Stopped),
                () = self.link.redeclare.notified() => {
                    self.expect_within(CONNECT_TIMEOUT);
                    let declared = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        declare_topology(&session.connection, &queues, self.config.queue_type),
                    )
                    .await;
                    match declared {
                        Ok(Ok(())) => tracing::warn!(%queue, "declared the topology again after an unroutable publish"),
                        Ok(Err(error)) => return Watched::End(SessionEnd::Lost(error.to_string())),
                        Err(_) => {
                            let error = AmqpError::Timeout { endpoint: session.address.to_string() };
                            return Watched::End(SessionEnd::Lost(format!("declaring the topology again: {error}")));
                        }
                    }
                }
                () = self.link.renew.notify.notified() => {
                    if self.link.renew.session.load(Ordering::Relaxed) == session.id {
                        return Watched::RenewChannel;
                    }
                }
                event = events.next() => match event {
                    Some(Event::Error(error)) => return Watched::End(SessionEnd::Lost(error.to_string())),
                    Some(Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(%reason, "broker blocked the connection");
                    }
                    Some(Event::ConnectionUnblocked) => tracing::info!("broker unblocked the connection"),
                    Some(_) => {}
                    None => return Watched::End(SessionEnd::Lost("connection event stream ended".to_owned())),
                },
                _ = poll.tick() => {
                    if !session.is_alive() {
                        return Watched::End(SessionEnd::Lost("connection or channel closed".to_owned()));
                    }
                }
            }
        }
    }
}

/// Closes a replaced channel once no publish holds it any more and the
/// confirms due on it are in, or after [`RETIRE_AFTER`] (then
/// [`CLOSE_TIMEOUT`]), in the background. A publish that took the session
/// just before it was replaced publishes on it afterwards: closing the channel
/// as soon as the confirms then due were in failed that publish with
/// `InvalidChannelState(Closed)` although the broker may have taken it.
fn retire(old: Arc<Session>) {
    tokio::spawn(async move {
        let idle = async {
            // Every publish holds its session from taking it until it is answered.
            while Arc::strong_count(&old) > 1 {
                tokio::time::sleep(RETIRE_POLL).await;
            }
            old.channel.wait_for_confirms().await
        };
        let _ = tokio::time::timeout(RETIRE_AFTER, idle).await;
        close_channel(&old.channel, "replaced").await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_gauges_show_the_position_or_minus_one() {
        let registry = Registry::new();
        let gauges = LinkGauges::register(&registry, "t").unwrap();
        assert_eq!((gauges.connected.get(), gauges.address.get()), (0, -1));
        gauges.show(Some(2));
        assert_eq!((gauges.connected.get(), gauges.address.get()), (1, 2));
        gauges.show(None);
        assert_eq!((gauges.connected.get(), gauges.address.get()), (0, -1));
    }

    #[test]
    fn the_deadline_passes_only_after_the_bound_and_the_slack() {
        let deadline = Deadline::new();
        let now = deadline.origin;
        deadline.expect_within(Duration::from_secs(1));
        assert!(!deadline.passed(now + Duration::from_secs(1) + STALL_SLACK));
        assert!(deadline.passed(now + Duration::from_secs(2) + STALL_SLACK));
        deadline.finish();
        assert!(!deadline.passed(now + Duration::from_secs(1_000_000)));
    }
}
