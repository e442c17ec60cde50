//! A channel of byte pieces bounded by the bytes it holds, not by how many pieces: what a
//! replica that stops reading can make the primary hold is the budget, whatever the pieces' sizes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// The receiving end went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the receiver went away")]
pub struct Closed;

/// A channel that holds at most `budget` bytes, plus the part of one piece larger than the
/// budget: such a piece waits until the channel is empty.
pub fn channel(budget: usize) -> (ByteSender, ByteReceiver) {
    let budget = budget.clamp(1, Semaphore::MAX_PERMITS);
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = ByteSender {
        tx,
        budget: Arc::new(Semaphore::new(budget)),
        capacity: budget,
    };
    (sender, ByteReceiver(rx))
}

/// The sending end of [`channel`].
pub struct ByteSender {
    tx: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
    capacity: usize,
}

impl ByteSender {
    /// Sends `bytes` once the channel has room for them, or fails once the receiver is gone
    /// (also while waiting for room).
    pub async fn send(&self, bytes: Bytes) -> Result<(), Closed> {
        let want = u32::try_from(bytes.len().clamp(1, self.capacity)).unwrap_or(u32::MAX);
        let permit = tokio::select! {
            permit = Arc::clone(&self.budget).acquire_many_owned(want) => {
                permit.map_err(|_| Closed)?
            }
            () = self.tx.closed() => return Err(Closed),
        };
        self.tx.send((bytes, permit)).map_err(|_| Closed)
    }

    /// Resolves once the receiver is gone.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// The receiving end of [`channel`], as the protocol's byte stream. A piece's bytes leave the
/// budget when the piece is taken.
pub struct ByteReceiver(mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>);

impl futures_core::Stream for ByteReceiver {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|(bytes, _budget)| Ok(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_core::Stream;

    use super::*;

    async fn next(receiver: &mut ByteReceiver) -> Option<Bytes> {
        std::future::poll_fn(|cx| Pin::new(&mut *receiver).poll_next(cx))
            .await
            .map(Result::unwrap)
    }

    #[tokio::test]
    async fn a_sender_waits_while_the_budget_is_spent() {
        let (sender, mut receiver) = channel(100);
        sender.send(Bytes::from(vec![1; 60])).await.unwrap();
        sender.send(Bytes::from(vec![2; 40])).await.unwrap();
        let blocked = tokio::time::timeout(
            Duration::from_millis(50),
            sender.send(Bytes::from(vec![3; 1])),
        )
        .await;
        assert!(blocked.is_err(), "100 bytes are held: one more must wait");
        assert_eq!(next(&mut receiver).await.unwrap().len(), 60);
        sender.send(Bytes::from(vec![3; 60])).await.unwrap();
        assert_eq!(next(&mut receiver).await.unwrap().len(), 40);
        assert_eq!(next(&mut receiver).await.unwrap().len(), 60);
    }

    #[tokio::test]
    async fn a_piece_larger_than_the_budget_waits_for_an_empty_channel() {
        let (sender, mut receiver) = channel(100);
        sender.send(Bytes::from(vec![1; 10])).await.unwrap();
        let big = Bytes::from(vec![2; 1000]);
        let blocked =
            tokio::time::timeout(Duration::from_millis(50), sender.send(big.clone())).await;
        assert!(blocked.is_err());
        next(&mut receiver).await.unwrap();
        sender.send(big).await.unwrap();
        assert_eq!(next(&mut receiver).await.unwrap().len(), 1000);
    }

    #[tokio::test]
    async fn a_waiting_sender_fails_when_the_receiver_goes() {
        let (sender, receiver) = channel(10);
        sender.send(Bytes::from(vec![0; 10])).await.unwrap();
        let waiting = sender.send(Bytes::from(vec![0; 1]));
        let dropping = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(receiver);
        };
        let (sent, ()) = tokio::join!(waiting, dropping);
        assert_eq!(sent, Err(Closed));
        sender.closed().await;
    }
}
