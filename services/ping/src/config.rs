//! Configuration of the ping service, read once from the environment.
//!
//! Only parsing and the redacted summary live here; see
//! [`pingpong_common::config`] for the shared pieces.

use std::net::{Ipv4Addr, SocketAddr};

use pingpong_common::config::listen_addr;
use pingpong_common::server::ServeOptions;
use pingpong_common::{AmqpConfig, ConfigError, Env, LogConfig};

/// Default listen address of ping.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8001);

/// Everything ping needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address (`LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// Connection limits (`HTTP_HEADER_READ_TIMEOUT`).
    pub http: ServeOptions,
    /// Broker settings (`RABBITMQ_*`).
    pub amqp: AmqpConfig,
    /// Logging (`LOG_FORMAT`, `RUST_LOG`).
    pub log: LogConfig,
}

impl Config {
    /// Parses the configuration through `lookup`, reporting every bad variable.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut env = Env::new(lookup);
        let listen_addr = listen_addr(&mut env, DEFAULT_LISTEN_ADDR);
        let http = ServeOptions::from_env(&mut env);
        let amqp = AmqpConfig::from_env(&mut env);
        let log = LogConfig::from_env(&mut env);
        env.finish(Self {
            listen_addr,
            http,
            amqp,
            log,
        })
    }

    /// Parses the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|key| std::env::var(key).ok())
    }

    /// A one-line summary with the password redacted.
    pub fn summary(&self) -> String {
        format!(
            "listen_addr={} header_read_timeout_s={} broker={} log_format={} rust_log={}",
            self.listen_addr,
            self.http.header_read_timeout.as_secs(),
            self.amqp.summary(),
            self.log.format,
            self.log.filter
        )
    }
}
