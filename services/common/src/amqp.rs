//! The AMQP connection manager: one long-lived connection per process.
//!
//! A background task connects to one of the configured broker nodes, opens
//! one channel, declares the topology ([`crate::topology`]), prepares the
//! channel for its role (publisher confirms or consumer prefetch) and
//! publishes the live [`Session`] through a `tokio::sync::watch`.
//!
//! Failover: the nodes of `RABBITMQ_ADDRESSES` are tried in order, starting
//! with the first. When a session is lost the next attempt goes to the *next*
//! node at once (the lost one may be the node that died); only after every
//! node failed in one round does the manager wait, with exponential backoff
//! ([`MIN_BACKOFF`]..[`MAX_BACKOFF`]) and jitter (half the delay plus a random
//! share of the other half) so that many clients do not reconnect in lock-step. A queue that exists with other arguments is a
//! configuration problem, not an outage: it is logged at `error` with the
//! migration steps and retried only every [`MISMATCH_RETRY`].
//!
//! Readiness and the [`LinkGauges`] (`broker_connected`, `broker_address`:
//! the position of the node in use in the configured list) follow the watch.
//! Publishing and consuming live in the services; this module only manages
//! the link.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties, Event};
use prometheus::{IntGauge, Registry};
use rand::Rng as _;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::address::BrokerAddress;
use crate::config::{AmqpConfig, QueueName};
use crate::credential::SettingFileError;
use crate::topology::{QueueType, TopologyError, declare_topology};

/// First reconnect delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Delay before trying again after a queue-arguments mismatch (needs a human).
pub const MISMATCH_RETRY: Duration = Duration::from_secs(30);
/// Bound on one connection attempt (TCP + handshake + set-up).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// AMQP heartbeat requested from the broker, in seconds.
pub const HEARTBEAT_SECS: u16 = 10;
/// AMQP frame size requested from the broker. lapin keeps two I/O buffers
/// of 32 frames each, zero-filled: with RabbitMQ's default of 128 KiB that is
/// 8 MiB of resident memory per connection; 32 KiB keeps it at 2 MiB while a
/// 64 KiB message still needs only three body frames.
pub const FRAME_MAX: u32 = 32 * 1024;
/// How often the manager polls connection and channel state.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What the managed channel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelRole {
    /// Publishing with publisher confirms (`confirm_select`).
    Publisher,
    /// Consuming with manual acks and this prefetch (`basic_qos`).
    Consumer {
        /// Unacknowledged deliveries the broker may push at once.
        prefetch: u16,
    },
}

/// A live connection and its prepared channel.
pub struct Session {
    /// The process's single connection.
    pub connection: Connection,
    /// The channel, set up for its [`ChannelRole`].
    pub channel: Channel,
    /// The broker node it is connected to.
    pub address: BrokerAddress,
}

impl Session {
    /// Whether both the connection and the channel are still usable.
    pub fn is_alive(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

/// Why connecting or setting up failed.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// TCP connect or AMQP handshake failed.
    #[error("failed to connect to the broker at {endpoint}: {source}")]
    Connect {
        /// `host:port`, never the credentials.
        endpoint: String,
        /// The cause.
        #[source]
        source: lapin::Error,
    },
    /// The attempt did not finish within [`CONNECT_TIMEOUT`].
    #[error("connecting to the broker at {endpoint} timed out")]
    Timeout {
        /// `host:port`.
        endpoint: String,
    },
    /// Opening the channel failed.
    #[error("failed to open a channel: {0}")]
    Channel(#[source] lapin::Error),
    /// Declaring the queues failed (e.g. one exists with other arguments).
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// `confirm_select` or `basic_qos` failed.
    #[error("failed to prepare the channel: {0}")]
    Prepare(#[source] lapin::Error),
    /// The user or password file (`RABBITMQ_DEFAULT_*_FILE`) could not be
    /// read; retried like an outage (a Secret volume may be updating).
    #[error(transparent)]
    Credentials(#[from] SettingFileError),
}

impl AmqpError {
    /// Error category for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "Connect",
            Self::Timeout { .. } => "Timeout",
            Self::Channel(_) => "Channel",
            Self::Topology(error) => error.kind(),
            Self::Prepare(_) => "Prepare",
            Self::Credentials(error) => error.kind(),
        }
    }

    /// Whether retrying cannot help until the configuration or the queue changes.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Topology(error) if error.is_permanent())
    }
}

/// Builds the AMQP URI of one node from typed settings (no string escaping).
/// A file-backed user or password is read now, so every (re)connect uses the
/// file's current content (a rotated Secret needs no restart).
pub fn amqp_uri(config: &AmqpConfig, address: &BrokerAddress) -> Result<AMQPUri, AmqpError> {
    let username = config.user.read()?;
    let password = config.password.read()?;
    Ok(AMQPUri {
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username,
                password: password.expose().to_owned(),
            },
            host: address.host.clone(),
            port: address.port.get(),
        },
        vhost: config.vhost.clone(),
        query: AMQPQueryString {
            heartbeat: Some(HEARTBEAT_SECS),
            frame_max: Some(FRAME_MAX),
            connection_timeout: Some(CONNECT_TIMEOUT.as_millis().try_into().unwrap_or(u64::MAX)),
            ..AMQPQueryString::default()
        },
    })
}

/// Opens one connection to `address`, within [`CONNECT_TIMEOUT`].
pub async fn connect(
    config: &AmqpConfig,
    address: &BrokerAddress,
    name: &str,
) -> Result<Connection, AmqpError> {
    let endpoint = address.to_string();
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connecting = Connection::connect_uri(amqp_uri(config, address)?, properties);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(AmqpError::Connect { endpoint, source }),
        Err(_) => Err(AmqpError::Timeout { endpoint }),
    }
}

/// Connects to the first configured node that answers (one round, no
/// backoff: for tools and tests). Fails with the last node's error.
pub async fn connect_any(config: &AmqpConfig, name: &str) -> Result<Connection, AmqpError> {
    first_answering(config, |address| connect(config, address, name)).await
}

/// [`open_session`] on the first configured node that accepts one (one
/// round, no backoff: for tools and tests).
pub async fn open_session_any(
    config: &AmqpConfig,
    role: ChannelRole,
    name: &str,
) -> Result<Session, AmqpError> {
    first_answering(config, |address| open_session(config, address, role, name)).await
}

async fn first_answering<'a, T, F, Fut>(config: &'a AmqpConfig, attempt: F) -> Result<T, AmqpError>
where
    F: Fn(&'a BrokerAddress) -> Fut,
    Fut: Future<Output = Result<T, AmqpError>>,
{
    let mut last = None;
    for address in config.addresses.as_slice() {
        match attempt(address).await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_permanent() => return Err(error),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| AmqpError::Timeout {
        endpoint: config.addresses.to_string(),
    }))
}

/// Connects once to `address` and prepares a session: a channel, the
/// declared topology and the role's set-up (used by the manager, the tools
/// and tests).
pub async fn open_session(
    config: &AmqpConfig,
    address: &BrokerAddress,
    role: ChannelRole,
    name: &str,
) -> Result<Session, AmqpError> {
    let endpoint = address.to_string();
    let attempt = async {
        let connection = connect(config, address, name).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::Channel)?;
        if let Err(error) = declare_topology(&connection, &config.queue, config.queue_type).await {
            let _ = connection.close(200, "declare failed".into()).await;
            return Err(error.into());
        }
        match role {
            ChannelRole::Publisher => channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(AmqpError::Prepare)?,
            ChannelRole::Consumer { prefetch } => channel
                .basic_qos(prefetch, lapin::options::BasicQosOptions::default())
                .await
                .map_err(AmqpError::Prepare)?,
        }
        Ok(Session {
            connection,
            channel,
            address: address.clone(),
        })
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(AmqpError::Timeout { endpoint }),
    }
}

/// Exponential backoff between [`MIN_BACKOFF`] and [`MAX_BACKOFF`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: MIN_BACKOFF }
    }
}

impl Backoff {
    /// The delay to wait now; doubles the following one up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }

    /// [`Self::next_delay`] with jitter: a uniform delay between half of it
    /// and all of it, so clients that lost the same node spread out.
    pub fn next_jittered(&mut self) -> Duration {
        let delay = self.next_delay();
        let half = delay / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Back to the first delay (after a successful connection).
    pub fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

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

/// Read side of the manager: the current session, if connected.
#[derive(Clone)]
pub struct BrokerLink {
    rx: watch::Receiver<Option<Arc<Session>>>,
    redeclare: Arc<Notify>,
}

impl BrokerLink {
    /// The current live session, if any.
    pub fn session(&self) -> Option<Arc<Session>> {
        self.rx.borrow().as_ref().filter(|s| s.is_alive()).cloned()
    }

    /// The node of the current live session, if any (for readiness).
    pub fn node(&self) -> Option<BrokerAddress> {
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
        let redeclare = Arc::new(Notify::new());
        let link = BrokerLink {
            rx,
            redeclare: Arc::clone(&redeclare),
        };
        let manager = Manager {
            config,
            role,
            name,
            tx,
            gauges,
            redeclare,
            stop: stop.clone(),
        };
        let task = tokio::spawn(manager.run());
        Self { link, stop, task }
    }

    /// The read side, for publishers, consumers and readiness.
    pub fn link(&self) -> BrokerLink {
        self.link.clone()
    }

    /// Stops reconnecting and closes the channel and connection gracefully.
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

struct Manager {
    config: AmqpConfig,
    role: ChannelRole,
    name: String,
    tx: watch::Sender<Option<Arc<Session>>>,
    gauges: LinkGauges,
    redeclare: Arc<Notify>,
    stop: CancellationToken,
}

impl Manager {
    async fn run(self) {
        let addresses = self.config.addresses.clone();
        let mut backoff = Backoff::default();
        let mut position = 0usize;
        // Attempts that failed since the last session (or start).
        let mut failed_in_round = 0usize;
        loop {
            let address = addresses.get(position);
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
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.stop.cancelled() => break,
                }
            }
        }
        self.gauges.show(None);
        tracing::info!("connection manager stopped");
    }

    /// Publishes `session` until it is lost or the manager stops.
    async fn hold(&self, session: Arc<Session>, position: usize) -> SessionEnd {
        let address = self.config.addresses.get(position);
        self.tx.send_replace(Some(Arc::clone(&session)));
        self.gauges.show(Some(position));
        tracing::info!(node = %address, position, queue = %self.config.queue, queue_type = %self.config.queue_type, "connected to the broker");
        let end = watch_session(
            &session,
            &self.config.queue,
            self.config.queue_type,
            &self.redeclare,
            &self.stop,
        )
        .await;
        self.tx.send_replace(None);
        self.gauges.show(None);
        match &end {
            SessionEnd::Stopped => close_session(&session).await,
            // Release whatever is left of the old connection.
            SessionEnd::Lost(_) => {
                let _ = session.connection.close(200, "reconnecting".into()).await;
            }
        }
        end
    }
}

async fn watch_session(
    session: &Session,
    queue: &QueueName,
    queue_type: QueueType,
    redeclare: &Notify,
    stop: &CancellationToken,
) -> SessionEnd {
    let mut events = session.connection.events_listener();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return SessionEnd::Stopped,
            () = redeclare.notified() => match declare_topology(&session.connection, queue, queue_type).await {
                Ok(()) => tracing::warn!(%queue, "declared the topology again after an unroutable publish"),
                Err(error) => return SessionEnd::Lost(error.to_string()),
            },
            event = events.next() => match event {
                Some(Event::Error(error)) => return SessionEnd::Lost(error.to_string()),
                Some(Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(%reason, "broker blocked the connection");
                }
                Some(Event::ConnectionUnblocked) => tracing::info!("broker unblocked the connection"),
                Some(_) => {}
                None => return SessionEnd::Lost("connection event stream ended".to_owned()),
            },
            _ = poll.tick() => {
                if !session.is_alive() {
                    return SessionEnd::Lost("connection or channel closed".to_owned());
                }
            }
        }
    }
}

async fn close_session(session: &Session) {
    if session.channel.status().connected()
        && let Err(error) = session.channel.close(200, "shutdown".into()).await
    {
        tracing::debug!(%error, "closing the channel failed");
    }
    if session.connection.status().connected()
        && let Err(error) = session.connection.close(200, "shutdown".into()).await
    {
        tracing::debug!(%error, "closing the connection failed");
    }
    tracing::info!("closed the broker connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_backoff_stays_within_half_and_full_delay() {
        let mut backoff = Backoff::default();
        let mut plain = Backoff::default();
        for _ in 0..12 {
            let full = plain.next_delay();
            let jittered = backoff.next_jittered();
            assert!(
                jittered >= full / 2 && jittered <= full,
                "{jittered:?} vs {full:?}"
            );
        }
        assert_eq!(plain.next_delay(), MAX_BACKOFF);
    }

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
}
