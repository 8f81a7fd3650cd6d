//! The operator binary starts and builds its Kubernetes client. Its test build carries both of
//! rustls's providers (kube-fake-client enables aws-lc-rs beside the operator's ring), as every
//! build together with ping and pong does (`cargo build --workspace`, images/build.sh): without
//! a provider chosen at start-up, rustls cannot pick one and the first client panics.

use std::io::Read as _;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A kubeconfig naming `server` with a token and no CA check: enough to build a TLS client.
fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{{name: c, cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}}}]\n\
         users: [{{name: u, user: {{token: not-a-token}}}}]\n\
         contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
    )
}

#[test]
fn the_binary_builds_its_kubernetes_client_with_both_tls_providers_compiled_in() {
    // The "API server": a listener that accepts. A connection proves the client was built.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let dir = std::env::temp_dir().join(format!("pingpong-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("kubeconfig");
    let server = format!("https://{}", listener.local_addr().unwrap());
    std::fs::write(&config, kubeconfig(&server)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pingpong-operator"))
        .arg("run")
        .env_clear()
        .env("KUBECONFIG", &config)
        .env("LEADER_ELECTION", "false")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        if listener.accept().is_ok() {
            break Ok(());
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("the operator exited ({status}) before connecting"));
        }
        if Instant::now() > deadline {
            break Err("the operator did not connect within 60 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(why) = outcome {
        panic!("{why}; its stderr:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}
