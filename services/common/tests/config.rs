//! Configuration parsing: defaults, typed values, all problems at once, and
//! the password never leaking into Debug, Display or error text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use pingpong_common::config::{self, listen_addr};
use pingpong_common::{
    AmqpConfig, ConfigError, Env, LogConfig, LogFormat, QueueType, Setting, SettingFileError,
};

const PASSWORD: &str = "s3cr3t-p4ss-word";

fn parse(vars: &[(&str, &str)]) -> Result<(SocketAddr, AmqpConfig, LogConfig), ConfigError> {
    let map: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let lookup = move |key: &str| map.get(key).cloned();
    let mut env = Env::new(&lookup);
    let addr = listen_addr(&mut env, "0.0.0.0:8001".parse().unwrap());
    let amqp = AmqpConfig::from_env(&mut env);
    let log = LogConfig::from_env(&mut env);
    env.finish((addr, amqp, log))
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let (addr, amqp, log) = parse(&[]).unwrap();
    assert_eq!(addr, "0.0.0.0:8001".parse().unwrap());
    assert_eq!(amqp.addresses.len(), 1);
    assert_eq!(amqp.addresses.get(0).host, "127.0.0.1");
    assert_eq!(amqp.addresses.get(0).port.get(), 5672);
    assert_eq!(amqp.queue_type, QueueType::Classic);
    assert_eq!(amqp.vhost, "/");
    assert_eq!(amqp.user, Setting::Value("guest".to_owned()));
    assert_eq!(amqp.password.read().unwrap().expose(), "guest");
    assert_eq!(amqp.queue.as_str(), "pingpong");
    assert_eq!(amqp.queue.dead_letter(), "pingpong.dead");
    assert_eq!(log.format, LogFormat::Text);
    assert_eq!(log.filter, "info");
}

#[test]
fn values_are_parsed_into_types() {
    let (addr, amqp, log) = parse(&[
        (config::LISTEN_ADDR, "127.0.0.1:9000"),
        (config::RABBITMQ_HOST, "rabbit.example"),
        (config::RABBITMQ_PORT, "5673"),
        (config::RABBITMQ_VHOST, "prod"),
        (config::RABBITMQ_DEFAULT_USER, "app"),
        (config::RABBITMQ_DEFAULT_PASS, PASSWORD),
        (config::RABBITMQ_QUEUE, "orders"),
        (config::LOG_FORMAT, "JSON"),
        (config::RUST_LOG, "warn,pingpong_ping=debug"),
    ])
    .unwrap();
    assert_eq!(addr.port(), 9000);
    assert_eq!(amqp.addresses.to_string(), "rabbit.example:5673");
    assert_eq!(amqp.vhost, "prod");
    assert_eq!(amqp.user, Setting::Value("app".to_owned()));
    assert_eq!(amqp.password.read().unwrap().expose(), PASSWORD);
    assert_eq!(amqp.queue.dead_letter(), "orders.dead");
    assert_eq!(log.format, LogFormat::Json);
    assert_eq!(log.filter, "warn,pingpong_ping=debug");
}

#[test]
fn every_bad_variable_is_reported_at_once() {
    let err = parse(&[
        (config::LISTEN_ADDR, "not-an-addr"),
        (config::RABBITMQ_HOST, "bad host"),
        (config::RABBITMQ_PORT, "70000"),
        (config::RABBITMQ_QUEUE, "amq.reserved"),
        (config::LOG_FORMAT, "yaml"),
        (config::RUST_LOG, "[[[not a filter"),
        (config::RABBITMQ_DEFAULT_PASS, PASSWORD),
    ])
    .unwrap_err();
    let names: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
    assert_eq!(
        names,
        [
            config::LISTEN_ADDR,
            config::RABBITMQ_HOST,
            config::RABBITMQ_PORT,
            config::RABBITMQ_QUEUE,
            config::LOG_FORMAT,
            config::RUST_LOG
        ]
    );
    let text = err.to_string();
    for name in names {
        assert!(text.contains(name), "{name} missing from: {text}");
    }
    assert!(text.contains("70000"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[test]
fn port_zero_and_overlong_queue_are_rejected() {
    let long = "q".repeat(251);
    let err = parse(&[
        (config::RABBITMQ_PORT, "0"),
        (config::RABBITMQ_QUEUE, &long),
    ])
    .unwrap_err();
    let names: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
    assert_eq!(names, [config::RABBITMQ_PORT, config::RABBITMQ_QUEUE]);
}

#[test]
fn password_never_appears_in_debug_display_or_summary() {
    let (_, amqp, _) = parse(&[(config::RABBITMQ_DEFAULT_PASS, PASSWORD)]).unwrap();
    for text in [
        format!("{amqp:?}"),
        format!("{}", amqp.password),
        format!("{:?}", amqp.password),
        amqp.summary(),
    ] {
        assert!(!text.contains(PASSWORD), "leaked in {text}");
    }
    assert!(amqp.summary().contains("***"));
    assert!(format!("{amqp:?}").contains("***"));
}

#[test]
fn credentials_in_the_host_are_rejected_and_never_echoed() {
    for host in [
        format!("app:{PASSWORD}@rabbit.example"),
        format!("{PASSWORD}@rabbit.example"),
        "@rabbit.example".to_owned(),
    ] {
        let err = parse(&[(config::RABBITMQ_HOST, &host)]).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{host}: {err}");
        let problem = &err.problems[0];
        assert_eq!(problem.variable, config::RABBITMQ_HOST);
        assert_eq!(
            problem.value, None,
            "the value holds credentials: never echoed"
        );
        assert!(
            problem.expected.contains("RABBITMQ_DEFAULT_PASS"),
            "{problem}"
        );
        let text = err.to_string();
        assert!(
            !text.contains(PASSWORD) && !text.contains("rabbit.example"),
            "{text}"
        );
    }
    // An IPv6 address and a plain name stay valid.
    for host in ["::1", "rabbit-0.rabbit.ns.svc"] {
        let (_, amqp, _) = parse(&[(config::RABBITMQ_HOST, host)]).unwrap();
        assert_eq!(amqp.addresses.get(0).host, host);
    }
}

#[test]
fn addresses_win_over_host_and_port_and_queue_type_is_typed() {
    let (_, amqp, _) = parse(&[
        (config::RABBITMQ_HOST, "ignored.example"),
        (
            config::RABBITMQ_ADDRESSES,
            "rabbit-0:5672, rabbit-1:5673,[::1]",
        ),
        (config::RABBITMQ_QUEUE_TYPE, "quorum"),
    ])
    .unwrap();
    assert_eq!(
        amqp.addresses.to_string(),
        "rabbit-0:5672,rabbit-1:5673,[::1]:5672"
    );
    assert_eq!(amqp.queue_type, QueueType::Quorum);
    assert!(
        amqp.summary().contains("rabbit-1:5673"),
        "{}",
        amqp.summary()
    );
    assert!(
        amqp.summary().contains("queue_type=quorum"),
        "{}",
        amqp.summary()
    );
}

#[test]
fn bad_addresses_and_queue_type_are_named() {
    let err = parse(&[
        (
            config::RABBITMQ_ADDRESSES,
            "rabbit-0:5672,rabbit-1:notaport",
        ),
        (config::RABBITMQ_QUEUE_TYPE, "stream"),
    ])
    .unwrap_err();
    let names: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
    assert_eq!(
        names,
        [config::RABBITMQ_ADDRESSES, config::RABBITMQ_QUEUE_TYPE]
    );
    let text = err.to_string();
    assert!(text.contains("rabbit-1:notaport"), "{text}");
    assert!(text.contains("classic or quorum"), "{text}");
}

#[test]
fn credentials_in_the_addresses_are_rejected_and_never_echoed() {
    let raw = format!("rabbit-0:5672,app:{PASSWORD}@rabbit-1:5672");
    let err = parse(&[(config::RABBITMQ_ADDRESSES, &raw)]).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].variable, config::RABBITMQ_ADDRESSES);
    assert_eq!(err.problems[0].value, None);
    let text = err.to_string();
    assert!(
        !text.contains(PASSWORD) && !text.contains("rabbit-1"),
        "{text}"
    );
}

/// A private directory for credential files, removed at the end of the test.
fn credential_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pingpong-common-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn credential_files_are_read_on_every_use() {
    let dir = credential_dir("files");
    let (user_path, pass_path) = (dir.join("username"), dir.join("password"));
    std::fs::write(&user_path, "app\n").unwrap();
    std::fs::write(&pass_path, format!("{PASSWORD}\r\n")).unwrap();
    let (_, amqp, _) = parse(&[
        (
            config::RABBITMQ_DEFAULT_USER_FILE,
            user_path.to_str().unwrap(),
        ),
        (
            config::RABBITMQ_DEFAULT_PASS_FILE,
            pass_path.to_str().unwrap(),
        ),
    ])
    .unwrap();
    // One trailing line break is dropped, as `echo value > file` leaves it.
    assert_eq!(amqp.user.read().unwrap(), "app");
    assert_eq!(amqp.password.read().unwrap().expose(), PASSWORD);
    // A rotated file is read again: no caching.
    std::fs::write(&pass_path, "rotated-pass").unwrap();
    assert_eq!(amqp.password.read().unwrap().expose(), "rotated-pass");
    // The summary names the files, never their content.
    let summary = amqp.summary();
    assert!(summary.contains(pass_path.to_str().unwrap()), "{summary}");
    assert!(!summary.contains("rotated-pass") && !format!("{amqp:?}").contains("rotated-pass"));
    // Missing and empty files are errors naming the variable and path only.
    std::fs::write(&pass_path, "\n").unwrap();
    let error = amqp.password.read().unwrap_err();
    assert!(
        matches!(error, SettingFileError::Unusable { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(config::RABBITMQ_DEFAULT_PASS_FILE)
    );
    std::fs::remove_file(&pass_path).unwrap();
    let error = amqp.password.read().unwrap_err();
    assert!(matches!(error, SettingFileError::Read { .. }), "{error}");
    assert!(error.to_string().contains(pass_path.to_str().unwrap()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_variable_and_its_file_variant_together_are_rejected() {
    let err = parse(&[
        (config::RABBITMQ_DEFAULT_USER, "app"),
        (config::RABBITMQ_DEFAULT_USER_FILE, "/etc/user"),
        (config::RABBITMQ_DEFAULT_PASS, PASSWORD),
        (config::RABBITMQ_DEFAULT_PASS_FILE, "/etc/pass"),
    ])
    .unwrap_err();
    let names: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
    assert_eq!(
        names,
        [
            config::RABBITMQ_DEFAULT_USER_FILE,
            config::RABBITMQ_DEFAULT_PASS_FILE
        ]
    );
    for problem in &err.problems {
        assert_eq!(problem.value, None);
    }
    let text = err.to_string();
    assert!(text.contains("either RABBITMQ_DEFAULT_PASS or RABBITMQ_DEFAULT_PASS_FILE, not both"));
    assert!(!text.contains(PASSWORD), "{text}");
    // An empty X does not count as set.
    let (_, amqp, _) = parse(&[
        (config::RABBITMQ_DEFAULT_PASS, ""),
        (config::RABBITMQ_DEFAULT_PASS_FILE, "/etc/pass"),
    ])
    .unwrap();
    assert_eq!(
        amqp.password.as_file().map(|f| f.path.clone()),
        Some("/etc/pass".into())
    );
}
