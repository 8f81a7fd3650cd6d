//! The broker definitions Secret: what every node imports at boot (the user from the credentials
//! Secret, the vhost `/`, its permissions), how a renamed user is disabled, and how observe reads
//! the credentials the way the services read their files.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use pingpong_operator::credentials::broker_login;
use pingpong_operator::credentials::{BrokerLogin, SecretValue};
use pingpong_operator::reconcile::builders::rabbitmq::{
    build_rabbitmq_config, declared_users, definitions_json,
};
use serde_json::{Value, json};

use crate::support::fixtures::*;

fn login(user: &str, password: &str) -> BrokerLogin {
    BrokerLogin {
        username: user.to_owned(),
        password: SecretValue::new(password),
    }
}

#[test]
fn the_definitions_declare_the_user_its_vhost_and_permissions() {
    let json: Value =
        serde_json::from_str(&definitions_json(&login("app", "fake-pass-1"), &[])).unwrap();
    assert_eq!(
        json,
        json!({
            "users": [{"name": "app", "password": "fake-pass-1", "tags": ["administrator"]}],
            "vhosts": [{"name": "/"}],
            "permissions": [
                {"user": "app", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
            ],
        })
    );
}

#[test]
fn a_renamed_user_stays_declared_without_password_or_tags() {
    let first = definitions_json(&login("old", "fake-pass-1"), &[]);
    let former = declared_users(first.as_bytes());
    assert_eq!(former, ["old"]);
    let second = definitions_json(&login("new", "fake-pass-2"), &former);
    let json: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(
        json["users"],
        json!([
            {"name": "new", "password": "fake-pass-2", "tags": ["administrator"]},
            {"name": "old", "tags": []},
        ])
    );
    assert_eq!(json["permissions"].as_array().unwrap().len(), 1);
    // Renaming back makes the old name current again, never listed twice.
    let third = definitions_json(
        &login("old", "fake-pass-3"),
        &declared_users(second.as_bytes()),
    );
    let json: Value = serde_json::from_str(&third).unwrap();
    assert_eq!(
        json["users"],
        json!([
            {"name": "old", "password": "fake-pass-3", "tags": ["administrator"]},
            {"name": "new", "tags": []},
        ])
    );
    assert!(declared_users(b"not json").is_empty());
}

/// A user-supplied password may hold characters JSON escapes (`"`, `\`, control characters):
/// the users of such a file are still read, or a renamed user would keep its old password.
#[test]
fn users_are_read_from_a_file_whose_strings_are_escaped() {
    let file = definitions_json(&login("old\\name", "fake \"quoted\" \\ pass\n"), &[]);
    assert!(
        file.contains("\\\""),
        "the password is escaped in the file: {file}"
    );
    assert_eq!(declared_users(file.as_bytes()), ["old\\name"]);
}

#[test]
fn observe_reads_the_credentials_as_the_services_read_their_files() {
    let secret = |user: &[u8], pass: &[u8]| Secret {
        data: Some(BTreeMap::from([
            ("username".to_owned(), ByteString(user.to_vec())),
            ("password".to_owned(), ByteString(pass.to_vec())),
        ])),
        ..Secret::default()
    };
    // One trailing line break (`kubectl create secret --from-file` of an `echo`ed file) is
    // dropped, as ping and pong drop it from RABBITMQ_DEFAULT_*_FILE.
    let read = broker_login(&secret(b"app\n", b"fake-pass\r\n")).unwrap();
    assert_eq!(read.username, "app");
    assert_eq!(read.password.expose(), "fake-pass");
    assert!(
        broker_login(&secret(b"app", b"\xff\xfe")).is_none(),
        "not UTF-8"
    );
    assert!(broker_login(&secret(b"app", b"\n")).is_none(), "empty");
    assert!(broker_login(&Secret::default()).is_none());
}

#[test]
fn every_node_imports_the_mounted_file_at_boot_and_gets_no_password_variable() {
    let (v, desired) = desired_for(&load_fixture("full"));
    let conf = build_rabbitmq_config(&v).data.unwrap()["rabbitmq.conf"].clone();
    for line in [
        "definitions.import_backend = local_filesystem",
        "definitions.local.path = /etc/pingpong-rabbitmq-definitions/definitions.json",
        "definitions.skip_if_unchanged = true",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "{line} missing from\n{conf}"
        );
    }
    let sts = serde_json::to_value(&desired.rabbitmq.statefulset).unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    let broker = &pod["containers"][0];
    assert_eq!(
        secret_file_source(
            pod,
            broker,
            "/etc/pingpong-rabbitmq-definitions/definitions.json"
        )
        .as_deref(),
        Some("secret:demo-full-rabbitmq-definitions/definitions.json")
    );
    let names: Vec<&str> = broker["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("RABBITMQ_DEFAULT_")),
        "{names:?}"
    );
}

#[test]
fn render_uses_secrets_that_follow_the_stack_as_existing_ones() {
    use pingpong_operator::images::Images;
    use pingpong_operator::render::render;
    let stack = "apiVersion: pingpong.dev/v1alpha1\nkind: PingPongStack\nmetadata:\n  name: r\n  namespace: ns\nspec: {}\n";
    let credentials = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: r-rabbitmq-credentials\ndata:\n  username: YXBw\n  password: ZmFrZS1wYXNz\n";
    let former = definitions_json(&login("before", "fake-old"), &[]);
    let definitions = serde_json::to_string(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "r-rabbitmq-definitions"},
        "data": {"definitions.json": base64(former.as_bytes())},
    }))
    .unwrap();
    let text = render(
        &format!("{stack}---\n{credentials}---\n{definitions}\n"),
        None,
        &Images::default(),
    )
    .unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let names: Vec<String> = docs.iter().map(kind_name).collect();
    assert!(
        !names.contains(&"Secret/r-rabbitmq-credentials".to_owned()),
        "never written"
    );
    let rendered = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "r-rabbitmq-definitions")
        .unwrap();
    let json: Value = serde_json::from_slice(&unbase64(
        rendered["data"]["definitions.json"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(
        json["users"],
        json!([
            {"name": "app", "password": "fake-pass", "tags": ["administrator"]},
            {"name": "before", "tags": []},
        ])
    );
    let err = render(
        &format!("{stack}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"),
        None,
        &Images::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), "WrongKind");
}

fn base64(bytes: &[u8]) -> String {
    serde_json::to_value(ByteString(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

fn unbase64(text: &str) -> Vec<u8> {
    serde_json::from_value::<ByteString>(Value::String(text.to_owned()))
        .unwrap()
        .0
}
