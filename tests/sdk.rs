//! A real CloudEvents SDK client (cloudevents-sdk over reqwest, binary mode) sends to the
//! receiver listening on a real socket; the stored event is read back with the SDK's own
//! JSON deserializer.

mod support;

use cloudevents::binding::reqwest::RequestBuilderExt;
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use k8s_openapi::api::core::v1::Secret;
use support::dispatcher::Dispatcher;

#[tokio::test]
async fn an_sdk_client_event_is_stored_so_that_the_sdk_reads_it_back() {
    let d = Dispatcher::start("sdk").await;
    d.apply_sink(include_str!("data/seed/job-sink-logger.yaml"))
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = jobsink::receiver::app(d.state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let sent = EventBuilderV10::new()
        .id("sdk-1")
        .source("https://example.com/sdk")
        .ty("com.example.sdk")
        .subject("order 7")
        .extension("tenant", "blue")
        .data(
            "application/json",
            serde_json::json!({"order": 7, "items": ["a", "b"]}),
        )
        .build()
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/{}/job-sink-logger", d.ns.name))
        .event(sent.clone())
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert!(response.headers().contains_key("location"));

    let name = jobsink::job::job_name("job-sink-logger", "https://example.com/sdk", "sdk-1");
    let secret = d.ns.api::<Secret>().get(&name).await.unwrap();
    let bytes = secret.data.unwrap()["event"].0.clone();
    let stored: cloudevents::Event =
        serde_json::from_slice(&bytes).expect("SDK reads the stored event");
    assert_eq!(stored.id(), "sdk-1");
    assert_eq!(stored.source().as_str(), "https://example.com/sdk");
    assert_eq!(stored.ty(), "com.example.sdk");
    assert_eq!(stored.subject(), Some("order 7"));
    assert_eq!(
        stored.extension("tenant").map(|e| e.to_string()),
        Some("blue".into())
    );
    assert_eq!(stored.data(), sent.data());
}
