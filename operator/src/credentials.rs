//! Broker and PostgreSQL credentials: the only place in the operator that uses randomness.
//!
//! [`generate`] and [`generate_password`] are called at the edge — by observe when a Secret the
//! operator owns does not exist yet, and by `render` — and the result is passed into the pure
//! builders. A reconcile never calls them for a stack whose Secret exists, so a password is
//! never rotated by accident.

use std::fmt;

use k8s_openapi::api::core::v1::Secret;

use rand::Rng;
use rand::distr::{Alphanumeric, Distribution};

/// Length of a generated password (alphanumeric, so URL-safe; about 238 bits).
pub const PASSWORD_LEN: usize = 40;
/// Length of a generated Erlang cookie.
pub const COOKIE_LEN: usize = 48;
/// Length of the random suffix of a generated user name.
pub const USER_SUFFIX_LEN: usize = 8;
/// Prefix of a generated user name.
pub const USER_PREFIX: &str = "pingpong-";

/// Secret key of the broker user name.
pub const USERNAME_KEY: &str = "username";
/// Secret key of the broker password.
pub const PASSWORD_KEY: &str = "password";

/// A secret string whose `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; only for writing it into a Secret object.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The broker user, its password and the Erlang cookie the broker nodes share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerCredentials {
    /// RabbitMQ user name (not secret, but only stored in the Secret).
    pub username: String,
    /// RabbitMQ password.
    pub password: SecretValue,
    /// Erlang distribution cookie shared by the broker nodes.
    pub erlang_cookie: SecretValue,
}

/// The broker user and password as the credentials Secret holds them (generated, or read from
/// an existing Secret by observe): what the broker's definitions file declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerLogin {
    /// RabbitMQ user name.
    pub username: String,
    /// Its password.
    pub password: SecretValue,
}

impl BrokerCredentials {
    /// The user and password.
    pub fn login(&self) -> BrokerLogin {
        BrokerLogin {
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }
}

/// Generates fresh credentials: user `pingpong-<8 lowercase alphanumerics>`, a 40-character
/// alphanumeric password and a 48-character alphanumeric Erlang cookie, from the thread-local
/// cryptographically secure generator.
pub fn generate() -> BrokerCredentials {
    let mut rng = rand::rng();
    let suffix: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(USER_SUFFIX_LEN)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect();
    BrokerCredentials {
        username: format!("{USER_PREFIX}{suffix}"),
        password: SecretValue(random_alphanumeric(&mut rng, PASSWORD_LEN)),
        erlang_cookie: SecretValue(random_alphanumeric(&mut rng, COOKIE_LEN)),
    }
}

/// Generates a fresh 40-character alphanumeric password (the provisioned PostgreSQL's), from
/// the thread-local cryptographically secure generator.
pub fn generate_password() -> SecretValue {
    SecretValue(random_alphanumeric(&mut rand::rng(), PASSWORD_LEN))
}

fn random_alphanumeric(rng: &mut impl Rng, len: usize) -> String {
    Alphanumeric
        .sample_iter(rng)
        .take(len)
        .map(char::from)
        .collect()
}

/// A Secret value as a file-reading service sees it: UTF-8 text without one trailing line break
/// (`\n` or `\r\n`), which ping and pong drop from their `*_FILE`s too. `None` when absent or
/// not UTF-8.
fn text_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = &secret.data.as_ref()?.get(key)?.0;
    let mut text = String::from_utf8(bytes.clone()).ok()?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Some(text)
}

/// The broker user and password of the credentials Secret, for the definitions file.
pub fn broker_login(secret: &Secret) -> Option<BrokerLogin> {
    Some(BrokerLogin {
        username: text_value(secret, USERNAME_KEY).filter(|u| !u.is_empty())?,
        password: SecretValue::new(text_value(secret, PASSWORD_KEY).filter(|p| !p.is_empty())?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_have_the_documented_shape() {
        let c = generate();
        assert!(c.username.starts_with(USER_PREFIX));
        assert_eq!(c.username.len(), USER_PREFIX.len() + USER_SUFFIX_LEN);
        assert_ne!(c.username, "guest");
        assert_eq!(c.password.expose().len(), PASSWORD_LEN);
        assert_eq!(c.erlang_cookie.expose().len(), COOKIE_LEN);
        assert!(
            c.password
                .expose()
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn two_generations_differ() {
        let (p, q) = (generate_password(), generate_password());
        assert_eq!(p.expose().len(), PASSWORD_LEN);
        assert_ne!(p, q);
        let (a, b) = (generate(), generate());
        assert_ne!(a.password, b.password);
        assert_ne!(a.erlang_cookie, b.erlang_cookie);
    }

    #[test]
    fn debug_never_prints_secrets() {
        let c = generate();
        let debug = format!("{c:?}");
        assert!(!debug.contains(c.password.expose()));
        assert!(!debug.contains(c.erlang_cookie.expose()));
        assert!(debug.contains("***"));
    }
}
