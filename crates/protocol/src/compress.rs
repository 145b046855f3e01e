//! COMPRESS DEFLATE (spec §1.7) as a byte-level adapter.
//!
//! After `OK DEFLATE active` each direction of the connection is one raw DEFLATE
//! stream (RFC 1951, no zlib or gzip header) that lives until the connection closes.
//! The writer puts everything it flushes through one [`Deflater`], which ends each
//! flush with a sync flush so the peer can decode the data without waiting for more;
//! the reader passes whatever bytes arrived, in any split, through one [`Inflater`].
//! Neither knows about lines: they sit below the line codec.
//!
//! The command side (what the server answers to `COMPRESS <alg>`) is
//! [`server_reply`].

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// zlib's default level, which Cyrus uses.
pub const DEFAULT_LEVEL: u32 = 6;

/// What the Cyrus client sends to switch compression on.
pub const COMMAND: &str = "COMPRESS DEFLATE";

/// `COMPRESS` without an argument.
pub const BAD_MISSING_ARGUMENT: &str = "BAD Missing required argument to Compress";

/// `COMPRESS` with more than one argument (or anything after it but the line end).
pub const BAD_EXTRA_ARGUMENTS: &str = "BAD Unexpected extra arguments to Compress";

/// Why a stream could not be compressed or decompressed. Every error leaves the
/// stream unusable: the connection has to be closed.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("deflate failed: {0}")]
    Deflate(#[from] flate2::CompressError),
    #[error("corrupt deflate stream: {0}")]
    Corrupt(#[from] flate2::DecompressError),
    /// The peer ended its stream with a final block and then sent more.
    #[error("data after the end of the deflate stream")]
    TrailingData,
    /// The codec neither consumed input nor produced output; looping again would
    /// never end.
    #[error("{0} made no progress")]
    Stalled(&'static str),
    #[error("stream unusable after an earlier error")]
    Broken,
}

/// Every call hands zlib at least this much spare output room. zlib asks for more
/// than six bytes during a sync flush, or it may repeat the flush marker.
const MIN_ROOM: usize = 64;

/// The most output room reserved ahead of one call. Capacity stays in the caller's
/// buffer, so it should follow the output actually produced (8 MiB of zeros deflate
/// to 8 KiB), while `Vec`'s doubling keeps large outputs cheap to grow.
const MAX_STEP: usize = 64 * 1024;

/// The compressing half: one per connection direction, kept for the whole connection
/// because later chunks refer back to earlier ones.
///
/// Data that deflate cannot shrink (base64 of a compressed attachment, JPEGs) costs
/// level 1 several times the CPU of text and comes out no smaller, so the Deflater
/// stores it instead. Input goes through in segments of at most [`SEGMENT`] bytes,
/// each ending in a sync flush. A segment of at least [`PROBE_MIN`] bytes that
/// deflates to more than [`INCOMPRESSIBLE_PERCENT`] % of its size switches to
/// storing; while storing, each segment's first [`PROBE_MIN`] bytes are test-deflated
/// by a scratch compressor, and a sample that shrinks switches back. Stored blocks
/// are ordinary DEFLATE, so the peer sees one valid stream either way; only the
/// compressor has to learn what the peer's window now holds (see `resume`).
#[derive(Debug)]
pub struct Deflater {
    stream: Compress,
    level: u32,
    /// Emits the stored blocks, and test-deflates samples. Separate compressors rather
    /// than `set_level` on `stream`: zlib-rs's `set_level` fails once data has gone
    /// through.
    bypass: Option<Bypass>,
    /// Segments are being stored.
    storing: bool,
    /// The last [`WINDOW`] bytes of plain text that went out stored, which the peer
    /// has in its window and `stream` does not: `stream` must restart with them as
    /// its dictionary, or its back references would point at the wrong bytes.
    stored_tail: Vec<u8>,
    /// `stream` has been bypassed since its last flush.
    stale: bool,
    broken: bool,
}

#[derive(Debug)]
struct Bypass {
    store: Compress,
    probe: Compress,
    probe_out: Vec<u8>,
}

/// The DEFLATE window: how far back a match may reach.
pub const WINDOW: usize = 32 * 1024;

/// Appends `plain` to `window` and keeps only its last [`WINDOW`] bytes: what the peer's
/// inflater can still refer to, the dictionary a restarted compressor needs.
pub fn slide_window(window: &mut Vec<u8>, plain: &[u8]) {
    let keep = plain.len().min(WINDOW);
    let overflow = (window.len() + keep).saturating_sub(WINDOW);
    window.drain(..overflow);
    window.extend_from_slice(&plain[plain.len() - keep..]);
}

/// Largest piece deflated or stored as a unit (each ends in a sync flush, about 5
/// bytes): the granularity at which storing starts and stops. Small enough that the
/// base64 attachment after a message's text part fills units of its own.
pub const SEGMENT: usize = 16 * 1024;

/// Segments smaller than this never switch to storing (a command line, a file
/// header), and the sample tested while storing is this long.
pub const PROBE_MIN: usize = 4 * 1024;

/// Output above this share of the input means deflate is not paying for itself:
/// level 1 spends about twice the CPU per byte on base64 that it spends on text, to
/// save a few percent.
pub const INCOMPRESSIBLE_PERCENT: usize = 90;

impl Deflater {
    /// `level` 0 (store) to 9 (best); larger values are treated as 9.
    pub fn new(level: u32) -> Self {
        let level = level.min(9);
        Deflater {
            stream: Compress::new(Compression::new(level), false),
            level,
            bypass: None,
            storing: false,
            stored_tail: Vec::new(),
            stale: false,
            broken: false,
        }
    }

    /// Compresses `plain`, ends with a sync flush and appends the result to `out`, which
    /// then ends in the empty stored block `00 00 ff ff`. Empty input appends nothing:
    /// there is nothing to flush, as with Cyrus, which only flushes a non-empty buffer.
    pub fn compress(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
        if self.broken {
            return Err(CompressError::Broken);
        }
        let result = plain
            .chunks(SEGMENT)
            .try_for_each(|segment| self.compress_segment(segment, out));
        self.broken = result.is_err();
        result
    }

    /// Whether incompressible input is currently being stored.
    pub fn is_storing(&self) -> bool {
        self.storing
    }

    fn compress_segment(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
        if self.level == 0 {
            return flush_all(&mut self.stream, plain, out);
        }
        if self.storing {
            let bypass = self.bypass.get_or_insert_with(|| Bypass {
                store: Compress::new(Compression::none(), false),
                probe: Compress::new(Compression::new(self.level), false),
                probe_out: Vec::with_capacity(2 * PROBE_MIN),
            });
            let sample = &plain[..plain.len().min(PROBE_MIN)];
            bypass.probe.reset();
            bypass.probe_out.clear();
            flush_all(&mut bypass.probe, sample, &mut bypass.probe_out)?;
            if incompressible(sample.len(), bypass.probe_out.len()) {
                flush_all(&mut bypass.store, plain, out)?;
                self.remember_stored(plain);
                return Ok(());
            }
            self.storing = false;
        }
        self.resume()?;
        let start = out.len();
        flush_all(&mut self.stream, plain, out)?;
        self.storing = plain.len() >= PROBE_MIN && incompressible(plain.len(), out.len() - start);
        Ok(())
    }

    fn remember_stored(&mut self, plain: &[u8]) {
        self.stale = true;
        slide_window(&mut self.stored_tail, plain);
    }

    /// Before deflating again after stored segments: the peer's window ends with what
    /// was stored (all of the window once 32 KiB were stored). After less than that,
    /// the peer's window also holds older deflated bytes the dictionary lacks, which
    /// only costs matches, never correctness: a reset compressor refers to nothing
    /// but its dictionary and its own new input.
    fn resume(&mut self) -> Result<(), CompressError> {
        if !self.stale {
            return Ok(());
        }
        self.stream.reset();
        if !self.stored_tail.is_empty() {
            self.stream.set_dictionary(&self.stored_tail)?;
        }
        self.stored_tail.clear();
        self.stale = false;
        Ok(())
    }
}

impl Deflater {
    /// Continues the stream after segments that other compressors produced (see
    /// [`SegmentDeflater`]): `history` is the plain text they covered, of which the
    /// last 32 KiB become this compressor's dictionary.
    pub fn continue_after(&mut self, history: &[u8]) {
        if history.is_empty() {
            return;
        }
        self.stored_tail.clear();
        slide_window(&mut self.stored_tail, history);
        self.stale = true;
        self.storing = false;
    }
}

/// Deflates one segment of a stream on its own, so that several threads can compress
/// consecutive segments of one connection's stream at once (as pigz does). Each
/// segment starts from a reset compressor primed with the 32 KiB of plain text
/// before it and ends with a sync flush, so the segments' outputs, concatenated in
/// order, are one valid DEFLATE stream: a back reference only reaches into bytes the
/// peer already has in its window. Incompressible parts are stored, as by
/// [`Deflater`].
#[derive(Debug)]
pub struct SegmentDeflater {
    inner: Deflater,
}

impl SegmentDeflater {
    /// `level` 0 (store) to 9 (best); larger values are treated as 9.
    pub fn new(level: u32) -> Self {
        SegmentDeflater {
            inner: Deflater::new(level),
        }
    }

    /// Appends the compressed form of `plain` to `out`, ending with a sync flush;
    /// `history` is the plain text sent before it (only its last 32 KiB matter).
    pub fn compress(
        &mut self,
        history: &[u8],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        if plain.is_empty() {
            return Ok(());
        }
        let d = &mut self.inner;
        d.broken = false;
        // Probe the first unit rather than deflate it blind: the segment may start
        // in the middle of an attachment.
        d.storing = d.level > 0;
        d.stored_tail.clear();
        slide_window(&mut d.stored_tail, history);
        // Always restart: the compressor still holds the previous job's state.
        d.stale = true;
        d.compress(plain, out)
    }
}

fn incompressible(input: usize, output: usize) -> bool {
    output * 100 > input * INCOMPRESSIBLE_PERCENT
}

/// Compresses all of `plain` through `stream` with a sync flush, appending to `out`.
fn flush_all(stream: &mut Compress, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
    let mut input = plain;
    loop {
        // Deflate output is at most slightly larger than its input, so this room
        // lets one call finish a typical flush.
        out.reserve((input.len() + input.len() / 1000 + MIN_ROOM).min(MAX_STEP));
        let (in_before, out_before) = (stream.total_in(), stream.total_out());
        stream.compress_vec(input, out, FlushCompress::Sync)?;
        let consumed = progress(stream.total_in(), in_before);
        let produced = progress(stream.total_out(), out_before);
        input = input.get(consumed..).unwrap_or_default();
        // zlib's rule: the flush is complete once a call returns with output room
        // left over.
        let room_left = out.len() < out.capacity();
        if input.is_empty() && (room_left || consumed + produced == 0) {
            return Ok(());
        }
        if consumed + produced == 0 {
            return Err(CompressError::Stalled("deflate"));
        }
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater::new(DEFAULT_LEVEL)
    }
}

/// The decompressing half: one per connection direction.
#[derive(Debug)]
pub struct Inflater {
    stream: Decompress,
    state: InflateState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InflateState {
    Open,
    /// The peer sent a final block; Cyrus never does, but it is valid DEFLATE.
    Ended,
    Broken,
}

impl Inflater {
    pub fn new() -> Self {
        Inflater {
            stream: Decompress::new(false),
            state: InflateState::Open,
        }
    }

    /// Decompresses `compressed` (any part of the stream, split anywhere) and appends
    /// all plaintext it yields to `out`. Bytes of an incomplete block are kept inside
    /// and decoded when the rest arrives. Output is bounded by DEFLATE's maximum
    /// expansion (about 1032:1), so this always ends; corrupt input is an error.
    pub fn decompress(
        &mut self,
        compressed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        match self.state {
            InflateState::Broken => return Err(CompressError::Broken),
            InflateState::Ended if compressed.is_empty() => return Ok(()),
            InflateState::Ended => {
                self.state = InflateState::Broken;
                return Err(CompressError::TrailingData);
            }
            InflateState::Open => {}
        }
        let result = self.decompress_all(compressed, out);
        if result.is_err() {
            self.state = InflateState::Broken;
        }
        result
    }

    fn decompress_all(
        &mut self,
        compressed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        let mut input = compressed;
        loop {
            out.reserve(MAX_STEP);
            let (in_before, out_before) = (self.stream.total_in(), self.stream.total_out());
            let status = self
                .stream
                .decompress_vec(input, out, FlushDecompress::None)?;
            let consumed = progress(self.stream.total_in(), in_before);
            let produced = progress(self.stream.total_out(), out_before);
            input = input.get(consumed..).unwrap_or_default();
            if status == Status::StreamEnd {
                self.state = InflateState::Ended;
                return if input.is_empty() {
                    Ok(())
                } else {
                    Err(CompressError::TrailingData)
                };
            }
            // With output room left over, inflate has produced all it can from what
            // it was given.
            let room_left = out.len() < out.capacity();
            if input.is_empty() && (room_left || consumed + produced == 0) {
                return Ok(());
            }
            if consumed + produced == 0 {
                return Err(CompressError::Stalled("inflate"));
            }
        }
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

fn progress(after: u64, before: u64) -> usize {
    usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX)
}

/// The server's answer to a `COMPRESS` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressReply {
    /// The completion line, without CRLF.
    pub line: Vec<u8>,
    /// Write `line` uncompressed and flush it; every byte after it, in both
    /// directions, is compressed.
    pub activate: bool,
}

/// What the server answers to `COMPRESS`, given the text after `COMPRESS ` (`None`
/// when the command word ended the line) and whether compression is already on.
/// Checks run in Cyrus's order: argument syntax, already active, algorithm.
pub fn server_reply(args: Option<&[u8]>, already_active: bool) -> CompressReply {
    let refuse = |line: Vec<u8>| CompressReply {
        line,
        activate: false,
    };
    let Some(args) = args else {
        return refuse(BAD_MISSING_ARGUMENT.into());
    };
    let (alg, rest) = crate::sasl::split_word(args);
    if !crate::sasl::is_line_end(rest) {
        return refuse(BAD_EXTRA_ARGUMENTS.into());
    }
    if already_active {
        return refuse(no_already_active(alg));
    }
    if !alg.eq_ignore_ascii_case(b"DEFLATE") {
        return refuse(no_unknown_algorithm(alg));
    }
    CompressReply {
        line: ok_active(alg),
        activate: true,
    }
}

/// `OK <alg> active`, the algorithm echoed as the client spelled it.
pub fn ok_active(alg: &[u8]) -> Vec<u8> {
    [b"OK ", alg, b" active"].concat()
}

/// `NO Compression already active: <alg>`.
pub fn no_already_active(alg: &[u8]) -> Vec<u8> {
    [b"NO Compression already active: ", alg].concat()
}

/// `NO Unknown compression algorithm: <alg>`.
pub fn no_unknown_algorithm(alg: &[u8]) -> Vec<u8> {
    [b"NO Unknown compression algorithm: ", alg].concat()
}

/// Whether a client should switch on after reading `line` in reply to [`COMMAND`]:
/// the Cyrus client accepts any line that starts with `OK`.
pub fn reply_activates(line: &[u8]) -> bool {
    line.starts_with(b"OK")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SYNC_MARKER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    /// Deterministic pseudo-random bytes (xorshift), incompressible in practice.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    /// Something like replication traffic: repetitive but not trivially so.
    fn text(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 200);
        let mut uid = 0u64;
        while out.len() < len {
            uid += 1;
            out.extend_from_slice(
                format!(
                    "%(UID {uid} MODSEQ {} LAST_UPDATED 1795302568 FLAGS (\\Seen) \
                     INTERNALDATE {} SIZE {} GUID {:040x})\r\n",
                    uid * 3,
                    1795302568 + uid * 7,
                    uid * 131 % 9973,
                    u128::from(uid) * 0x9e37_79b9_7f4a_7c15
                )
                .as_bytes(),
            );
        }
        out.truncate(len);
        out
    }

    /// Splits `data` into chunks of pseudo-random sizes from 1 to `max`.
    fn chunks(data: &[u8], max: usize, seed: u64) -> Vec<&[u8]> {
        let sizes = noise(data.len().min(1 << 16) + 1, seed);
        let mut out = Vec::new();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let r = usize::from(sizes[i % sizes.len()]) << 8
                | usize::from(sizes[(i + 1) % sizes.len()]);
            let n = (1 + r % max).min(rest.len());
            out.push(&rest[..n]);
            rest = &rest[n..];
            i += 2;
        }
        out
    }

    fn inflate_in_chunks(compressed: &[u8], max: usize, seed: u64) -> Vec<u8> {
        let mut inflater = Inflater::new();
        let mut plain = Vec::new();
        for chunk in chunks(compressed, max, seed) {
            inflater.decompress(chunk, &mut plain).unwrap();
        }
        plain
    }

    #[test]
    fn every_flush_ends_with_sync_marker() {
        let mut deflater = Deflater::default();
        let mut inflater = Inflater::new();
        let messages: [&[u8]; 5] = [
            b"APPLY CAPABILITIES (SIEVE-MAILBOX)\r\n",
            b"GET USER erin\r\n",
            b"x",
            &text(100_000),
            &noise(70_000, 7),
        ];
        for message in messages {
            let mut wire = Vec::new();
            deflater.compress(message, &mut wire).unwrap();
            assert!(wire.ends_with(&SYNC_MARKER), "{wire:02x?}");
            // Each flushed chunk is decodable on its own, without waiting for more.
            let mut plain = Vec::new();
            inflater.decompress(&wire, &mut plain).unwrap();
            assert_eq!(plain, message);
        }
    }

    /// Incompressible flushes go out stored, and text after them is deflated again
    /// with the stored bytes as its history: the peer decodes one stream with every byte in place.
    #[test]
    fn incompressible_runs_are_stored_and_the_stream_stays_valid() {
        let mut d = Deflater::new(1);
        let mut wire = Vec::new();
        let mut plain = Vec::new();
        let mut stored_flushes = 0;
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        for round in 0..6u64 {
            pieces.push(text(20_000 + round as usize * 777));
            for n in 0..12 {
                pieces.push(noise(64 * 1024, round * 100 + n));
            }
            // Text that repeats what the stored noise just sent: a match into stored
            // history must decode to the right bytes.
            let last = pieces.last().unwrap().clone();
            pieces.push([&last[last.len() - 9000..], &text(5000)[..]].concat());
        }
        for piece in &pieces {
            let storing = d.is_storing();
            let before = wire.len();
            d.compress(piece, &mut wire).unwrap();
            assert!(wire.ends_with(&SYNC_MARKER));
            if storing {
                stored_flushes += 1;
                // Stored: a block header and a sync marker (5 bytes each) per
                // unit, or deflated when the sample shrank (text after noise).
                assert!(wire.len() - before <= piece.len() + 10 * piece.len().div_ceil(SEGMENT));
            }
            plain.extend_from_slice(piece);
        }
        assert!(stored_flushes >= 6 * 10, "{stored_flushes} stored flushes");
        assert_eq!(inflate_in_chunks(&wire, 3000, 7), plain);
        // The text still compressed: well below the size of everything.
        let noise_bytes = 6 * 12 * 64 * 1024;
        assert!(wire.len() < noise_bytes + (plain.len() - noise_bytes) / 2);
    }

    /// A stored run shorter than the window: the compressor's dictionary is only
    /// the stored bytes, the peer's window holds older deflated ones too.
    #[test]
    fn short_stored_runs_round_trip() {
        let mut d = Deflater::new(1);
        let mut wire = Vec::new();
        let mut plain = Vec::new();
        for n in 0..200u64 {
            let piece = if n % 3 == 0 {
                noise(PROBE_MIN + (n as usize * 37) % 3000, n)
            } else {
                text(1000 + (n as usize * 91) % 9000)
            };
            d.compress(&piece, &mut wire).unwrap();
            plain.extend_from_slice(&piece);
        }
        assert_eq!(inflate_in_chunks(&wire, 1 << 20, 1), plain);
    }

    /// Segments deflated independently (in any order, by separate compressors),
    /// concatenated in stream order after a Deflater's output, and followed by more
    /// of that Deflater: one stream that decodes to everything in order.
    #[test]
    fn independent_segments_concatenate_into_one_stream() {
        let mut d = Deflater::new(1);
        let mut wire = Vec::new();
        let mut plain = Vec::new();
        let head = text(50_000);
        d.compress(&head, &mut wire).unwrap();
        plain.extend_from_slice(&head);
        let mut segments: Vec<Vec<u8>> = Vec::new();
        for n in 0..10u64 {
            let mut seg = text(1000 + n as usize * 9000);
            if n % 3 == 1 {
                seg = noise(200_000, n);
            }
            if n % 4 == 2 {
                // Repeats the end of what came before: matches reach into the history.
                let from = plain.len() + segments.iter().map(Vec::len).sum::<usize>();
                let all: Vec<u8> = [&plain[..], &segments.concat()[..]].concat();
                seg = [&all[from - 20_000..from], &seg[..]].concat();
            }
            segments.push(seg);
        }
        // Compress the segments back to front with one SegmentDeflater each, as a
        // pool of threads might finish them.
        let mut outputs = vec![Vec::new(); segments.len()];
        for i in (0..segments.len()).rev() {
            let history: Vec<u8> = [&plain[..], &segments[..i].concat()[..]].concat();
            SegmentDeflater::new(1)
                .compress(&history, &segments[i], &mut outputs[i])
                .unwrap();
            assert!(outputs[i].ends_with(&SYNC_MARKER));
        }
        for (segment, out) in segments.iter().zip(&outputs) {
            wire.extend_from_slice(out);
            plain.extend_from_slice(segment);
        }
        d.continue_after(&plain);
        let tail = [&plain[plain.len() - 10_000..], &text(30_000)[..]].concat();
        let before = wire.len();
        d.compress(&tail, &mut wire).unwrap();
        // The tail's first 10,000 bytes are one long match into the history.
        assert!(wire.len() - before < 10_000, "{}", wire.len() - before);
        plain.extend_from_slice(&tail);
        assert_eq!(inflate_in_chunks(&wire, 5000, 9), plain);
        // Noise segments went out stored (a block header and a sync marker per unit).
        assert!(
            outputs[1].len() <= 200_000 + 10 * 200_000usize.div_ceil(SEGMENT),
            "{}",
            outputs[1].len()
        );
    }

    /// Level 0 never switches: it stores everything anyway.
    #[test]
    fn level_zero_stores_without_a_second_compressor() {
        let mut d = Deflater::new(0);
        let mut wire = Vec::new();
        let piece = noise(100_000, 3);
        d.compress(&piece, &mut wire).unwrap();
        assert!(!d.is_storing());
        assert!(d.bypass.is_none());
        assert_eq!(inflate_in_chunks(&wire, 4096, 2), piece);
    }

    #[test]
    fn no_zlib_header() {
        let mut wire = Vec::new();
        Deflater::new(6)
            .compress(b"OK success\r\n", &mut wire)
            .unwrap();
        // A zlib stream would start with 0x78; raw DEFLATE starts with a block header.
        assert_ne!(wire[0], 0x78);
        let mut plain = Vec::new();
        Inflater::new().decompress(&wire, &mut plain).unwrap();
        assert_eq!(plain, b"OK success\r\n");
    }

    #[test]
    fn empty_input_appends_nothing() {
        let mut deflater = Deflater::new(6);
        let mut wire = Vec::new();
        deflater.compress(b"", &mut wire).unwrap();
        assert!(wire.is_empty());
        deflater.compress(b"NOOP\r\n", &mut wire).unwrap();
        deflater.compress(b"", &mut wire).unwrap();
        assert!(wire.ends_with(&SYNC_MARKER));
        let mut plain = Vec::new();
        let mut inflater = Inflater::new();
        inflater.decompress(&wire, &mut plain).unwrap();
        inflater.decompress(b"", &mut plain).unwrap();
        assert_eq!(plain, b"NOOP\r\n");
    }

    #[test]
    fn all_levels_round_trip() {
        let data = text(20_000);
        for level in [0, 1, 6, 9, 10, u32::MAX] {
            let mut wire = Vec::new();
            Deflater::new(level).compress(&data, &mut wire).unwrap();
            assert!(wire.ends_with(&SYNC_MARKER));
            assert_eq!(inflate_in_chunks(&wire, 100, u64::from(level) + 1), data);
        }
    }

    #[test]
    fn state_carries_across_calls() {
        // The second identical line compresses to a back-reference into the first.
        let mut deflater = Deflater::new(6);
        let line = b"S: * MAILBOX %(UNIQUEID gig5kthmtqdu8nvcyf4exmti MBOXNAME user.dave)\r\n";
        let (mut first, mut second) = (Vec::new(), Vec::new());
        deflater.compress(line, &mut first).unwrap();
        deflater.compress(line, &mut second).unwrap();
        assert!(
            second.len() < first.len() / 2,
            "{} vs {}",
            second.len(),
            first.len()
        );

        // A fresh inflater cannot decode the second chunk alone.
        let result = Inflater::new().decompress(&second, &mut Vec::new());
        assert!(
            matches!(result, Err(CompressError::Corrupt(_))),
            "{result:?}"
        );
    }

    #[test]
    fn multi_megabyte_payloads() {
        let mut deflater = Deflater::new(6);
        let payloads = [text(3 << 20), noise(2 << 20, 42), vec![0u8; 8 << 20]];
        let mut wire = Vec::new();
        let mut ends = Vec::new();
        for payload in &payloads {
            deflater.compress(payload, &mut wire).unwrap();
            assert!(wire.ends_with(&SYNC_MARKER));
            ends.push(wire.len());
        }
        // Zeros compress about 1000:1 in one block, about 450:1 with a sync flush
        // per unit: either way far smaller than the input.
        let zeros_wire = ends[2] - ends[1];
        assert!(zeros_wire < (8 << 20) / 200, "{zeros_wire}");

        let expected = payloads.concat();
        assert_eq!(inflate_in_chunks(&wire, 64 * 1024, 3), expected);

        // All at once: one call yields all 13 MiB.
        let mut plain = Vec::new();
        Inflater::new().decompress(&wire, &mut plain).unwrap();
        assert_eq!(plain.len(), expected.len());
        assert!(plain == expected);
    }

    #[test]
    fn output_capacity_follows_output() {
        let mut wire = Vec::new();
        Deflater::new(6)
            .compress(&vec![0u8; 8 << 20], &mut wire)
            .unwrap();
        assert!(wire.capacity() <= 256 * 1024, "{}", wire.capacity());

        let mut plain = Vec::new();
        Inflater::new()
            .decompress(b"\x4a\x04\x00\x00\x00\xff\xff", &mut plain)
            .unwrap();
        assert_eq!(plain, b"a");
        assert!(plain.capacity() <= 2 * MAX_STEP);
    }

    #[test]
    fn byte_at_a_time() {
        let mut deflater = Deflater::new(6);
        let data = text(30_000);
        let mut wire = Vec::new();
        for piece in data.chunks(1000) {
            deflater.compress(piece, &mut wire).unwrap();
        }
        let mut inflater = Inflater::new();
        let mut plain = Vec::new();
        for b in &wire {
            inflater
                .decompress(std::slice::from_ref(b), &mut plain)
                .unwrap();
        }
        assert_eq!(plain, data);
    }

    #[test]
    fn corrupt_input_is_an_error_and_poisons() {
        let mut inflater = Inflater::new();
        let mut plain = Vec::new();
        // BFINAL=1, BTYPE=11: a reserved block type.
        let err = inflater.decompress(&[0xff; 16], &mut plain).unwrap_err();
        assert!(matches!(err, CompressError::Corrupt(_)), "{err}");
        let err = inflater.decompress(b"", &mut plain).unwrap_err();
        assert!(matches!(err, CompressError::Broken), "{err}");

        // A stored block whose length check fails.
        let err = Inflater::new()
            .decompress(&[0x00, 0x05, 0x00, 0x00, 0x00], &mut plain)
            .unwrap_err();
        assert!(matches!(err, CompressError::Corrupt(_)), "{err}");
    }

    #[test]
    fn data_after_final_block_is_rejected() {
        let mut stream = Compress::new(Compression::new(6), false);
        let mut wire = Vec::with_capacity(256);
        stream
            .compress_vec(b"EXIT\r\n", &mut wire, FlushCompress::Finish)
            .unwrap();
        let mut plain = Vec::new();
        let mut inflater = Inflater::new();
        inflater.decompress(&wire, &mut plain).unwrap();
        assert_eq!(plain, b"EXIT\r\n");
        inflater.decompress(b"", &mut plain).unwrap();
        assert!(matches!(
            inflater.decompress(b"x", &mut plain),
            Err(CompressError::TrailingData)
        ));

        let mut joined = wire.clone();
        joined.push(0);
        assert!(matches!(
            Inflater::new().decompress(&joined, &mut Vec::new()),
            Err(CompressError::TrailingData)
        ));
    }

    #[test]
    fn appends_to_existing_output() {
        let mut wire = b"OK DEFLATE active\r\n".to_vec();
        Deflater::new(6).compress(b"NOOP\r\n", &mut wire).unwrap();
        assert!(wire.starts_with(b"OK DEFLATE active\r\n"));
        let mut plain = b"prefix".to_vec();
        Inflater::new().decompress(&wire[19..], &mut plain).unwrap();
        assert_eq!(plain, b"prefixNOOP\r\n");
    }

    // 08-compress-negotiation.txt, "# wire" lines: the first compressed chunks the real
    // Debian 3.6.1 sync_client and sync_server sent. The client's third chunk (674
    // bytes) is abridged in the fixture, so only the two before it are used; all of the
    // server's chunks are complete.

    #[test]
    fn fixture_client_chunks() {
        let wire = [
            hex(
                "72 0c 08 f0 89 54 70 76 0c 70 74 f2 f4 f1 0c f1 74 0d 56 d0 08 f6 74 0d \
                 73 d5 f5 75 f4 f4 71 f2 8f d0 e4 e5 02 00 00 00 ff ff",
            ),
            hex("72 77 0d 51 08 0d 76 0d 52 48 2d ca cc e3 e5 02 00 00 00 ff ff"),
        ];
        assert_eq!(wire[0].len(), 42);
        assert_eq!(wire[1].len(), 21);
        let lines: [&[u8]; 2] = [
            b"APPLY CAPABILITIES (SIEVE-MAILBOX)\r\n",
            b"GET USER erin\r\n",
        ];
        let mut inflater = Inflater::new();
        for (chunk, line) in wire.iter().zip(lines) {
            assert!(chunk.ends_with(&SYNC_MARKER));
            let mut plain = Vec::new();
            inflater.decompress(chunk, &mut plain).unwrap();
            assert_eq!(plain, line);
        }
    }

    #[test]
    fn fixture_server_chunks() {
        let wire = [
            hex(
                "d2 52 70 f5 73 74 f2 71 75 51 d0 08 f6 74 0d 73 d5 f5 75 f4 f4 71 f2 8f \
                 d0 e4 e5 f2 f7 56 28 2e 4d 4e 4e 2d 2e e6 e5 02 00 00 00 ff ff",
            ),
            hex("42 66 03 00 00 00 ff ff"),
            hex("42 66 03 00 00 00 ff ff"),
            hex("42 66 03 00 00 00 ff ff"),
        ];
        assert_eq!(wire[0].len(), 45);
        let replies: [&[u8]; 4] = [
            b"* ENABLED (SIEVE-MAILBOX)\r\nOK success\r\n",
            b"OK success\r\n",
            b"OK success\r\n",
            b"OK success\r\n",
        ];
        let mut inflater = Inflater::new();
        for (chunk, reply) in wire.iter().zip(replies) {
            let mut plain = Vec::new();
            inflater.decompress(chunk, &mut plain).unwrap();
            assert_eq!(plain, reply);
        }

        // The same bytes split at every possible point decode the same.
        let all = wire.concat();
        let expected = replies.concat();
        for split in 0..=all.len() {
            let mut inflater = Inflater::new();
            let mut plain = Vec::new();
            inflater.decompress(&all[..split], &mut plain).unwrap();
            inflater.decompress(&all[split..], &mut plain).unwrap();
            assert_eq!(plain, expected, "split at {split}");
        }
    }

    #[test]
    fn fixture_chunks_need_the_earlier_stream() {
        // `42 66 03 ...` is a back-reference to "OK success\r\n" in the first chunk.
        let result = Inflater::new().decompress(&hex("42 66 03 00 00 00 ff ff"), &mut Vec::new());
        assert!(
            matches!(result, Err(CompressError::Corrupt(_))),
            "{result:?}"
        );
    }

    #[test]
    fn server_replies() {
        let reply = |args: Option<&[u8]>, active| {
            let r = server_reply(args, active);
            (String::from_utf8(r.line).unwrap(), r.activate)
        };
        assert_eq!(
            reply(Some(b"DEFLATE"), false),
            ("OK DEFLATE active".into(), true)
        );
        assert_eq!(
            reply(Some(b"deflate"), false),
            ("OK deflate active".into(), true)
        );
        assert_eq!(
            reply(Some(b"DeFlAtE"), false),
            ("OK DeFlAtE active".into(), true)
        );
        assert_eq!(
            reply(Some(b"DEFLATE"), true),
            ("NO Compression already active: DEFLATE".into(), false)
        );
        // Already-active is checked before the algorithm.
        assert_eq!(
            reply(Some(b"GZIP"), true),
            ("NO Compression already active: GZIP".into(), false)
        );
        assert_eq!(
            reply(Some(b"GZIP"), false),
            ("NO Unknown compression algorithm: GZIP".into(), false)
        );
        assert_eq!(
            reply(Some(b""), false),
            ("NO Unknown compression algorithm: ".into(), false)
        );
        assert_eq!(
            reply(None, false),
            ("BAD Missing required argument to Compress".into(), false)
        );
        assert_eq!(reply(None, true).0, BAD_MISSING_ARGUMENT);
        for extra in [
            &b"DEFLATE now"[..],
            b"DEFLATE ",
            b"DEFLATE\t",
            b"DEFLATE(",
            b"(DEFLATE",
        ] {
            assert_eq!(
                reply(Some(extra), false),
                ("BAD Unexpected extra arguments to Compress".into(), false),
                "{:?}",
                String::from_utf8_lossy(extra)
            );
        }
        assert_eq!(ok_active(b"DEFLATE"), b"OK DEFLATE active");
        assert_eq!(no_already_active(b"x"), b"NO Compression already active: x");
        assert_eq!(
            no_unknown_algorithm(b"x"),
            b"NO Unknown compression algorithm: x"
        );
    }

    #[test]
    fn client_side() {
        assert_eq!(COMMAND, "COMPRESS DEFLATE");
        assert!(reply_activates(b"OK DEFLATE active"));
        assert!(!reply_activates(
            b"NO Unknown compression algorithm: DEFLATE"
        ));
        assert!(!reply_activates(
            b"BAD Missing required argument to Compress"
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trip_any_chunking(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..8),
            level in 0u32..10,
            max_chunk in 1usize..600,
            seed in 1u64..u64::MAX,
        ) {
            let mut deflater = Deflater::new(level);
            let mut wire = Vec::new();
            for message in &messages {
                let before = wire.len();
                deflater.compress(message, &mut wire).unwrap();
                prop_assert!(message.is_empty() || wire[before..].ends_with(&SYNC_MARKER));
            }
            prop_assert_eq!(inflate_in_chunks(&wire, max_chunk, seed), messages.concat());
        }

        #[test]
        fn garbage_never_panics_or_hangs(
            garbage in proptest::collection::vec(any::<u8>(), 0..2000),
            max_chunk in 1usize..300,
            seed in 1u64..u64::MAX,
        ) {
            let mut inflater = Inflater::new();
            let mut plain = Vec::new();
            for chunk in chunks(&garbage, max_chunk, seed) {
                if inflater.decompress(chunk, &mut plain).is_err() {
                    break;
                }
            }
            // DEFLATE cannot expand more than about 1032:1.
            prop_assert!(plain.len() <= garbage.len() * 1100 + 64);
        }
    }
}
