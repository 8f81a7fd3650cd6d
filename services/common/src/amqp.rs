//! The AMQP connection manager: one long-lived connection per process.
//!
//! A background task ([`manager`]) connects to one of the configured broker
//! nodes, opens one channel, declares the topology ([`crate::topology`]),
//! prepares the channel for its role (publisher confirms or consumer
//! prefetch) and publishes the live [`Session`] through a `tokio::sync::watch`.
//! This file opens sessions; [`manager`] keeps one alive and replaces it;
//! [`backoff`] holds the pure timing policies.
//!
//! Failover: the nodes of `RABBITMQ_ADDRESSES` are tried in order, starting
//! with the first. When a session is lost the next attempt goes to the *next*
//! node at once (the lost one may be the node that died); only after every
//! node failed in one round does the manager wait, with exponential backoff
//! ([`MIN_BACKOFF`]..[`MAX_BACKOFF`]) and jitter (half the delay plus a random
//! share of the other half) so that many clients do not reconnect in
//! lock-step. A queue that exists with other arguments is a configuration
//! problem, not an outage: it is logged at `error` with the migration steps
//! and retried only every [`MISMATCH_RETRY`].
//!
//! A publisher can ask for a fresh channel on the same connection
//! ([`BrokerLink::request_new_channel`]): RabbitMQ 3.10 keeps a per-channel
//! quorum-queue client whose first publish can be refused for good when it
//! happens while the queue has no leader (see [`manager`]).
//!
//! Readiness and the [`LinkGauges`] (`broker_connected`, `broker_address`:
//! the position of the node in use in the configured list) follow the watch.
//! Publishing and consuming live in the services; this module only manages
//! the link.

pub mod backoff;
pub mod manager;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties};

use crate::address::BrokerAddress;
use crate::config::AmqpConfig;
use crate::credential::SettingFileError;
use crate::topology::{TopologyError, declare_topology};

pub use backoff::{Backoff, RenewGate};
pub use manager::{BrokerLink, ConnectionManager, LinkGauges};

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
/// Bound on closing a channel or a connection (lost, replaced or at
/// shutdown): a peer that stopped reading must not hold the manager.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The process's single connection (shared by the sessions that
    /// replace only the channel).
    pub connection: Arc<Connection>,
    /// The channel, set up for its [`ChannelRole`].
    pub channel: Channel,
    /// The broker node it is connected to.
    pub address: BrokerAddress,
    /// Unique in the process: a new channel is a new session id.
    pub id: u64,
    /// Unique in the process per connection: kept when only the channel is
    /// replaced.
    pub connection_id: u64,
}

/// Source of [`Session::id`] and [`Session::connection_id`] (never reused,
/// unlike an address: an id cannot be inherited by a later session).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
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
        let connection = Arc::new(connect(config, address, name).await?);
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::Channel)?;
        if let Err(error) = declare_topology(&connection, &config.queues(), config.queue_type).await
        {
            close_connection(&connection, "declare failed").await;
            return Err(error.into());
        }
        prepare_channel(&channel, role).await?;
        Ok(Session {
            connection,
            channel,
            address: address.clone(),
            id: next_id(),
            connection_id: next_id(),
        })
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(AmqpError::Timeout { endpoint }),
    }
}

/// A session on the same connection as `session` with a new channel prepared
/// for `role`, within [`CONNECT_TIMEOUT`]. The topology is not declared
/// again (the connection already did).
pub async fn renew_channel(session: &Session, role: ChannelRole) -> Result<Session, AmqpError> {
    let attempt = async {
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(AmqpError::Channel)?;
        prepare_channel(&channel, role).await?;
        Ok(Session {
            connection: Arc::clone(&session.connection),
            channel,
            address: session.address.clone(),
            id: next_id(),
            connection_id: session.connection_id,
        })
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(AmqpError::Timeout {
            endpoint: session.address.to_string(),
        }),
    }
}

async fn prepare_channel(channel: &Channel, role: ChannelRole) -> Result<(), AmqpError> {
    match role {
        ChannelRole::Publisher => channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(AmqpError::Prepare),
        ChannelRole::Consumer { prefetch } => channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(AmqpError::Prepare),
    }
}

/// Closes `channel` if it is still open, within [`CLOSE_TIMEOUT`]; failures
/// are only logged (the channel is being given up anyway).
pub async fn close_channel(channel: &Channel, reason: &str) {
    if !channel.status().connected() {
        return;
    }
    match tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, reason.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the channel failed"),
        Err(_) => tracing::warn!(
            timeout_s = CLOSE_TIMEOUT.as_secs(),
            "closing the channel timed out"
        ),
    }
}

/// Closes `connection` if it is still open, within [`CLOSE_TIMEOUT`];
/// failures are only logged.
pub async fn close_connection(connection: &Connection, reason: &str) {
    if !connection.status().connected() {
        return;
    }
    match tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the connection failed"),
        Err(_) => tracing::warn!(
            timeout_s = CLOSE_TIMEOUT.as_secs(),
            "closing the connection timed out"
        ),
    }
}
