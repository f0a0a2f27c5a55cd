//! Accepts any HTTP/2 `:authority` on the unix socket, as grpc-go (and so containerd) does.
//!
//! Several stock gRPC clients send the socket path as the `:authority` of calls over a unix
//! socket: grpcio (Python, C core ≥ 1.57) sends it percent-encoded, grpc-java and grpcurl as is.
//! h2, under tonic, parses `:authority` as a URI authority and resets every such stream with
//! PROTOCOL_ERROR (hyperium/h2 pull request 487, unmerged), so those clients could not talk to
//! berthd at all. Neither h2, hyper nor tonic has an option to relax the check, and a patched h2
//! would be a fork to maintain, so the fix sits in the connection layer: [`AuthorityFix`] wraps
//! each accepted connection and edits the client's header blocks before h2 reads them.
//!
//! HPACK state is per connection (a dynamic table both sides keep in step). The first request's
//! header block is decoded: if its authority is valid, the connection is left alone from then on
//! (a client sends one authority on all calls of a connection), its bytes going to h2 unchanged.
//! An invalid authority switches the connection to rewriting: every header block is decoded to
//! follow the client's table, and each is re-encoded with literal fields that never touch the dynamic table (h2's copy
//! of the table, identical to the client's up to that block, is simply never referenced again),
//! with the authority replaced by `localhost`, the value grpc-go and the kubelet send on unix
//! sockets. Only HEADERS and CONTINUATION frames are touched; everything else streams through.
//! Input that is not well-formed HTTP/2 is handed to h2 as it is, so h2 reports the error.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The client connection preface (RFC 9113 §3.4): passed through before the first frame.
const PREFACE_LEN: usize = 24;
/// Length of an HTTP/2 frame header.
const FRAME_HEADER_LEN: usize = 9;
/// Frame types and flags this layer reads (RFC 9113 §6.2, §6.10).
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Length of the stream dependency and weight a PRIORITY-flagged HEADERS frame carries.
const PRIORITY_LEN: usize = 5;
/// Frames this layer writes stay within the size every HTTP/2 peer must accept (RFC 9113 §4.2).
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// A header block larger than this is not buffered for inspection: it goes to h2 as it is (and
/// is refused there, h2's own header list limit being far smaller).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// What replaces an authority h2 would refuse.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// A connection whose client header blocks get a valid `:authority` (see the module docs).
#[derive(Debug)]
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: FrameRewriter,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted server-side connection.
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            rewriter: FrameRewriter::new(),
            eof: false,
        }
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.rewriter.output.is_empty() {
                let n = this.rewriter.output.len().min(buf.remaining());
                buf.put_slice(&this.rewriter.output[..n]);
                this.rewriter.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.passes_everything() {
                // Nothing held back and nothing more to inspect: h2 reads the socket itself,
                // without a copy through this layer's buffers.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [MaybeUninit::<u8>::uninit(); 8192];
            let mut read = ReadBuf::uninit(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                this.rewriter.finish();
            } else {
                this.rewriter.push(read.filled());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Where the rewriter is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Inside the connection preface, with this many bytes of it still to pass.
    Preface(usize),
    /// At the start of a frame.
    FrameStart,
    /// Inside the payload of a frame that passes unchanged, with this many bytes still to pass.
    Payload(usize),
    /// Given up on malformed input: everything passes unchanged.
    Passthrough,
}

/// A header block being collected from a HEADERS frame and its CONTINUATIONs.
#[derive(Debug)]
struct PendingBlock {
    stream_id: u32,
    /// END_STREAM and PRIORITY as the HEADERS frame had them.
    flags: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
    fragment: Vec<u8>,
    /// The frames as received, for when the block passes unchanged.
    raw: BytesMut,
}

/// The client-to-server half of the connection, frame by frame.
struct FrameRewriter {
    input: BytesMut,
    output: BytesMut,
    position: Position,
    /// Follows the client's HPACK dynamic table.
    decoder: hpack::Decoder<'static>,
    /// Set once a block was re-encoded: every later block is re-encoded too.
    rewriting: bool,
    pending: Option<PendingBlock>,
}

impl std::fmt::Debug for FrameRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameRewriter")
            .field("position", &self.position)
            .field("rewriting", &self.rewriting)
            .finish_non_exhaustive()
    }
}

impl FrameRewriter {
    fn new() -> Self {
        FrameRewriter {
            input: BytesMut::new(),
            output: BytesMut::new(),
            position: Position::Preface(PREFACE_LEN),
            decoder: hpack::Decoder::new(),
            rewriting: false,
            pending: None,
        }
    }

    /// Whether every byte from now on goes to h2 unchanged, with none held back.
    fn passes_everything(&self) -> bool {
        self.position == Position::Passthrough && self.input.is_empty() && self.pending.is_none()
    }

    /// Takes bytes read from the client and moves whatever is complete to `output`.
    fn push(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        self.process();
    }

    /// The client closed its side: whatever is left goes to h2 as it is.
    fn finish(&mut self) {
        if let Some(block) = self.pending.take() {
            self.output.extend_from_slice(&block.raw);
        }
        let rest = self.input.split();
        self.output.extend_from_slice(&rest);
    }

    fn process(&mut self) {
        loop {
            match self.position {
                Position::Preface(left) | Position::Payload(left) => {
                    let n = left.min(self.input.len());
                    let passed = self.input.split_to(n);
                    self.output.extend_from_slice(&passed);
                    if n < left {
                        self.position = match self.position {
                            Position::Preface(_) => Position::Preface(left - n),
                            _ => Position::Payload(left - n),
                        };
                        return;
                    }
                    self.position = Position::FrameStart;
                }
                Position::Passthrough => {
                    let rest = self.input.split();
                    self.output.extend_from_slice(&rest);
                    return;
                }
                Position::FrameStart => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return;
                    }
                    let header = &self.input[..FRAME_HEADER_LEN];
                    let len = usize::from(header[0]) << 16
                        | usize::from(header[1]) << 8
                        | usize::from(header[2]);
                    let kind = header[3];
                    let is_header_frame = kind == HEADERS || kind == CONTINUATION;
                    if !is_header_frame && self.pending.is_none() {
                        let head = self.input.split_to(FRAME_HEADER_LEN);
                        self.output.extend_from_slice(&head);
                        self.position = Position::Payload(len);
                        continue;
                    }
                    let buffered = self.pending.as_ref().map_or(0, |b| b.raw.len());
                    if !is_header_frame || buffered + len > MAX_HEADER_BLOCK {
                        // Another frame inside a header block, or a block too large to inspect:
                        // h2 will judge it.
                        self.give_up();
                        continue;
                    }
                    if self.input.len() < FRAME_HEADER_LEN + len {
                        return;
                    }
                    let frame = self.input.split_to(FRAME_HEADER_LEN + len);
                    if self.header_frame(frame).is_err() {
                        self.give_up();
                    }
                }
            }
        }
    }

    /// Everything held and everything after it goes to h2 unchanged.
    fn give_up(&mut self) {
        if let Some(block) = self.pending.take() {
            self.output.extend_from_slice(&block.raw);
        }
        self.position = Position::Passthrough;
    }

    /// Collects one HEADERS or CONTINUATION frame. A malformed one goes to the output as it is,
    /// after whatever block was pending, and is an `Err`: the caller stops inspecting.
    fn header_frame(&mut self, frame: BytesMut) -> Result<(), ()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];
        let fragment;
        if kind == HEADERS {
            if self.pending.is_some() {
                return self.malformed(frame);
            }
            let mut start = 0;
            let mut pad = 0;
            if flags & PADDED != 0 {
                let Some(&p) = payload.first() else {
                    return self.malformed(frame);
                };
                pad = usize::from(p);
                start = 1;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let Some(bytes) = payload.get(start..start + PRIORITY_LEN) else {
                    return self.malformed(frame);
                };
                let mut p = [0u8; PRIORITY_LEN];
                p.copy_from_slice(bytes);
                priority = Some(p);
                start += PRIORITY_LEN;
            }
            let Some(end) = payload.len().checked_sub(pad).filter(|&e| e >= start) else {
                return self.malformed(frame);
            };
            fragment = payload[start..end].to_vec();
            self.pending = Some(PendingBlock {
                stream_id,
                flags: flags & (END_STREAM | PRIORITY),
                priority,
                fragment,
                raw: frame.clone(),
            });
        } else {
            match self.pending.as_mut() {
                Some(block) if block.stream_id == stream_id => {
                    block.fragment.extend_from_slice(payload);
                    block.raw.extend_from_slice(&frame);
                }
                _ => return self.malformed(frame),
            }
        }
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.pending.take() {
                self.complete(block);
            }
        }
        Ok(())
    }

    fn malformed(&mut self, frame: BytesMut) -> Result<(), ()> {
        if let Some(block) = self.pending.take() {
            self.output.extend_from_slice(&block.raw);
        }
        self.output.extend_from_slice(&frame);
        Err(())
    }

    /// A whole header block arrived: pass it, or re-encode it with a valid authority.
    fn complete(&mut self, block: PendingBlock) {
        let fields = match self.decoder.decode(&block.fragment) {
            Ok(fields) => fields,
            Err(e) => {
                tracing::debug!(error = ?e, "client header block does not decode; passed to h2");
                self.output.extend_from_slice(&block.raw);
                self.position = Position::Passthrough;
                return;
            }
        };
        let invalid = |(name, value): &(Vec<u8>, Vec<u8>)| {
            name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err()
        };
        if !self.rewriting && !fields.iter().any(invalid) {
            // The authority is a property of the client's channel: every call on a connection
            // carries the same one. A connection whose first request is fine needs no more
            // inspection, so it stops paying for HPACK decoding (the `hpack` crate builds a
            // Huffman table per string: ~20 µs of CPU per Version call when kept on).
            self.output.extend_from_slice(&block.raw);
            self.position = Position::Passthrough;
            return;
        }
        if !self.rewriting {
            tracing::debug!("client sends an authority h2 refuses; rewriting its header blocks");
            self.rewriting = true;
        }
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for field in &fields {
            let value = if invalid(field) {
                REPLACEMENT_AUTHORITY
            } else {
                &field.1
            };
            encode_literal(&mut encoded, &field.0, value);
        }
        self.write_block(&block, &encoded);
    }

    /// Writes `encoded` as a HEADERS frame and as many CONTINUATIONs as it needs.
    fn write_block(&mut self, block: &PendingBlock, encoded: &[u8]) {
        let priority: &[u8] = block.priority.as_ref().map_or(&[], |p| &p[..]);
        let first_room = MAX_FRAME_PAYLOAD - priority.len();
        let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
        let mut flags = block.flags;
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        put_frame_header(
            &mut self.output,
            priority.len() + first.len(),
            HEADERS,
            flags,
            block.stream_id,
        );
        self.output.extend_from_slice(priority);
        self.output.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD));
            let flags = if after.is_empty() { END_HEADERS } else { 0 };
            put_frame_header(
                &mut self.output,
                chunk.len(),
                CONTINUATION,
                flags,
                block.stream_id,
            );
            self.output.extend_from_slice(chunk);
            rest = after;
        }
    }
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    // `len` ≤ MAX_FRAME_PAYLOAD, so it fits the 24-bit length field.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.put_uint(u64::from(len), 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
}

/// One field as "literal header field without indexing, new name" (RFC 7541 §6.2.2), plain
/// strings: it neither reads nor changes the decoder's dynamic table.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_string(out, name);
    encode_string(out, value);
}

/// A string literal without Huffman coding (RFC 7541 §5.2).
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

/// An integer with an N-bit prefix (RFC 7541 §5.1); `first` holds the bits above the prefix.
fn encode_integer(out: &mut Vec<u8>, value: usize, prefix_bits: u32, first: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    /// RFC 7541 C.4.1: GET http://www.example.com/ with Huffman-coded strings.
    const HUFFMAN_REQUEST: &[u8] = &[
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame_header(&mut out, payload.len(), kind, flags, stream_id);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn request(authority: &str, path: &str) -> Fields {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    fn encode(encoder: &mut hpack::Encoder<'_>, fields: &Fields) -> Vec<u8> {
        encoder.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    }

    /// Runs `input` through a rewriter, `step` bytes at a time.
    fn rewrite(input: &[u8], step: usize) -> Vec<u8> {
        let mut r = FrameRewriter::new();
        for chunk in input.chunks(step) {
            r.push(chunk);
        }
        r.finish();
        r.output.to_vec()
    }

    /// Splits h2's view of the connection into (type, flags, stream, payload) frames.
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..PREFACE_LEN], PREFACE);
        let mut rest = &bytes[PREFACE_LEN..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            out.push((rest[3], rest[4], id, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        out
    }

    /// Decodes the header blocks h2 would see, as h2's own decoder would.
    fn h2_view(bytes: &[u8]) -> Vec<(u32, u8, Fields)> {
        let mut decoder = hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut current: Option<(u32, u8, Vec<u8>)> = None;
        for (kind, flags, id, payload) in frames(bytes) {
            match kind {
                HEADERS => {
                    assert!(current.is_none(), "HEADERS inside a block");
                    let skip = if flags & PRIORITY != 0 {
                        PRIORITY_LEN
                    } else {
                        0
                    };
                    current = Some((id, flags, payload[skip..].to_vec()));
                }
                CONTINUATION => {
                    let block = current.as_mut().expect("CONTINUATION after HEADERS");
                    assert_eq!(block.0, id);
                    block.2.extend_from_slice(&payload);
                }
                _ => continue,
            }
            if flags & END_HEADERS != 0 {
                let (id, first_flags, fragment) = current.take().expect("a block");
                let fields = decoder.decode(&fragment).expect("h2 decodes the block");
                blocks.push((id, first_flags, fields));
            }
        }
        blocks
    }

    #[test]
    fn valid_authorities_pass_byte_for_byte() {
        let mut enc = hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
        let block = encode(&mut enc, &request("localhost", "/v.Version/Version"));
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        input.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, HUFFMAN_REQUEST));
        for step in [1, 7, 4096] {
            assert_eq!(rewrite(&input, step), input, "step {step}");
        }
        // A Huffman-coded first request (RFC 7541 C.4.1) is decoded and found valid too.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, HUFFMAN_REQUEST));
        assert_eq!(rewrite(&input, 3), input);
    }

    #[test]
    fn a_connection_whose_first_authority_is_valid_is_not_inspected_further() {
        let mut enc = hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        for (id, authority) in [(1, "localhost"), (3, "/run/berth/berthd.sock")] {
            let fields = request(authority, "/v.Version/Version");
            input.extend(frame(HEADERS, END_HEADERS, id, &encode(&mut enc, &fields)));
        }
        let mut r = FrameRewriter::new();
        r.push(&input);
        assert_eq!(r.position, Position::Passthrough);
        assert_eq!(r.output.to_vec(), input);
    }

    /// Writes `parts` one after another into a connection wrapped in [`AuthorityFix`] and
    /// returns what a reader of the wrapper gets.
    async fn read_through(parts: Vec<Vec<u8>>) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for part in parts {
                client.write_all(&part).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut fixed = AuthorityFix::new(server);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        assert!(fixed.rewriter.passes_everything() || fixed.rewriter.rewriting);
        out
    }

    #[tokio::test]
    async fn the_connection_reads_unchanged_once_passed_and_rewritten_when_not() {
        let mut enc = hpack::Encoder::new();
        let mut first = PREFACE.to_vec();
        let block = encode(&mut enc, &request("localhost", "/v.Version/Version"));
        first.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let mut later = frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]);
        for id in [3, 5, 7] {
            let block = encode(&mut enc, &request("localhost", "/v.Version/Version"));
            later.extend(frame(HEADERS, END_HEADERS, id, &block));
            later.extend(frame(0x0, END_STREAM, id, &vec![7; 300]));
        }
        let mut all = first.clone();
        all.extend_from_slice(&later);
        // Split mid-frame, so that the direct reads start with bytes already buffered.
        let parts = vec![first[..30].to_vec(), first[30..].to_vec(), later];
        assert_eq!(read_through(parts).await, all);

        let mut enc = hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        let block = encode(&mut enc, &request("/run/berth.sock", "/v.Version/Version"));
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let block = encode(&mut enc, &request("/run/berth.sock", "/v.Version/Version"));
        input.extend(frame(HEADERS, END_HEADERS, 3, &block));
        let seen = h2_view(&read_through(vec![input]).await);
        assert_eq!(seen.len(), 2);
        for (_, _, fields) in seen {
            assert!(fields.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        }
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_later_blocks_still_decode() {
        let mut enc = hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        // The first block indexes fields in the client's dynamic table and is rewritten; the
        // later ones refer to those entries, which h2's table (never fed them) must not need,
        // and a later valid authority is kept as it is.
        let mut expected = Vec::new();
        for (id, authority) in [
            (1, "%2Frun%2Fberth%2Fberthd.sock"),
            (3, "%2Frun%2Fberth%2Fberthd.sock"),
            (5, "/run/berth/berthd.sock"),
            (7, "localhost"),
        ] {
            let fields = request(authority, "/c.Containers/List");
            input.extend(frame(HEADERS, END_HEADERS, id, &encode(&mut enc, &fields)));
            input.extend(frame(0x0, END_STREAM, id, b"\0\0\0\0\0"));
            expected.push((id, request("localhost", "/c.Containers/List")));
        }
        for step in [1, 5, 100_000] {
            let out = rewrite(&input, step);
            let seen: Vec<_> = h2_view(&out)
                .into_iter()
                .map(|(id, _, f)| (id, f))
                .collect();
            assert_eq!(seen, expected, "step {step}");
            for (id, authority) in &seen {
                let value = &authority[3].1;
                assert!(
                    http::uri::Authority::try_from(value.as_slice()).is_ok(),
                    "{id}"
                );
            }
            let data: Vec<_> = frames(&out).into_iter().filter(|f| f.0 == 0).collect();
            assert_eq!(data.len(), 4, "DATA frames pass");
        }
    }

    #[test]
    fn padding_priority_and_continuations_are_understood_and_large_blocks_split() {
        let mut enc = hpack::Encoder::new();
        let mut fields = request("/run/berth/berthd.sock", "/x/Y");
        fields.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let block = encode(&mut enc, &fields);
        // Padded, with priority, split over a HEADERS and two CONTINUATIONs.
        let (a, rest) = block.split_at(100);
        let (b, c) = rest.split_at(20_000);
        let mut payload = vec![3u8]; // pad length
        payload.extend([0, 0, 0, 0, 15]); // priority
        payload.extend_from_slice(a);
        payload.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 9, &payload));
        input.extend(frame(CONTINUATION, 0, 9, b));
        input.extend(frame(CONTINUATION, END_HEADERS, 9, c));
        let out = rewrite(&input, 3000);
        let kinds: Vec<_> = frames(&out).iter().map(|f| (f.0, f.1, f.3.len())).collect();
        assert!(kinds.iter().all(|k| k.2 <= MAX_FRAME_PAYLOAD), "{kinds:?}");
        assert_eq!(kinds[0].0, HEADERS);
        assert_eq!(kinds[0].1, PRIORITY | END_STREAM);
        assert!(kinds.len() >= 3);
        let seen = h2_view(&out);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, 9);
        assert_eq!(seen[0].2[3].1, b"localhost");
        assert_eq!(seen[0].2[6].1.len(), 40_000);
    }

    #[test]
    fn malformed_input_reaches_h2_unchanged() {
        let mut input = PREFACE.to_vec();
        // A CONTINUATION without a HEADERS before it, then garbage.
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b"\x82"));
        input.extend(b"garbage that is not a frame");
        assert_eq!(rewrite(&input, 10), input);
        // A block HPACK cannot decode.
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        input.extend(frame(0x0, 0, 1, b"x"));
        assert_eq!(rewrite(&input, 2), input);
    }

    #[test]
    fn integers_use_the_prefix_then_continuation_bytes() {
        let mut out = Vec::new();
        encode_integer(&mut out, 10, 5, 0);
        encode_integer(&mut out, 1337, 5, 0);
        assert_eq!(out, [10, 31, 154, 10]); // RFC 7541 C.1.1 and C.1.2
    }
}
