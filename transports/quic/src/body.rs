//! A QUIC receive stream as the protocol's byte stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

/// How much is read from the stream at a time.
const READ_SIZE: usize = 64 << 10;

/// The frame bytes of a subscription, read from its QUIC stream. It ends when the primary
/// finishes the stream, and fails when the stream is reset or the connection is lost. Dropping
/// it tells the primary to stop sending.
pub(crate) struct RecvBody {
    recv: quinn::RecvStream,
    buf: Box<[u8]>,
    done: bool,
}

impl RecvBody {
    pub(crate) fn new(recv: quinn::RecvStream) -> RecvBody {
        RecvBody {
            recv,
            buf: vec![0; READ_SIZE].into_boxed_slice(),
            done: false,
        }
    }
}

impl Stream for RecvBody {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match this.recv.poll_read(cx, &mut this.buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(n)) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(&this.buf[..n])))),
            Poll::Ready(Err(err)) => {
                this.done = true;
                Poll::Ready(Some(Err(read_error(err))))
            }
        }
    }
}

/// A read error as an I/O error whose message keeps the reason a connection was lost.
pub(crate) fn read_error(err: quinn::ReadError) -> std::io::Error {
    match err {
        quinn::ReadError::ConnectionLost(reason) => std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            format!("connection lost: {reason}"),
        ),
        err => std::io::Error::from(err),
    }
}
