//! Handler tests of ping without a broker: `app()` with a fake publisher,
//! driven through `tower::ServiceExt::oneshot`.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::future::BoxFuture;
use pingpong_common::Message;
use pingpong_ping::{AppState, Publish, PublishError};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::{JSON, post, send};

/// What the fake answers to a publish.
#[derive(Clone, Copy)]
enum Outcome {
    Confirm,
    Unavailable,
    Nacked,
    Returned,
    Timeout,
    SendFailed,
    Encode,
}

struct FakePublisher {
    outcome: Outcome,
    ready: bool,
    published: Mutex<Vec<Message>>,
}

/// A publisher whose connection manager is stuck past its bounded waits.
struct StalledPublisher;

impl Publish for StalledPublisher {
    fn publish<'a>(&'a self, _message: &'a Message) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(std::future::ready(Err(PublishError::Unavailable)))
    }

    fn is_ready(&self) -> bool {
        false
    }

    fn is_stalled(&self) -> bool {
        true
    }
}

impl FakePublisher {
    fn new(outcome: Outcome) -> Arc<Self> {
        Arc::new(Self {
            outcome,
            ready: true,
            published: Mutex::new(Vec::new()),
        })
    }
}

impl Publish for FakePublisher {
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), PublishError>> {
        let result = match self.outcome {
            Outcome::Confirm => {
                self.published.lock().unwrap().push(message.clone());
                Ok(())
            }
            Outcome::Unavailable => Err(PublishError::Unavailable),
            Outcome::Nacked => Err(PublishError::Nacked),
            Outcome::Returned => Err(PublishError::Returned {
                code: 312,
                text: "NO_ROUTE".to_owned(),
            }),
            Outcome::Timeout => Err(PublishError::Timeout(std::time::Duration::from_secs(5))),
            Outcome::SendFailed => Err(PublishError::Send(
                lapin::ErrorKind::ChannelsLimitReached.into(),
            )),
            Outcome::Encode => Err(PublishError::Encode(
                serde_json::from_str::<u8>("x").unwrap_err(),
            )),
        };
        Box::pin(std::future::ready(result))
    }

    fn is_ready(&self) -> bool {
        self.ready
    }
}

#[tokio::test]
async fn malformed_requests_get_client_errors_naming_the_problem() {
    let oversized = format!(r#"{{"msg":"{}"}}"#, "x".repeat(65 * 1024));
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "truncated JSON",
            post(JSON, r#"{"msg":"#),
            StatusCode::BAD_REQUEST,
            "malformed JSON",
        ),
        (
            "not JSON",
            post(JSON, "hello"),
            StatusCode::BAD_REQUEST,
            "malformed JSON",
        ),
        (
            "empty body",
            post(JSON, ""),
            StatusCode::BAD_REQUEST,
            "malformed JSON",
        ),
        (
            "missing msg",
            post(JSON, "{}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `msg`",
        ),
        (
            "msg is a number",
            post(JSON, r#"{"msg":5}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "msg: invalid type",
        ),
        (
            "msg is null",
            post(JSON, r#"{"msg":null}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "msg: invalid type",
        ),
        (
            "msg is an object",
            post(JSON, r#"{"msg":{"a":1}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "msg: invalid type",
        ),
        (
            "body is an array",
            post(JSON, r#"["msg"]"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid type",
        ),
        (
            "body is a string",
            post(JSON, r#""msg""#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid type",
        ),
        (
            "duplicate msg",
            post(JSON, r#"{"msg":"a","msg":"b"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "duplicate field `msg`",
        ),
        (
            "empty msg",
            post(JSON, r#"{"msg":""}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "`msg` must not be empty",
        ),
        (
            "NUL in msg (no store can keep it)",
            post(JSON, r#"{"msg":"a\u0000b"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "`msg` must not contain NUL",
        ),
        (
            "text/plain",
            post(Some("text/plain"), r#"{"msg":"x"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: application/json",
        ),
        (
            "form",
            post(Some("application/x-www-form-urlencoded"), "msg=x"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: application/json",
        ),
        (
            "no content type",
            post(None, r#"{"msg":"x"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: application/json",
        ),
        (
            "65 KiB body",
            post(JSON, oversized),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
        (
            "unknown route",
            Request::get("/nope").body(Body::empty()).unwrap(),
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            "GET /ping",
            Request::get("/ping").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ),
    ];
    for (name, request, status, error) in cases {
        let publisher = FakePublisher::new(Outcome::Confirm);
        let reply = send(AppState::new(publisher.clone()).unwrap(), request).await;
        assert_eq!(reply.status, status, "{name}: {:?}", reply.body);
        let text = reply.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error field in {:?}", reply.body));
        assert!(
            text.contains(error),
            "{name}: {text:?} should contain {error:?}"
        );
        assert!(
            publisher.published.lock().unwrap().is_empty(),
            "{name}: must not publish"
        );
    }
}

#[tokio::test]
async fn publisher_failures_are_503_with_retry_after_and_a_generic_body() {
    let cases = [
        (Outcome::Unavailable, "Unavailable"),
        (Outcome::Nacked, "Nacked"),
        (Outcome::Returned, "Returned"),
        (Outcome::Timeout, "Timeout"),
        (Outcome::SendFailed, "Send"),
    ];
    for (outcome, reason) in cases {
        let state = AppState::new(FakePublisher::new(outcome)).unwrap();
        let reply = send(state.clone(), post(JSON, r#"{"msg":"hello"}"#)).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reason}");
        assert_eq!(reply.headers[header::RETRY_AFTER], "1", "{reason}");
        let text = reply.body["error"].as_str().unwrap();
        assert_eq!(
            text, "service temporarily unavailable, retry later",
            "{reason}"
        );
        assert_eq!(
            state.metrics.failed.with_label_values(&[reason]).get(),
            1,
            "{reason}"
        );
        assert_eq!(state.metrics.published.get(), 0, "{reason}");
    }
}

#[tokio::test]
async fn an_internal_failure_is_a_generic_500() {
    let reply = send(
        AppState::new(FakePublisher::new(Outcome::Encode)).unwrap(),
        post(JSON, r#"{"msg":"hello"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body["error"], "internal server error");
}

#[tokio::test]
async fn a_confirmed_publish_answers_id_message_and_content() {
    let publisher = FakePublisher::new(Outcome::Confirm);
    let state = AppState::new(publisher.clone()).unwrap();
    let before = OffsetDateTime::now_utc();
    let reply = send(
        state.clone(),
        post(JSON, r#"{"msg":"héllo 🌍","extra":true}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let body = reply.body.as_object().unwrap();
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["content", "id", "message"]);
    assert_eq!(body["content"], "héllo 🌍");
    let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let created = body["message"]
        .as_str()
        .unwrap()
        .strip_prefix("Created at ")
        .unwrap();
    let created = OffsetDateTime::parse(created, &Rfc3339).unwrap();
    assert!(created >= before);

    let published = publisher.published.lock().unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].id, id);
    assert_eq!(published[0].msg, "héllo 🌍");
    assert_eq!(published[0].created_at, created);
    assert_eq!(state.metrics.published.get(), 1);
}

#[tokio::test]
async fn a_body_of_exactly_64_kib_is_accepted() {
    let envelope = r#"{"msg":""}"#.len();
    let text = "y".repeat(64 * 1024 - envelope);
    let body = format!(r#"{{"msg":"{text}"}}"#);
    assert_eq!(body.len(), 64 * 1024);
    let publisher = FakePublisher::new(Outcome::Confirm);
    let reply = send(AppState::new(publisher.clone()).unwrap(), post(JSON, body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    // The whole text went out, not a truncated one.
    assert_eq!(
        reply.body["content"].as_str().map(str::len),
        Some(text.len())
    );
    {
        let published = publisher.published.lock().unwrap();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].msg, text);
    }

    // One byte more is over the limit.
    let body = format!(r#"{{"msg":"{text}y"}}"#);
    let reply = send(
        AppState::new(FakePublisher::new(Outcome::Confirm)).unwrap(),
        post(JSON, body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn health_and_readiness_follow_the_publisher() {
    let healthy = send(
        AppState::new(FakePublisher::new(Outcome::Confirm)).unwrap(),
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(healthy.status, StatusCode::OK);

    for (ready, status) in [
        (true, StatusCode::OK),
        (false, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let publisher = Arc::new(FakePublisher {
            outcome: Outcome::Confirm,
            ready,
            published: Mutex::new(Vec::new()),
        });
        let reply = send(
            AppState::new(publisher).unwrap(),
            Request::get("/readyz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(reply.status, status);
        if !ready {
            assert_eq!(reply.body["failing"][0], "broker");
        }
    }
}

#[tokio::test]
async fn liveness_fails_while_the_connection_manager_is_stuck() {
    let reply = send(
        AppState::new(Arc::new(StalledPublisher)).unwrap(),
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["status"], "stalled");
    assert_eq!(reply.body["failing"], serde_json::json!(["broker"]));
}

/// The checked-in list of metric families (`metrics.txt`, also read by the
/// Grafana dashboard test); renaming one must show up there in review.
fn metric_names_checked_in() -> Vec<&'static str> {
    pingpong_common::metrics::listed_names(include_str!("../../metrics.txt"))
}

#[tokio::test]
async fn metrics_use_route_templates_and_the_checked_in_names() {
    let state = AppState::new(FakePublisher::new(Outcome::Confirm)).unwrap();
    send(state.clone(), post(JSON, r#"{"msg":"a"}"#)).await;
    send(state.clone(), post(JSON, "{}")).await;
    send(
        state.clone(),
        Request::get("/some/random/path")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    state.metrics.failed.with_label_values(&["Nacked"]);
    state.metrics.confirm_duration.with_label_values(&["ack"]);

    let reply = send(
        state.clone(),
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = reply.body.as_str().unwrap().to_owned();
    assert!(
        text.contains(
            r#"pingpong_ping_http_requests_total{method="POST",route="/ping",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"pingpong_ping_http_requests_total{method="POST",route="/ping",status="422"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"pingpong_ping_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        !text.contains("/some/random/path"),
        "raw paths must never become labels"
    );
    assert!(
        text.contains("pingpong_ping_messages_published_total 1"),
        "{text}"
    );
    assert_eq!(
        pingpong_common::metrics::metric_names(&state.registry),
        metric_names_checked_in()
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_status() {
    let state = AppState::new(FakePublisher::new(Outcome::Confirm)).unwrap();
    let reply = send(
        state,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.body;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "ping");
    let expected: [(&str, &str, &[&str]); 5] = [
        (
            "/ping",
            "post",
            &[
                "200", "400", "405", "408", "413", "414", "415", "422", "431", "500", "503",
            ],
        ),
        ("/readyz", "get", &["200", "405", "503"]),
        ("/healthz", "get", &["200", "405", "503"]),
        ("/metrics", "get", &["200", "405"]),
        ("/openapi.json", "get", &["200", "405"]),
    ];
    pingpong_common::testing::assert_openapi_routes(&doc, &expected);
    let ping = &doc["paths"]["/ping"]["post"];
    assert_eq!(
        ping["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/PingRequest"
    );
    assert!(ping["responses"]["503"]["headers"]["Retry-After"].is_object());
    assert!(ping["responses"]["405"]["headers"]["Allow"].is_object());
    let key = &ping["parameters"][0];
    assert_eq!(
        (&key["name"], &key["in"]),
        (&"Idempotency-Key".into(), &"header".into())
    );
    assert_eq!(key["schema"]["maxLength"], 257);
    // The documented pattern is the validation: bare or quoted, no `"` or `\`.
    let pattern = key["schema"]["pattern"].as_str().unwrap();
    assert_eq!(pattern, r#"^([!#-\[\]-~]{1,255}|"[!#-\[\]-~]{1,255}")$"#);
    let request = &doc["components"]["schemas"]["PingRequest"];
    assert_eq!(request["required"], serde_json::json!(["msg"]));
    assert_eq!(request["properties"]["msg"]["minLength"], 1);
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], serde_json::json!(["error"]));
    let response = &doc["components"]["schemas"]["PingResponse"];
    assert_eq!(
        response["required"],
        serde_json::json!(["id", "message", "content"])
    );
}

/// `POST /ping` with an `Idempotency-Key`.
fn post_with_key(key: &str, body: &str) -> Request<Body> {
    let mut request = post(JSON, body.to_owned());
    request
        .headers_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request
}

#[tokio::test]
async fn a_retry_with_the_same_key_republishes_the_same_message() {
    let publisher = FakePublisher::new(Outcome::Confirm);
    let state = AppState::new(publisher.clone()).unwrap();
    let key = "8e03978e-40d5-43e8-bc93-6894a57f9324";
    let first = send(state.clone(), post_with_key(key, r#"{"msg":"once"}"#)).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    // Quoted as in the IETF draft: the same key.
    let retry = send(
        state.clone(),
        post_with_key(&format!("\"{key}\""), r#"{"msg":"once"}"#),
    )
    .await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    assert_eq!(first.body, retry.body, "the same answer, time included");
    let other = send(state.clone(), post_with_key("another", r#"{"msg":"once"}"#)).await;
    assert_ne!(other.body["id"], first.body["id"]);

    let published = publisher.published.lock().unwrap();
    assert_eq!(published.len(), 3);
    // Both attempts carry one id (pong stores it once), text and time.
    assert_eq!(published[0], published[1]);
    assert_eq!(published[0].id.to_string(), first.body["id"]);
    assert_eq!(published[0].id.get_version_num(), 8);
}

#[tokio::test]
async fn a_key_reused_with_another_msg_is_422_even_after_a_503() {
    // The first attempt failed: it may still have been stored, so the key
    // stays taken by its text.
    let state = AppState::new(FakePublisher::new(Outcome::Timeout)).unwrap();
    let failed = send(state.clone(), post_with_key("k-1", r#"{"msg":"first"}"#)).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    let publisher = FakePublisher::new(Outcome::Confirm);
    let state = AppState {
        publisher: publisher.clone(),
        ..state
    };
    let reused = send(state.clone(), post_with_key("k-1", r#"{"msg":"second"}"#)).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reused.body["error"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{:?}",
        reused.body
    );
    assert!(publisher.published.lock().unwrap().is_empty());
    // The retry with the first text goes through.
    let retry = send(state, post_with_key("k-1", r#"{"msg":"first"}"#)).await;
    assert_eq!(retry.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_or_repeated_keys_are_400_naming_the_header() {
    let publisher = FakePublisher::new(Outcome::Confirm);
    let state = AppState::new(publisher.clone()).unwrap();
    let long = "k".repeat(256);
    for key in ["", "two words", "\"unterminated", long.as_str()] {
        let mut request = post(JSON, r#"{"msg":"x"}"#);
        request
            .headers_mut()
            .insert("idempotency-key", key.parse().unwrap());
        let reply = send(state.clone(), request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{key:?}");
        assert!(
            reply.body["error"]
                .as_str()
                .unwrap()
                .contains("`Idempotency-Key`"),
            "{:?}",
            reply.body
        );
    }
    let mut request = post_with_key("a", r#"{"msg":"x"}"#);
    request
        .headers_mut()
        .append("idempotency-key", "a".parse().unwrap());
    let reply = send(state, request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(publisher.published.lock().unwrap().is_empty());
}

/// A publisher whose publishes wait until the test lets them go.
struct GatedPublisher {
    entered: tokio::sync::watch::Sender<usize>,
    gate: tokio::sync::Semaphore,
}

impl Publish for GatedPublisher {
    fn publish<'a>(&'a self, _message: &'a Message) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            self.entered.send_modify(|n| *n += 1);
            self.gate.acquire().await.unwrap().forget();
            Ok(())
        })
    }

    fn is_ready(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn requests_beyond_the_in_flight_bound_are_shed_at_once() {
    use tower::ServiceExt;

    let publisher = Arc::new(GatedPublisher {
        entered: tokio::sync::watch::channel(0).0,
        gate: tokio::sync::Semaphore::new(0),
    });
    let state = AppState::new(publisher.clone())
        .unwrap()
        .with_max_in_flight(std::num::NonZeroUsize::new(2).unwrap());
    let app = pingpong_ping::app(state.clone());
    let mut entered = publisher.entered.subscribe();
    let parked: Vec<_> = (0..2)
        .map(|_| tokio::spawn(app.clone().oneshot(post(JSON, r#"{"msg":"x"}"#))))
        .collect();
    entered.wait_for(|n| *n == 2).await.unwrap();

    // Both slots are taken: the third is answered now, not queued.
    let shed = app
        .clone()
        .oneshot(post(JSON, r#"{"msg":"x"}"#))
        .await
        .unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
    assert_eq!(state.metrics.shed.get(), 1);
    // Other routes are not bounded by it.
    let health = app
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    publisher.gate.add_permits(3);
    for request in parked {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    // The slots are free again.
    let after = app.oneshot(post(JSON, r#"{"msg":"x"}"#)).await.unwrap();
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(state.metrics.shed.get(), 1);
    assert_eq!(*entered.borrow(), 3);
}
