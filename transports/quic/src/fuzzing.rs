//! Entry points for `cargo fuzz` (feature `fuzzing`): the header decoders on arbitrary bytes.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use crate::header::{
    read_ack, read_handoff, read_preamble, read_response, read_subscription, Kind,
};

/// Decodes `bytes` as a request header (preamble and what follows it) and as the response to
/// each kind of request. Reading from a slice never waits, so each decoder finishes in one poll.
pub fn decode_headers(bytes: &[u8]) {
    let mut request = bytes;
    if let Some(Ok(preamble)) = once(read_preamble(&mut request)) {
        match preamble.kind {
            Kind::Subscribe => drop(once(read_subscription(&mut request))),
            Kind::Handoff => drop(once(read_handoff(&mut request))),
            Kind::Ack => drop(once(read_ack(&mut request))),
            Kind::Info => {}
        }
    }
    for kind in [Kind::Subscribe, Kind::Info, Kind::Handoff, Kind::Ack] {
        let mut response = bytes;
        drop(once(read_response(&mut response, kind)));
    }
}

/// Polls `future` once.
fn once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
