//! The signal: what the broker holds for pong, read from the RabbitMQ management API
//! (`GET /api/queues/%2F/<queue>`, once per partition: `<queue>`, `<queue>.1`, ...) with the
//! stack's own credentials, and summed over the partitions ([`Signal::sum`]).
//!
//! The management API (not AMQP's `queue.declare`, which counts only ready messages) gives ready
//! *and* unacknowledged messages, the consumers, their utilisation and the publish, deliver and
//! ack rates. [`parse_queue`] is pure; [`ManagementClient`] does the one HTTP request, with a
//! deadline, and never logs the password. Before a scale-in it also lists the broker's channels
//! ([`ManagementClient::channels`], see [`super::deletion_cost`]).

use std::fmt;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::decide::Signal;
use super::deletion_cost::{ChannelLoad, parse_channels};

/// Deadline of one management API request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response body read (a queue object is a few KiB).
const MAX_BODY: usize = 1 << 20;
/// Port of the RabbitMQ management API.
pub const MANAGEMENT_PORT: u16 = 15672;

/// Why the signal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The URL could not be built (bad base URL or queue name).
    #[error("invalid management API URL {url}")]
    Url {
        /// The URL, without credentials.
        url: String,
    },
    /// No answer in time.
    #[error("the management API did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection or request failed.
    #[error("the management API request failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    /// The body could not be read.
    #[error("could not read the management API response")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The credentials were refused (rotated, or the user lacks a management tag).
    #[error("the management API refused the stack's credentials (HTTP {0})")]
    Unauthorized(u16),
    /// The queue does not exist (yet).
    #[error("the queue does not exist on the broker")]
    NoQueue,
    /// Another HTTP status.
    #[error("the management API answered HTTP {0}")]
    Status(u16),
    /// The body is not the queue object expected.
    #[error("unexpected management API response: {0}")]
    Parse(String),
    /// The stack's credentials Secret could not be read.
    #[error("cannot read the credentials Secret {name}")]
    Credentials {
        /// The Secret's name.
        name: String,
        /// What went wrong (boxed: it is large).
        #[source]
        source: Box<kube::Error>,
    },
    /// The credentials Secret lacks a key.
    #[error("the credentials Secret {name} has no {key:?} key")]
    CredentialsKey {
        /// The Secret's name.
        name: String,
        /// The missing key.
        key: &'static str,
    },
}

impl SignalError {
    /// A fixed PascalCase category (metric label, status reason detail).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Url { .. } => "InvalidUrl",
            Self::Timeout(_) => "Timeout",
            Self::Request(_) => "Unreachable",
            Self::Body(_) => "BodyError",
            Self::Unauthorized(_) => "Unauthorized",
            Self::NoQueue => "NoQueue",
            Self::Status(_) => "HttpError",
            Self::Parse(_) => "BadResponse",
            Self::Credentials { .. } => "CredentialsUnreadable",
            Self::CredentialsKey { .. } => "CredentialsIncomplete",
        }
    }

    /// Every kind, so metric series exist from the first scrape.
    pub const KINDS: [&'static str; 10] = [
        "InvalidUrl",
        "Timeout",
        "Unreachable",
        "BodyError",
        "Unauthorized",
        "NoQueue",
        "HttpError",
        "BadResponse",
        "CredentialsUnreadable",
        "CredentialsIncomplete",
    ];
}

/// A broker user and password; `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Where one stack's queue is read: the management API base URL, the queue name and how many
/// partitions it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `http://host:port` (no trailing slash).
    pub base_url: String,
    /// The work queue (in vhost `/`): partition 0.
    pub queue: String,
    /// How many partitions (`spec.rabbitmq.partitions`): `<queue>` and `<queue>.1` to
    /// `<queue>.<partitions - 1>`.
    pub partitions: u8,
}

impl Target {
    /// The in-cluster address of a stack's broker Service.
    pub fn in_cluster(service: &str, namespace: &str, queue: &str) -> Self {
        Self {
            base_url: format!("http://{service}.{namespace}.svc:{MANAGEMENT_PORT}"),
            queue: queue.to_owned(),
            partitions: 1,
        }
    }

    /// The same target with `partitions` partitions (at least 1).
    #[must_use]
    pub fn with_partitions(self, partitions: u8) -> Self {
        Self {
            partitions: partitions.max(1),
            ..self
        }
    }

    /// The URL of partition 0 (the queue itself).
    pub fn url(&self) -> String {
        self.partition_url(0)
    }

    /// The URL of partition `index`'s queue. Queue names are `[A-Za-z0-9][A-Za-z0-9._:-]*` (the
    /// CRD's pattern), so only the vhost needs escaping.
    pub fn partition_url(&self, index: u8) -> String {
        let base = self.base_url.trim_end_matches('/');
        match index {
            0 => format!("{base}/api/queues/%2F/{}", self.queue),
            index => format!("{base}/api/queues/%2F/{}.{index}", self.queue),
        }
    }
}

fn number(value: &Value, pointer: &str) -> Option<f64> {
    value.pointer(pointer).and_then(Value::as_f64)
}

fn count(value: &Value, pointer: &str) -> Result<u64, SignalError> {
    match value.pointer(pointer) {
        // A queue just declared has no counts yet.
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| SignalError::Parse(format!("{pointer} is not a count: {v}"))),
    }
}

/// Reads a management API queue object (`GET /api/queues/<vhost>/<name>`) into a [`Signal`].
/// Missing counts and rates (a new queue, statistics not yet collected) are zero.
pub fn parse_queue(body: &[u8]) -> Result<Signal, SignalError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| SignalError::Parse(e.to_string()))?;
    if !value.is_object() {
        return Err(SignalError::Parse("not a JSON object".to_owned()));
    }
    let consumers = u32::try_from(count(&value, "/consumers")?).unwrap_or(u32::MAX);
    let rate = |name: &str| {
        number(&value, &format!("/message_stats/{name}_details/rate"))
            .unwrap_or(0.0)
            .max(0.0)
    };
    Ok(Signal {
        ready: count(&value, "/messages_ready")?,
        unacked: count(&value, "/messages_unacknowledged")?,
        consumers,
        utilisation: number(&value, "/consumer_utilisation")
            .or_else(|| number(&value, "/consumer_capacity"))
            .map(|u| u.clamp(0.0, 1.0)),
        publish_rate: rate("publish"),
        deliver_rate: rate("deliver_get"),
        ack_rate: rate("ack"),
    })
}

/// An HTTP client for the management API, shared by every stack (one connection pool).
#[derive(Clone)]
pub struct ManagementClient {
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for ManagementClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1)
            .build(connector);
        Self { http }
    }
}

impl ManagementClient {
    /// Reads `target`'s queue with `credentials`, every partition at once, each within
    /// [`REQUEST_TIMEOUT`], and sums them ([`Signal::sum`]); any partition's error is the
    /// result (a signal that misses a partition would scale in on a backlog it cannot see).
    pub async fn queue(
        &self,
        target: &Target,
        credentials: &Credentials,
    ) -> Result<Signal, SignalError> {
        let reads = (0..target.partitions.max(1))
            .map(|index| self.partition(target.partition_url(index), credentials));
        let signals = futures::future::try_join_all(reads).await?;
        Ok(Signal::sum(&signals))
    }

    async fn partition(
        &self,
        url: String,
        credentials: &Credentials,
    ) -> Result<Signal, SignalError> {
        let (status, body) = self.get(url, credentials).await?;
        match status {
            StatusCode::OK => parse_queue(&body),
            StatusCode::NOT_FOUND => Err(SignalError::NoQueue),
            other => Err(refused(other)),
        }
    }

    /// Lists the broker's channels with their peer and unacknowledged messages (only those two
    /// columns), within [`REQUEST_TIMEOUT`].
    pub async fn channels(
        &self,
        target: &Target,
        credentials: &Credentials,
    ) -> Result<Vec<ChannelLoad>, SignalError> {
        let url = format!(
            "{}/api/channels?columns=connection_details.peer_host,messages_unacknowledged",
            target.base_url.trim_end_matches('/')
        );
        let (status, body) = self.get(url, credentials).await?;
        match status {
            StatusCode::OK => parse_channels(&body),
            other => Err(refused(other)),
        }
    }

    /// The body of a `200 OK` answer to `GET url` (any other status is an error), within
    /// [`REQUEST_TIMEOUT`]; the broker membership check reads `GET /api/nodes` with it.
    pub async fn get_ok(
        &self,
        url: String,
        credentials: &Credentials,
    ) -> Result<Bytes, SignalError> {
        let (status, body) = self.get(url, credentials).await?;
        match status {
            StatusCode::OK => Ok(body),
            other => Err(refused(other)),
        }
    }

    async fn get(
        &self,
        url: String,
        credentials: &Credentials,
    ) -> Result<(StatusCode, Bytes), SignalError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| SignalError::Url { url: url.clone() })?;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.username, credentials.password));
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Basic {token}"))
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|_| SignalError::Url { url: url.clone() })?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(SignalError::Request)?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(SignalError::Body)?
                .to_bytes();
            Ok::<_, SignalError>((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| SignalError::Timeout(REQUEST_TIMEOUT))?
    }
}

/// Reads the broker credentials (keys `username` and `password`) from the Secret `secret_name`.
pub async fn read_credentials(
    client: &kube::Client,
    namespace: &str,
    secret_name: &str,
) -> Result<Credentials, SignalError> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), namespace);
    let secret = api
        .get(secret_name)
        .await
        .map_err(|source| SignalError::Credentials {
            name: secret_name.to_owned(),
            source: Box::new(source),
        })?;
    let value = |key: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SignalError::CredentialsKey {
                name: secret_name.to_owned(),
                key,
            })
    };
    Ok(Credentials {
        username: value("username")?,
        password: value("password")?,
    })
}

/// The error of a status other than 200 (and 404 on a queue).
fn refused(status: StatusCode) -> SignalError {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            SignalError::Unauthorized(status.as_u16())
        }
        other => SignalError::Status(other.as_u16()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counts_consumers_utilisation_and_rates() {
        let body = br#"{
            "name": "pingpong", "vhost": "/", "type": "quorum",
            "messages": 1250, "messages_ready": 1000, "messages_unacknowledged": 250,
            "consumers": 5, "consumer_utilisation": 0.8,
            "message_stats": {
                "publish": 90000, "publish_details": {"rate": 1500.5},
                "deliver_get": 80000, "deliver_get_details": {"rate": 1200.0},
                "ack": 79000, "ack_details": {"rate": 1190.0}
            }
        }"#;
        let signal = parse_queue(body).unwrap();
        assert_eq!(
            signal,
            Signal {
                ready: 1000,
                unacked: 250,
                consumers: 5,
                utilisation: Some(0.8),
                publish_rate: 1500.5,
                deliver_rate: 1200.0,
                ack_rate: 1190.0,
            }
        );
        assert_eq!(signal.backlog(), 1250);
    }

    #[test]
    fn a_new_queue_without_statistics_reads_as_empty() {
        let signal = parse_queue(br#"{"name": "pingpong", "consumers": 0}"#).unwrap();
        assert_eq!(signal, Signal::default());
        let nulls = parse_queue(br#"{"messages_ready": null, "consumer_utilisation": null}"#);
        assert_eq!(nulls.unwrap(), Signal::default());
    }

    #[test]
    fn garbage_is_an_error_not_an_empty_queue() {
        assert_eq!(parse_queue(b"<html>").unwrap_err().kind(), "BadResponse");
        assert_eq!(parse_queue(b"[]").unwrap_err().kind(), "BadResponse");
        let negative = parse_queue(br#"{"messages_ready": -1}"#).unwrap_err();
        assert_eq!(negative.kind(), "BadResponse");
    }

    #[test]
    fn in_cluster_url_escapes_the_default_vhost() {
        let target = Target::in_cluster("demo-rabbitmq", "team-a", "orders.v1");
        assert_eq!(
            target.url(),
            "http://demo-rabbitmq.team-a.svc:15672/api/queues/%2F/orders.v1"
        );
    }

    #[test]
    fn each_partition_has_its_own_url() {
        let target = Target::in_cluster("demo-rabbitmq", "team-a", "orders").with_partitions(3);
        let urls: Vec<String> = (0..target.partitions)
            .map(|i| target.partition_url(i))
            .collect();
        let base = "http://demo-rabbitmq.team-a.svc:15672/api/queues/%2F";
        assert_eq!(
            urls,
            [
                format!("{base}/orders"),
                format!("{base}/orders.1"),
                format!("{base}/orders.2")
            ]
        );
        assert_eq!(target.clone().with_partitions(0).partitions, 1);
    }

    #[test]
    fn partitions_add_up_and_keep_the_replicas_view() {
        let partition = |ready, consumers, utilisation| Signal {
            ready,
            unacked: 10,
            consumers,
            utilisation,
            publish_rate: 100.0,
            deliver_rate: 90.0,
            ack_rate: 80.0,
        };
        let total = Signal::sum(&[
            partition(1000, 3, Some(0.9)),
            partition(500, 4, None),
            partition(0, 3, Some(0.4)),
        ]);
        assert_eq!(
            total,
            Signal {
                ready: 1500,
                unacked: 30,
                consumers: 4,
                utilisation: Some(0.4),
                publish_rate: 300.0,
                deliver_rate: 270.0,
                ack_rate: 240.0,
            }
        );
        let one = partition(7, 2, Some(0.5));
        assert_eq!(Signal::sum(std::slice::from_ref(&one)), one);
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn kinds_are_listed() {
        let kinds = [
            SignalError::Timeout(REQUEST_TIMEOUT).kind(),
            SignalError::NoQueue.kind(),
            SignalError::Status(500).kind(),
            SignalError::Unauthorized(401).kind(),
        ];
        for kind in kinds {
            assert!(SignalError::KINDS.contains(&kind));
        }
    }
}
