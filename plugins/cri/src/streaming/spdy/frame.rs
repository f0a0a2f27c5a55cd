//! SPDY/3.1 frames (draft-mbelshe-httpbis-spdy-00 with 3.1's WINDOW_UPDATE): the 8-byte
//! common header, a control bit, version 3, a type, flags and a 24-bit length.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::headers::{Deflater, Headers, Inflater};
use super::SpdyError;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// FLAG_FIN: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL (SYN_STREAM): the receiver does not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The largest frame body accepted (the 24-bit length allows 16 MiB).
pub const MAX_FRAME_BODY: usize = 1 << 24;
/// The largest DATA payload this side sends in one frame.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub mod rst {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INVALID_STREAM.
    pub const INVALID_STREAM: u32 = 2;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 3;
    /// CANCEL.
    pub const CANCEL: u32 = 5;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 6;
    /// STREAM_IN_USE.
    pub const STREAM_IN_USE: u32 = 8;
    /// STREAM_ALREADY_CLOSED.
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// One frame, header blocks decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A new stream.
    SynStream {
        /// Its id (odd from the client, even from the server).
        stream_id: u32,
        /// The stream it is associated with (0: none).
        associated_id: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// FLAG_FIN, FLAG_UNIDIRECTIONAL.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// The receiver accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// A stream ends abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// See [`rst`].
        status: u32,
    },
    /// Settings (id, flags, value); read and ignored, as spdystream does.
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        flags: u8,
        /// (flags, id, value).
        entries: Vec<(u8, u32, u32)>,
    },
    /// A ping, echoed by the side that did not send it.
    Ping {
        /// Odd from the client, even from the server.
        id: u32,
    },
    /// The sender accepts no new streams.
    GoAway {
        /// The last stream it accepted.
        last_good_stream_id: u32,
        /// 0 OK, 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR.
        status: u32,
    },
    /// More headers on a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow-control credit (SPDY/3.1); read and ignored, as spdystream does.
    WindowUpdate {
        /// The stream (0: the connection).
        stream_id: u32,
        /// Bytes of credit.
        delta: u32,
    },
    /// Stream data.
    Data {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// The payload.
        data: Bytes,
    },
    /// A control frame of a type this side does not know (skipped).
    Unknown {
        /// Its type.
        kind: u16,
    },
}

impl Frame {
    /// Whether FLAG_FIN is set (on frames that carry it).
    pub fn fin(&self) -> bool {
        match self {
            Frame::SynStream { flags, .. }
            | Frame::SynReply { flags, .. }
            | Frame::Headers { flags, .. }
            | Frame::Data { flags, .. } => flags & FLAG_FIN != 0,
            _ => false,
        }
    }
}

/// Encodes frames; owns the sending direction's header compressor.
#[derive(Debug, Default)]
pub struct Encoder {
    deflate: Deflater,
}

impl Encoder {
    /// A fresh encoder (a fresh compression stream).
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Appends `frame`'s bytes to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() >= MAX_FRAME_BODY {
                    return Err(SpdyError::Protocol("DATA payload too large"));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(((*flags as u32) << 24) | data.len() as u32);
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                flags,
                headers,
            } => {
                let block = self.deflate.compress(headers)?;
                let mut body = BytesMut::with_capacity(10 + block.len());
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(associated_id & 0x7fff_ffff);
                body.put_u8((priority & 0x7) << 5);
                body.put_u8(0);
                body.extend_from_slice(&block);
                control(out, SYN_STREAM, *flags, &body)?;
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.deflate.compress(headers)?;
                let mut body = BytesMut::with_capacity(4 + block.len());
                body.put_u32(stream_id & 0x7fff_ffff);
                body.extend_from_slice(&block);
                control(out, SYN_REPLY, *flags, &body)?;
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.deflate.compress(headers)?;
                let mut body = BytesMut::with_capacity(4 + block.len());
                body.put_u32(stream_id & 0x7fff_ffff);
                body.extend_from_slice(&block);
                control(out, HEADERS, *flags, &body)?;
            }
            Frame::RstStream { stream_id, status } => {
                let mut body = BytesMut::with_capacity(8);
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, RST_STREAM, 0, &body)?;
            }
            Frame::Settings { flags, entries } => {
                let mut body = BytesMut::with_capacity(4 + 8 * entries.len());
                body.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    body.put_u32(((*f as u32) << 24) | (id & 0x00ff_ffff));
                    body.put_u32(*value);
                }
                control(out, SETTINGS, *flags, &body)?;
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes())?,
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut body = BytesMut::with_capacity(8);
                body.put_u32(last_good_stream_id & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, GOAWAY, 0, &body)?;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut body = BytesMut::with_capacity(8);
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(delta & 0x7fff_ffff);
                control(out, WINDOW_UPDATE, 0, &body)?;
            }
            Frame::Unknown { .. } => {
                return Err(SpdyError::Protocol("cannot send an unknown frame"))
            }
        }
        Ok(())
    }
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) -> Result<(), SpdyError> {
    if body.len() >= MAX_FRAME_BODY {
        return Err(SpdyError::Protocol("control frame too large"));
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(((flags as u32) << 24) | body.len() as u32);
    out.extend_from_slice(body);
    Ok(())
}

/// Decodes frames; owns the receiving direction's header decompressor.
#[derive(Debug, Default)]
pub struct Decoder {
    inflate: Inflater,
}

impl Decoder {
    /// A fresh decoder (a fresh decompression stream).
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Takes one whole frame off the front of `buf`; `None` while it is incomplete.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        buf.advance(8);
        let mut body = buf.split_to(len).freeze();
        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: word,
                flags,
                data: body,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Protocol("unsupported SPDY version"));
        }
        let kind = (word & 0xffff) as u16;
        let need = |n: usize| {
            if len < n {
                Err(SpdyError::Protocol("control frame too short"))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let associated_id = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                body.advance(1);
                let headers = self.inflate.decompress(&body)?;
                if stream_id == 0 {
                    return Err(SpdyError::Protocol("SYN_STREAM for stream 0"));
                }
                Frame::SynStream {
                    stream_id,
                    associated_id,
                    priority,
                    flags,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.inflate.decompress(&body)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            SETTINGS => {
                need(4)?;
                let count = body.get_u32() as usize;
                if count > body.remaining() / 8 {
                    return Err(SpdyError::Protocol("SETTINGS shorter than its count"));
                }
                let entries = (0..count)
                    .map(|_| {
                        let id = body.get_u32();
                        ((id >> 24) as u8, id & 0x00ff_ffff, body.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(4)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need(4)?;
                let last_good_stream_id = body.get_u32() & 0x7fff_ffff;
                let status = if body.remaining() >= 4 {
                    body.get_u32()
                } else {
                    0
                };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        for f in frames {
            enc.encode(f, &mut buf).unwrap();
        }
        // Fed one byte at a time, every frame comes back whole and in order.
        let mut feed = BytesMut::new();
        let mut got = Vec::new();
        for b in buf.iter() {
            feed.put_u8(*b);
            while let Some(f) = dec.decode(&mut feed).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert!(feed.is_empty());
    }

    #[test]
    fn every_frame_type_round_trips() {
        let mut h = Headers::new();
        h.add("streamtype", "error");
        round_trip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                flags: 0,
                headers: h.clone(),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Headers {
                stream_id: 3,
                flags: 0,
                headers: h,
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536)],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1000,
            },
        ]);
    }

    #[test]
    fn fixed_frames_have_the_draft_layout() {
        let mut enc = Encoder::new();
        let mut buf = BytesMut::new();
        enc.encode(&Frame::Ping { id: 2 }, &mut buf).unwrap();
        assert_eq!(&buf[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2]);
        buf.clear();
        enc.encode(
            &Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"ab"),
            },
            &mut buf,
        )
        .unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn a_wrong_version_or_a_short_frame_is_an_error() {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2][..]);
        assert!(dec.decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 0][..]);
        assert!(dec.decode(&mut buf).is_err());
        let mut buf = BytesMut::from(
            &[
                0x80, 3, 0, 1, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2,
            ][..],
        );
        assert!(dec.decode(&mut buf).is_err());
    }

    /// What client-go sends for an exec with stdin and a terminal, then a port-forward
    /// stream, written by moby/spdystream's framer (Go's zlib with the dictionary): see
    /// testdata/README.md.
    #[test]
    fn frames_from_spdystream_decode() {
        let capture = include_bytes!("testdata/go_client_exec.bin");
        let mut buf = BytesMut::from(&capture[..]);
        let mut dec = Decoder::new();
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert!(buf.is_empty());
        let types: Vec<(u32, Option<String>)> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SynStream {
                    stream_id, headers, ..
                } => Some((*stream_id, headers.get("streamType").map(str::to_owned))),
                _ => None,
            })
            .collect();
        assert_eq!(
            types,
            [
                (1, Some("error".to_owned())),
                (3, Some("stdin".to_owned())),
                (5, Some("stdout".to_owned())),
                (7, Some("resize".to_owned())),
                (9, Some("data".to_owned())),
            ]
        );
        assert_eq!(
            frames[4],
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Bytes::from_static(b"hello\n"),
            }
        );
        assert_eq!(
            frames[5],
            Frame::Data {
                stream_id: 7,
                flags: 0,
                data: Bytes::from_static(br#"{"Width":100,"Height":40}"#),
            }
        );
        assert!(frames[6].fin());
        assert_eq!(frames[7], Frame::Ping { id: 1 });
        match &frames[8] {
            Frame::SynStream { headers, .. } => {
                assert_eq!(headers.get("port"), Some("80"));
                assert_eq!(headers.get("requestID"), Some("0"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            frames[9],
            Frame::WindowUpdate {
                stream_id: 9,
                delta: 1000
            }
        );
        assert_eq!(
            frames[10],
            Frame::RstStream {
                stream_id: 9,
                status: rst::CANCEL
            }
        );
        assert_eq!(
            frames[11],
            Frame::GoAway {
                last_good_stream_id: 0,
                status: 0
            }
        );
        assert_eq!(frames.len(), 12);
    }

    /// With BERTH_SPDY_DUMP=<file>, writes what this side sends as a server (replies, data,
    /// ping, goaway) for spdystream's framer to read back (testdata/README.md).
    #[test]
    fn server_frames_for_spdystream() {
        let mut enc = Encoder::new();
        let mut buf = BytesMut::new();
        for id in [1, 3, 5] {
            enc.encode(
                &Frame::SynReply {
                    stream_id: id,
                    flags: 0,
                    headers: Headers::new(),
                },
                &mut buf,
            )
            .unwrap();
        }
        let mut h = Headers::new();
        h.add("streamType", "error");
        enc.encode(
            &Frame::SynStream {
                stream_id: 2,
                associated_id: 0,
                priority: 0,
                flags: 0,
                headers: h,
            },
            &mut buf,
        )
        .unwrap();
        for f in [
            Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello\n"),
            },
            Frame::Ping { id: 2 },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: 0,
            },
        ] {
            enc.encode(&f, &mut buf).unwrap();
        }
        if let Some(path) = std::env::var_os("BERTH_SPDY_DUMP") {
            std::fs::write(path, &buf).unwrap();
        }
        let mut dec = Decoder::new();
        let mut n = 0;
        while dec.decode(&mut buf).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 7);
    }
}
