//! What the QUIC transport logs when it refuses a peer. This test has a binary of its own: a
//! subscriber set for one thread can miss events from call sites that other tests' threads
//! register at the same moment.

mod common;
mod logs;

use std::time::Duration;

use common::Pki;
use conformance::FakeService;
use ltxd_quic::{serve, QuicConnector, QuicOptions};
use ltxd_transport_conformance as conformance;
use ltxd_transport_security::{client_config, server_config, TlsFiles, Token};

/// Each refusal is logged as a warning with the peer's address and the reason, and no log line
/// at any level holds a token. The runtime has one thread, the one the subscriber is set for.
#[tokio::test(flavor = "current_thread")]
async fn refusals_are_logged_with_the_peer_and_why_but_never_the_token() {
    let logs = logs::capture();
    let pki = Pki::new();
    let (right, wrong) = ("correct horse battery staple", "an-incorrect-secret-token");
    let options = QuicOptions {
        handshake_timeout: Duration::from_secs(5),
        ..QuicOptions::default()
    };
    let server = serve(
        "127.0.0.1:0".parse().unwrap(),
        FakeService::new(),
        server_config(&pki.server(true)).unwrap(),
        Some(Token::new(right).unwrap()),
        &options,
    )
    .unwrap();
    let url = format!("quic://{}", server.local_addr());
    let anonymous = TlsFiles {
        cert_file: None,
        key_file: None,
        ..pki.client()
    };
    for (tls, token) in [
        (pki.client(), Some(wrong)),
        (pki.client(), None),
        (pki.client(), Some(right)),
        (anonymous, Some(right)),
    ] {
        let token = token.map(|secret| Token::new(secret).unwrap());
        let client =
            QuicConnector::new(client_config(&tls).unwrap(), token, options.clone()).unwrap();
        let _ = conformance::try_subscribe(&client, &url, "a.db").await;
    }
    server.shutdown().await;
    logs::assert_refusals_logged(
        &logs.text(),
        "QUIC stream refused: unauthorized",
        "QUIC connection refused: the handshake failed",
        [right, wrong],
    );
}
