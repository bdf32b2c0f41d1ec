//! Length framing: an 8-byte little-endian length, then one protobuf message of exactly
//! that many bytes. [`encode`] and [`FrameDecoder`] work on byte buffers only (sans-IO);
//! [`FrameReader`] drives a decoder from a blocking [`Read`], and [`read_messages`] is the
//! reading loop of a connection's reader thread, the same in both daemons.
//!
//! A declared length above the limit is an error as soon as the header is seen, so a
//! peer cannot make the reader buffer or allocate without bound; [`encode`] refuses to
//! write what the peer would refuse to read.

use std::fmt;
use std::io::{self, Read};

use prost::Message;

/// Size of the length header that precedes every message.
pub const HEADER_BYTES: usize = 8;

/// The largest message body accepted (16 MiB); larger declared lengths are refused.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// What went wrong reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header declares a body larger than the limit. The stream cannot be
    /// resynchronised after this: close the connection.
    #[error("frame header declares a {len}-byte message, above the {max}-byte limit")]
    TooLarge { len: u64, max: usize },
    /// A message to send encodes to more than [`MAX_FRAME_BYTES`]: the peer would refuse
    /// it. Nothing was written.
    #[error("message encodes to {len} bytes, above the {max}-byte frame limit; not sent")]
    TooLargeToSend { len: usize, max: usize },
    /// The body is not a valid encoding of the expected message. The frame has been
    /// consumed, so the stream is still in step.
    #[error("frame body is not a valid message: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Reading the stream failed, or it ended inside a frame (`UnexpectedEof`).
    #[error("reading a frame failed: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// Whether the peer sent something wrong (a header above the limit, a body that is no
    /// message), as opposed to the transport failing or the stream being cut short.
    pub fn is_malformed(&self) -> bool {
        matches!(self, FrameError::TooLarge { .. } | FrameError::Decode(_))
    }
}

/// Appends `msg` to `out` as one frame (header and body). A message that encodes to more
/// than [`MAX_FRAME_BYTES`] is refused ([`FrameError::TooLargeToSend`]) and `out` is left
/// as it was: the peer would close the connection on its header.
pub fn encode<M: Message>(msg: &M, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLargeToSend {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    out.reserve(HEADER_BYTES + len);
    out.extend_from_slice(&(len as u64).to_le_bytes());
    // prost's only encode error is "buffer full", and a Vec grows instead.
    if msg.encode(out).is_err() {
        unreachable!("encoding into a Vec<u8> cannot run out of space");
    }
    Ok(())
}

/// The body length a header declares, if it is within `max`.
fn body_len(header: &[u8; HEADER_BYTES], max: usize) -> Result<usize, FrameError> {
    let len = u64::from_le_bytes(*header);
    usize::try_from(len)
        .ok()
        .filter(|&n| n <= max)
        .ok_or(FrameError::TooLarge { len, max })
}

/// Reassembles frames from bytes pushed in arbitrary pieces (sans-IO).
///
/// Push what the transport delivered, then call [`FrameDecoder::next`] until it
/// returns `Ok(None)`.
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset have been consumed.
    start: usize,
    max: usize,
}

impl FrameDecoder {
    /// A decoder that accepts bodies up to [`MAX_FRAME_BYTES`].
    pub fn new() -> Self {
        Self::with_max(MAX_FRAME_BYTES)
    }

    /// A decoder that accepts bodies up to `max` bytes.
    pub fn with_max(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Appends bytes received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop consumed bytes once they are at least half the buffer, so the copy
        // is amortised over what was consumed.
        if self.start > 0 && self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed but not yet returned as a message. Non-zero when the peer closes
    /// means the stream ended inside a frame.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    ///
    /// [`FrameError::TooLarge`] is returned as soon as a header is complete and
    /// stays returned (the stream is lost). After [`FrameError::Decode`] the bad
    /// frame is gone and decoding can continue.
    // Not `Iterator::next`: the message type is chosen per call.
    #[allow(clippy::should_implement_trait)]
    pub fn next<M: Message + Default>(&mut self) -> Result<Option<M>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some((header, rest)) = pending.split_first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        let len = body_len(header, self.max)?;
        let Some(body) = rest.get(..len) else {
            return Ok(None);
        };
        let decoded = M::decode(body);
        self.start += HEADER_BYTES + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(decoded?))
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FrameDecoder {
    // The buffer may hold megabytes; show its size, not its bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered_len", &self.buffered_len())
            .field("max", &self.max)
            .finish()
    }
}

/// Reads frames from a blocking byte stream (a connection) through a [`FrameDecoder`], so
/// a stream is decoded the same way however its bytes arrive, with the same limit.
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
    /// What one `read` may fill; the decoder keeps what a frame still lacks.
    chunk: Box<[u8]>,
}

impl<R: Read> FrameReader<R> {
    /// Bytes asked of the stream per read.
    const CHUNK_BYTES: usize = 64 << 10;

    /// A reader of `inner` that accepts bodies up to [`MAX_FRAME_BYTES`].
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            decoder: FrameDecoder::new(),
            chunk: vec![0; Self::CHUNK_BYTES].into_boxed_slice(),
        }
    }

    /// The next message. `Ok(None)` if the stream ends cleanly between frames; ending
    /// inside a frame is an `UnexpectedEof` [`FrameError::Io`]. A header above the limit
    /// is [`FrameError::TooLarge`] as soon as its 8 bytes are in, before its body is
    /// read; after a [`FrameError::Decode`] reading may go on with the next frame.
    // Not `Iterator::next`: the message type is chosen per call.
    #[allow(clippy::should_implement_trait)]
    pub fn next<M: Message + Default>(&mut self) -> Result<Option<M>, FrameError> {
        loop {
            if let Some(msg) = self.decoder.next()? {
                return Ok(Some(msg));
            }
            let n = match self.inner.read(&mut self.chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return match self.decoder.buffered_len() {
                    0 => Ok(None),
                    partial => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("stream ended inside a frame, {partial} bytes into it"),
                    )
                    .into()),
                };
            }
            self.decoder.push(&self.chunk[..n]);
        }
    }
}

impl<R> fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReader")
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

/// Why [`read_messages`] stopped.
#[derive(Debug)]
pub enum StreamEnd {
    /// The peer closed the stream between two frames.
    Closed,
    /// The receiver of the messages asked to stop.
    Stopped,
    /// The stream broke or ended inside a frame ([`FrameError::Io`]), or the peer sent
    /// something malformed ([`FrameError::is_malformed`]): the connection is out of step
    /// with its peer and should be closed.
    Failed(FrameError),
}

/// The reader thread of a connection: decodes `M`s from `r` and hands each to `deliver`
/// (which forwards it to whoever owns the connection) until the stream ends, fails,
/// carries a malformed frame, or `deliver` returns false.
pub fn read_messages<R: Read, M: Message + Default>(
    r: R,
    mut deliver: impl FnMut(M) -> bool,
) -> StreamEnd {
    let mut reader = FrameReader::new(r);
    loop {
        match reader.next::<M>() {
            Ok(Some(msg)) => {
                if !deliver(msg) {
                    return StreamEnd::Stopped;
                }
            }
            Ok(None) => return StreamEnd::Closed,
            Err(err) => return StreamEnd::Failed(err),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::{to_dataplane::Payload, FromDataplane, RouteRemove, RouteUpdate, ToDataplane};
    use proptest::prelude::*;

    fn route(seq: u64, dst: &str) -> ToDataplane {
        ToDataplane {
            sequence_number: seq,
            payload: Some(Payload::RouteUpdate(RouteUpdate {
                dst: dst.to_owned(),
                dst_node_name: "node-b".to_owned(),
                dst_node_ip: "192.168.0.2".to_owned(),
                ..Default::default()
            })),
        }
    }

    fn stream() -> (Vec<ToDataplane>, Vec<u8>) {
        let msgs = vec![
            route(1, "10.65.1.0/26"),
            ToDataplane::default(), // empty body: a zero-length frame
            ToDataplane {
                sequence_number: 3,
                payload: Some(Payload::RouteRemove(RouteRemove {
                    dst: "10.65.2.0/26".to_owned(),
                })),
            },
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            encode(m, &mut bytes).unwrap();
        }
        (msgs, bytes)
    }

    fn drain(dec: &mut FrameDecoder) -> Vec<ToDataplane> {
        let mut out = Vec::new();
        while let Some(m) = dec.next::<ToDataplane>().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn header_is_little_endian_body_length() {
        let msg = route(9, "10.65.1.0/26");
        let mut out = vec![0xAA]; // encode appends
        encode(&msg, &mut out).unwrap();
        assert_eq!(out[0], 0xAA);
        assert_eq!(out[1..9], (msg.encoded_len() as u64).to_le_bytes());
        assert_eq!(out.len(), 1 + HEADER_BYTES + msg.encoded_len());
    }

    #[test]
    fn decodes_split_at_every_byte_boundary() {
        let (msgs, bytes) = stream();
        for cut in 0..=bytes.len() {
            let mut dec = FrameDecoder::new();
            dec.push(&bytes[..cut]);
            let mut got = drain(&mut dec);
            dec.push(&bytes[cut..]);
            got.extend(drain(&mut dec));
            assert_eq!(got, msgs, "split at byte {cut}");
            assert_eq!(dec.buffered_len(), 0);
        }
    }

    #[test]
    fn decodes_one_byte_at_a_time() {
        let (msgs, bytes) = stream();
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            dec.push(std::slice::from_ref(b));
            got.extend(drain(&mut dec));
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn oversize_length_is_refused_from_the_header_alone() {
        let mut dec = FrameDecoder::with_max(100);
        dec.push(&101u64.to_le_bytes());
        let err = dec.next::<ToDataplane>().unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len: 101, max: 100 }),
            "{err}"
        );
        // Sticky: the stream cannot be resynchronised.
        assert!(matches!(
            dec.next::<ToDataplane>(),
            Err(FrameError::TooLarge { .. })
        ));

        let mut dec = FrameDecoder::new();
        dec.push(&u64::MAX.to_le_bytes());
        let err = dec.next::<ToDataplane>().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "frame header declares a {}-byte message, above the {MAX_FRAME_BYTES}-byte limit",
                u64::MAX
            )
        );
    }

    #[test]
    fn limit_is_inclusive() {
        let msg = route(1, "10.65.1.0/26");
        let mut bytes = Vec::new();
        encode(&msg, &mut bytes).unwrap();
        let mut dec = FrameDecoder::with_max(msg.encoded_len());
        dec.push(&bytes);
        assert_eq!(dec.next::<ToDataplane>().unwrap(), Some(msg));
    }

    #[test]
    fn garbage_body_is_a_decode_error_and_the_stream_continues() {
        // Field 15 declared as length-delimited with a length running past the end.
        let garbage = [0x7A, 0x05, 0x01];
        let mut bytes = (garbage.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&garbage);
        encode(&route(2, "10.65.1.0/26"), &mut bytes).unwrap();

        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        let err = dec.next::<ToDataplane>().unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
        assert!(err
            .to_string()
            .starts_with("frame body is not a valid message"));
        assert_eq!(
            dec.next::<ToDataplane>().unwrap(),
            Some(route(2, "10.65.1.0/26"))
        );

        let mut reader = FrameReader::new(&bytes[..]);
        let err = reader.next::<ToDataplane>().unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
        assert_eq!(
            reader.next::<ToDataplane>().unwrap(),
            Some(route(2, "10.65.1.0/26"))
        );
    }

    /// A stream that hands out at most one byte per read, interrupted every other time,
    /// as a socket may; then whatever `after` says once the bytes are gone.
    struct Trickle<'a> {
        bytes: &'a [u8],
        interrupt: bool,
        after: fn() -> io::Result<usize>,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            match self.bytes.split_first() {
                Some((first, rest)) if !buf.is_empty() => {
                    buf[0] = *first;
                    self.bytes = rest;
                    Ok(1)
                }
                _ => (self.after)(),
            }
        }
    }

    fn trickle(bytes: &[u8]) -> Trickle<'_> {
        Trickle {
            bytes,
            interrupt: false,
            after: || Ok(0),
        }
    }

    #[test]
    fn reader_decodes_frames_arriving_a_byte_at_a_time() {
        let (msgs, bytes) = stream();
        let mut reader = FrameReader::new(trickle(&bytes));
        let mut got = Vec::new();
        while let Some(m) = reader.next::<ToDataplane>().unwrap() {
            got.push(m);
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn reader_reports_truncation_as_unexpected_eof() {
        let (_, bytes) = stream();
        let first_frame = HEADER_BYTES + route(1, "10.65.1.0/26").encoded_len();
        for cut in 1..first_frame {
            let err = FrameReader::new(&bytes[..cut])
                .next::<ToDataplane>()
                .unwrap_err();
            match err {
                FrameError::Io(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
                    assert_eq!(
                        e.to_string(),
                        format!("stream ended inside a frame, {cut} bytes into it")
                    );
                }
                other => panic!("cut at {cut}: {other}"),
            }
        }
        let mut empty = FrameReader::new(&[][..]);
        assert!(empty.next::<ToDataplane>().unwrap().is_none());
    }

    #[test]
    fn reader_refuses_an_oversized_length_before_reading_its_body() {
        // Only the header: reading on would fail the test with this error instead.
        let header = ((MAX_FRAME_BYTES + 1) as u64).to_le_bytes();
        let stream = Trickle {
            bytes: &header,
            interrupt: false,
            after: || Err(io::Error::other("the body was read")),
        };
        let err = FrameReader::new(stream).next::<ToDataplane>().unwrap_err();
        assert!(err.is_malformed());
        assert_eq!(
            err.to_string(),
            format!(
                "frame header declares a {}-byte message, above the {MAX_FRAME_BYTES}-byte limit",
                MAX_FRAME_BYTES + 1
            )
        );
    }

    #[test]
    fn read_messages_says_why_it_stopped() {
        let (msgs, bytes) = stream();
        let mut got = Vec::new();
        let end = read_messages(trickle(&bytes), |m: ToDataplane| {
            got.push(m);
            true
        });
        assert!(matches!(end, StreamEnd::Closed), "{end:?}");
        assert_eq!(got, msgs);

        let end = read_messages(&bytes[..], |_: ToDataplane| false);
        assert!(matches!(end, StreamEnd::Stopped), "{end:?}");

        // A good frame is delivered, then an oversized header ends the stream.
        let mut bytes = Vec::new();
        encode(&route(1, "10.65.1.0/26"), &mut bytes).unwrap();
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut got = Vec::new();
        let end = read_messages(&bytes[..], |m: ToDataplane| {
            got.push(m);
            true
        });
        assert_eq!(got, [route(1, "10.65.1.0/26")]);
        match end {
            StreamEnd::Failed(err) => {
                assert!(matches!(err, FrameError::TooLarge { len: u64::MAX, .. }))
            }
            other => panic!("{other:?}"),
        }

        // Cut inside a frame: a transport failure, not a malformed frame.
        let end = read_messages(&bytes[..5], |_: ToDataplane| true);
        match end {
            StreamEnd::Failed(err) => assert!(!err.is_malformed(), "{err}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encode_refuses_what_the_peer_would_reject() {
        let huge = ToDataplane {
            sequence_number: 1,
            payload: Some(Payload::RouteRemove(RouteRemove {
                dst: "x".repeat(MAX_FRAME_BYTES),
            })),
        };
        let mut wire = vec![1, 2, 3];
        let err = encode(&huge, &mut wire).unwrap_err();
        assert!(matches!(err, FrameError::TooLargeToSend { .. }), "{err}");
        assert!(err.to_string().starts_with(&format!(
            "message encodes to {} bytes, above the {MAX_FRAME_BYTES}-byte frame limit",
            huge.encoded_len()
        )));
        assert_eq!(wire, [1, 2, 3], "nothing appended");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            pieces in prop::collection::vec(
                (0u64..80, prop::collection::vec(any::<u8>(), 0..64)), 0..8),
            framed in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            // Either fully random bytes, or plausible small headers (which may not match
            // the body that follows) so decoding gets past the length check.
            let mut bytes = Vec::new();
            for (len, body) in &pieces {
                if framed {
                    bytes.extend_from_slice(&len.to_le_bytes());
                }
                bytes.extend_from_slice(body);
            }
            let (a, b) = bytes.split_at(cut.index(bytes.len() + 1));
            let mut dec = FrameDecoder::with_max(1024);
            for piece in [a, b] {
                dec.push(piece);
                // Decode errors leave the stream in step; anything else ends it.
                while let Ok(Some(_)) | Err(FrameError::Decode(_)) = dec.next::<ToDataplane>() {}
            }
            let mut reader = FrameReader::new(bytes.as_slice());
            while let Ok(Some(_)) | Err(FrameError::Decode(_)) = reader.next::<FromDataplane>() {}
        }

        #[test]
        fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = (body.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(&body);
            let mut dec = FrameDecoder::new();
            dec.push(&bytes);
            let _ = dec.next::<ToDataplane>();
            let mut dec = FrameDecoder::new();
            dec.push(&bytes);
            let _ = dec.next::<FromDataplane>();
        }
    }
}
