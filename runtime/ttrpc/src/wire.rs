//! ttrpc wire format: the 10-byte frame header and the `Request`/`Response` envelopes
//! (`github.com/containerd/ttrpc` `channel.go`, `types.go`, `request.proto`).

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::RpcStatus;

/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 10;
/// Largest payload a frame may carry (4 MiB).
pub const MAX_MESSAGE_LEN: usize = 4 << 20;
/// Frame type of a request (client → server).
pub const TYPE_REQUEST: u8 = 1;
/// Frame type of a response (server → client).
pub const TYPE_RESPONSE: u8 = 2;

/// A ttrpc call envelope (`ttrpc.Request`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// Remaining time in nanoseconds; 0 means no deadline.
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
    #[prost(message, repeated, tag = "5")]
    pub metadata: Vec<KeyValue>,
}

/// A ttrpc reply envelope (`ttrpc.Response`); `status` is absent on success.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(message, optional, tag = "1")]
    pub status: Option<RpcStatus>,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// One metadata entry (`ttrpc.KeyValue`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// The fixed frame header; every field big-endian on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length, header excluded.
    pub length: u32,
    pub stream_id: u32,
    pub kind: u8,
    pub flags: u8,
}

impl FrameHeader {
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&self.length.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8] = self.kind;
        b[9] = self.flags;
        b
    }

    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            length: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: b[8],
            flags: b[9],
        }
    }
}

/// Header + payload as one buffer. The caller guarantees `payload.len() <= MAX_MESSAGE_LEN`.
pub fn encode_frame(stream_id: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        length: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        stream_id,
        kind,
        flags: 0,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    out
}

/// A frame read off the connection.
#[derive(Debug)]
pub enum Frame {
    /// A complete frame.
    Message(FrameHeader, Vec<u8>),
    /// A frame whose announced payload exceeded [`MAX_MESSAGE_LEN`]; its bytes were discarded.
    Oversized(FrameHeader),
}

/// Reads one frame. `Ok(None)` on a clean EOF before any header byte.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut hb[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let header = FrameHeader::from_bytes(&hb);
    let len = header.length as usize;
    if len > MAX_MESSAGE_LEN {
        let mut discard = r.take(u64::from(header.length));
        let skipped = tokio::io::copy(&mut discard, &mut tokio::io::sink()).await?;
        if skipped != u64::from(header.length) {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(Some(Frame::Oversized(header)));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some(Frame::Message(header, payload)))
}

/// Status text for an oversized message (as Go's `channel.recv`).
pub fn oversized_message(len: usize) -> String {
    format!("message length {len} exceed maximum message size of {MAX_MESSAGE_LEN}")
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn header_is_big_endian() {
        let h = FrameHeader {
            length: 0x0102_0304,
            stream_id: 0x0506_0708,
            kind: TYPE_RESPONSE,
            flags: 0,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 2, 0]);
        assert_eq!(FrameHeader::from_bytes(&b), h);
    }

    #[tokio::test]
    async fn frame_round_trip() {
        let req = Request {
            service: "s".into(),
            method: "m".into(),
            payload: vec![9, 9],
            timeout_nano: 5,
            metadata: vec![KeyValue {
                key: "k".into(),
                value: "v".into(),
            }],
        };
        let body = req.encode_to_vec();
        let frame = encode_frame(3, TYPE_REQUEST, &body);
        assert_eq!(&frame[..4], &(body.len() as u32).to_be_bytes());
        assert_eq!(&frame[4..10], &[0, 0, 0, 3, 1, 0]);

        let mut two = frame.clone();
        two.extend_from_slice(&encode_frame(5, TYPE_RESPONSE, &[]));
        let mut rd = &two[..];
        let Some(Frame::Message(h, p)) = read_frame(&mut rd).await.unwrap() else {
            panic!("expected message");
        };
        assert_eq!(h.stream_id, 3);
        assert_eq!(h.kind, TYPE_REQUEST);
        assert_eq!(Request::decode(&p[..]).unwrap(), req);
        let Some(Frame::Message(h, p)) = read_frame(&mut rd).await.unwrap() else {
            panic!("expected message");
        };
        assert_eq!((h.stream_id, h.kind, p.len()), (5, TYPE_RESPONSE, 0));
        assert!(read_frame(&mut rd).await.unwrap().is_none());

        // Truncated header is an error, not EOF.
        let mut short = &frame[..4];
        assert!(read_frame(&mut short).await.is_err());
    }

    #[tokio::test]
    async fn oversized_frame_is_discarded() {
        let len = MAX_MESSAGE_LEN + 1;
        let mut buf = FrameHeader {
            length: len as u32,
            stream_id: 7,
            kind: TYPE_REQUEST,
            flags: 0,
        }
        .to_bytes()
        .to_vec();
        buf.resize(HEADER_LEN + len, 0xaa);
        buf.extend_from_slice(&encode_frame(9, TYPE_REQUEST, b"x"));
        let mut rd = &buf[..];
        match read_frame(&mut rd).await.unwrap() {
            Some(Frame::Oversized(h)) => assert_eq!(h.stream_id, 7),
            other => panic!("unexpected {other:?}"),
        }
        match read_frame(&mut rd).await.unwrap() {
            Some(Frame::Message(h, p)) => assert_eq!((h.stream_id, &p[..]), (9, &b"x"[..])),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn success_response_omits_status() {
        let ok = Response {
            status: None,
            payload: vec![1],
        };
        assert_eq!(ok.encode_to_vec(), [0x12, 1, 1]);
    }
}
