//! The conformance suite against the HTTP transport.

use std::sync::Arc;

use conformance::{Started, Transport};
use ltxd_http::{serve, HttpConnector, HttpSecurity};
use ltxd_protocol::{BoxFuture, Service};
use ltxd_transport_conformance as conformance;

struct Http;

impl Transport for Http {
    fn start(&self, service: Arc<dyn Service>) -> BoxFuture<'_, Started> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = serve(listener, service, HttpSecurity::default()).unwrap();
            Started {
                url: format!("http://{}", server.local_addr()),
                connector: Box::new(HttpConnector::new()),
                shutdown: Box::pin(server.shutdown()),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_arrives_intact() {
    conformance::request_arrives_intact(&Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_byte_exact() {
    conformance::frames_arrive_byte_exact(&Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_streams_with_backpressure() {
    conformance::large_body_streams_with_backpressure(&Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscription_does_not_block_another() {
    conformance::stalled_subscription_does_not_block_another(&Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_map_to_statuses() {
    conformance::refusals_map_to_statuses(&Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_round_trips() {
    conformance::info_round_trips(&Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_body_ends_the_server_stream() {
    conformance::dropping_the_body_ends_the_server_stream(&Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams() {
    conformance::shutdown_ends_open_streams(&Http).await;
}
