//! The AMQP connection manager: one long-lived connection per process.
//!
//! A background task connects, opens one channel, declares the topology
//! (durable `<queue>` dead-lettering to durable `<queue>.dead`), prepares the
//! channel for its role (publisher confirms or consumer prefetch) and
//! publishes the live [`Session`] through a `tokio::sync::watch`. When the
//! connection or channel dies it publishes `None`, waits with exponential
//! backoff (capped at [`MAX_BACKOFF`]) and starts over. Readiness and the
//! `broker_connected` gauge follow the watch. Publishing and consuming live in
//! the services; this module only manages the link.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties, Event};
use prometheus::IntGauge;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{AmqpConfig, QueueName};

/// First reconnect delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
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
    /// Declaring a queue failed (e.g. it exists with other arguments).
    #[error("failed to declare queue {queue}: {source}")]
    Declare {
        /// The queue name.
        queue: String,
        /// The cause.
        #[source]
        source: lapin::Error,
    },
    /// `confirm_select` or `basic_qos` failed.
    #[error("failed to prepare the channel: {0}")]
    Prepare(#[source] lapin::Error),
}

impl AmqpError {
    /// Error category for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "Connect",
            Self::Timeout { .. } => "Timeout",
            Self::Channel(_) => "Channel",
            Self::Declare { .. } => "Declare",
            Self::Prepare(_) => "Prepare",
        }
    }
}

/// Builds the AMQP URI from typed settings (no string escaping involved).
pub fn amqp_uri(config: &AmqpConfig) -> AMQPUri {
    AMQPUri {
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: config.user.clone(),
                password: config.password.expose().to_owned(),
            },
            host: config.host.clone(),
            port: config.port.get(),
        },
        vhost: config.vhost.clone(),
        query: AMQPQueryString {
            heartbeat: Some(HEARTBEAT_SECS),
            frame_max: Some(FRAME_MAX),
            connection_timeout: Some(CONNECT_TIMEOUT.as_millis().try_into().unwrap_or(u64::MAX)),
            ..AMQPQueryString::default()
        },
    }
}

/// Declares durable `<queue>.dead` and durable `<queue>` dead-lettering into
/// it through the default exchange. Idempotent.
pub async fn declare_topology(channel: &Channel, queue: &QueueName) -> Result<(), AmqpError> {
    let dead = queue.dead_letter();
    channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| AmqpError::Declare {
            queue: dead.clone(),
            source,
        })?;
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            queue_arguments(queue),
        )
        .await
        .map_err(|source| AmqpError::Declare {
            queue: queue.to_string(),
            source,
        })?;
    Ok(())
}

/// The arguments of the work queue: dead-letter to `<queue>.dead`.
pub fn queue_arguments(queue: &QueueName) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(queue.dead_letter().as_str())),
    );
    arguments
}

/// Connects once and prepares a session (used by the manager and by tests).
pub async fn open_session(
    config: &AmqpConfig,
    role: ChannelRole,
    name: &str,
) -> Result<Session, AmqpError> {
    let endpoint = format!("{}:{}", config.host, config.port);
    let attempt = async {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection = Connection::connect_uri(amqp_uri(config), properties)
            .await
            .map_err(|source| AmqpError::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::Channel)?;
        declare_topology(&channel, &config.queue).await?;
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

    /// Back to the first delay (after a successful connection).
    pub fn reset(&mut self) {
        self.next = MIN_BACKOFF;
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
    /// Starts the manager task. `connected` mirrors the connection state
    /// (1 connected, 0 not); `name` is the AMQP connection name.
    pub fn spawn(config: AmqpConfig, role: ChannelRole, name: String, connected: IntGauge) -> Self {
        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let redeclare = Arc::new(Notify::new());
        let link = BrokerLink {
            rx,
            redeclare: Arc::clone(&redeclare),
        };
        let task = tokio::spawn(manage(
            config,
            role,
            name,
            tx,
            connected,
            redeclare,
            stop.clone(),
        ));
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

async fn manage(
    config: AmqpConfig,
    role: ChannelRole,
    name: String,
    tx: watch::Sender<Option<Arc<Session>>>,
    connected: IntGauge,
    redeclare: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let endpoint = format!("{}:{}", config.host, config.port);
    loop {
        let attempt = tokio::select! {
            result = open_session(&config, role, &name) => result,
            () = stop.cancelled() => break,
        };
        match attempt {
            Ok(session) => {
                backoff.reset();
                let session = Arc::new(session);
                tx.send_replace(Some(Arc::clone(&session)));
                connected.set(1);
                tracing::info!(%endpoint, queue = %config.queue, "connected to the broker");
                let end = watch_session(&session, &config.queue, &redeclare, &stop).await;
                tx.send_replace(None);
                connected.set(0);
                match end {
                    SessionEnd::Stopped => {
                        close_session(&session).await;
                        break;
                    }
                    SessionEnd::Lost(reason) => {
                        tracing::warn!(%endpoint, %reason, "lost the broker connection, reconnecting");
                        // Release whatever is left of the old connection.
                        let _ = session.connection.close(200, "reconnecting".into()).await;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(kind = error.kind(), %error, "broker not available");
            }
        }
        let delay = backoff.next_delay();
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "waiting before reconnecting"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => break,
        }
    }
    connected.set(0);
    tracing::info!("connection manager stopped");
}

async fn watch_session(
    session: &Session,
    queue: &QueueName,
    redeclare: &Notify,
    stop: &CancellationToken,
) -> SessionEnd {
    let mut events = session.connection.events_listener();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return SessionEnd::Stopped,
            () = redeclare.notified() => match declare_topology(&session.channel, queue).await {
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
