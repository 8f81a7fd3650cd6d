//! Property tests of pong's configuration parser: any values of any of its
//! variables give a configuration or a `ConfigError` whose problems each
//! name a variable that was set, never a panic; and the `*_FILE` variants.

use proptest::prelude::*;

use crate::handlers::parse;

/// Every variable pong reads.
const VARIABLES: &[&str] = &[
    "LISTEN_ADDR",
    "RABBITMQ_ADDRESSES",
    "RABBITMQ_HOST",
    "RABBITMQ_PORT",
    "RABBITMQ_VHOST",
    "RABBITMQ_DEFAULT_USER",
    "RABBITMQ_DEFAULT_PASS",
    "RABBITMQ_DEFAULT_USER_FILE",
    "RABBITMQ_DEFAULT_PASS_FILE",
    "RABBITMQ_QUEUE",
    "RABBITMQ_QUEUE_TYPE",
    "PONG_MAX_MESSAGES",
    "PONG_MAX_BYTES",
    "PONG_BATCH_LINGER_MS",
    "PONG_STORE",
    "DATABASE_URL",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSWORD_FILE",
    "PGDATABASE",
    "PGSSLMODE",
    "PONG_DB_POOL_SIZE",
    "REDIS_URL",
    "PONG_CACHE_TTL",
    "PONG_CACHE_PREFIX",
    "LOG_FORMAT",
    "RUST_LOG",
];

/// Values worth trying: arbitrary text, and near-valid ones.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{0,25}",
        "-?[0-9]{1,6}",
        "(memory|postgres|postgresql|MEMORY|redis|quorum|classic)",
        "[a-z0-9.]{1,12}(:[0-9]{1,5})?(,[a-z0-9.]{1,12}(:[0-9]{1,5})?){0,2}",
        "(postgres|postgresql|redis)://[a-z:@/0-9.?=&%]{0,30}",
        "[a-z0-9.:\\[\\]]{0,20}:[0-9]{0,6}",
        "(text|json|disable|prefer|require|verify-full)",
    ]
}

proptest! {
    #[test]
    fn any_environment_parses_or_names_its_bad_variables(
        vars in proptest::collection::btree_map(proptest::sample::select(VARIABLES), value(), 0..8)
    ) {
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match parse(&pairs) {
            Ok(config) => {
                let summary = config.summary();
                for secret in ["RABBITMQ_DEFAULT_PASS", "PGPASSWORD"] {
                    if let Some(value) = vars.get(secret).filter(|v| v.trim().len() >= 12) {
                        prop_assert!(!summary.contains(value.as_str()), "{secret} in {summary}");
                    }
                }
            }
            Err(error) => {
                prop_assert!(!error.problems.is_empty());
                for problem in &error.problems {
                    prop_assert!(
                        VARIABLES.contains(&problem.variable),
                        "unknown variable {}", problem.variable
                    );
                }
            }
        }
    }
}

#[test]
fn pgpassword_file_is_kept_as_a_path_and_excludes_pgpassword() {
    use pingpong_pong::config::StoreConfig;
    let config = parse(&[
        ("PONG_STORE", "postgres"),
        ("PGPASSWORD_FILE", "/etc/pingpong/postgres/password"),
    ])
    .unwrap();
    let StoreConfig::Postgres(pg) = &config.store else {
        panic!("expected the postgres store");
    };
    let file = pg.password_file().expect("the password file is kept");
    assert_eq!(file.variable, "PGPASSWORD_FILE");
    assert_eq!(
        file.path,
        std::path::Path::new("/etc/pingpong/postgres/password")
    );
    // Read per connection by the store, not at parse time.
    assert_eq!(pg.connect_config().get_password(), None);
    let error = parse(&[
        ("PONG_STORE", "postgres"),
        ("PGPASSWORD", "hunter2-secret"),
        ("PGPASSWORD_FILE", "/etc/pingpong/postgres/password"),
    ])
    .unwrap_err();
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_eq!(error.problems[0].variable, "PGPASSWORD_FILE");
    assert!(!error.to_string().contains("hunter2-secret"));
}
