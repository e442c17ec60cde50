//! One conformance suite for every ltxd transport.
//!
//! A transport under test implements [`Transport`]: given a [`Service`], start a server for it
//! and return its URL, a [`Connector`] that reaches it, and a way to shut it down. Each check
//! below starts a fresh server around a [`FakeService`], drives it through the connector, and
//! panics (with a message saying what broke) when the transport does not carry the protocol
//! faithfully. Run them from a transport's tests with `#[tokio::test(flavor = "multi_thread")]`;
//! [`run_all`] runs every check in turn.
//!
//! This crate is for tests only.

mod fake;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ltxd_protocol::wire::{encode_chunks, encode_frame, Event, Frame, FrameDecoder};
use ltxd_protocol::{
    BoxFuture, ByteStream, Checksum, ConnectError, Connector, Features, Pos, Refusal, Service,
    StreamRequest, StreamResponse, TxId,
};

pub use fake::{FakeService, FrameSender, Subscription};

/// How long any single step may take before the check fails.
const STEP: Duration = Duration::from_secs(10);
/// The size of the large body.
const LARGE_BODY: u64 = 20 << 20;
/// The size of each piece the fake sends.
const PIECE: usize = 64 << 10;

/// A transport under test.
pub trait Transport: Send + Sync {
    /// Starts a server for `service`.
    fn start(&self, service: Arc<dyn Service>) -> BoxFuture<'_, Started>;

    /// When the servers `start` returns demand a token: a client configured as
    /// [`Started::connector`] is but for presenting no token. `None` (the default) when they
    /// demand none, and [`unauthenticated_handoff_is_refused`] then has nothing to check.
    fn tokenless_connector(&self) -> Option<Box<dyn Connector>> {
        None
    }
}

/// A running server and a client for it.
pub struct Started {
    /// The URL the connector reaches the server at.
    pub url: String,
    /// A client of the transport.
    pub connector: Box<dyn Connector>,
    /// Shuts the server down when awaited.
    pub shutdown: BoxFuture<'static, ()>,
}

/// Runs every check, one after another.
pub async fn run_all(transport: &dyn Transport) {
    request_arrives_intact(transport).await;
    frames_arrive_byte_exact(transport).await;
    large_body_streams_with_backpressure(transport).await;
    stalled_subscription_does_not_block_another(transport).await;
    refusals_map_to_statuses(transport).await;
    info_round_trips(transport).await;
    handoff_reaches_the_service(transport).await;
    handoff_refusals_map_to_statuses(transport).await;
    unauthenticated_handoff_is_refused(transport).await;
    acks_reach_the_service(transport).await;
    ack_refusals_map_to_statuses(transport).await;
    unauthenticated_ack_is_refused(transport).await;
    dropping_the_body_ends_the_server_stream(transport).await;
    shutdown_ends_open_streams(transport).await;
}

/// Awaits `future`, failing the check after [`STEP`].
async fn step<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no progress within {STEP:?}"))
}

/// The next item of a body.
async fn next(body: &mut ByteStream) -> Option<std::io::Result<Bytes>> {
    std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await
}

/// Reads a body to its clean end.
async fn read_to_end(body: &mut ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(item) = step("reading a body", next(body)).await {
        out.extend_from_slice(&item.expect("the body failed before its end"));
    }
    out
}

/// Reads at least `n` bytes of a body, returning what was read.
async fn read_at_least(body: &mut ByteStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        match step("reading a body", next(body)).await {
            Some(Ok(bytes)) => out.extend_from_slice(&bytes),
            Some(Err(err)) => panic!("the body failed after {} bytes: {err}", out.len()),
            None => panic!("the body ended after {} of {n} bytes", out.len()),
        }
    }
    out
}

/// Subscribes replica 9 to `db` at `url` through `connector` and drops the stream: whether the
/// transport accepts the subscription. Panics if it neither succeeds nor fails within 20 s.
pub async fn try_subscribe(
    connector: &dyn Connector,
    url: &str,
    db: &str,
) -> Result<(), ConnectError> {
    tokio::time::timeout(
        Duration::from_secs(20),
        connector.subscribe(url, &filtered(9, db)),
    )
    .await
    .expect("the subscription neither succeeded nor failed")
    .map(drop)
}

async fn subscribe(started: &Started, request: &StreamRequest) -> StreamResponse {
    step(
        "subscribing",
        started.connector.subscribe(&started.url, request),
    )
    .await
    .unwrap_or_else(|err| panic!("subscribing to {} failed: {err}", started.url))
}

/// A subscription of replica `node_id` to database `db` only, with every extension.
pub fn filtered(node_id: u64, db: &str) -> StreamRequest {
    StreamRequest {
        node_id,
        filter: Some([db.to_string()].into()),
        positions: BTreeMap::new(),
        features: Features::ALL,
    }
}

/// The byte at `offset` of the patterned bodies.
fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31) % 251) as u8
}

/// `len` bytes of the pattern from `offset`.
fn patterned(offset: u64, len: usize) -> Bytes {
    (0..len as u64).map(|i| pattern(offset + i)).collect()
}

/// Checks that `bytes` are the pattern from `offset`; returns the offset after them.
fn check_pattern(bytes: &[u8], offset: u64) -> u64 {
    for (i, byte) in bytes.iter().enumerate() {
        let at = offset + i as u64;
        assert_eq!(*byte, pattern(at), "byte {at} of a patterned body");
    }
    offset + bytes.len() as u64
}

/// Sends up to `total` patterned bytes, counting them in `sent`, until done or the body is
/// dropped.
async fn send_pattern(frames: &FrameSender, total: u64, sent: &AtomicU64) {
    let mut offset = 0;
    while offset < total {
        let len = (total - offset).min(PIECE as u64) as usize;
        if !frames.send(patterned(offset, len)).await {
            return;
        }
        offset += len as u64;
        sent.store(offset, Ordering::SeqCst);
    }
}

/// The request's node ID, filter, positions and features reach the service unchanged, and the
/// response's node ID, cluster ID, epoch and features reach the replica unchanged.
pub async fn request_arrives_intact(transport: &dyn Transport) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let mut positions = BTreeMap::new();
    positions.insert(
        "app.db".to_string(),
        Pos::new(TxId(0x1234), Checksum(0x8000_0000_dead_beef)),
    );
    positions.insert(
        "other.db".to_string(),
        Pos::new(TxId(1), Checksum(0x8000_0000_0000_0001)),
    );
    let full = StreamRequest {
        node_id: 0x0123_4567_89AB_CDEF,
        filter: Some(["app.db".to_string(), "other.db".to_string()].into()),
        positions,
        features: Features::ALL,
    };
    let bare = StreamRequest {
        node_id: 7,
        filter: None,
        positions: BTreeMap::new(),
        features: Features::NONE,
    };
    for request in [&full, &bare] {
        let response = subscribe(&started, request).await;
        assert_eq!(response.node_id, FakeService::NODE_ID, "node ID");
        assert_eq!(
            response.cluster_id.as_deref(),
            Some(FakeService::CLUSTER_ID),
            "cluster ID"
        );
        assert_eq!(response.epoch, Some(FakeService::EPOCH), "epoch");
        assert_eq!(response.features, FakeService::FEATURES, "features");
        let subscription = service.next_subscription().await;
        assert_eq!(
            &subscription.request, request,
            "the request as the service saw it"
        );
    }
    assert_eq!(service.requests(), vec![full, bare]);
    started.shutdown.await;
}

/// Frames arrive byte for byte, whatever pieces the service sends them in, and the body ends
/// cleanly when the service's body ends.
pub async fn frames_arrive_byte_exact(transport: &dyn Transport) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let ltx: Vec<u8> = (0..200_000u32).map(|i| (i * 13 + i / 256) as u8).collect();
    let mut stream = Vec::new();
    encode_frame(
        &Frame::Ltx {
            db: "app.db".to_string(),
            size: ltx.len() as u64,
        },
        &mut stream,
    );
    encode_chunks(&ltx, &mut stream);
    for frame in [
        Frame::Hwm {
            db: "app.db".to_string(),
            txid: TxId(3),
        },
        Frame::Ready,
        Frame::Heartbeat {
            timestamp_ms: 1_700_000_000_123,
        },
        Frame::End,
    ] {
        encode_frame(&frame, &mut stream);
    }
    let mut response = subscribe(&started, &filtered(2, "app.db")).await;
    let subscription = service.next_subscription().await;
    let sizes = [1usize, 7, 3, 4096, 1, 65536, 100_000];
    let to_send = Bytes::from(stream.clone());
    let sender = tokio::spawn(async move {
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at == to_send.len() {
                break;
            }
            let end = (at + size).min(to_send.len());
            assert!(subscription.frames.send(to_send.slice(at..end)).await);
            at = end;
        }
    });
    let received = read_to_end(&mut response.body).await;
    step("the sender", sender).await.expect("the sender failed");
    assert_eq!(received.len(), stream.len(), "length of the frame bytes");
    assert!(received == stream, "the frame bytes differ");
    let mut decoder = FrameDecoder::new();
    decoder.push(&received);
    let mut events = Vec::new();
    while let Some(event) = decoder.next_event().expect("the frames decode") {
        events.push(event);
    }
    assert_eq!(events.last(), Some(&Event::Frame(Frame::End)));
    started.shutdown.await;
}

/// A 20 MiB body arrives intact, and the transport applies backpressure instead of buffering
/// it: while the replica reads nothing, the service cannot get far ahead.
pub async fn large_body_streams_with_backpressure(transport: &dyn Transport) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let mut response = subscribe(&started, &filtered(3, "big.db")).await;
    let subscription = service.next_subscription().await;
    let sent = Arc::new(AtomicU64::new(0));
    let producer = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            send_pattern(&subscription.frames, LARGE_BODY, &sent).await;
        })
    };
    let received = read_at_least(&mut response.body, 1 << 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ahead = sent.load(Ordering::SeqCst);
    assert!(
        ahead < LARGE_BODY / 2,
        "the service got {ahead} bytes out while the replica had read {}: the transport \
         buffers instead of applying backpressure",
        received.len()
    );
    let mut offset = check_pattern(&received, 0);
    while let Some(item) = step("reading the large body", next(&mut response.body)).await {
        offset = check_pattern(&item.expect("the large body failed"), offset);
    }
    assert_eq!(offset, LARGE_BODY, "length of the large body");
    step("the producer", producer)
        .await
        .expect("the producer failed");
    started.shutdown.await;
}

/// Two subscriptions from one connector are independent: while the replica reads nothing from
/// one (so that its flow control fills up), the other still delivers all its bytes.
pub async fn stalled_subscription_does_not_block_another(transport: &dyn Transport) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let mut stalled = subscribe(&started, &filtered(4, "slow.db")).await;
    let slow = service.next_subscription().await;
    let mut flowing = subscribe(&started, &filtered(4, "fast.db")).await;
    let fast = service.next_subscription().await;
    assert_eq!(slow.request.filter, Some(["slow.db".to_string()].into()));
    assert_eq!(fast.request.filter, Some(["fast.db".to_string()].into()));

    let slow_sent = Arc::new(AtomicU64::new(0));
    let slow_total = 64 << 20;
    let slow_producer = {
        let sent = Arc::clone(&slow_sent);
        tokio::spawn(async move {
            send_pattern(&slow.frames, slow_total, &sent).await;
            slow.frames
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        slow_sent.load(Ordering::SeqCst) < slow_total,
        "the stalled subscription never applied backpressure"
    );

    let fast_total = 4 << 20;
    let fast_sent = Arc::new(AtomicU64::new(0));
    let fast_producer = {
        let sent = Arc::clone(&fast_sent);
        tokio::spawn(async move {
            send_pattern(&fast.frames, fast_total, &sent).await;
        })
    };
    let received = read_to_end(&mut flowing.body).await;
    assert_eq!(
        check_pattern(&received, 0),
        fast_total,
        "the flowing subscription's length"
    );
    step("the fast producer", fast_producer)
        .await
        .expect("the fast producer failed");

    // The stalled one still works once it is read.
    let resumed = read_at_least(&mut stalled.body, 1 << 20).await;
    check_pattern(&resumed, 0);
    drop(stalled);
    let frames = step("the slow producer", slow_producer)
        .await
        .expect("the slow producer failed");
    frames.closed().await;
    started.shutdown.await;
}

/// Each [`Refusal`] reaches the replica as [`ConnectError::Refused`] with HTTP's status for it
/// and the refusal's text as the message.
pub async fn refusals_map_to_statuses(transport: &dyn Transport) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let cases = [
        (Refusal::NotPrimary, 503),
        (Refusal::SelfConnect, 400),
        (Refusal::BadRequest("no such thing".to_string()), 400),
        (Refusal::Unauthorized("who are you".to_string()), 401),
    ];
    for (refusal, expected) in cases {
        service.refuse_next(refusal.clone());
        let result = step(
            "a refused subscription",
            started
                .connector
                .subscribe(&started.url, &filtered(5, "app.db")),
        )
        .await;
        match result {
            Err(ConnectError::Refused { status, message }) => {
                assert_eq!(status, expected, "status for {refusal:?}");
                assert_eq!(message, refusal.to_string(), "message for {refusal:?}");
            }
            Err(other) => panic!("{refusal:?} arrived as {other:?}"),
            Ok(_) => panic!("{refusal:?} arrived as an accepted subscription"),
        }
    }
    assert_eq!(service.requests().len(), 4);
    started.shutdown.await;
}

/// `info` returns the service's [`ltxd_protocol::NodeInfo`] unchanged.
pub async fn info_round_trips(transport: &dyn Transport) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let info = step("info", started.connector.info(&started.url))
        .await
        .unwrap_or_else(|err| panic!("info from {} failed: {err}", started.url));
    assert_eq!(info, FakeService::node_info());
    started.shutdown.await;
}

/// A handoff reaches the service with the replica's node ID, and its success reaches the caller.
pub async fn handoff_reaches_the_service(transport: &dyn Transport) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let node_ids = [0x0123_4567_89AB_CDEF, 1, u64::MAX];
    for node_id in node_ids {
        step(
            "a handoff",
            started.connector.handoff(&started.url, node_id),
        )
        .await
        .unwrap_or_else(|err| panic!("a handoff to {node_id:016X} failed: {err}"));
    }
    assert_eq!(service.handoffs(), node_ids, "the node IDs the service saw");
    assert!(
        service.requests().is_empty(),
        "a handoff is no subscription"
    );
    started.shutdown.await;
}

/// Each [`Refusal`] of a handoff reaches the caller as [`ConnectError::Refused`] with its
/// [`Refusal::status`] and its text as the message.
pub async fn handoff_refusals_map_to_statuses(transport: &dyn Transport) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let cases = [
        (Refusal::NotPrimary, 503),
        (
            Refusal::Failed("replica 0000000000000009 is not subscribed".to_string()),
            500,
        ),
        (Refusal::NotCandidate, 409),
        (
            Refusal::BadRequest("cannot hand off to self".to_string()),
            400,
        ),
    ];
    for (refusal, expected) in &cases {
        service.refuse_next_handoff(refusal.clone());
        let result = step(
            "a refused handoff",
            started.connector.handoff(&started.url, 9),
        )
        .await;
        match result {
            Err(ConnectError::Refused { status, message }) => {
                assert_eq!(status, *expected, "status for {refusal:?}");
                assert_eq!(message, refusal.to_string(), "message for {refusal:?}");
            }
            other => panic!("{refusal:?} arrived as {other:?}"),
        }
    }
    assert_eq!(service.handoffs(), vec![9; cases.len()]);
    started.shutdown.await;
}

/// Where the transport demands a token, a handoff without one is refused with 401 and never
/// reaches the service.
pub async fn unauthenticated_handoff_is_refused(transport: &dyn Transport) {
    let Some(tokenless) = transport.tokenless_connector() else {
        return;
    };
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let result = step(
        "an unauthenticated handoff",
        tokenless.handoff(&started.url, 9),
    )
    .await;
    match result {
        Err(ConnectError::Refused {
            status: 401,
            message,
        }) => assert!(message.starts_with("unauthorized"), "{message}"),
        other => panic!("an unauthenticated handoff arrived as {other:?}"),
    }
    assert!(service.handoffs().is_empty(), "refused before the service");
    started.shutdown.await;
}

/// Acknowledgements (synchronous replication) reach the service with the replica's node ID and
/// every position unchanged, and are no subscriptions.
pub async fn acks_reach_the_service(transport: &dyn Transport) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let mut two = BTreeMap::new();
    two.insert(
        "app.db".to_string(),
        Pos::new(TxId(0x1234), Checksum(0x8000_0000_dead_beef)),
    );
    two.insert(
        "other.db".to_string(),
        Pos::new(TxId(u64::MAX), Checksum(0x8000_0000_0000_0001)),
    );
    let mut one = BTreeMap::new();
    one.insert("app.db".to_string(), Pos::new(TxId(1), Checksum(1)));
    let sent = [
        (0x0123_4567_89AB_CDEF, two),
        (1, one),
        (u64::MAX, BTreeMap::new()),
    ];
    for (node_id, positions) in &sent {
        step(
            "an ack",
            started.connector.ack(&started.url, *node_id, positions),
        )
        .await
        .unwrap_or_else(|err| panic!("an ack from {node_id:016X} failed: {err}"));
    }
    assert_eq!(service.acks(), sent, "the acks the service saw");
    assert!(service.requests().is_empty(), "an ack is no subscription");
    started.shutdown.await;
}

/// A refused acknowledgement reaches the replica as [`ConnectError::Refused`] with its status.
pub async fn ack_refusals_map_to_statuses(transport: &dyn Transport) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let positions = BTreeMap::new();
    for (refusal, expected) in [
        (Refusal::NotPrimary, 503),
        (Refusal::BadRequest("no stream".to_string()), 400),
    ] {
        service.refuse_next_ack(refusal.clone());
        let result = step(
            "a refused ack",
            started.connector.ack(&started.url, 9, &positions),
        )
        .await;
        match result {
            Err(ConnectError::Refused { status, message }) => {
                assert_eq!(status, expected, "status for {refusal:?}");
                assert_eq!(message, refusal.to_string(), "message for {refusal:?}");
            }
            other => panic!("{refusal:?} arrived as {other:?}"),
        }
    }
    assert_eq!(service.acks().len(), 2);
    started.shutdown.await;
}

/// Where the transport demands a token, an acknowledgement without one is refused with 401 and
/// never reaches the service: nobody but a replica may hold up or release the primary's commits.
pub async fn unauthenticated_ack_is_refused(transport: &dyn Transport) {
    let Some(tokenless) = transport.tokenless_connector() else {
        return;
    };
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let positions = BTreeMap::new();
    let result = step(
        "an unauthenticated ack",
        tokenless.ack(&started.url, 9, &positions),
    )
    .await;
    match result {
        Err(ConnectError::Refused { status: 401, .. }) => {}
        other => panic!("an unauthenticated ack arrived as {other:?}"),
    }
    assert!(service.acks().is_empty(), "refused before the service");
    started.shutdown.await;
}

/// A subscription of replica `node_id` to `app.db` that one frame has passed through: the
/// server, the replica's side and the service's side.
async fn flowing_stream(
    transport: &dyn Transport,
    node_id: u64,
) -> (Started, StreamResponse, Subscription) {
    let service = FakeService::new();
    let started = transport.start(service.clone()).await;
    let mut response = subscribe(&started, &filtered(node_id, "app.db")).await;
    let subscription = service.next_subscription().await;
    assert!(
        subscription
            .frames
            .send(Bytes::from_static(b"\0\0\0\x02"))
            .await
    );
    read_at_least(&mut response.body, 4).await;
    (started, response, subscription)
}

/// When the replica drops a subscription's body, the server lets go of the service's body, so
/// the primary stops serving a replica that is gone.
pub async fn dropping_the_body_ends_the_server_stream(transport: &dyn Transport) {
    let (started, response, subscription) = flowing_stream(transport, 6).await;
    drop(response);
    subscription.frames.closed().await;
    started.shutdown.await;
}

/// Shutting the server down ends its open streams: the replica's body ends (cleanly or with an
/// error) and the service's body is dropped.
pub async fn shutdown_ends_open_streams(transport: &dyn Transport) {
    let (started, mut response, subscription) = flowing_stream(transport, 8).await;
    step("shutting the server down", started.shutdown).await;
    loop {
        match step("the body after shutdown", next(&mut response.body)).await {
            None | Some(Err(_)) => break,
            Some(Ok(bytes)) => assert!(
                bytes.is_empty(),
                "frames arrived after shutdown that were never sent"
            ),
        }
    }
    subscription.frames.closed().await;
}
