//! Handing the lease from the primary to a replica: the messages between the replication
//! streams, the service that answers `/handoff` and `/promote`, and the node driver.
//!
//! On the primary, `POST /handoff` becomes a [`HandoffRequest`] for the driver. The driver stops
//! writes, renews the lease one last time, and gives its ID to one of the target's streams as an
//! order. The stream sends every transaction the replica lacks, then the Handoff frame, and ends.
//! An order the stream has not started to send when the driver stops waiting is cancelled, so the
//! old primary never resumes writes after a replica may have taken its lease.
//!
//! On the replica, the follower passes the Handoff frame's lease ID to the driver as an offer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ltxd_protocol::Refusal;
use tokio::sync::{mpsc, oneshot, watch};

/// How long `/handoff` waits for the driver to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A request, from `POST /handoff`, to hand the lease to the replica `node_id`.
#[derive(Debug)]
pub struct HandoffRequest {
    /// The replica that is to become primary.
    pub node_id: u64,
    /// Where the driver answers.
    pub reply: oneshot::Sender<Result<(), Refusal>>,
}

/// What the driver receives: handoff requests (on the primary) and offers of the lease (on a
/// replica, from the Handoff frame).
#[derive(Debug)]
pub struct HandoffInbox {
    /// Requests to hand the lease away.
    pub requests: mpsc::UnboundedReceiver<HandoffRequest>,
    /// Lease IDs a primary handed to this node.
    pub offers: mpsc::UnboundedReceiver<String>,
}

/// The state of one order to send a Handoff frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OrderState {
    Pending,
    Sent,
    Cancelled,
}

/// An order to one stream: send every transaction, then the Handoff frame with `lease_id`.
#[derive(Debug)]
pub struct HandoffOrder {
    /// The lease ID the replica takes over.
    pub lease_id: String,
    state: watch::Sender<OrderState>,
}

impl HandoffOrder {
    /// The stream is about to write the Handoff frame: true if it may (the order was not
    /// cancelled). After this the lease belongs to the replica, whether or not the frame
    /// arrives.
    pub fn start_sending(&self) -> bool {
        self.state.send_if_modified(|state| {
            let pending = *state == OrderState::Pending;
            if pending {
                *state = OrderState::Sent;
            }
            pending
        })
    }

    /// Waits up to `limit` for the stream to start sending; cancels the order if it did not.
    /// True if the frame went (or is going) out.
    async fn sent_within(&self, limit: Duration) -> bool {
        let mut state = self.state.subscribe();
        let waited = tokio::time::timeout(limit, async {
            // The guard `wait_for` returns holds the channel's lock: drop it at once.
            state.wait_for(|s| *s != OrderState::Pending).await.is_ok()
        })
        .await;
        if waited != Ok(true) {
            self.state.send_if_modified(|state| {
                let pending = *state == OrderState::Pending;
                if pending {
                    *state = OrderState::Cancelled;
                }
                pending
            });
        }
        *self.state.borrow() == OrderState::Sent
    }
}

/// One replica's stream, as the registry knows it.
#[derive(Debug)]
struct Stream {
    id: u64,
    orders: mpsc::UnboundedSender<Arc<HandoffOrder>>,
}

/// The registry of replica streams and the channels to the driver.
#[derive(Debug)]
pub struct Handoffs {
    streams: Mutex<BTreeMap<u64, Vec<Stream>>>,
    next_stream: AtomicU64,
    requests: mpsc::UnboundedSender<HandoffRequest>,
    offers: mpsc::UnboundedSender<String>,
}

impl Handoffs {
    /// A registry, and the inbox its driver reads.
    pub fn new() -> (Arc<Handoffs>, HandoffInbox) {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (offers, offers_rx) = mpsc::unbounded_channel();
        let handoffs = Arc::new(Handoffs {
            streams: Mutex::new(BTreeMap::new()),
            next_stream: AtomicU64::new(0),
            requests,
            offers,
        });
        let inbox = HandoffInbox {
            requests: requests_rx,
            offers: offers_rx,
        };
        (handoffs, inbox)
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<Stream>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a stream to replica `node_id`; it is forgotten when the result is dropped.
    pub fn register(self: &Arc<Self>, node_id: u64) -> StreamRegistration {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (orders, receiver) = mpsc::unbounded_channel();
        self.streams()
            .entry(node_id)
            .or_default()
            .push(Stream { id, orders });
        StreamRegistration {
            handoffs: Arc::clone(self),
            node_id,
            id,
            orders: receiver,
        }
    }

    /// How many replica streams are open.
    pub fn stream_count(&self) -> usize {
        self.streams().values().map(Vec::len).sum()
    }

    /// True if replica `node_id` has a stream open.
    pub fn is_subscribed(&self, node_id: u64) -> bool {
        self.streams().contains_key(&node_id)
    }

    /// Asks the driver to hand the lease to `node_id` and waits for its answer.
    pub async fn request(&self, node_id: u64) -> Result<(), Refusal> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(HandoffRequest { node_id, reply })
            .map_err(|_| Refusal::Failed("the node is shutting down".into()))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Refusal::Failed("the node is shutting down".into())),
            Err(_) => Err(Refusal::Failed("the handoff timed out".into())),
        }
    }

    /// Orders a stream to `node_id` to send the Handoff frame with `lease_id`, after every
    /// transaction; waits up to `limit` for it to start. True once the frame is going out; false
    /// (and the order is cancelled) if no stream took it in time.
    pub async fn send_lease(&self, node_id: u64, lease_id: &str, limit: Duration) -> bool {
        let (state, _) = watch::channel(OrderState::Pending);
        let order = Arc::new(HandoffOrder {
            lease_id: lease_id.to_string(),
            state,
        });
        let delivered = self
            .streams()
            .get(&node_id)
            .and_then(|streams| streams.first())
            .is_some_and(|stream| stream.orders.send(Arc::clone(&order)).is_ok());
        delivered && order.sent_within(limit).await
    }

    /// A primary handed its lease to this node (a Handoff frame arrived).
    pub fn offer(&self, lease_id: String) {
        if self.offers.send(lease_id).is_err() {
            tracing::warn!("a handoff arrived while the node is shutting down");
        }
    }
}

/// A stream's place in the registry, and the orders it receives.
#[derive(Debug)]
pub struct StreamRegistration {
    handoffs: Arc<Handoffs>,
    node_id: u64,
    id: u64,
    /// Orders to hand the lease to this stream's replica.
    pub orders: mpsc::UnboundedReceiver<Arc<HandoffOrder>>,
}

impl Drop for StreamRegistration {
    fn drop(&mut self) {
        let mut streams = self.handoffs.streams();
        if let Some(list) = streams.get_mut(&self.node_id) {
            list.retain(|stream| stream.id != self.id);
            if list.is_empty() {
                streams.remove(&self.node_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_order_is_sent_once_and_a_late_one_is_cancelled() {
        let (handoffs, _inbox) = Handoffs::new();
        assert!(!handoffs.is_subscribed(7));
        let mut stream = handoffs.register(7);
        assert!(handoffs.is_subscribed(7));
        let taker = tokio::spawn(async move {
            let order = stream.orders.recv().await.unwrap();
            assert_eq!(order.lease_id, "lease-1");
            assert!(order.start_sending());
            assert!(!order.start_sending(), "an order is sent once");
            stream
        });
        assert!(
            handoffs
                .send_lease(7, "lease-1", Duration::from_secs(5))
                .await
        );
        let mut stream = taker.await.unwrap();
        // A stream that never gets to it: the order is cancelled and cannot be sent later.
        assert!(
            !handoffs
                .send_lease(7, "lease-2", Duration::from_millis(20))
                .await
        );
        let late = stream.orders.recv().await.unwrap();
        assert!(!late.start_sending());
        drop(stream);
        assert!(!handoffs.is_subscribed(7));
        assert!(
            !handoffs
                .send_lease(7, "lease-3", Duration::from_secs(5))
                .await,
            "no stream, no handoff"
        );
    }

    #[tokio::test]
    async fn requests_reach_the_driver_and_its_answer_comes_back() {
        let (handoffs, mut inbox) = Handoffs::new();
        let driver = tokio::spawn(async move {
            let request = inbox.requests.recv().await.unwrap();
            assert_eq!(request.node_id, 9);
            request
                .reply
                .send(Err(Refusal::Failed("not subscribed".into())))
                .unwrap();
            inbox
        });
        assert_eq!(
            handoffs.request(9).await,
            Err(Refusal::Failed("not subscribed".into()))
        );
        let mut inbox = driver.await.unwrap();
        handoffs.offer("lease-9".into());
        assert_eq!(inbox.offers.recv().await.unwrap(), "lease-9");
        drop(inbox);
        assert!(matches!(handoffs.request(9).await, Err(Refusal::Failed(_))));
    }
}
