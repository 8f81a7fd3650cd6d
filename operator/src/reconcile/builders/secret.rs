//! The broker credentials Secret, the Erlang-cookie Secret and the provisioned PostgreSQL's
//! credentials Secret.
//!
//! Each is only built from values generated at the edge (see [`crate::credentials`]) when the
//! Secret does not exist yet; an existing Secret is never planned, so never rewritten. The apply
//! step creates them (never a forced apply), so two leaders cannot write two passwords.
//!
//! The PostgreSQL credentials Secret has no owner reference: it lives as long as the data volume
//! it opens (the claim is retained too), so a stack re-created under the same name reuses it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::common::{
    DATABASE_KEY, ERLANG_COOKIE_KEY, HOST_KEY, PASSWORD_KEY, PORT_KEY, POSTGRES_DATABASE,
    POSTGRES_PORT, POSTGRES_USER, USERNAME_KEY, object_meta, service_host,
};
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

/// The Secret `<stack>-postgres-credentials` of a provisioned PostgreSQL, with the same keys as
/// an external database's Secret (`host`, `port`, `database`, `username`, `password`), so
/// clients can use either the same way. `None` unless the store is a provisioned PostgreSQL.
pub fn build_postgres_secret(stack: &ValidatedStack, password: &SecretValue) -> Option<Secret> {
    stack.store.provisioned()?;
    let host = service_host(stack, &stack.names.postgres);
    let mut metadata = object_meta(
        stack,
        &stack.names.postgres_credentials,
        Component::Postgres,
    );
    // Outlives the stack like the retained claim `data-<stack>-postgres-0`.
    metadata.owner_references = None;
    Some(Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (HOST_KEY.to_owned(), bytes(&host)),
            (PORT_KEY.to_owned(), bytes(&POSTGRES_PORT.to_string())),
            (DATABASE_KEY.to_owned(), bytes(POSTGRES_DATABASE)),
            (USERNAME_KEY.to_owned(), bytes(POSTGRES_USER)),
            (PASSWORD_KEY.to_owned(), bytes(password.expose())),
        ])),
        ..Secret::default()
    })
}

fn bytes(value: &str) -> ByteString {
    ByteString(value.as_bytes().to_vec())
}
