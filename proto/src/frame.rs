//! Length framing: an 8-byte little-endian length, then one protobuf message of exactly
//! that many bytes. [`encode`] and [`FrameDecoder`] work on byte buffers only (sans-IO);
//! [`write_frame`] and [`read_frame`] are blocking conveniences over `std::io`.
//!
//! A declared length above the limit is an error as soon as the header is seen, so a
//! peer cannot make the reader buffer or allocate without bound.

use std::fmt;
use std::io::{self, Read, Write};

use prost::Message;

/// Size of the length header that precedes every message.
pub const HEADER_BYTES: usize = 8;

/// The largest message body accepted (16 MiB); larger declared lengths are refused.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// What went wrong reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header declares a body larger than the limit. The stream cannot be
    /// resynchronised after this: close the connection.
    #[error("frame header declares a {len}-byte message, above the {max}-byte limit")]
    TooLarge { len: u64, max: usize },
    /// The body is not a valid encoding of the expected message. The frame has been
    /// consumed, so the stream is still in step.
    #[error("frame body is not a valid message: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Reading the stream failed, or it ended inside a frame (`UnexpectedEof`).
    #[error("reading a frame failed: {0}")]
    Io(#[from] io::Error),
}

/// Appends `msg` to `out` as one frame (header and body). Peers refuse bodies above
/// [`MAX_FRAME_BYTES`]; [`write_frame`] checks that, this function does not.
pub fn encode<M: Message>(msg: &M, out: &mut Vec<u8>) {
    let len = msg.encoded_len();
    out.reserve(HEADER_BYTES + len);
    out.extend_from_slice(&(len as u64).to_le_bytes());
    // prost's only encode error is "buffer full", and a Vec grows instead.
    if msg.encode(out).is_err() {
        unreachable!("encoding into a Vec<u8> cannot run out of space");
    }
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

/// Writes `msg` as one frame with a single `write_all`. A body above
/// [`MAX_FRAME_BYTES`] is refused with `InvalidInput`, since the peer would reject it.
pub fn write_frame<W: Write, M: Message>(w: &mut W, msg: &M) -> io::Result<()> {
    let len = msg.encoded_len();
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("message encodes to {len} bytes, above the {MAX_FRAME_BYTES}-byte frame limit"),
        ));
    }
    let mut buf = Vec::with_capacity(HEADER_BYTES + len);
    encode(msg, &mut buf);
    w.write_all(&buf)
}

/// Reads one frame and decodes it. `Ok(None)` if the stream ends cleanly before a
/// header; ending anywhere inside a frame is an `UnexpectedEof` [`FrameError::Io`].
/// The declared length is checked against [`MAX_FRAME_BYTES`] before allocating.
pub fn read_frame<R: Read, M: Message + Default>(r: &mut R) -> Result<Option<M>, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    let mut filled = 0;
    while filled < HEADER_BYTES {
        match r.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => {
                return Err(truncated(format!(
                    "after {filled} of {HEADER_BYTES} header bytes"
                )))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = body_len(&header, MAX_FRAME_BYTES)?;
    // Grow with what actually arrives rather than trusting the header for a big
    // up-front allocation.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    r.take(len as u64).read_to_end(&mut body)?;
    if body.len() < len {
        return Err(truncated(format!(
            "after {} of {len} body bytes",
            body.len()
        )));
    }
    Ok(Some(M::decode(body.as_slice())?))
}

fn truncated(where_: String) -> FrameError {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("stream ended inside a frame, {where_}"),
    )
    .into()
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
            encode(m, &mut bytes);
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
        encode(&msg, &mut out);
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
        encode(&msg, &mut bytes);
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
        encode(&route(2, "10.65.1.0/26"), &mut bytes);

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

        let err = read_frame::<_, ToDataplane>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }

    #[test]
    fn write_then_read_frames() {
        let (msgs, _) = stream();
        let mut wire = Vec::new();
        for m in &msgs {
            write_frame(&mut wire, m).unwrap();
        }
        let mut r = wire.as_slice();
        let mut got = Vec::new();
        while let Some(m) = read_frame::<_, ToDataplane>(&mut r).unwrap() {
            got.push(m);
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn read_frame_reports_truncation_as_unexpected_eof() {
        let (_, bytes) = stream();
        let first_frame = HEADER_BYTES + route(1, "10.65.1.0/26").encoded_len();
        for cut in 1..first_frame {
            let err = read_frame::<_, ToDataplane>(&mut &bytes[..cut]).unwrap_err();
            match err {
                FrameError::Io(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}")
                }
                other => panic!("cut at {cut}: {other}"),
            }
        }
        assert!(read_frame::<_, ToDataplane>(&mut &[][..])
            .unwrap()
            .is_none());
    }

    #[test]
    fn read_frame_refuses_oversize_before_reading_the_body() {
        let mut bytes = ((MAX_FRAME_BYTES + 1) as u64).to_le_bytes().to_vec();
        bytes.push(0);
        let err = read_frame::<_, ToDataplane>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn write_frame_refuses_what_the_peer_would_reject() {
        let huge = ToDataplane {
            sequence_number: 1,
            payload: Some(Payload::RouteRemove(RouteRemove {
                dst: "x".repeat(MAX_FRAME_BYTES),
            })),
        };
        let mut wire = Vec::new();
        let err = write_frame(&mut wire, &huge).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(wire.is_empty());
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
            let mut r = bytes.as_slice();
            while let Ok(Some(_)) | Err(FrameError::Decode(_)) = read_frame::<_, FromDataplane>(&mut r) {}
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
