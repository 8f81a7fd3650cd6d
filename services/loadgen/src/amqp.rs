//! Broker settings from the `RABBITMQ_*` environment and the connection they open.
//!
//! Mirrors the services' variables and defaults so one environment drives everything. The password
//! is never printed: `Settings` has a hand-written `Debug`.

use std::fmt;

use anyhow::Context as _;
use lapin::{
    Connection, ConnectionProperties,
    uri::{AMQPAuthority, AMQPUri, AMQPUserInfo},
};

/// Where the broker is and how to log in.
#[derive(Clone)]
pub struct Settings {
    host: String,
    port: u16,
    vhost: String,
    user: String,
    password: String,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("vhost", &self.vhost)
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

impl Settings {
    /// Read `RABBITMQ_HOST`, `RABBITMQ_PORT`, `RABBITMQ_VHOST`, `RABBITMQ_DEFAULT_USER` and
    /// `RABBITMQ_DEFAULT_PASS` through `lookup` (defaults: 127.0.0.1, 5672, `/`, guest, guest).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |key: &str, default: &str| lookup(key).unwrap_or_else(|| default.to_owned());
        let port_text = get("RABBITMQ_PORT", "5672");
        let port = port_text
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .with_context(|| {
                format!("RABBITMQ_PORT must be a port number 1-65535, got {port_text:?}")
            })?;
        Ok(Self {
            host: get("RABBITMQ_HOST", "127.0.0.1"),
            port,
            vhost: get("RABBITMQ_VHOST", "/"),
            user: get("RABBITMQ_DEFAULT_USER", "guest"),
            password: get("RABBITMQ_DEFAULT_PASS", "guest"),
        })
    }

    /// The connection URI, built field by field (no percent-encoding pitfalls).
    fn uri(&self) -> AMQPUri {
        AMQPUri {
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.user.clone(),
                    password: self.password.clone(),
                },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: self.vhost.clone(),
            ..AMQPUri::default()
        }
    }

    /// Open one connection to the broker.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let properties =
            ConnectionProperties::default().with_connection_name("pingpong-loadgen".into());
        Connection::connect_uri(self.uri(), properties)
            .await
            .with_context(|| {
                format!(
                    "failed to connect to RabbitMQ at {}:{}",
                    self.host, self.port
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_services() {
        let settings = Settings::from_env(|_| None).unwrap();
        let uri = settings.uri();
        assert_eq!(uri.authority.host, "127.0.0.1");
        assert_eq!(uri.authority.port, 5672);
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.authority.userinfo.username, "guest");
    }

    #[test]
    fn bad_port_is_named() {
        let error = Settings::from_env(|key| (key == "RABBITMQ_PORT").then(|| "nope".to_owned()))
            .unwrap_err();
        assert!(error.to_string().contains("RABBITMQ_PORT"), "{error}");
    }

    #[test]
    fn debug_hides_the_password() {
        let settings = Settings::from_env(|key| {
            (key == "RABBITMQ_DEFAULT_PASS").then(|| "s3cret-value".to_owned())
        })
        .unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("s3cret-value"), "{debug}");
        assert!(debug.contains("***"));
    }
}
