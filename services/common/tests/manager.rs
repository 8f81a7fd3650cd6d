//! The connection manager's waits on the broker are bounded: a TCP proxy in
//! front of the test broker blackholes the connection (it stays open, nothing
//! arrives) at each point where the manager waits, and the manager must carry
//! on within its own timeouts, never counting as stalled. Without a broker the
//! tests are skipped with a notice, or FAIL when `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pingpong_common::amqp::{
    BrokerLink, CLOSE_TIMEOUT, CONNECT_TIMEOUT, ChannelRole, ConnectionManager, LinkGauges,
};
use pingpong_common::testing::{Proxy, broker, cleanup, wait_connected};
use pingpong_common::{AmqpConfig, BrokerAddresses};
use prometheus::Registry;

/// Patience beyond the manager's own bounds (a loaded machine).
const SLACK: Duration = Duration::from_secs(10);

/// A manager on `config` whose only address is `proxy`.
fn manager_via(config: &AmqpConfig, proxy: &Proxy) -> ConnectionManager {
    let mut config = config.clone();
    config.addresses = BrokerAddresses::single(proxy.addr.to_string().parse().unwrap());
    let gauges = LinkGauges::register(&Registry::new(), "t").unwrap();
    ConnectionManager::spawn(
        config,
        ChannelRole::Publisher,
        "blackhole-test".to_owned(),
        gauges,
    )
}

/// Waits until the manager published "no session", checking it never
/// counts as stalled meanwhile.
async fn wait_given_up(link: &BrokerLink, within: Duration) {
    let sessions = link.subscribe();
    let deadline = tokio::time::Instant::now() + within;
    while sessions.borrow().is_some() {
        assert!(!link.is_stalled(), "the manager counts as stalled");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session was not given up within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_redeclare_into_a_blackhole_gives_the_connection_up_and_reconnects() {
    let Some((config, admin)) = broker("blackhole-redeclare").await else {
        return;
    };
    let proxy = Proxy::start(config.addresses.get(0).to_string()).await;
    let manager = manager_via(&config, &proxy);
    let link = manager.link();
    wait_connected(&link, CONNECT_TIMEOUT + SLACK).await;

    proxy.blackhole();
    link.request_redeclare();
    // The declare times out, then closing the lost connection does.
    wait_given_up(&link, CONNECT_TIMEOUT + CLOSE_TIMEOUT + SLACK).await;
    assert!(!link.is_stalled());

    proxy.up();
    wait_connected(&link, 2 * CONNECT_TIMEOUT + SLACK).await;
    tokio::time::timeout(2 * CLOSE_TIMEOUT + SLACK, manager.shutdown())
        .await
        .expect("shutdown after the reconnect hangs");
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn shutdown_into_a_blackhole_ends_within_the_close_bounds() {
    let Some((config, admin)) = broker("blackhole-shutdown").await else {
        return;
    };
    let proxy = Proxy::start(config.addresses.get(0).to_string()).await;
    let manager = manager_via(&config, &proxy);
    let link = manager.link();
    wait_connected(&link, CONNECT_TIMEOUT + SLACK).await;

    proxy.blackhole();
    // Closing the channel and then the connection each wait at most CLOSE_TIMEOUT.
    tokio::time::timeout(2 * CLOSE_TIMEOUT + SLACK, manager.shutdown())
        .await
        .expect("shutdown into a blackhole hangs");
    assert!(!link.is_stalled(), "a stopped manager is never stalled");
    cleanup(admin, &config).await;
}
