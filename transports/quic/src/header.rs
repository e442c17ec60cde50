//! The headers at the start of each QUIC stream: the replica's request and the primary's
//! response. Everything after a subscription's response header is LiteFS `/stream` frame bytes.
//!
//! All integers are big-endian. Every length is checked against its limit before anything is
//! allocated, and malformed input is a [`HeaderError`], never a panic. The layout is documented
//! in `docs/quic.md`.

use std::collections::{BTreeMap, BTreeSet};

use ltxd_protocol::wire::{
    decode_positions, encode_positions, WireError, MAX_NAME_LEN, MAX_POSITIONS,
};
use ltxd_protocol::{Features, Pos, StreamRequest};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The first bytes of every request and response header.
pub(crate) const MAGIC: [u8; 4] = *b"LTXQ";
/// The version of this header layout.
pub(crate) const VERSION: u8 = 1;

/// The longest token accepted.
pub(crate) const MAX_TOKEN_LEN: usize = 4096;
/// The longest features list accepted.
pub(crate) const MAX_FEATURES_LEN: usize = 1024;
/// The most bytes of database names a filter may hold.
pub(crate) const MAX_FILTER_BYTES: usize = 16 << 20;
/// The largest position map accepted (as HTTP's request body limit).
pub(crate) const MAX_POSITIONS_LEN: usize = 16 << 20;
/// The longest cluster ID accepted.
pub(crate) const MAX_CLUSTER_ID_LEN: usize = 1024;
/// The longest refusal message sent or accepted.
pub(crate) const MAX_MESSAGE_LEN: usize = 64 << 10;
/// The largest `info` answer accepted.
pub(crate) const MAX_INFO_LEN: usize = 4 << 20;

const KIND_SUBSCRIBE: u8 = 1;
const KIND_INFO: u8 = 2;
const KIND_HANDOFF: u8 = 3;
const KIND_ACK: u8 = 4;

/// The status of a stream's response, as HTTP's.
pub(crate) const STATUS_OK: u16 = 200;

/// A header that cannot be read or does not follow the layout.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    /// The stream failed or ended inside the header.
    #[error("reading the header: {0}")]
    Io(#[from] std::io::Error),
    /// The stream does not start with [`MAGIC`].
    #[error("not an ltxd QUIC stream")]
    BadMagic,
    /// A header version this implementation does not speak.
    #[error("unsupported header version {0}")]
    Version(u8),
    /// A request kind this implementation does not know.
    #[error("unknown request kind {0}")]
    Kind(u8),
    /// A presence flag other than 0 or 1.
    #[error("bad presence flag {value} for the {what}")]
    Flag {
        /// The field.
        what: &'static str,
        /// The byte found.
        value: u8,
    },
    /// A field longer than its limit.
    #[error("{what} of {len} bytes exceeds the limit of {limit}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A text field that is not UTF-8.
    #[error("the {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A malformed position map.
    #[error("bad position map: {0}")]
    Positions(#[from] WireError),
}

impl HeaderError {
    /// True when the stream itself failed (rather than carrying a malformed header).
    pub(crate) fn is_stream_failure(&self) -> bool {
        matches!(self, HeaderError::Io(err) if err.kind() != std::io::ErrorKind::UnexpectedEof)
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A subscription; its fields follow the token.
    Subscribe,
    /// The node's state; nothing follows the token.
    Info,
    /// A handoff to a replica; its node ID follows the token.
    Handoff,
    /// A replica's acknowledgement; its node ID and position map follow the token.
    Ack,
}

impl Kind {
    /// The kind's byte in a request header.
    fn byte(self) -> u8 {
        match self {
            Kind::Subscribe => KIND_SUBSCRIBE,
            Kind::Info => KIND_INFO,
            Kind::Handoff => KIND_HANDOFF,
            Kind::Ack => KIND_ACK,
        }
    }

    /// The kind a request header's byte names.
    fn from_byte(byte: u8) -> Result<Kind, HeaderError> {
        match byte {
            KIND_SUBSCRIBE => Ok(Kind::Subscribe),
            KIND_INFO => Ok(Kind::Info),
            KIND_HANDOFF => Ok(Kind::Handoff),
            KIND_ACK => Ok(Kind::Ack),
            other => Err(HeaderError::Kind(other)),
        }
    }
}

/// A request, as the replica sends it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Request<'a> {
    /// Subscribe with this request.
    Subscribe(&'a StreamRequest),
    /// Read the node's state.
    Info,
    /// Hand the lease to the replica with this node ID.
    Handoff(u64),
    /// The replica with this node ID has these positions durably in its log.
    Ack(u64, &'a BTreeMap<String, Pos>),
}

impl Request<'_> {
    /// The request's kind.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Request::Subscribe(_) => Kind::Subscribe,
            Request::Info => Kind::Info,
            Request::Handoff(_) => Kind::Handoff,
            Request::Ack(..) => Kind::Ack,
        }
    }
}

/// The start of a request: its kind and the token that came with it. The server checks the
/// token before it reads the rest.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Preamble {
    /// What the request asks for, and so what follows the token.
    pub(crate) kind: Kind,
    /// The shared token, when the replica sent one.
    pub(crate) token: Option<Vec<u8>>,
}

/// The primary's answer at the start of a stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Response {
    /// A refusal (any status but 200) and its message. The stream ends after it.
    Refused {
        /// The status, as HTTP's (400, 401, 409, 500, 503; see `Refusal::status`).
        status: u16,
        /// Why.
        message: String,
    },
    /// An accepted subscription; the frames follow.
    Stream {
        /// The primary's node ID.
        node_id: u64,
        /// The cluster ID.
        cluster_id: Option<String>,
        /// The primary's lease epoch.
        epoch: Option<u64>,
        /// The extensions in use.
        features: Features,
    },
    /// The node's state, as `/info`'s JSON.
    Info(Vec<u8>),
    /// A handoff that is under way: status 200 and nothing more. The stream ends after it.
    HandedOff,
    /// An acknowledgement taken: status 200 and nothing more. The stream ends after it.
    Acked,
}

/// Appends a field with a length prefix of `width` bytes (2 or 4), after checking `limit`.
fn put_field(
    out: &mut Vec<u8>,
    what: &'static str,
    bytes: &[u8],
    width: usize,
    limit: usize,
) -> Result<(), HeaderError> {
    if bytes.len() > limit {
        return Err(HeaderError::TooLong {
            what,
            len: bytes.len(),
            limit,
        });
    }
    match width {
        2 => out.extend_from_slice(&(bytes.len() as u16).to_be_bytes()),
        _ => out.extend_from_slice(&(bytes.len() as u32).to_be_bytes()),
    }
    out.extend_from_slice(bytes);
    Ok(())
}

fn start(out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
}

/// Encodes a request header. Fields over their limits are errors, so that a header this side
/// writes is one the other side accepts.
pub(crate) fn encode_request(
    token: Option<&[u8]>,
    request: Request<'_>,
) -> Result<Vec<u8>, HeaderError> {
    let mut out = Vec::new();
    start(&mut out);
    out.push(request.kind().byte());
    match token {
        None => out.push(0),
        Some(token) => {
            out.push(1);
            put_field(&mut out, "token", token, 2, MAX_TOKEN_LEN)?;
        }
    }
    match request {
        Request::Subscribe(subscription) => put_subscription(&mut out, subscription)?,
        Request::Info => {}
        Request::Handoff(node_id) => out.extend_from_slice(&node_id.to_be_bytes()),
        Request::Ack(node_id, positions) => {
            out.extend_from_slice(&node_id.to_be_bytes());
            let positions = encode_positions(positions);
            put_field(&mut out, "position map", &positions, 4, MAX_POSITIONS_LEN)?;
        }
    }
    Ok(out)
}

/// Appends a subscription's fields, which follow the token.
fn put_subscription(out: &mut Vec<u8>, request: &StreamRequest) -> Result<(), HeaderError> {
    out.extend_from_slice(&request.node_id.to_be_bytes());
    let features = request.features.to_header();
    put_field(out, "features", features.as_bytes(), 2, MAX_FEATURES_LEN)?;
    match &request.filter {
        None => out.push(0),
        Some(names) => {
            out.push(1);
            put_filter(out, names)?;
        }
    }
    let positions = encode_positions(&request.positions);
    put_field(out, "position map", &positions, 4, MAX_POSITIONS_LEN)
}

/// Appends a filter: its count, then each database name.
fn put_filter(out: &mut Vec<u8>, names: &BTreeSet<String>) -> Result<(), HeaderError> {
    if names.len() > MAX_POSITIONS {
        return Err(HeaderError::TooLong {
            what: "filter",
            len: names.len(),
            limit: MAX_POSITIONS,
        });
    }
    out.extend_from_slice(&(names.len() as u32).to_be_bytes());
    let mut total = 0usize;
    for name in names {
        total += name.len();
        if total > MAX_FILTER_BYTES {
            return Err(HeaderError::TooLong {
                what: "filter",
                len: total,
                limit: MAX_FILTER_BYTES,
            });
        }
        put_field(out, "database name", name.as_bytes(), 2, MAX_NAME_LEN)?;
    }
    Ok(())
}

/// Encodes a response header.
pub(crate) fn encode_response(response: &Response) -> Result<Vec<u8>, HeaderError> {
    let mut out = Vec::new();
    start(&mut out);
    match response {
        Response::Refused { status, message } => {
            out.extend_from_slice(&status.to_be_bytes());
            put_field(
                &mut out,
                "message",
                truncate(message, MAX_MESSAGE_LEN).as_bytes(),
                4,
                MAX_MESSAGE_LEN,
            )?;
        }
        Response::Stream {
            node_id,
            cluster_id,
            epoch,
            features,
        } => {
            out.extend_from_slice(&STATUS_OK.to_be_bytes());
            out.extend_from_slice(&node_id.to_be_bytes());
            match cluster_id {
                None => out.push(0),
                Some(id) => {
                    out.push(1);
                    put_field(&mut out, "cluster ID", id.as_bytes(), 2, MAX_CLUSTER_ID_LEN)?;
                }
            }
            match epoch {
                None => out.push(0),
                Some(epoch) => {
                    out.push(1);
                    out.extend_from_slice(&epoch.to_be_bytes());
                }
            }
            let features = features.to_header();
            put_field(
                &mut out,
                "features",
                features.as_bytes(),
                2,
                MAX_FEATURES_LEN,
            )?;
        }
        Response::Info(json) => {
            out.extend_from_slice(&STATUS_OK.to_be_bytes());
            put_field(&mut out, "node info", json, 4, MAX_INFO_LEN)?;
        }
        Response::HandedOff | Response::Acked => out.extend_from_slice(&STATUS_OK.to_be_bytes()),
    }
    Ok(out)
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a character boundary.
fn truncate(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads header fields from a stream.
struct Fields<'a, R> {
    r: &'a mut R,
}

impl<R: AsyncRead + Unpin> Fields<'_, R> {
    async fn start(&mut self) -> Result<(), HeaderError> {
        let mut magic = [0u8; 4];
        self.r.read_exact(&mut magic).await?;
        if magic != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        match self.r.read_u8().await? {
            VERSION => Ok(()),
            other => Err(HeaderError::Version(other)),
        }
    }

    async fn flag(&mut self, what: &'static str) -> Result<bool, HeaderError> {
        match self.r.read_u8().await? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(HeaderError::Flag { what, value }),
        }
    }

    /// A field with a `width`-byte length prefix of at most `limit` bytes.
    async fn bytes(
        &mut self,
        what: &'static str,
        width: usize,
        limit: usize,
    ) -> Result<Vec<u8>, HeaderError> {
        let len = match width {
            2 => usize::from(self.r.read_u16().await?),
            _ => self.r.read_u32().await? as usize,
        };
        if len > limit {
            return Err(HeaderError::TooLong { what, len, limit });
        }
        // The buffer grows as bytes arrive, so a length alone reserves nothing.
        let mut bytes = Vec::new();
        (&mut *self.r)
            .take(len as u64)
            .read_to_end(&mut bytes)
            .await?;
        if bytes.len() < len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok(bytes)
    }

    async fn text(
        &mut self,
        what: &'static str,
        width: usize,
        limit: usize,
    ) -> Result<String, HeaderError> {
        String::from_utf8(self.bytes(what, width, limit).await?)
            .map_err(|_| HeaderError::NotUtf8(what))
    }

    async fn filter(&mut self) -> Result<BTreeSet<String>, HeaderError> {
        let count = self.r.read_u32().await? as usize;
        if count > MAX_POSITIONS {
            return Err(HeaderError::TooLong {
                what: "filter",
                len: count,
                limit: MAX_POSITIONS,
            });
        }
        let mut names = BTreeSet::new();
        let mut total = 0usize;
        for _ in 0..count {
            let name = self.text("database name", 2, MAX_NAME_LEN).await?;
            total += name.len();
            if total > MAX_FILTER_BYTES {
                return Err(HeaderError::TooLong {
                    what: "filter",
                    len: total,
                    limit: MAX_FILTER_BYTES,
                });
            }
            names.insert(name);
        }
        Ok(names)
    }
}

/// Reads the start of a request header: magic, version, kind and token.
pub(crate) async fn read_preamble<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Preamble, HeaderError> {
    let mut fields = Fields { r };
    fields.start().await?;
    let kind = Kind::from_byte(fields.r.read_u8().await?)?;
    let token = match fields.flag("token").await? {
        false => None,
        true => Some(fields.bytes("token", 2, MAX_TOKEN_LEN).await?),
    };
    Ok(Preamble { kind, token })
}

/// Reads the rest of a handoff's request header, after its [`Preamble`]: the node ID of the
/// replica to hand off to.
pub(crate) async fn read_handoff<R: AsyncRead + Unpin>(r: &mut R) -> Result<u64, HeaderError> {
    Ok(r.read_u64().await?)
}

/// Reads the rest of an acknowledgement's request header, after its [`Preamble`]: the
/// replica's node ID and its position map.
pub(crate) async fn read_ack<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(u64, BTreeMap<String, Pos>), HeaderError> {
    let mut fields = Fields { r };
    let node_id = fields.r.read_u64().await?;
    let positions = decode_positions(&fields.bytes("position map", 4, MAX_POSITIONS_LEN).await?)?;
    Ok((node_id, positions))
}

/// Reads the rest of a subscription's request header, after its [`Preamble`].
pub(crate) async fn read_subscription<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<StreamRequest, HeaderError> {
    let mut fields = Fields { r };
    let node_id = fields.r.read_u64().await?;
    let features = Features::from_header(&fields.text("features", 2, MAX_FEATURES_LEN).await?);
    let filter = match fields.flag("filter").await? {
        false => None,
        true => Some(fields.filter().await?),
    };
    let positions = decode_positions(&fields.bytes("position map", 4, MAX_POSITIONS_LEN).await?)?;
    Ok(StreamRequest {
        node_id,
        filter,
        positions,
        features,
    })
}

/// Reads the response header to a request of the given kind.
pub(crate) async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    kind: Kind,
) -> Result<Response, HeaderError> {
    let mut fields = Fields { r };
    fields.start().await?;
    let status = fields.r.read_u16().await?;
    if status != STATUS_OK {
        let message = fields.bytes("message", 4, MAX_MESSAGE_LEN).await?;
        return Ok(Response::Refused {
            status,
            message: String::from_utf8_lossy(&message).into_owned(),
        });
    }
    match kind {
        Kind::Info => Ok(Response::Info(
            fields.bytes("node info", 4, MAX_INFO_LEN).await?,
        )),
        Kind::Handoff => Ok(Response::HandedOff),
        Kind::Ack => Ok(Response::Acked),
        Kind::Subscribe => read_accepted_stream(fields).await,
    }
}

/// Reads the rest of an accepted subscription's response header, after its status.
async fn read_accepted_stream<R: AsyncRead + Unpin>(
    mut fields: Fields<'_, R>,
) -> Result<Response, HeaderError> {
    let node_id = fields.r.read_u64().await?;
    let cluster_id = match fields.flag("cluster ID").await? {
        false => None,
        true => Some(fields.text("cluster ID", 2, MAX_CLUSTER_ID_LEN).await?),
    };
    let epoch = match fields.flag("epoch").await? {
        false => None,
        true => Some(fields.r.read_u64().await?),
    };
    let features = Features::from_header(&fields.text("features", 2, MAX_FEATURES_LEN).await?);
    Ok(Response::Stream {
        node_id,
        cluster_id,
        epoch,
        features,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ltxd_protocol::{Checksum, Pos, TxId};

    use super::*;

    fn subscription() -> StreamRequest {
        let mut positions = BTreeMap::new();
        positions.insert(
            "a.db".to_string(),
            Pos::new(TxId(7), Checksum(0x8000_0000_0000_0007)),
        );
        positions.insert(
            "b.db".to_string(),
            Pos::new(TxId(1), Checksum(0x8000_0000_0000_0001)),
        );
        StreamRequest {
            node_id: 0xfeed_beef,
            filter: Some(["a.db".to_string(), "é.db".to_string()].into()),
            positions,
            features: Features::ALL,
        }
    }

    /// A request as the server reads it.
    #[derive(Debug, PartialEq, Eq)]
    enum Decoded {
        Subscribe(StreamRequest),
        Info,
        Handoff(u64),
        Ack(u64, BTreeMap<String, Pos>),
    }

    impl Decoded {
        fn request(&self) -> Request<'_> {
            match self {
                Decoded::Subscribe(subscription) => Request::Subscribe(subscription),
                Decoded::Info => Request::Info,
                Decoded::Handoff(node_id) => Request::Handoff(*node_id),
                Decoded::Ack(node_id, positions) => Request::Ack(*node_id, positions),
            }
        }
    }

    /// A whole request: its preamble, and whatever its kind carries after the token.
    async fn request(mut bytes: &[u8]) -> Result<(Preamble, Decoded), HeaderError> {
        let preamble = read_preamble(&mut bytes).await?;
        let decoded = match preamble.kind {
            Kind::Subscribe => Decoded::Subscribe(read_subscription(&mut bytes).await?),
            Kind::Info => Decoded::Info,
            Kind::Handoff => Decoded::Handoff(read_handoff(&mut bytes).await?),
            Kind::Ack => {
                let (node_id, positions) = read_ack(&mut bytes).await?;
                Decoded::Ack(node_id, positions)
            }
        };
        assert!(bytes.is_empty(), "the header was read to its end");
        Ok((preamble, decoded))
    }

    async fn response(mut bytes: &[u8], kind: Kind) -> Result<Response, HeaderError> {
        read_response(&mut bytes, kind).await
    }

    #[tokio::test]
    async fn requests_round_trip_and_every_cut_is_an_error() {
        let cases = [
            (Some(&b"token"[..]), Decoded::Subscribe(subscription())),
            (None, Decoded::Subscribe(StreamRequest::default())),
            (Some(&b"t"[..]), Decoded::Info),
            (None, Decoded::Info),
            (Some(&b"token"[..]), Decoded::Handoff(0x0123_4567_89ab_cdef)),
            (None, Decoded::Handoff(0)),
            (None, Decoded::Handoff(u64::MAX)),
            (
                Some(&b"token"[..]),
                Decoded::Ack(7, subscription().positions),
            ),
            (None, Decoded::Ack(u64::MAX, BTreeMap::new())),
        ];
        for (token, expected) in cases {
            let bytes = encode_request(token, expected.request()).unwrap();
            let (preamble, decoded) = request(&bytes).await.unwrap();
            assert_eq!(preamble.token.as_deref(), token);
            assert_eq!(preamble.kind, expected.request().kind());
            assert_eq!(decoded, expected);
            for cut in 0..bytes.len() {
                let err = request(&bytes[..cut]).await.unwrap_err();
                assert!(
                    !err.is_stream_failure(),
                    "a short header is malformed: {err}"
                );
            }
        }
    }

    #[tokio::test]
    async fn responses_round_trip_and_every_cut_is_an_error() {
        let cases = [
            (
                Kind::Subscribe,
                Response::Stream {
                    node_id: 1,
                    cluster_id: Some("LFSC0123".into()),
                    epoch: Some(9),
                    features: Features::ALL,
                },
            ),
            (
                Kind::Subscribe,
                Response::Stream {
                    node_id: u64::MAX,
                    cluster_id: None,
                    epoch: None,
                    features: Features::NONE,
                },
            ),
            (
                Kind::Subscribe,
                Response::Refused {
                    status: 503,
                    message: "this node is not the primary".into(),
                },
            ),
            (
                Kind::Info,
                Response::Info(br#"{"isPrimary":true}"#.to_vec()),
            ),
            (
                Kind::Info,
                Response::Refused {
                    status: 401,
                    message: String::new(),
                },
            ),
            (Kind::Handoff, Response::HandedOff),
            (Kind::Ack, Response::Acked),
            (
                Kind::Ack,
                Response::Refused {
                    status: 503,
                    message: "this node is not the primary".into(),
                },
            ),
            (
                Kind::Handoff,
                Response::Refused {
                    status: 409,
                    message: "this node is not a candidate".into(),
                },
            ),
        ];
        for (kind, expected) in cases {
            let bytes = encode_response(&expected).unwrap();
            assert_eq!(response(&bytes, kind).await.unwrap(), expected);
            for cut in 0..bytes.len() {
                assert!(response(&bytes[..cut], kind).await.is_err());
            }
        }
    }

    /// The handoff request and its answer, byte for byte as `docs/quic.md` lays them out.
    #[tokio::test]
    async fn handoff_headers_match_the_documented_layout() {
        let node_id: u64 = 0x0102_0304_0506_0708;
        let mut expected = b"LTXQ\x01\x03\x01\x00\x03tok".to_vec();
        expected.extend_from_slice(&node_id.to_be_bytes());
        assert_eq!(
            encode_request(Some(b"tok"), Request::Handoff(node_id)).unwrap(),
            expected
        );
        let answer = encode_response(&Response::HandedOff).unwrap();
        assert_eq!(answer, b"LTXQ\x01\x00\xc8");
        // A handoff answer is read as one: a 200 followed by nothing is not a subscription.
        assert!(response(&answer, Kind::Subscribe).await.is_err());
        assert!(response(&answer, Kind::Info).await.is_err());
    }

    #[tokio::test]
    async fn malformed_headers_are_typed_errors() {
        let sub = subscription();
        let good = encode_request(Some(b"tok"), Request::Subscribe(&sub)).unwrap();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(request(&bad).await, Err(HeaderError::BadMagic)));
        let mut bad = good.clone();
        bad[4] = 2;
        assert!(matches!(request(&bad).await, Err(HeaderError::Version(2))));
        for kind in [0, 5, 9, u8::MAX] {
            let mut bad = good.clone();
            bad[5] = kind;
            assert!(
                matches!(request(&bad).await, Err(HeaderError::Kind(k)) if k == kind),
                "kind {kind}"
            );
        }
        // A handoff's token flag is checked like any other.
        let mut bad = encode_request(None, Request::Handoff(1)).unwrap();
        bad[6] = 2;
        assert!(matches!(
            request(&bad).await,
            Err(HeaderError::Flag {
                what: "token",
                value: 2
            })
        ));
        let mut bad = good.clone();
        bad[6] = 7;
        assert!(matches!(
            request(&bad).await,
            Err(HeaderError::Flag {
                what: "token",
                value: 7
            })
        ));
        // A token length over the limit is refused before anything is read or allocated.
        let mut bad = good[..7].to_vec();
        bad.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(
            request(&bad).await,
            Err(HeaderError::TooLong { what: "token", .. })
        ));
        // So is a position map over the limit.
        let mut bad = encode_request(None, Request::Subscribe(&StreamRequest::default())).unwrap();
        let len_at = bad.len() - 8;
        bad.truncate(len_at);
        bad.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            request(&bad).await,
            Err(HeaderError::TooLong {
                what: "position map",
                ..
            })
        ));
        // A position map with trailing bytes is a wire error.
        let mut bad = encode_request(None, Request::Subscribe(&StreamRequest::default())).unwrap();
        let len_at = bad.len() - 8;
        bad.truncate(len_at);
        bad.extend_from_slice(&5u32.to_be_bytes());
        bad.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert!(matches!(
            request(&bad).await,
            Err(HeaderError::Positions(_))
        ));
        // Invalid UTF-8 in a filter name.
        let mut request_with_name = StreamRequest {
            filter: Some(["ab".to_string()].into()),
            ..StreamRequest::default()
        };
        let mut bad = encode_request(None, Request::Subscribe(&request_with_name)).unwrap();
        let at = bad.windows(2).position(|w| w == b"ab").unwrap();
        bad[at] = 0xff;
        assert!(matches!(
            request(&bad).await,
            Err(HeaderError::NotUtf8("database name"))
        ));
        // The encoder refuses what the decoder would.
        request_with_name.filter = Some(["x".repeat(MAX_NAME_LEN + 1)].into());
        assert!(matches!(
            encode_request(None, Request::Subscribe(&request_with_name)),
            Err(HeaderError::TooLong {
                what: "database name",
                ..
            })
        ));
        assert!(encode_request(Some(&[0; MAX_TOKEN_LEN + 1]), Request::Info).is_err());
        assert!(encode_request(Some(&[0; MAX_TOKEN_LEN + 1]), Request::Handoff(1)).is_err());
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let message = "é".repeat(MAX_MESSAGE_LEN);
        let bytes = encode_response(&Response::Refused {
            status: 400,
            message,
        })
        .unwrap();
        assert!(bytes.len() <= 11 + MAX_MESSAGE_LEN);
        assert_eq!(truncate("aé", 2), "a");
    }
}
