//! The HTTP transport for ltxd replication.
//!
//! It speaks LiteFS's dialect: `POST /stream` with the position map as the body and the frames
//! as the response, node IDs in `Litefs-Id`, and `GET /info`. The server accepts HTTP/1.1 and
//! cleartext HTTP/2 (prior knowledge), as LiteFS's does; the client uses HTTP/2 with prior
//! knowledge, as LiteFS's does, so either side can talk to LiteFS. ltxd's extensions travel in
//! `Ltxd-Features` and `Ltxd-Epoch` and are used only when both sides list them.
//!
//! Beyond LiteFS, both sides can be secured (see `docs/http-security.md`): TLS from
//! `ltxd-transport-security` (rustls with the ring provider; `https://` URLs; ALPN `h2` and
//! `http/1.1`, with mTLS when the server's configuration demands client certificates), and a
//! shared token sent as `Authorization: Bearer <token>` and refused with 401 when missing or wrong.
//!
//! The crate is a thin adapter: everything it carries comes from or goes to a
//! [`ltxd_protocol::Service`] or a [`ltxd_protocol::Connector`].

mod body;
mod client;
mod limits;
mod server;

pub use client::HttpConnector;
pub use limits::{default_max_connections, HttpLimits};
pub use server::{serve, serve_with_limits, HttpSecurity, HttpServer};
