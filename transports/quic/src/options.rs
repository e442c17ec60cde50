//! [`QuicOptions`]: timing and limits shared by the server and the client.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::QuicError;

/// Timing and limits of QUIC connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuicOptions {
    /// How often an idle connection sends a keep-alive (`quic.keep-alive-interval`, 5 s).
    pub keep_alive_interval: Duration,
    /// How long a connection may hear nothing before it is considered dead
    /// (`quic.idle-timeout`, 30 s). Keep it well above the keep-alive interval.
    pub idle_timeout: Duration,
    /// How long connecting may take, and how long a stream's header may take to arrive
    /// (`quic.handshake-timeout`, 10 s).
    pub handshake_timeout: Duration,
    /// The most streams (subscriptions and `info` calls) a replica may have open at once on one
    /// connection (`quic.max-streams`, 1024). Each database a replica follows may use one.
    pub max_streams: u32,
    /// The most replica connections a server holds open at once (`quic.max-connections`, 256);
    /// beyond it a new connection is refused before its handshake.
    pub max_connections: usize,
}

impl Default for QuicOptions {
    fn default() -> QuicOptions {
        QuicOptions {
            keep_alive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_streams: 1024,
            max_connections: 256,
        }
    }
}

/// How many bytes one stream may have in flight: about 27 MB/s per stream at 150 ms RTT, while a
/// replica that stops reading still holds the primary back (backpressure).
const STREAM_WINDOW: u32 = 4 << 20;
/// How many bytes the whole connection may have in flight.
const CONNECTION_WINDOW: u32 = 16 << 20;

impl QuicOptions {
    /// quinn's transport settings; `incoming_streams` is how many streams the peer may open.
    pub(crate) fn transport(
        &self,
        incoming_streams: u32,
    ) -> Result<Arc<TransportConfig>, QuicError> {
        let idle = IdleTimeout::try_from(self.idle_timeout).map_err(|_| QuicError::Option {
            what: "idle-timeout",
            value: self.idle_timeout,
        })?;
        if self.keep_alive_interval.is_zero() || self.keep_alive_interval >= self.idle_timeout {
            return Err(QuicError::Option {
                what: "keep-alive-interval",
                value: self.keep_alive_interval,
            });
        }
        let mut transport = TransportConfig::default();
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive_interval))
            .max_concurrent_bidi_streams(VarInt::from_u32(incoming_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            // Catch-up moves whole logs across long, lossy paths: with quinn's defaults (NewReno
            // and small windows) it ran 25-30x slower than TCP with BBR over 50-150 ms links.
            .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
            .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
            .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
            .send_window(u64::from(CONNECTION_WINDOW));
        Ok(Arc::new(transport))
    }
}
