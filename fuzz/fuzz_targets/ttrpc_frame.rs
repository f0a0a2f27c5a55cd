//! ttrpc frames (`berth_ttrpc::wire`), what berthd reads from every shim and a shim from
//! berthd: the 10-byte header, then a `Request` or `Response` envelope.
//!
//! Input: the bytes a peer sends on a connection. Checks: no panic and no allocation beyond
//! the 4 MiB frame limit; every frame read re-encodes to the bytes it came from; envelopes
//! that decode survive an encode/decode round trip.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use berth_ttrpc::wire::{
    encode_frame, read_frame, Frame, FrameHeader, Request, Response, HEADER_LEN, MAX_MESSAGE_LEN,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Runs `fut` to completion; reading from a byte slice never waits, so one poll is enough.
fn now<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("read_frame waited on a byte slice"),
    }
}

/// Decodes `payload` as `M`, and if it decodes, checks that it survives a round trip.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(payload: &[u8]) {
    if let Ok(msg) = M::decode(payload) {
        let again = M::decode(&msg.encode_to_vec()[..]).expect("a re-encoded message decodes");
        assert_eq!(again, msg, "round trip changed the message");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        let before = rest;
        match now(read_frame(&mut rest)) {
            Ok(None) => {
                assert!(before.is_empty(), "EOF reported with bytes left");
                break;
            }
            Err(_) => break,
            Ok(Some(Frame::Oversized(h))) => {
                assert!(h.length as usize > MAX_MESSAGE_LEN);
                let used = before.len() - rest.len();
                assert_eq!(used, HEADER_LEN + h.length as usize);
            }
            Ok(Some(Frame::Message(h, payload))) => {
                assert!(payload.len() <= MAX_MESSAGE_LEN);
                assert_eq!(h.length as usize, payload.len());
                let header: [u8; HEADER_LEN] = before[..HEADER_LEN]
                    .try_into()
                    .expect("a frame starts with a whole header");
                assert_eq!(FrameHeader::from_bytes(&header), h);
                assert_eq!(h.to_bytes(), header);
                let used = before.len() - rest.len();
                if h.flags == 0 {
                    let again = encode_frame(h.stream_id, h.kind, &payload);
                    assert_eq!(&again[..], &before[..used], "frame did not re-encode");
                }
                round_trip::<Request>(&payload);
                round_trip::<Response>(&payload);
            }
        }
    }
});
