//! The broker's definitions Secret `<stack>-rabbitmq-definitions`: a RabbitMQ definitions file
//! (`definitions.json`) with the broker user from the credentials Secret (its password,
//! tag `administrator`), the vhost `/` and the user's permissions on it.
//!
//! `rabbitmq.conf` makes every node import it at boot (`definitions.import_backend =
//! local_filesystem`, `definitions.skip_if_unchanged = true`), which is how credentials reach
//! the broker and how a rotation is carried out: RabbitMQ's import creates a missing user and
//! sets the password of an existing one (`rabbit_auth_backend_internal:put_user/3`). Because
//! definitions are configured, RabbitMQ creates no default user (`guest`) on an empty data
//! directory, and the broker container needs no `RABBITMQ_DEFAULT_USER/PASS` variables.
//!
//! Users a former version of the file declared but the credentials no longer name (the Secret's
//! `username` changed) stay in the file without password and tags: the import then clears their
//! password, so the old credentials stop working; nothing is deleted.
//!
//! Pure: the login comes from the plan inputs (generated, or read from the Secret by observe),
//! and [`declared_users`] only parses what observe read.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};

use crate::credentials::BrokerLogin;
use crate::labels::Component;
use crate::reconcile::builders::common::object_meta;
use crate::reconcile::builders::secret_files::SecretFiles;
use crate::reconcile::validate::ValidatedStack;

/// Secret key (and file name) of the definitions file.
pub const DEFINITIONS_KEY: &str = "definitions.json";
/// Where the broker container mounts the definitions Secret.
pub const DEFINITIONS_DIR: &str = "/etc/pingpong-rabbitmq-definitions";
/// Volume of the definitions Secret.
pub const DEFINITIONS_VOLUME: &str = "rabbitmq-definitions";
/// The only virtual host.
const VHOST: &str = "/";

#[derive(Serialize)]
struct Definitions<'a> {
    users: Vec<User<'a>>,
    vhosts: Vec<Vhost<'a>>,
    permissions: Vec<UserPermission<'a>>,
}

#[derive(Serialize)]
struct User<'a> {
    name: &'a str,
    /// Absent for a former user: importing a user without `password` or `password_hash`
    /// clears its password.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    tags: Vec<&'a str>,
}

#[derive(Serialize)]
struct Vhost<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct UserPermission<'a> {
    user: &'a str,
    vhost: &'a str,
    configure: &'a str,
    write: &'a str,
    read: &'a str,
}

/// The definitions file: `login` as administrator with every permission on `/`, then each of
/// `former_users` (other than `login`'s) without password or tags, sorted and deduplicated.
pub fn definitions_json(login: &BrokerLogin, former_users: &[String]) -> String {
    let mut former: Vec<&str> = former_users
        .iter()
        .map(String::as_str)
        .filter(|name| *name != login.username)
        .collect();
    former.sort_unstable();
    former.dedup();
    let mut users = vec![User {
        name: &login.username,
        password: Some(login.password.expose()),
        tags: vec!["administrator"],
    }];
    users.extend(former.into_iter().map(|name| User {
        name,
        password: None,
        tags: Vec::new(),
    }));
    let definitions = Definitions {
        users,
        vhosts: vec![Vhost { name: VHOST }],
        permissions: vec![UserPermission {
            user: &login.username,
            vhost: VHOST,
            configure: ".*",
            write: ".*",
            read: ".*",
        }],
    };
    // Plain strings and vectors always serialize.
    serde_json::to_string_pretty(&definitions).unwrap_or_default() + "\n"
}

/// What [`declared_users`] reads of a definitions file: owned strings, since a name or password
/// may be escaped in JSON (a borrowed `&str` cannot hold an unescaped copy).
#[derive(Deserialize)]
struct DeclaredUsers {
    users: Vec<DeclaredUser>,
}

#[derive(Deserialize)]
struct DeclaredUser {
    name: String,
}

/// The user names a definitions file declares (none when it does not parse).
pub fn declared_users(definitions: &[u8]) -> Vec<String> {
    serde_json::from_slice::<DeclaredUsers>(definitions)
        .map(|d| d.users.into_iter().map(|u| u.name).collect())
        .unwrap_or_default()
}

/// The Secret `<stack>-rabbitmq-definitions` with key `definitions.json`.
pub fn build_rabbitmq_definitions_secret(
    stack: &ValidatedStack,
    login: &BrokerLogin,
    former_users: &[String],
) -> Secret {
    Secret {
        metadata: object_meta(
            stack,
            &stack.names.rabbitmq_definitions,
            Component::RabbitMq,
        ),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            DEFINITIONS_KEY.to_owned(),
            ByteString(definitions_json(login, former_users).into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// The definitions Secret mounted read-only into the broker container (mode 0440, group 999).
pub fn definitions_files(stack: &ValidatedStack) -> SecretFiles {
    SecretFiles::new(
        DEFINITIONS_VOLUME,
        &stack.names.rabbitmq_definitions,
        &[DEFINITIONS_KEY],
        DEFINITIONS_DIR,
    )
}
