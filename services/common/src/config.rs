//! Configuration pieces shared by the services, parsed from a lookup function.
//!
//! [`Env`] wraps a lookup fn (the process environment in production, a map in
//! tests) and collects *every* problem before failing, so a bad start-up names
//! all bad variables at once. Secret values are wrapped in [`Secret`] and never
//! echoed, not even in error messages. This module does no I/O of its own:
//! a `*_FILE` variable only names a file that [`crate::credential`] reads on
//! every use.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

use crate::address::{BrokerAddress, BrokerAddresses, DEFAULT_AMQP_PORT};
use crate::credential::{Setting, SettingFile};
pub use crate::queue::{Partitions, QueueName};
pub use crate::secret::Secret;
use crate::topology::QueueType;

/// Variable naming the listen address of a service.
pub const LISTEN_ADDR: &str = "LISTEN_ADDR";
/// Variable listing the broker nodes (`host:port,host:port`); wins over
/// `RABBITMQ_HOST`/`RABBITMQ_PORT`.
pub const RABBITMQ_ADDRESSES: &str = "RABBITMQ_ADDRESSES";
/// Variable naming the broker host (when `RABBITMQ_ADDRESSES` is unset).
pub const RABBITMQ_HOST: &str = "RABBITMQ_HOST";
/// Variable naming the broker AMQP port.
pub const RABBITMQ_PORT: &str = "RABBITMQ_PORT";
/// Variable naming the broker virtual host.
pub const RABBITMQ_VHOST: &str = "RABBITMQ_VHOST";
/// Variable naming the broker user.
pub const RABBITMQ_DEFAULT_USER: &str = "RABBITMQ_DEFAULT_USER";
/// Variable naming the broker password (a secret).
pub const RABBITMQ_DEFAULT_PASS: &str = "RABBITMQ_DEFAULT_PASS";
/// Variable naming a file holding the broker user (read on every connect).
pub const RABBITMQ_DEFAULT_USER_FILE: &str = "RABBITMQ_DEFAULT_USER_FILE";
/// Variable naming a file holding the broker password (read on every connect).
pub const RABBITMQ_DEFAULT_PASS_FILE: &str = "RABBITMQ_DEFAULT_PASS_FILE";
/// Variable naming the durable work queue.
pub const RABBITMQ_QUEUE: &str = "RABBITMQ_QUEUE";
/// Variable selecting the queue type (`classic` or `quorum`).
pub const RABBITMQ_QUEUE_TYPE: &str = "RABBITMQ_QUEUE_TYPE";
/// Variable: how many queues the work is spread over (1 to 32, default 1).
pub const RABBITMQ_PARTITIONS: &str = "RABBITMQ_PARTITIONS";
/// Variable selecting the log output format.
pub const LOG_FORMAT: &str = "LOG_FORMAT";
/// Variable holding the tracing filter directives.
pub const RUST_LOG: &str = "RUST_LOG";

/// One bad variable: its name, the offending value (absent for secrets) and
/// what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The environment variable name.
    pub variable: &'static str,
    /// The value that was rejected; `None` when the variable is secret.
    pub value: Option<String>,
    /// What a valid value looks like.
    pub expected: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}={value:?}: expected {}", self.variable, self.expected),
            None => write!(f, "{}: expected {}", self.variable, self.expected),
        }
    }
}

/// Every configuration problem found at start-up, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration ({} problem(s)): {}", .problems.len(), join_problems(.problems))]
pub struct ConfigError {
    /// The problems, in the order the variables were read.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// Error category for logs and metrics.
    pub fn kind(&self) -> &'static str {
        "InvalidConfig"
    }
}

fn join_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A source of variables that records every problem it finds.
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<ConfigProblem>,
}

impl<'a> Env<'a> {
    /// Reads variables through `lookup` (e.g. `&|k| std::env::var(k).ok()`).
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
        }
    }

    /// The raw value of a variable; an empty value counts as unset.
    pub fn raw(&self, variable: &str) -> Option<String> {
        (self.lookup)(variable).filter(|v| !v.trim().is_empty())
    }

    /// Records a problem with a non-secret variable.
    pub fn problem(&mut self, variable: &'static str, value: Option<String>, expected: &str) {
        self.problems.push(ConfigProblem {
            variable,
            value,
            expected: expected.to_owned(),
        });
    }

    /// Parses a typed variable, falling back to `default` when unset. On a bad
    /// value the problem is recorded and `default` is returned so parsing can
    /// go on and find further problems.
    pub fn parse<T: FromStr>(&mut self, variable: &'static str, default: T, expected: &str) -> T {
        match self.raw(variable) {
            None => default,
            Some(value) => match value.trim().parse() {
                Ok(parsed) => parsed,
                Err(_) => {
                    self.problem(variable, Some(value), expected);
                    default
                }
            },
        }
    }

    /// A string variable with a default.
    pub fn string(&mut self, variable: &'static str, default: &str) -> String {
        self.raw(variable).unwrap_or_else(|| default.to_owned())
    }

    /// A secret variable with a default. Empty values are unset.
    pub fn secret(&mut self, variable: &'static str, default: &str) -> Secret {
        Secret::new(
            (self.lookup)(variable)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned()),
        )
    }

    /// The file named by `file_variable` (`X_FILE`), when set. Setting both
    /// `variable` (`X`) and `X_FILE` is a problem: which one wins would be a
    /// guess. Neither value is echoed (the first may be a secret).
    pub fn file_variable(
        &mut self,
        variable: &'static str,
        file_variable: &'static str,
    ) -> Option<SettingFile> {
        let path = self.raw(file_variable)?;
        if (self.lookup)(variable).is_some_and(|v| !v.is_empty()) {
            self.problem(
                file_variable,
                None,
                &format!("either {variable} or {file_variable}, not both"),
            );
        }
        Some(SettingFile {
            variable: file_variable,
            path: PathBuf::from(path.trim()),
        })
    }

    /// A string variable with a default, or the file named by `X_FILE`.
    pub fn string_or_file(
        &mut self,
        variable: &'static str,
        file_variable: &'static str,
        default: &str,
    ) -> Setting<String> {
        match self.file_variable(variable, file_variable) {
            Some(file) => Setting::File(file),
            None => Setting::Value(self.string(variable, default)),
        }
    }

    /// A secret variable with a default, or the file named by `X_FILE`.
    pub fn secret_or_file(
        &mut self,
        variable: &'static str,
        file_variable: &'static str,
        default: &str,
    ) -> Setting<Secret> {
        match self.file_variable(variable, file_variable) {
            Some(file) => Setting::File(file),
            None => Setting::Value(self.secret(variable, default)),
        }
    }

    /// Fails with every recorded problem, or succeeds with `value`.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

/// Parses `LISTEN_ADDR` (a socket address such as `0.0.0.0:8001`).
pub fn listen_addr(env: &mut Env<'_>, default: SocketAddr) -> SocketAddr {
    env.parse(
        LISTEN_ADDR,
        default,
        "a socket address such as 0.0.0.0:8001",
    )
}

/// What a broker address holding `user:password@` must look like instead.
const CREDENTIALS_IN_ADDRESS: &str = "a host name or IP address without credentials (set \
     RABBITMQ_DEFAULT_USER and RABBITMQ_DEFAULT_PASS instead of user:password@host)";

/// Where and how to reach RabbitMQ, and which queue to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// Broker nodes, tried in order (`RABBITMQ_ADDRESSES`, else
    /// `RABBITMQ_HOST:RABBITMQ_PORT`).
    pub addresses: BrokerAddresses,
    /// Virtual host (default `/`).
    pub vhost: String,
    /// User name (`RABBITMQ_DEFAULT_USER`, or the file of
    /// `RABBITMQ_DEFAULT_USER_FILE` read on every connect).
    pub user: Setting<String>,
    /// Password, never printed (`RABBITMQ_DEFAULT_PASS`, or the file of
    /// `RABBITMQ_DEFAULT_PASS_FILE` read on every connect).
    pub password: Setting<Secret>,
    /// The durable work queue.
    pub queue: QueueName,
    /// Classic or quorum (`RABBITMQ_QUEUE_TYPE`, default classic).
    pub queue_type: QueueType,
    /// How many queues the work is spread over (`RABBITMQ_PARTITIONS`,
    /// default 1): see [`crate::queue`].
    pub partitions: Partitions,
}

impl AmqpConfig {
    /// Default queue name.
    pub const DEFAULT_QUEUE: &'static str = "pingpong";

    /// Reads the `RABBITMQ_*` variables.
    pub fn from_env(env: &mut Env<'_>) -> Self {
        let mut host = env.string(RABBITMQ_HOST, "127.0.0.1");
        if host.contains('@') {
            // `user:password@host`: the value holds credentials, so it is
            // neither echoed here nor accepted (it would be logged verbatim).
            env.problem(RABBITMQ_HOST, None, CREDENTIALS_IN_ADDRESS);
            host = "127.0.0.1".to_owned();
        } else if let Err(expected) = BrokerAddress::new(&host, DEFAULT_AMQP_PORT) {
            env.problem(RABBITMQ_HOST, Some(host), expected);
            host = "127.0.0.1".to_owned();
        }
        let port = env.parse(
            RABBITMQ_PORT,
            DEFAULT_AMQP_PORT,
            "a TCP port number 1-65535",
        );
        let single = BrokerAddress { host, port };
        let addresses = match env.raw(RABBITMQ_ADDRESSES) {
            None => BrokerAddresses::single(single),
            Some(raw) if raw.contains('@') => {
                env.problem(RABBITMQ_ADDRESSES, None, CREDENTIALS_IN_ADDRESS);
                BrokerAddresses::single(single)
            }
            Some(raw) => match raw.parse::<BrokerAddresses>() {
                Ok(addresses) => addresses,
                Err(expected) => {
                    env.problem(RABBITMQ_ADDRESSES, Some(raw), &expected);
                    BrokerAddresses::single(single)
                }
            },
        };
        let vhost = env.string(RABBITMQ_VHOST, "/");
        let user = env.string_or_file(RABBITMQ_DEFAULT_USER, RABBITMQ_DEFAULT_USER_FILE, "guest");
        let password =
            env.secret_or_file(RABBITMQ_DEFAULT_PASS, RABBITMQ_DEFAULT_PASS_FILE, "guest");
        let raw_queue = env.string(RABBITMQ_QUEUE, Self::DEFAULT_QUEUE);
        let queue = match QueueName::new(&raw_queue) {
            Ok(queue) => queue,
            Err(expected) => {
                env.problem(RABBITMQ_QUEUE, Some(raw_queue), expected);
                QueueName::unchecked(Self::DEFAULT_QUEUE)
            }
        };
        let queue_type = env.parse(RABBITMQ_QUEUE_TYPE, QueueType::Classic, "classic or quorum");
        let partitions = env.parse(
            RABBITMQ_PARTITIONS,
            Partitions::ONE,
            "a whole number of partitions from 1 to 32",
        );
        if queue.as_str().len() > partitions.max_queue_len() {
            env.problem(
                RABBITMQ_QUEUE,
                Some(queue.to_string()),
                &format!(
                    "a queue name of at most {} bytes with {partitions} partitions \
                     (`<queue>.<partition>.dead` must fit in 255)",
                    partitions.max_queue_len()
                ),
            );
        }
        Self {
            addresses,
            vhost,
            user,
            password,
            queue,
            queue_type,
            partitions,
        }
    }

    /// The queues of every partition, partition 0 (the queue itself) first.
    pub fn queues(&self) -> Vec<QueueName> {
        self.partitions.queues(&self.queue)
    }

    /// A one-line description without the password, for start-up logs
    /// (a file-backed user or password shows as `<path>`).
    pub fn summary(&self) -> String {
        format!(
            "amqp://{}:{}@{}/{} queue={} queue_type={} partitions={}",
            self.user,
            self.password,
            self.addresses,
            self.vhost.replace('/', "%2f"),
            self.queue,
            self.queue_type,
            self.partitions
        )
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(()),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Logging settings: `LOG_FORMAT` and `RUST_LOG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Filter directives (validated).
    pub filter: String,
}

impl LogConfig {
    /// Default filter when `RUST_LOG` is unset.
    pub const DEFAULT_FILTER: &'static str = "info";

    /// Added by [`crate::telemetry::init`] to every filter that does not name
    /// this target itself:
    /// lapin logs a message the broker returned (unroutable) at WARN with
    /// its whole body, and message bodies never go to the log. ping logs the
    /// return itself, by message id.
    pub const QUIET_RETURNS: &'static str = "lapin::returned_messages=off";

    /// Reads `LOG_FORMAT` and `RUST_LOG`, checking that the filter parses.
    pub fn from_env(env: &mut Env<'_>) -> Self {
        let format = env.parse(LOG_FORMAT, LogFormat::Text, "text or json");
        let filter = env.string(RUST_LOG, Self::DEFAULT_FILTER);
        let filter = match EnvFilter::builder().parse(&filter) {
            Ok(_) => filter,
            Err(_) => {
                env.problem(
                    RUST_LOG,
                    Some(filter),
                    "tracing filter directives such as info or pingpong_ping=debug",
                );
                Self::DEFAULT_FILTER.to_owned()
            }
        };
        Self { format, filter }
    }
}
