//! Configuration of the ping service, read once from the environment.
//!
//! Only parsing and the redacted summary live here; see
//! [`pingpong_common::config`] for the shared pieces.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;

use pingpong_common::config::listen_addr;
use pingpong_common::runtime::RuntimeFlavor;
use pingpong_common::server::ServeOptions;
use pingpong_common::trace::Traces;
use pingpong_common::{AmqpConfig, ConfigError, Env, LogConfig};

/// Default listen address of ping.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8001);

/// Variable bounding the `POST /ping` requests one process handles at once.
pub const PING_MAX_IN_FLIGHT: &str = "PING_MAX_IN_FLIGHT";

/// Default of [`PING_MAX_IN_FLIGHT`]: at 64 KiB per body at most 64 MiB of
/// request bodies, far above what the broker confirms within a request's
/// deadline on one connection.
pub const DEFAULT_MAX_IN_FLIGHT: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(value) => value,
    None => NonZeroUsize::MIN,
};

/// Largest accepted [`PING_MAX_IN_FLIGHT`].
const MAX_IN_FLIGHT_LIMIT: usize = 65_536;

/// Default of `RUNTIME_FLAVOR` (BENCHMARKS.md, "CPU per ping: where it goes").
pub const DEFAULT_RUNTIME: RuntimeFlavor = RuntimeFlavor::MultiThread;

/// Everything ping needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address (`LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// Connection limits (`HTTP_HEADER_READ_TIMEOUT`, `HTTP_WRITE_TIMEOUT`,
    /// `HTTP_MAX_CONNECTIONS`).
    pub http: ServeOptions,
    /// `POST /ping` requests handled at once; more are answered 503 at
    /// once (`PING_MAX_IN_FLIGHT`).
    pub max_in_flight: NonZeroUsize,
    /// Broker settings (`RABBITMQ_*`).
    pub amqp: AmqpConfig,
    /// Logging (`LOG_FORMAT`, `RUST_LOG`).
    pub log: LogConfig,
    /// Traces (`OTEL_*`; off unless an OTLP endpoint is set).
    pub traces: Traces,
    /// The tokio runtime (`RUNTIME_FLAVOR`).
    pub runtime: RuntimeFlavor,
}

impl Config {
    /// Parses the configuration through `lookup`, reporting every bad variable.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut env = Env::new(lookup);
        let listen_addr = listen_addr(&mut env, DEFAULT_LISTEN_ADDR);
        let http = ServeOptions::from_env(&mut env);
        let max_in_flight = max_in_flight(&mut env);
        let amqp = AmqpConfig::from_env(&mut env);
        let log = LogConfig::from_env(&mut env);
        let traces = Traces::from_env(&mut env, "ping");
        let runtime = RuntimeFlavor::from_env(&mut env, DEFAULT_RUNTIME);
        env.finish(Self {
            listen_addr,
            http,
            max_in_flight,
            amqp,
            log,
            traces,
            runtime,
        })
    }

    /// Parses the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|key| std::env::var(key).ok())
    }

    /// A one-line summary with the password redacted.
    pub fn summary(&self) -> String {
        format!(
            "listen_addr={} header_read_timeout_s={} write_timeout_s={} max_connections={} max_in_flight={} broker={} log_format={} rust_log={} traces={} runtime={}",
            self.listen_addr,
            self.http.header_read_timeout.as_secs(),
            self.http.write_timeout.as_secs(),
            self.http.max_connections,
            self.max_in_flight,
            self.amqp.summary(),
            self.log.format,
            self.log.filter,
            self.traces.config.summary(),
            self.runtime
        )
    }
}

/// Reads [`PING_MAX_IN_FLIGHT`] (1 to 65536).
fn max_in_flight(env: &mut Env<'_>) -> NonZeroUsize {
    let expected = "a whole number from 1 to 65536";
    let value = env.parse(PING_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT.get(), expected);
    match NonZeroUsize::new(value) {
        Some(value) if value.get() <= MAX_IN_FLIGHT_LIMIT => value,
        _ => {
            env.problem(PING_MAX_IN_FLIGHT, Some(value.to_string()), expected);
            DEFAULT_MAX_IN_FLIGHT
        }
    }
}
