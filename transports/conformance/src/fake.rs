//! [`FakeService`]: an in-memory primary whose frames the test writes by hand.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use ltxd_protocol::{
    BoxFuture, DatabaseStatus, Features, NodeInfo, Pos, PrimaryRef, Promotion, Refusal, Service,
    StreamRequest, StreamResponse,
};
use tokio::sync::mpsc;

/// How long the fake waits for something the transport should do at once.
const WAIT: Duration = Duration::from_secs(10);

/// A primary that records each request, refuses when told to, and otherwise hands each
/// subscription to the test as a [`Subscription`] whose frames the test sends.
///
/// It records handoffs and promotions too: a handoff succeeds unless the test queued a refusal
/// with [`FakeService::refuse_next_handoff`], and a promotion answers
/// [`Promotion::HandedOff`] unless the test queued another answer with
/// [`FakeService::answer_next_promotion`].
pub struct FakeService {
    state: Mutex<State>,
    opened: mpsc::UnboundedSender<Subscription>,
    subscriptions: tokio::sync::Mutex<mpsc::UnboundedReceiver<Subscription>>,
}

#[derive(Default)]
struct State {
    requests: Vec<StreamRequest>,
    refusals: VecDeque<Refusal>,
    handoffs: Vec<u64>,
    handoff_refusals: VecDeque<Refusal>,
    promotions: usize,
    promotion_answers: VecDeque<Result<Promotion, Refusal>>,
    acks: Vec<(u64, BTreeMap<String, Pos>)>,
    ack_refusals: VecDeque<Refusal>,
}

/// An accepted subscription, as the fake service saw it.
pub struct Subscription {
    /// The request that opened it.
    pub request: StreamRequest,
    /// Where the test writes its frames.
    pub frames: FrameSender,
}

/// The sending end of a subscription's body. Dropping it ends the body cleanly.
pub struct FrameSender(mpsc::Sender<std::io::Result<Bytes>>);

impl FrameSender {
    /// Sends bytes of the body, waiting while the transport applies backpressure (the channel
    /// holds one item). False once the transport has dropped the body.
    pub async fn send(&self, bytes: Bytes) -> bool {
        self.0.send(Ok(bytes)).await.is_ok()
    }

    /// Waits until the transport drops the body, that is, until the server side lets go of the
    /// stream. Panics if that takes longer than 10 s.
    pub async fn closed(&self) {
        tokio::time::timeout(WAIT, self.0.closed())
            .await
            .expect("the transport did not drop the service's body within 10 s");
    }
}

/// The body of a subscription: whatever the test sends through its [`FrameSender`].
struct Body(mpsc::Receiver<std::io::Result<Bytes>>);

impl Stream for Body {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

impl FakeService {
    /// The node ID the fake answers with.
    pub const NODE_ID: u64 = 0x00C0_FFEE_0000_0001;
    /// The cluster ID the fake answers with.
    pub const CLUSTER_ID: &'static str = "LFSC0000000000000001";
    /// The lease epoch the fake answers with.
    pub const EPOCH: u64 = 42;
    /// What it answers for metrics.
    pub const METRICS: &'static str = "# TYPE fake_metric gauge\nfake_metric 1\n";
    /// The extensions the fake says are in use.
    pub const FEATURES: Features = Features {
        range_files: true,
        frame_lengths: false,
        acks: true,
    };

    /// A fake primary.
    pub fn new() -> Arc<FakeService> {
        let (opened, subscriptions) = mpsc::unbounded_channel();
        Arc::new(FakeService {
            state: Mutex::new(State::default()),
            opened,
            subscriptions: tokio::sync::Mutex::new(subscriptions),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses the next subscription with `refusal`.
    pub fn refuse_next(&self, refusal: Refusal) {
        self.state().refusals.push_back(refusal);
    }

    /// Every subscription request received so far, refused or not.
    pub fn requests(&self) -> Vec<StreamRequest> {
        self.state().requests.clone()
    }

    /// Refuses the next handoff with `refusal`.
    pub fn refuse_next_handoff(&self, refusal: Refusal) {
        self.state().handoff_refusals.push_back(refusal);
    }

    /// The node ID of every handoff received so far, refused or not, in order.
    pub fn handoffs(&self) -> Vec<u64> {
        self.state().handoffs.clone()
    }

    /// Answers the next promotion with `answer` instead of [`Promotion::HandedOff`].
    pub fn answer_next_promotion(&self, answer: Result<Promotion, Refusal>) {
        self.state().promotion_answers.push_back(answer);
    }

    /// How many promotions were asked for so far, refused or not.
    pub fn promotions(&self) -> usize {
        self.state().promotions
    }

    /// Every acknowledgement received so far, refused or not: the replica's node ID and its
    /// positions.
    pub fn acks(&self) -> Vec<(u64, BTreeMap<String, Pos>)> {
        self.state().acks.clone()
    }

    /// Refuses the next acknowledgement with `refusal`.
    pub fn refuse_next_ack(&self, refusal: Refusal) {
        self.state().ack_refusals.push_back(refusal);
    }

    /// The next accepted subscription, in the order they arrived. Panics after 10 s.
    pub async fn next_subscription(&self) -> Subscription {
        let mut subscriptions = self.subscriptions.lock().await;
        tokio::time::timeout(WAIT, subscriptions.recv())
            .await
            .expect("no subscription arrived within 10 s")
            .expect("the fake service outlives its subscriptions")
    }

    /// The state `info` reports.
    pub fn node_info() -> NodeInfo {
        let mut databases = BTreeMap::new();
        databases.insert(
            "app.db".to_string(),
            DatabaseStatus {
                txid: "0000000000000009".to_string(),
                checksum: "8000000000000abc".to_string(),
                lag_ms: Some(12),
                backup_txid: None,
                backup_lag_ms: None,
            },
        );
        NodeInfo {
            cluster_id: Some(FakeService::CLUSTER_ID.to_string()),
            is_primary: true,
            candidate: true,
            path: "/var/lib/ltxd".to_string(),
            primary: Some(PrimaryRef {
                hostname: "node-a".to_string(),
            }),
            databases,
            proxy: None,
            sync: None,
        }
    }
}

impl Service for FakeService {
    fn subscribe(&self, request: StreamRequest) -> Result<StreamResponse, Refusal> {
        let refusal = {
            let mut state = self.state();
            state.requests.push(request.clone());
            state.refusals.pop_front()
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let (sender, receiver) = mpsc::channel(1);
        // The receiver lives as long as the fake service, so this cannot fail.
        let _ = self.opened.send(Subscription {
            request,
            frames: FrameSender(sender),
        });
        Ok(StreamResponse {
            node_id: FakeService::NODE_ID,
            cluster_id: Some(FakeService::CLUSTER_ID.to_string()),
            epoch: Some(FakeService::EPOCH),
            features: FakeService::FEATURES,
            body: Box::pin(Body(receiver)),
        })
    }

    fn info(&self) -> NodeInfo {
        FakeService::node_info()
    }

    fn handoff(&self, node_id: u64) -> BoxFuture<'_, Result<(), Refusal>> {
        let refusal = {
            let mut state = self.state();
            state.handoffs.push(node_id);
            state.handoff_refusals.pop_front()
        };
        Box::pin(std::future::ready(refusal.map_or(Ok(()), Err)))
    }

    fn promote(&self) -> BoxFuture<'_, Result<Promotion, Refusal>> {
        let answer = {
            let mut state = self.state();
            state.promotions += 1;
            state.promotion_answers.pop_front()
        };
        Box::pin(std::future::ready(
            answer.unwrap_or(Ok(Promotion::HandedOff)),
        ))
    }

    fn metrics(&self) -> String {
        FakeService::METRICS.to_string()
    }

    fn ack(&self, node_id: u64, positions: BTreeMap<String, Pos>) -> Result<(), Refusal> {
        let mut state = self.state();
        state.acks.push((node_id, positions));
        state.ack_refusals.pop_front().map_or(Ok(()), Err)
    }
}
