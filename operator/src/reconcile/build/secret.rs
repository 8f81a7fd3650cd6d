//! The broker credentials Secret and the Erlang-cookie Secret.
//!
//! Both are only built from values generated at the edge (see [`crate::credentials`]) when the
//! Secret does not exist yet; an existing Secret is never planned, so never rewritten.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::common::{ERLANG_COOKIE_KEY, PASSWORD_KEY, USERNAME_KEY, object_meta};
use crate::credentials::{BrokerCredentials, SecretValue};
use crate::labels::Component;
use crate::reconcile::validate::ValidatedStack;

/// The Secret `<stack>-rabbitmq-credentials` with keys `username` and `password`.
pub fn build_credentials_secret(stack: &ValidatedStack, credentials: &BrokerCredentials) -> Secret {
    Secret {
        metadata: object_meta(stack, &stack.names.credentials_secret, Component::RabbitMq),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (USERNAME_KEY.to_owned(), bytes(&credentials.username)),
            (
                PASSWORD_KEY.to_owned(),
                bytes(credentials.password.expose()),
            ),
        ])),
        ..Secret::default()
    }
}

/// The Secret `<stack>-rabbitmq-erlang-cookie` with key `cookie`.
pub fn build_erlang_cookie_secret(stack: &ValidatedStack, cookie: &SecretValue) -> Secret {
    Secret {
        metadata: object_meta(
            stack,
            &stack.names.erlang_cookie_secret,
            Component::RabbitMq,
        ),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            ERLANG_COOKIE_KEY.to_owned(),
            bytes(cookie.expose()),
        )])),
        ..Secret::default()
    }
}

fn bytes(value: &str) -> ByteString {
    ByteString(value.as_bytes().to_vec())
}
