//! Turning a byte stream into frames: the heir of Python's `asynchat`.
//!
//! A [`Framer`] owns the bytes a connection has received and not yet handed
//! out. Each frame ends either at a [`Terminator`] (1–16 bytes, asynchat's
//! string terminator) or after a fixed number of bytes ([`Mode::Count`],
//! asynchat's integer terminator), and the consumer may switch between the two
//! between any two frames, as `found_terminator` could call `set_terminator`.
//!
//! # Zero copy, and cheap per frame
//!
//! The socket layer reads straight into the framer's buffer
//! ([`Framer::read_buf`] + [`Framer::advance`]). [`Framer::frames`] then
//! freezes the run of *complete* frames at the front of that buffer into one
//! [`Bytes`] chunk — one reference count per read, not per frame — and hands
//! out [`Frame`]s that are plain borrowed views into that chunk. A frame that
//! must outlive the read (a message forwarded to another core) is turned into
//! an owned [`Bytes`] with [`Frame::to_bytes`], which shares the chunk's
//! memory; only those frames pay a reference count.
//!
//! The end of the run is found by searching *backwards* from the end of the
//! buffer, so the partial frame at the end is read once there and then
//! remembered as searched. The partial frame stays in the read buffer, so a
//! frame that arrives over many reads is not copied for every read, and the
//! terminator search resumes where it stopped: feeding a 1 MiB frame one byte
//! per read costs O(n), not O(n²).
//!
//! A consumer may stop taking frames at any point (to yield, say): the rest
//! of the chunk stays in the framer and is handed out by the next
//! [`Framer::frames`], still without a copy.
//!
//! # The rules
//!
//! These follow the protocol's "Frames" section (`docs/protocol.md`):
//!
//! * A frame ends at the *first* terminator after its start, so terminators
//!   that overlap themselves (`\0\0` in `a\0\0\0b\0\0`) split as a left to
//!   right scan would: `a`, then `\0b`. Bytes that are only a prefix of the
//!   terminator (a lone `\r` for `\r\n`) stay in the frame, also when the
//!   terminator is split across two reads.
//! * With the terminator exactly `\n`, one `\r` directly before it is dropped
//!   (so a lone `\r\n` is an empty frame). No other terminator drops anything.
//! * A frame longer than the maximum (counted before any `\r` is dropped,
//!   without the terminator) is reported once as [`FrameError::TooLong`] and
//!   skipped; a frame of exactly the maximum is accepted. If its terminator
//!   has not arrived yet, the framer drops its bytes as they come (keeping
//!   only the last `terminator.len() - 1`, which may start a terminator), so
//!   the framer's memory stays bounded by a small multiple of
//!   `max_frame + read_size` however long the frame is. Counted frames longer
//!   than the maximum are skipped the same way, without being buffered.
//! * Empty frames are handed out; what they mean is the caller's business
//!   (the relay ignores them).
//!
//! # Example
//!
//! ```
//! use tern::framing::{Framer, Terminator};
//!
//! let mut framer = Framer::new(Terminator::parse(r"\r\n").unwrap(), 1024);
//! framer.push(b"PING\r\nPUB a.b hel");
//! framer.push(b"lo\r\n");
//! let mut frames = framer.frames();
//! let mut seen = Vec::new();
//! while let Some(frame) = frames.next_frame() {
//!     seen.push(frame.unwrap().as_slice().to_vec());
//! }
//! assert_eq!(seen, vec![b"PING".to_vec(), b"PUB a.b hello".to_vec()]);
//! ```

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

/// Longest terminator the protocol allows.
pub const MAX_TERMINATOR_LEN: usize = 16;

/// Smallest read buffer a framer allocates (see [`Framer::read_buf`]).
pub const MIN_READ_SIZE: usize = 4 * 1024;

/// Default size of one socket read. Measured against 16 KiB and 256 KiB
/// (`PROTOCOL=nats benches/ab.sh`, 5 interleaved runs, median of the runs'
/// ratios): 16 KiB delivered 0.80× as many messages 1→1 and 0.81× 1→8
/// (more reads and writes per message), 256 KiB 0.96× and 0.91×.
pub const DEFAULT_READ_SIZE: usize = 64 * 1024;

/// Why a terminator flag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminatorError {
    #[error("terminator is empty: give 1 to {MAX_TERMINATOR_LEN} bytes, e.g. \\n or \\r\\n")]
    Empty,
    #[error("terminator is {0} bytes long: at most {MAX_TERMINATOR_LEN} are allowed")]
    TooLong(usize),
    #[error("unknown escape `\\{0}` in terminator: use \\n \\r \\t \\0 \\\\ or \\xHH")]
    UnknownEscape(char),
    #[error("incomplete escape at the end of the terminator: use \\n \\r \\t \\0 \\\\ or \\xHH")]
    DanglingEscape,
    #[error("`\\x` in a terminator must be followed by two hex digits, e.g. \\x1e")]
    BadHex,
}

/// The bytes that end a frame, with the searcher prebuilt for them.
///
/// One byte is searched with `memchr`; longer terminators with a
/// [`memmem::Finder`] built once here rather than per search.
#[derive(Clone)]
pub struct Terminator {
    bytes: Box<[u8]>,
    /// Only for terminators of 2+ bytes; `memchr` needs no preparation.
    finder: Option<memmem::Finder<'static>>,
    /// Whether a proper prefix of the terminator is also a suffix of it
    /// (`\0\0`, `abab`), so that two occurrences can overlap. Only then can
    /// the last occurrence in a buffer be one a left-to-right scan skips.
    overlaps: bool,
}

impl Terminator {
    /// A terminator from raw bytes (1 to [`MAX_TERMINATOR_LEN`]).
    pub fn new(bytes: &[u8]) -> Result<Self, TerminatorError> {
        let n = bytes.len();
        match n {
            0 => return Err(TerminatorError::Empty),
            n if n > MAX_TERMINATOR_LEN => return Err(TerminatorError::TooLong(n)),
            _ => {}
        }
        let finder = (n > 1).then(|| memmem::Finder::new(bytes).into_owned());
        let overlaps = (1..n).any(|k| bytes[..k] == bytes[n - k..]);
        Ok(Terminator {
            bytes: bytes.into(),
            finder,
            overlaps,
        })
    }

    /// Parses the flag syntax: literal bytes and the escapes
    /// `\n \r \t \0 \\ \xHH`.
    ///
    /// ```
    /// use tern::framing::Terminator;
    /// assert_eq!(Terminator::parse(r"END\n").unwrap().as_bytes(), b"END\n");
    /// assert_eq!(Terminator::parse(r"\x1e").unwrap().as_bytes(), &[0x1e]);
    /// assert!(Terminator::parse(r"\q").is_err());
    /// ```
    pub fn parse(spec: &str) -> Result<Self, TerminatorError> {
        let mut out = Vec::with_capacity(spec.len());
        let mut bytes = spec.bytes();
        while let Some(b) = bytes.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            let escaped = match bytes.next().ok_or(TerminatorError::DanglingEscape)? {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'0' => 0,
                b'\\' => b'\\',
                b'x' => {
                    let hi = bytes.next().ok_or(TerminatorError::BadHex)?;
                    let lo = bytes.next().ok_or(TerminatorError::BadHex)?;
                    let hex = |c: u8| (c as char).to_digit(16).ok_or(TerminatorError::BadHex);
                    (hex(hi)? * 16 + hex(lo)?) as u8
                }
                other => {
                    // Report the whole character, not a UTF-8 fragment: the
                    // escaped byte starts at this index, on a char boundary.
                    let rest = &spec[spec.len() - bytes.len() - 1..];
                    let c = rest.chars().next().unwrap_or(other as char);
                    return Err(TerminatorError::UnknownEscape(c));
                }
            };
            out.push(escaped);
        }
        Terminator::new(&out)
    }

    /// The terminator's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its length in bytes (1 to 16).
    #[allow(clippy::len_without_is_empty)] // never empty by construction
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The flag syntax for these bytes; `parse(escape())` gives them back.
    pub fn escape(&self) -> String {
        let mut s = String::new();
        for &b in self.bytes.iter() {
            match b {
                b'\n' => s.push_str(r"\n"),
                b'\r' => s.push_str(r"\r"),
                b'\t' => s.push_str(r"\t"),
                0 => s.push_str(r"\0"),
                b'\\' => s.push_str(r"\\"),
                0x21..=0x7e => s.push(b as char),
                _ => s.push_str(&format!(r"\x{b:02x}")),
            }
        }
        s
    }

    /// Position of the first terminator in `haystack`.
    #[inline]
    pub fn find(&self, haystack: &[u8]) -> Option<usize> {
        match &self.finder {
            None => memchr::memchr(self.bytes[0], haystack),
            Some(f) => f.find(haystack),
        }
    }

    /// Start of the last terminator lying wholly inside `haystack`.
    ///
    /// Runs `memrchr` on the terminator's last byte and checks the bytes
    /// before each hit: vectorised like the forward search on ordinary data
    /// (memchr's reverse substring search has no vector prefilter), and
    /// still linear, at most `len()` compares per hit, on adversarial data.
    fn rfind(&self, haystack: &[u8]) -> Option<usize> {
        let t = &*self.bytes;
        let n = t.len();
        let last = t[n - 1];
        if n == 1 {
            return memchr::memrchr(last, haystack);
        }
        let mut end = haystack.len();
        while let Some(p) = memchr::memrchr(last, &haystack[..end]) {
            if p + 1 >= n && haystack[p + 1 - n..=p] == *t {
                return Some(p + 1 - n);
            }
            end = p;
        }
        None
    }

    /// End of the last frame a left-to-right scan for frames, starting at
    /// 0, finds in `haystack` (that is, the end of that frame's
    /// terminator), and how many bytes were examined to find it.
    ///
    /// Usually that is the end of the last terminator in `haystack`, found
    /// by a backward search that reads only the partial frame after it. But
    /// for a terminator that overlaps itself the scan may not end a frame
    /// there (`\0\0` in `x\0\0\0`: the scan matches at 1, so the last
    /// occurrence, at 2, is inside a match): then, and only then, the frames
    /// are found by a forward scan instead. Either way no occurrence lies
    /// wholly in `haystack` after the returned end.
    fn last_frame_end(&self, haystack: &[u8]) -> (Option<usize>, usize) {
        let n = self.bytes.len();
        let Some(last) = self.rfind(haystack) else {
            return (None, haystack.len());
        };
        let scanned = haystack.len() - last;
        if !self.overlaps || !self.overlapped_before(haystack, last) {
            // No occurrence starts in the `n - 1` bytes before `last`, so
            // every match the scan makes before `last` ends at or before
            // it, and the next one is `last` itself.
            return (Some(last + n), scanned);
        }
        let mut end = 0;
        while let Some(at) = self.find(&haystack[end..]) {
            end += at + n;
        }
        (Some(end), scanned + haystack.len())
    }

    /// Whether an occurrence starts in the `len() - 1` bytes before `s`.
    fn overlapped_before(&self, haystack: &[u8], s: usize) -> bool {
        let n = self.bytes.len();
        let lo = s.saturating_sub(n - 1);
        // Occurrences wholly inside this window start in [lo, s).
        haystack[lo..s + n - 1]
            .windows(n)
            .any(|w| w == &*self.bytes)
    }
}

impl Default for Terminator {
    fn default() -> Self {
        Terminator::new(b"\n").expect("valid")
    }
}

impl fmt::Debug for Terminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Terminator({})", self.escape())
    }
}

impl fmt::Display for Terminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.escape())
    }
}

impl PartialEq for Terminator {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for Terminator {}

/// How the next frame ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// At the framer's terminator (which is not part of the frame).
    Terminator,
    /// After exactly this many bytes (asynchat's integer terminator). Once
    /// that frame is cut, the framer is back in [`Mode::Terminator`].
    Count(usize),
}

/// A frame the framer refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is longer than the maximum. `len` is what was known of it
    /// when this was reported: its whole length if it was complete (or
    /// counted), else a lower bound. Its bytes are skipped.
    #[error("frame too long (at least {len} bytes, maximum {max})")]
    TooLong { len: usize, max: usize },
}

/// One frame: a borrowed view into the chunk it was read into.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    chunk: &'a Bytes,
    start: usize,
    end: usize,
    /// Where the framer goes on in the chunk: past the frame's terminator.
    next: usize,
}

impl<'a> Frame<'a> {
    /// The frame's bytes, without its terminator.
    #[inline]
    pub fn as_slice(&self) -> &'a [u8] {
        &self.chunk[self.start..self.end]
    }

    /// The frame as an owned [`Bytes`] sharing the read buffer's memory (no
    /// copy; one reference-count increment).
    #[inline]
    pub fn to_bytes(&self) -> Bytes {
        self.chunk.slice(self.start..self.end)
    }

    /// An owned [`Bytes`] of `self.as_slice()[range]`, sharing memory.
    ///
    /// # Panics
    /// If `range` is not within the frame.
    #[inline]
    pub fn slice_bytes(&self, range: std::ops::Range<usize>) -> Bytes {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "slice_bytes({range:?}) out of a frame of {} bytes",
            self.len()
        );
        self.chunk
            .slice(self.start + range.start..self.start + range.end)
    }

    /// The read chunk this frame is a view of, and the frame's place in it.
    /// Lets a caller that forwards many frames of one read share the chunk
    /// once (one reference count) instead of once per frame.
    #[inline]
    pub fn chunk(&self) -> (&'a Bytes, std::ops::Range<usize>) {
        (self.chunk, self.start..self.end)
    }

    /// How many bytes of the chunk follow this frame (and its
    /// terminator). A [`Mode::Count`] frame of at most that many bytes,
    /// taken next, is cut from the same chunk: the same [`Bytes`], at the
    /// same places.
    #[inline]
    pub fn rest_of_chunk(&self) -> usize {
        self.chunk.len() - self.next
    }

    /// Length of the frame in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the frame is empty (two terminators in a row).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl AsRef<[u8]> for Frame<'_> {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:?})", String::from_utf8_lossy(self.as_slice()))
    }
}

/// Counters that let tests check costs by behaviour rather than by clock.
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy)]
struct Work {
    /// Bytes the terminator searches examined (forwards and backwards).
    scanned: usize,
    /// Bytes moved into a new allocation (buffer growth, giving back).
    copied: usize,
}

/// A byte-stream framer; see the [module docs](self).
pub struct Framer {
    /// Bytes received and not yet frozen into a chunk: at most one partial
    /// frame unless [`Framer::frames`] has not been drained. Invariant: if
    /// `spare_initialized`, every byte of its spare capacity is initialized
    /// memory (see [`Framer::read_buf`]).
    buf: BytesMut,
    /// Whether `buf`'s spare capacity is known to be initialized: true for
    /// buffers this framer allocated zeroed, false after [`Framer::extend`]
    /// adopted a buffer of unknown provenance.
    spare_initialized: bool,
    /// How many bytes at the front of `buf` were already searched: no
    /// terminator lies wholly within them. The next search starts
    /// `terminator.len() - 1` bytes before this, in case the terminator
    /// straddles two reads. This is what makes a long frame O(n).
    searched: usize,
    /// Complete frames frozen off the front of `buf`; frames handed out
    /// borrow from it. Kept here (not in [`Frames`]) so that a consumer that
    /// stops early loses nothing and copies nothing.
    chunk: Bytes,
    /// Offset in `chunk` of the next frame.
    pos: usize,
    /// What ends the next frame.
    mode: Mode,
    terminator: Terminator,
    /// `terminator == "\n"`: one `\r` before it is dropped (the spec's
    /// telnet rule).
    strip_cr: bool,
    /// Longest frame accepted, in bytes, counted before any `\r` is dropped.
    max_frame: usize,
    /// Inside an over-long frame (already reported): bytes are dropped up to
    /// the next terminator.
    discarding: bool,
    /// Bytes still to drop of an over-long counted frame (already reported).
    skip: usize,
    /// Largest read buffer: the most a busy connection reads at once.
    read_size: usize,
    /// Capacity of the next freshly allocated read buffer, and twice the
    /// least spare room [`Framer::read_buf`] offers: it doubles (up to
    /// `read_size`) when a read fills what was offered and halves (down to
    /// [`MIN_READ_SIZE`]) after a run of small reads, so a busy connection
    /// reads in large gulps while an idle one holds only a few KiB.
    alloc: usize,
    /// Spare room the last [`Framer::read_buf`] offered.
    offered: usize,
    /// Consecutive reads that used less than an eighth of `alloc`.
    small_reads: u8,
    #[cfg(test)]
    work: Work,
}

impl fmt::Debug for Framer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("buffered", &self.buffered())
            .field("mode", &self.mode)
            .field("terminator", &self.terminator)
            .field("max_frame", &self.max_frame)
            .field("discarding", &self.discarding)
            .field("skip", &self.skip)
            .finish()
    }
}

impl Framer {
    /// A framer splitting at `terminator`, refusing frames over `max_frame`
    /// bytes, reading [`DEFAULT_READ_SIZE`] bytes at a time.
    pub fn new(terminator: Terminator, max_frame: usize) -> Self {
        Self::with_read_size(terminator, max_frame, DEFAULT_READ_SIZE)
    }

    /// Like [`Framer::new`] with a given socket read size (at least 64).
    pub fn with_read_size(terminator: Terminator, max_frame: usize, read_size: usize) -> Self {
        let strip_cr = terminator.as_bytes() == b"\n";
        Framer {
            buf: BytesMut::new(),
            spare_initialized: true, // no spare capacity at all yet
            searched: 0,
            chunk: Bytes::new(),
            pos: 0,
            mode: Mode::Terminator,
            terminator,
            strip_cr,
            max_frame,
            discarding: false,
            skip: 0,
            read_size: read_size.max(64),
            alloc: MIN_READ_SIZE.min(read_size.max(64)),
            offered: 0,
            small_reads: 0,
            #[cfg(test)]
            work: Work::default(),
        }
    }

    /// The terminator this framer splits at.
    pub fn terminator(&self) -> &Terminator {
        &self.terminator
    }

    /// The longest frame this framer accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The mode the next frame will be cut in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Sets how the next frame ends (between batches; within one use
    /// [`Frames::set_mode`]). If an over-long frame is being skipped, this
    /// applies to the frame after it.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Bytes received and not yet handed out as frames (nor dropped as part
    /// of an over-long frame).
    pub fn buffered(&self) -> usize {
        self.buf.len() + (self.chunk.len() - self.pos)
    }

    /// Bytes of memory the framer holds: its read buffer's capacity and the
    /// chunk of frames still handed out (which may share that allocation,
    /// so this can count it twice: an upper bound, for the memory budget).
    pub fn allocated(&self) -> usize {
        self.buf.capacity() + self.chunk.len()
    }

    /// Spare room to read into, initialized: at least half the current
    /// buffer size, which adapts between [`MIN_READ_SIZE`] and the read
    /// size to how much each read brings.
    /// After writing `n` bytes at its front, call [`Framer::advance`]`(n)`.
    pub fn read_buf(&mut self) -> &mut [u8] {
        // A used-up chunk still holds a reference to the read buffer, which
        // would stop `try_reclaim` from reusing it.
        if self.pos == self.chunk.len() && !self.chunk.is_empty() {
            self.release_chunk();
        }
        // An idle connection gives back a buffer that a burst had grown.
        if self.buf.is_empty() && self.buf.capacity() > 2 * self.alloc {
            self.buf = BytesMut::new();
            self.spare_initialized = true;
        }
        let want = self.alloc / 2;
        let spare = self.buf.capacity() - self.buf.len();
        if spare < want || !self.spare_initialized {
            // Reuse the current allocation if every frame handed out of it
            // is gone (no allocation, memory we zeroed ourselves);
            // otherwise start a fresh zeroed one and move the partial frame
            // over. Growth doubles, so a long frame is copied O(1) times
            // per byte on average.
            if !(self.spare_initialized && self.buf.try_reclaim(want)) {
                let len = self.buf.len();
                let cap = self.alloc.max(len * 2).max(len + want);
                let mut fresh = BytesMut::zeroed(cap);
                fresh.clear();
                fresh.extend_from_slice(&self.buf);
                #[cfg(test)]
                {
                    self.work.copied += len;
                }
                self.buf = fresh;
                self.spare_initialized = true;
            }
        }
        let spare = self.buf.spare_capacity_mut();
        self.offered = spare.len();
        // SAFETY: `spare_initialized` holds (established just above if it
        // did not), so every byte of `buf`'s allocation past `len` was
        // written: zeroed when this framer allocated it (here or in
        // `give_back`; `BytesMut::zeroed` is a `vec![0; cap]`, whose
        // capacity is exactly `cap`), or filled by an earlier read and since
        // handed out. Nothing moves `buf` to an allocation of unknown
        // contents without clearing the flag: `try_reclaim` never allocates
        // (it only shifts the bytes to the front of the same allocation, and
        // only when no `Bytes` still points into it), `split_to` and
        // `advance` keep the allocation, and `extend` clears the flag.
        // `MaybeUninit<u8>` has the layout of `u8`.
        unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) }
    }

    /// Marks `n` bytes at the front of [`Framer::read_buf`] as received.
    ///
    /// # Panics
    /// If `n` is larger than the slice `read_buf` returned, or if the buffer
    /// was replaced since (by [`Framer::extend`]) and `read_buf` was not
    /// called again.
    pub fn advance(&mut self, n: usize) {
        let spare = self.buf.capacity() - self.buf.len();
        assert!(n <= spare, "advance({n}) past the read buffer ({spare})");
        assert!(
            n == 0 || self.spare_initialized,
            "advance({n}) without read_buf() since the buffer was replaced"
        );
        if n == self.offered && n > 0 {
            self.alloc = (self.alloc * 2).min(self.read_size);
            self.small_reads = 0;
        } else if n < self.alloc / 8 {
            self.small_reads += 1;
            if self.small_reads >= 16 {
                self.alloc = (self.alloc / 2).max(MIN_READ_SIZE.min(self.read_size));
                self.small_reads = 0;
            }
        }
        // SAFETY: the `n` bytes are within the spare capacity, which is
        // initialized while `spare_initialized` holds (see `read_buf`).
        // Whether the caller actually wrote them is only a matter of
        // correctness, not of soundness.
        unsafe { self.buf.set_len(self.buf.len() + n) };
    }

    /// Copies `data` in, as if it had been read from the socket.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let dst = self.read_buf();
            let n = dst.len().min(data.len());
            dst[..n].copy_from_slice(&data[..n]);
            self.advance(n);
            data = &data[n..];
        }
    }

    /// Adopts a buffer that already holds received bytes. Free when `data`
    /// directly follows what is buffered in the same allocation (as
    /// successive `split_to` pieces of one buffer do) or nothing is
    /// buffered; otherwise its bytes are copied.
    pub fn extend(&mut self, data: BytesMut) {
        if self.buf.is_empty() {
            self.buf = data;
        } else {
            self.buf.unsplit(data);
        }
        // We did not allocate whatever room follows the adopted bytes.
        self.spare_initialized = false;
    }

    /// The complete frames received so far, in order.
    pub fn frames(&mut self) -> Frames<'_> {
        Frames { framer: self }
    }

    /// Drops this framer's reference to the current chunk.
    #[inline]
    fn release_chunk(&mut self) {
        self.chunk = Bytes::new();
        self.pos = 0;
    }

    #[inline(always)]
    fn count_scanned(&mut self, _n: usize) {
        #[cfg(test)]
        {
            self.work.scanned += _n;
        }
    }

    /// The next frame; the hot paths: another terminated frame of the
    /// current chunk, or a counted frame that lies within it (a NATS
    /// payload). Everything else is in [`Framer::next_frame_slow`].
    #[inline]
    fn next_frame(&mut self) -> Option<Result<Frame<'_>, FrameError>> {
        match self.mode {
            Mode::Terminator if self.pos < self.chunk.len() => {
                let rest = &self.chunk[self.pos..];
                let found = self.terminator.find(rest);
                let scanned = found.map_or(rest.len(), |at| at + self.terminator.len());
                self.count_scanned(scanned);
                if let Some(at) = found {
                    return Some(self.terminated_frame(at));
                }
            }
            // A counted frame that lies within what is left of the chunk.
            Mode::Count(n) if self.pos < self.chunk.len() && n <= self.chunk.len() - self.pos => {
                return Some(self.counted_frame(n));
            }
            _ => {}
        }
        self.next_frame_slow()
    }

    /// Hands out the frame of `len` bytes at `pos` in the chunk, which is
    /// followed there by the terminator.
    #[inline(always)]
    fn terminated_frame(&mut self, len: usize) -> Result<Frame<'_>, FrameError> {
        let start = self.pos;
        self.pos = start + len + self.terminator.len();
        if len > self.max_frame {
            return Err(FrameError::TooLong {
                len,
                max: self.max_frame,
            });
        }
        let mut end = start + len;
        if self.strip_cr && len > 0 && self.chunk[end - 1] == b'\r' {
            end -= 1;
        }
        Ok(Frame {
            chunk: &self.chunk,
            start,
            end,
            next: self.pos,
        })
    }

    /// Hands out the counted frame of `n` bytes at `pos` in the chunk.
    fn counted_frame(&mut self, n: usize) -> Result<Frame<'_>, FrameError> {
        let start = self.pos;
        self.pos = start + n;
        self.mode = Mode::Terminator;
        if n > self.max_frame {
            return Err(FrameError::TooLong {
                len: n,
                max: self.max_frame,
            });
        }
        Ok(Frame {
            chunk: &self.chunk,
            start,
            end: start + n,
            next: self.pos,
        })
    }

    /// Everything but the hot paths: the end of a chunk, counted frames
    /// that run past it, cutting the next chunk off the read buffer,
    /// over-long frames.
    #[inline(never)]
    fn next_frame_slow(&mut self) -> Option<Result<Frame<'_>, FrameError>> {
        // 1. What is left of the current chunk (a counted frame that fits
        // in it was cut by the hot path).
        let rest = self.chunk.len() - self.pos;
        if rest > 0 {
            match self.mode {
                // The hot path found no terminator in the rest: a counted
                // frame moved the scan off the frame boundaries the chunk
                // was cut at, so the rest is the start of a frame that
                // continues in `buf`.
                Mode::Terminator => self.give_back(),
                Mode::Count(n) if n > self.max_frame => {
                    // Never buffered: drop what the chunk holds of it and
                    // skip the rest as it arrives.
                    self.skip = n - rest;
                    self.release_chunk();
                    self.mode = Mode::Terminator;
                    return Some(Err(FrameError::TooLong {
                        len: n,
                        max: self.max_frame,
                    }));
                }
                Mode::Count(_) => self.give_back(),
            }
        }

        // 2. The chunk is used up (or given back): finish skipping an
        // over-long frame, then cut the next chunk off the read buffer.
        self.release_chunk();
        if self.skip > 0 {
            let drop = self.skip.min(self.buf.len());
            self.buf.advance(drop);
            self.skip -= drop;
            self.searched = 0;
            if self.skip > 0 {
                return None;
            }
        }
        if self.discarding && !self.discard() {
            return None;
        }
        match self.mode {
            Mode::Count(n) if n > self.max_frame => {
                self.skip = n;
                self.mode = Mode::Terminator;
                Some(Err(FrameError::TooLong {
                    len: n,
                    max: self.max_frame,
                }))
            }
            Mode::Count(n) if self.buf.len() < n => None,
            Mode::Count(n) => {
                if n > 0 {
                    self.chunk = self.buf.split_to(n).freeze();
                }
                self.searched = 0;
                Some(self.counted_frame(n))
            }
            Mode::Terminator => self.cut_chunk(),
        }
    }

    /// In terminator mode with no chunk: freezes the run of complete frames
    /// at the front of `buf` into the chunk and hands out its first frame,
    /// or reports an over-long partial frame.
    fn cut_chunk(&mut self) -> Option<Result<Frame<'_>, FrameError>> {
        let tlen = self.terminator.len();
        let from = self.searched.saturating_sub(tlen - 1);
        let Some(at) = self.terminator.find(&self.buf[from..]) else {
            self.count_scanned(self.buf.len() - from);
            self.searched = self.buf.len();
            // The last `tlen - 1` bytes may start a terminator; everything
            // before them belongs to the frame.
            let frame_so_far = self.buf.len().saturating_sub(tlen - 1);
            if frame_so_far > self.max_frame {
                self.buf.advance(frame_so_far);
                self.searched = self.buf.len();
                self.discarding = true;
                return Some(Err(FrameError::TooLong {
                    len: frame_so_far,
                    max: self.max_frame,
                }));
            }
            return None;
        };
        let first_end = from + at + tlen;
        self.count_scanned(at + tlen);
        // Everything up to the last terminator in the buffer is complete
        // frames. Searching backwards from the end reads only the partial
        // frame there, which is then remembered as searched.
        let tail = &self.buf[first_end..];
        let (last_end, scanned) = self.terminator.last_frame_end(tail);
        let end = first_end + last_end.unwrap_or(0);
        // No terminator lies wholly in what stays buffered: it is searched.
        let searched = self.buf.len() - end;
        self.count_scanned(scanned);
        self.chunk = self.buf.split_to(end).freeze();
        self.pos = 0;
        self.searched = searched;
        Some(self.terminated_frame(first_end - tlen))
    }

    /// Drops bytes of an over-long frame (already reported) up to its
    /// terminator. Returns whether the frame has ended.
    fn discard(&mut self) -> bool {
        let tlen = self.terminator.len();
        let from = self.searched.saturating_sub(tlen - 1);
        match self.terminator.find(&self.buf[from..]) {
            Some(at) => {
                self.count_scanned(at + tlen);
                self.buf.advance(from + at + tlen);
                self.searched = 0;
                self.discarding = false;
                true
            }
            None => {
                self.count_scanned(self.buf.len() - from);
                // Keep only what may be the start of the terminator.
                let drop = self.buf.len().saturating_sub(tlen - 1);
                self.buf.advance(drop);
                self.searched = self.buf.len();
                false
            }
        }
    }

    /// Puts the unconsumed rest of the chunk back in front of `buf`, because
    /// it does not hold a complete frame in the current mode (a counted
    /// frame that runs past it, or a scan realigned by a counted frame).
    ///
    /// This copies the rest and the partial frame after it, at most about
    /// one read's worth, and only when a counted frame or a mode change
    /// straddles the end of a read's complete frames. That is most reads
    /// of a NATS publisher (the chunk is cut at the last `\n`, often one
    /// inside a payload), so when no frame of the chunk is still held
    /// elsewhere the bytes move to the front of the same allocation: a
    /// fresh zeroed read buffer per read cost about 8% of the NATS path's
    /// instructions (callgrind, 1→1).
    fn give_back(&mut self) {
        let tail_len = self.chunk.len() - self.pos;
        let len = tail_len + self.buf.len();
        #[cfg(test)]
        {
            self.work.copied += len;
        }
        let tail = self.chunk[self.pos..].to_vec();
        self.release_chunk();
        self.searched = 0;
        // `try_reclaim` never allocates: it succeeds if `buf` already has
        // the room behind it, or else if no `Bytes` points into the
        // allocation any more (then it moves `buf` to the front). Either
        // way `buf` keeps its allocation, whose spare room is initialized
        // memory (see `read_buf`).
        if self.spare_initialized && self.buf.try_reclaim(tail_len + self.alloc / 2) {
            self.buf.extend_from_slice(&tail);
            self.buf.rotate_right(tail_len);
            return;
        }
        let cap = self.alloc.max(len + self.alloc / 2);
        let mut fresh = BytesMut::zeroed(cap);
        fresh.clear();
        fresh.extend_from_slice(&tail);
        fresh.extend_from_slice(&self.buf);
        self.buf = fresh;
        self.spare_initialized = true;
    }
}

/// The complete frames of a [`Framer`], handed out in order by
/// [`Frames::next_frame`]. Dropping it loses nothing: frames not handed out
/// stay in the framer.
pub struct Frames<'a> {
    framer: &'a mut Framer,
}

impl Frames<'_> {
    /// The next frame, an error for a frame that was refused, or `None`
    /// when no complete frame is left (read more, then call again).
    ///
    /// Empty frames are returned too; the caller decides what they mean.
    #[inline]
    #[allow(clippy::should_implement_trait)] // a lending iterator: frames borrow `self`
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, FrameError>> {
        self.framer.next_frame()
    }

    /// Sets how the next frame ends. A [`Mode::Count`] frame is followed by
    /// terminator mode again unless set otherwise.
    #[inline]
    pub fn set_mode(&mut self, mode: Mode) {
        self.framer.set_mode(mode);
    }

    /// The mode the next frame will be cut in.
    #[inline]
    pub fn mode(&self) -> Mode {
        self.framer.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a consumer saw: a frame's bytes, or that it was refused.
    type Seen = Result<Vec<u8>, FrameError>;

    fn t(spec: &str) -> Terminator {
        Terminator::parse(spec).unwrap()
    }

    fn framer(spec: &str, max: usize) -> Framer {
        Framer::new(t(spec), max)
    }

    /// Takes every complete frame.
    fn drain(f: &mut Framer) -> Vec<Seen> {
        let mut out = Vec::new();
        let mut frames = f.frames();
        while let Some(frame) = frames.next_frame() {
            out.push(frame.map(|fr| fr.as_slice().to_vec()));
        }
        out
    }

    fn ok(frames: &[&[u8]]) -> Vec<Seen> {
        frames.iter().map(|f| Ok(f.to_vec())).collect()
    }

    fn too_long(len: usize, max: usize) -> Seen {
        Err(FrameError::TooLong { len, max })
    }

    /// Feeds `stream` in reads of the given sizes (cycled), draining after
    /// each read.
    fn feed(f: &mut Framer, stream: &[u8], reads: &[usize]) -> Vec<Seen> {
        let mut out = Vec::new();
        let mut rest = stream;
        let mut i = 0;
        while !rest.is_empty() {
            let n = reads[i % reads.len()].clamp(1, rest.len());
            i += 1;
            f.push(&rest[..n]);
            rest = &rest[n..];
            out.extend(drain(f));
        }
        out
    }

    /// Every way of cutting `stream` into two reads gives `expected`.
    fn assert_every_split(spec: &str, max: usize, stream: &[u8], expected: &[Seen]) {
        for cut in 0..=stream.len() {
            let mut f = framer(spec, max);
            f.push(&stream[..cut]);
            let mut seen = drain(&mut f);
            f.push(&stream[cut..]);
            seen.extend(drain(&mut f));
            assert_eq!(seen, expected, "split at {cut} of {stream:?}");
        }
        // And one byte per read.
        let mut f = framer(spec, max);
        assert_eq!(feed(&mut f, stream, &[1]), expected, "byte by byte");
    }

    // ---- Terminator flag syntax --------------------------------------

    #[test]
    fn parse_escapes_and_literals() {
        assert_eq!(t(r"\n").as_bytes(), b"\n");
        assert_eq!(t(r"\r\n").as_bytes(), b"\r\n");
        assert_eq!(t(r"\t").as_bytes(), b"\t");
        assert_eq!(t(r"\0\0").as_bytes(), b"\0\0");
        assert_eq!(t(r"\\").as_bytes(), b"\\");
        assert_eq!(t(r"\x1e").as_bytes(), &[0x1e]);
        assert_eq!(t(r"\xFF\xab").as_bytes(), &[0xff, 0xab]);
        assert_eq!(t(r"END\n").as_bytes(), b"END\n");
        assert_eq!(t("é").as_bytes(), "é".as_bytes());
        assert_eq!(t(&"a".repeat(16)).len(), 16);
        assert_eq!(Terminator::default(), t(r"\n"));
    }

    #[test]
    fn parse_errors_are_specific_and_readable() {
        use TerminatorError::*;
        let err = |s: &str| Terminator::parse(s).unwrap_err();
        assert_eq!(err(""), Empty);
        assert_eq!(err(&"a".repeat(17)), TooLong(17));
        assert_eq!(
            err(r"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\n"),
            TooLong(17)
        );
        assert_eq!(err(r"\q"), UnknownEscape('q'));
        assert_eq!(err("\\é"), UnknownEscape('é'));
        assert_eq!(err(r"ab\"), DanglingEscape);
        assert_eq!(err(r"\x1"), BadHex);
        assert_eq!(err(r"\x"), BadHex);
        assert_eq!(err(r"\xg0"), BadHex);
        assert_eq!(err("\\x\u{e9}0"), BadHex);

        assert_eq!(
            err(r"\q").to_string(),
            r"unknown escape `\q` in terminator: use \n \r \t \0 \\ or \xHH"
        );
        assert_eq!(
            err(&"a".repeat(17)).to_string(),
            "terminator is 17 bytes long: at most 16 are allowed"
        );
        assert!(err("").to_string().contains("empty"));
        assert!(err(r"\x1").to_string().contains("two hex digits"));
        assert!(err(r"a\").to_string().contains("incomplete escape"));
        assert_eq!(Terminator::new(b"").unwrap_err(), Empty);
        assert_eq!(Terminator::new(&[0; 17]).unwrap_err(), TooLong(17));
    }

    #[test]
    fn escape_round_trips_and_is_readable() {
        for raw in [
            &b"\n"[..],
            b"\r\n",
            b"\0\0",
            b"END\n",
            b"\\ \x7f\x1e\t",
            b"\xff",
        ] {
            let term = Terminator::new(raw).unwrap();
            assert_eq!(Terminator::parse(&term.escape()).unwrap(), term);
        }
        assert_eq!(t(r"\r\n").escape(), r"\r\n");
        assert_eq!(Terminator::new(b"a b").unwrap().escape(), r"a\x20b");
        assert_eq!(format!("{}", t(r"END\n")), r"END\n");
        assert_eq!(format!("{:?}", t(r"\0\0")), r"Terminator(\0\0)");
    }

    #[test]
    fn terminator_searches() {
        let nn = t(r"\0\0");
        assert_eq!(nn.find(b"a\0\0\0b"), Some(1));
        assert_eq!(nn.rfind(b"a\0\0\0b"), Some(2));
        assert_eq!(nn.rfind(b"\0"), None);
        assert_eq!(nn.rfind(b""), None);
        // A lone last byte at the very front is not a match.
        assert_eq!(t(r"END\n").rfind(b"\nxx"), None);
        assert_eq!(t(r"END\n").rfind(b"END\nx\nEND\nD\n"), Some(6));
        assert_eq!(t(r"\n").rfind(b"a\nb\n"), Some(3));
        // Where a left-to-right scan for frames ends its last frame.
        let end = |t: &Terminator, hay: &[u8]| t.last_frame_end(hay).0;
        assert_eq!(end(&nn, b"\0\0\0"), Some(2));
        assert_eq!(end(&nn, b"x\0\0\0"), Some(3));
        assert_eq!(end(&nn, b"\0\0\0\0"), Some(4));
        assert_eq!(end(&nn, b"\0\0\0\0\0"), Some(4));
        assert_eq!(end(&nn, b"a\0\0b\0"), Some(3));
        assert_eq!(end(&nn, b"ab\0"), None);
        assert_eq!(end(&t("abab"), b"abababab"), Some(8));
        assert_eq!(end(&t("abab"), b"ababababa"), Some(8));
        assert_eq!(end(&t("abab"), b"abababa"), Some(4));
        assert_eq!(end(&t(r"\r\n"), b"a\r\nb\r\nc"), Some(6));
        assert!(nn.overlaps && t("abab").overlaps && t("aa").overlaps);
        assert!(!t(r"\r\n").overlaps && !t(r"END\n").overlaps && !t("ab").overlaps);
    }

    // ---- Splitting ----------------------------------------------------

    #[test]
    fn frames_of_one_read() {
        let mut f = framer(r"\n", 100);
        f.push(b"PING\nSUB a\n\nPUB a x");
        assert_eq!(drain(&mut f), ok(&[b"PING", b"SUB a", b""]));
        assert_eq!(f.buffered(), 7);
        f.push(b"y\n");
        assert_eq!(drain(&mut f), ok(&[b"PUB a xy"]));
        assert_eq!(f.buffered(), 0);
        assert_eq!(drain(&mut f), vec![]);
    }

    #[test]
    fn terminator_split_across_reads_is_found() {
        // asynchat's find_prefix_at_end case, for every cut point.
        assert_every_split(r"\r\n", 100, b"abc\r\ndef\r\n", &ok(&[b"abc", b"def"]));
        assert_every_split(r"END\n", 100, b"xyzEND\nEND\n", &ok(&[b"xyz", b""]));
        let sixteen = "0123456789abcdef";
        let stream = format!("hello{sixteen}world{sixteen}");
        assert_every_split(sixteen, 100, stream.as_bytes(), &ok(&[b"hello", b"world"]));
    }

    #[test]
    fn prefixes_of_the_terminator_stay_in_the_frame() {
        assert_every_split(r"\r\n", 100, b"a\rb\r\r\n\r\n", &ok(&[b"a\rb\r", b""]));
        assert_every_split(r"\0\0", 100, b"a\0b\0\0\0c\0\0", &ok(&[b"a\0b", b"\0c"]));
        assert_every_split(
            r"END\n",
            100,
            b"ENEN\nEND\nENDEND\nEEND\n",
            &ok(&[b"ENEN\n", b"END", b"E"]),
        );
        // A frame ending in a prefix, with the rest of the terminator later.
        let mut f = framer(r"END\n", 100);
        f.push(b"xEN");
        assert_eq!(drain(&mut f), vec![]);
        f.push(b"END\n");
        assert_eq!(drain(&mut f), ok(&[b"xEN"]));
    }

    #[test]
    fn self_overlapping_terminators_split_left_to_right() {
        assert_every_split(r"\0\0", 100, b"a\0\0\0b\0\0", &ok(&[b"a", b"\0b"]));
        assert_every_split(r"\0\0", 100, b"\0\0\0\0\0\0", &ok(&[b"", b"", b""]));
        assert_every_split("abab", 100, b"xabababy1abab", &ok(&[b"x", b"aby1"]));
        assert_every_split("aa", 100, b"aaaaabaa", &ok(&[b"", b"", b"ab"]));
    }

    #[test]
    fn overlapping_terminator_at_end_of_read_copies_nothing() {
        // The last occurrence in the read (`\0\0` at 4) is not where the
        // scan ends a frame (at 3): the chunk must stop at 5, leaving the
        // final `\0` buffered, rather than be cut at 6 and given back.
        let mut f = framer(r"\0\0", 100);
        f.push(b"a\0\0x\0\0\0");
        assert_eq!(drain(&mut f), ok(&[b"a", b"x"]));
        assert_eq!(f.buffered(), 1);
        f.push(b"b\0\0");
        assert_eq!(drain(&mut f), ok(&[b"\0b"]));
        assert_eq!(f.work.copied, 0);
    }

    #[test]
    fn cr_is_dropped_only_before_exactly_lf() {
        assert_every_split(
            r"\n",
            100,
            b"abc\r\n\r\na\r\r\nx\ry\n\rz\n",
            &ok(&[b"abc", b"", b"a\r", b"x\ry", b"\rz"]),
        );
        assert_every_split(r"\r\n", 100, b"a\r\r\n", &ok(&[b"a\r"]));
        assert_every_split(r"x\n", 100, b"a\rx\n", &ok(&[b"a\r"]));
        assert_every_split(r"\0", 100, b"a\r\0", &ok(&[b"a\r"]));
    }

    // ---- Maximum frame length -----------------------------------------

    #[test]
    fn frame_of_exactly_max_is_accepted_and_max_plus_one_refused_once() {
        let max = 10;
        let exact = [b'x'; 10];
        let mut stream = exact.to_vec();
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(&[b'y'; 11]);
        stream.extend_from_slice(b"\r\nok\r\n");
        // With `\r\n` the `\r` is the terminator's, not the frame's.
        let expected = vec![Ok(exact.to_vec()), too_long(11, max), Ok(b"ok".to_vec())];
        // Split anywhere, the over-long frame is reported exactly once (its
        // `len` may be a lower bound if it was seen incomplete).
        for cut in 0..=stream.len() {
            let mut f = framer(r"\r\n", max);
            f.push(&stream[..cut]);
            let mut seen = drain(&mut f);
            f.push(&stream[cut..]);
            seen.extend(drain(&mut f));
            let shape: Vec<_> = seen.iter().map(|s| s.as_ref().map_err(|_| ())).collect();
            let want: Vec<_> = expected
                .iter()
                .map(|s| s.as_ref().map_err(|_| ()))
                .collect();
            assert_eq!(shape, want, "split at {cut}");
        }
        let mut f = framer(r"\r\n", max);
        f.push(&stream);
        assert_eq!(drain(&mut f), expected);
    }

    #[test]
    fn cr_counts_toward_the_maximum() {
        // The spec counts the frame before any `\r` is dropped.
        let mut f = framer(r"\n", 3);
        f.push(b"abc\r\nab\r\n");
        assert_eq!(drain(&mut f), vec![too_long(4, 3), Ok(b"ab".to_vec())]);
        // Seen incomplete: three bytes and a `\r` are already too long.
        let mut f = framer(r"\n", 3);
        f.push(b"abc\r");
        assert_eq!(drain(&mut f), vec![too_long(4, 3)]);
        f.push(b"\nok\n");
        assert_eq!(drain(&mut f), ok(&[b"ok"]));
    }

    #[test]
    fn overlong_frame_is_dropped_with_constant_memory() {
        let max = 1024;
        let mut f = framer(r"END\n", max);
        let piece: Vec<u8> = b"ENDEN".iter().copied().cycle().take(4093).collect();
        let mut errors = 0;
        let mut fed = 0;
        let mut peak_cap = 0;
        while fed < 10 << 20 {
            f.push(&piece);
            fed += piece.len();
            for seen in drain(&mut f) {
                assert!(seen.is_err(), "no frame can end inside the long one");
                errors += 1;
            }
            assert!(
                f.buffered() < max + piece.len(),
                "buffered {}",
                f.buffered()
            );
            peak_cap = peak_cap.max(f.buf.capacity());
        }
        assert_eq!(errors, 1, "reported once");
        // The read buffer was reused, never grown past one allocation.
        assert!(peak_cap <= DEFAULT_READ_SIZE, "capacity grew to {peak_cap}");
        // Every piece (4093 = 5 * 818 + 3 bytes) ends in `END`: one `\n`
        // ends the long frame; the next frame is fine.
        f.push(b"\nnext frameEND\n");
        assert_eq!(drain(&mut f), ok(&[b"next frame"]));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn overlong_frame_then_next_frames_are_fine() {
        let mut stream = vec![b'z'; 50];
        stream.extend_from_slice(b"\nab\n\ncd\n");
        let mut f = framer(r"\n", 8);
        let seen = feed(&mut f, &stream, &[7, 3, 1]);
        assert!(matches!(seen[0], Err(FrameError::TooLong { max: 8, .. })));
        assert_eq!(seen[1..], ok(&[b"ab", b"", b"cd"]));
    }

    #[test]
    fn zero_max_accepts_only_empty_frames() {
        assert_every_split(
            r"\n",
            0,
            b"\na\n\r\n",
            &[Ok(vec![]), too_long(1, 0), too_long(1, 0)],
        );
    }

    // ---- Count mode and switching ---------------------------------------

    #[test]
    fn count_mode_cuts_exact_lengths_including_terminator_bytes() {
        let mut f = framer(r"\r\n", 100);
        f.push(b"ab\r\ncdefg");
        let mut frames = f.frames();
        frames.set_mode(Mode::Count(4));
        assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"ab\r\n");
        assert_eq!(frames.mode(), Mode::Terminator, "back after one frame");
        frames.set_mode(Mode::Count(3));
        assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"cde");
        frames.set_mode(Mode::Count(3));
        assert!(frames.next_frame().is_none());
        assert_eq!(f.mode(), Mode::Count(3));
        f.push(b"h");
        let mut frames = f.frames();
        assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"fgh");
        assert!(frames.next_frame().is_none());
    }

    #[test]
    fn count_of_zero_is_an_empty_frame_anywhere() {
        let mut f = framer(r"\n", 100);
        let mut frames = f.frames();
        frames.set_mode(Mode::Count(0));
        assert!(frames.next_frame().unwrap().unwrap().is_empty());
        f.push(b"a\nb\n");
        let mut frames = f.frames();
        assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"a");
        frames.set_mode(Mode::Count(0));
        assert!(frames.next_frame().unwrap().unwrap().is_empty());
        assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"b");
        frames.set_mode(Mode::Count(0));
        assert!(
            frames.next_frame().unwrap().unwrap().is_empty(),
            "at the end of a chunk"
        );
        assert!(frames.next_frame().is_none());
    }

    #[test]
    fn overlong_counted_frame_is_skipped_unbuffered() {
        let mut f = framer(r"\n", 4);
        f.push(b"hdr\nab\ncd");
        let mut frames = f.frames();
        assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"hdr");
        frames.set_mode(Mode::Count(1000));
        assert_eq!(
            frames.next_frame().unwrap().unwrap_err(),
            FrameError::TooLong { len: 1000, max: 4 }
        );
        assert!(frames.next_frame().is_none());
        assert_eq!(f.buffered(), 0);
        let mut left = 1000 - 5;
        while left > 0 {
            let n = left.min(64);
            f.push(&vec![b'\n'; n]); // terminators inside the skipped payload
            left -= n;
            assert_eq!(drain(&mut f), vec![]);
            assert_eq!(f.buffered(), 0);
        }
        f.push(b"next\n");
        assert_eq!(drain(&mut f), ok(&[b"next"]));
        // Counted frames of exactly the maximum are fine.
        f.push(b"abcd");
        let mut frames = f.frames();
        frames.set_mode(Mode::Count(4));
        assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"abcd");
        // And a too-long count inside one chunk is skipped in place.
        f.push(b"h\n0123456789t\n");
        let mut frames = f.frames();
        assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"h");
        frames.set_mode(Mode::Count(10));
        assert!(frames.next_frame().unwrap().is_err());
        assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"t");
    }

    /// A tiny protocol: a line `#n` announces a counted frame of `n` bytes.
    fn mini_protocol(f: &mut Framer) -> Vec<Seen> {
        let mut out = Vec::new();
        let mut frames = f.frames();
        while let Some(frame) = frames.next_frame() {
            let frame = frame.map(|fr| fr.as_slice().to_vec());
            if let Ok(line) = &frame {
                if let Some(n) = line.strip_prefix(b"#") {
                    let n = std::str::from_utf8(n).unwrap().parse().unwrap();
                    frames.set_mode(Mode::Count(n));
                }
            }
            out.push(frame);
        }
        out
    }

    #[test]
    fn switching_modes_mid_chunk_and_across_reads() {
        let stream = b"a\n#5\nx\ny\nz#0\n#3\n\0\0\0b\n#2\nEN\n";
        let expected = ok(&[
            b"a", b"#5", b"x\ny\nz", b"#0", b"", b"#3", b"\0\0\0", b"b", b"#2", b"EN", b"",
        ]);
        for cut in 0..=stream.len() {
            let mut f = framer(r"\n", 100);
            f.push(&stream[..cut]);
            let mut seen = mini_protocol(&mut f);
            f.push(&stream[cut..]);
            seen.extend(mini_protocol(&mut f));
            assert_eq!(seen, expected, "split at {cut}");
        }
    }

    #[test]
    fn set_mode_while_discarding_applies_after_the_long_frame() {
        let mut f = framer(r"\n", 4);
        f.push(b"waytoolong");
        assert_eq!(drain(&mut f).len(), 1);
        f.set_mode(Mode::Count(3));
        f.push(b"still\nabc");
        let mut frames = f.frames();
        assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"abc");
    }

    // ---- Costs ------------------------------------------------------------

    #[test]
    fn one_mib_frame_one_byte_per_read_is_linear() {
        let n = 1 << 20;
        for spec in [r"\n", r"\r\n", r"END\n"] {
            let term = t(spec);
            let mut f = Framer::new(term.clone(), 2 * n);
            let mut reads = 0;
            for i in 0..n {
                f.push(&[b'a' + (i % 7) as u8]);
                reads += 1;
                assert!(f.frames().next_frame().is_none());
            }
            for &b in term.as_bytes() {
                f.push(&[b]);
                reads += 1;
                let got = drain(&mut f);
                if got.is_empty() {
                    continue;
                }
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].as_ref().unwrap().len(), n);
            }
            let w = f.work;
            // Each read rescans at most `len - 1` old bytes plus its own.
            assert!(
                w.scanned <= reads * term.len(),
                "{spec}: scanned {} for {reads} reads",
                w.scanned
            );
            // Doubling growth: every byte moved O(1) times.
            assert!(w.copied <= 2 * n, "{spec}: copied {}", w.copied);
        }
    }

    #[test]
    fn frames_of_one_read_share_the_read_buffer() {
        let mut f = framer(r"\r\n", 100);
        let data = b"one\r\ntwo\r\n\r\nthree\r\npartial";
        let dst = f.read_buf();
        let range = dst.as_ptr_range();
        dst[..data.len()].copy_from_slice(data);
        f.advance(data.len());
        let mut frames = f.frames();
        let mut n = 0;
        while let Some(frame) = frames.next_frame() {
            let frame = frame.unwrap();
            let s = frame.as_slice();
            assert!(range.contains(&s.as_ptr()) || s.is_empty() && s.as_ptr() <= range.end);
            assert!(s.as_ptr_range().end <= range.end);
            // Owned frames share that memory too.
            let b = frame.to_bytes();
            assert_eq!(b.as_ptr(), s.as_ptr());
            assert_eq!(&b[..], s);
            if s.len() > 2 {
                let sub = frame.slice_bytes(1..3);
                assert_eq!(sub.as_ptr(), s[1..].as_ptr());
            }
            n += 1;
        }
        assert_eq!(n, 4);
    }

    #[test]
    fn stopping_early_keeps_the_rest_without_copying() {
        let mut f = framer(r"\n", 100);
        f.push(b"a\nbb\nccc\ndd");
        {
            let mut frames = f.frames();
            assert_eq!(frames.next_frame().unwrap().unwrap().as_slice(), b"a");
        }
        assert_eq!(f.buffered(), 9);
        f.push(b"d\n");
        assert_eq!(drain(&mut f), ok(&[b"bb", b"ccc", b"ddd"]));
        assert_eq!(f.work.copied, 0);
    }

    // ---- The read buffer (the `unsafe` in read_buf/advance) -----------------

    #[test]
    fn read_buffer_is_reclaimed_and_reused_when_frames_are_gone() {
        let mut f = Framer::with_read_size(t(r"\n"), 100, 64);
        let first = f.read_buf().as_ptr();
        f.push(b"0123456789012345678901234567890123456789\n"); // 41 bytes
        assert_eq!(drain(&mut f).len(), 1);
        // Less than 32 bytes of room left: the same allocation is reclaimed.
        let again = f.read_buf();
        assert_eq!(again.as_ptr(), first, "reclaimed, not reallocated");
        assert!(again.len() >= 32);
        again[..6].copy_from_slice(b"hello\n");
        f.advance(6);
        assert_eq!(drain(&mut f), ok(&[b"hello"]));
    }

    /// A counted frame running past the chunk (cut at a terminator inside
    /// it) is moved to the front of the same allocation when no frame of
    /// the chunk is held, and into a new one when one is.
    #[test]
    fn a_counted_frame_past_the_chunk_reuses_the_read_buffer_unless_a_frame_is_held() {
        for hold in [false, true] {
            let mut f = Framer::with_read_size(t(r"\n"), 100, 64);
            let first = f.read_buf().as_ptr();
            // 45 of 64 bytes: the rest of the chunk and its partial frame
            // must move to make room for the next read.
            f.push(b"0123456789012345678901234567890123456789a\nx\ny");
            let mut frames = f.frames();
            let kept = frames.next_frame().unwrap().unwrap().to_bytes();
            let kept = hold.then_some(kept);
            frames.set_mode(Mode::Count(6));
            assert!(frames.next_frame().is_none(), "hold {hold}");
            // Reused: the room offered lies in the first allocation (of 64).
            let now = f.read_buf().as_ptr() as usize;
            let reused = (first as usize..first as usize + 64).contains(&now);
            assert_eq!(reused, !hold, "hold {hold}");
            f.push(b"zzz\n");
            assert_eq!(drain(&mut f), ok(&[b"x\nyzzz", b""]), "hold {hold}");
            if let Some(kept) = kept {
                assert_eq!(&kept[..], b"0123456789012345678901234567890123456789a");
            }
        }
    }

    #[test]
    fn memory_of_a_kept_frame_is_never_read_into_again() {
        let mut f = Framer::with_read_size(t(r"\n"), 100, 64);
        f.push(b"keep me please, I am forwarded to another core\n");
        let kept = {
            let mut frames = f.frames();
            let kept = frames.next_frame().unwrap().unwrap().to_bytes();
            assert!(frames.next_frame().is_none());
            kept
        };
        for _ in 0..10 {
            let dst = f.read_buf();
            dst.fill(0xff);
            let n = dst.len();
            f.advance(n);
            drain(&mut f);
        }
        assert_eq!(&kept[..], b"keep me please, I am forwarded to another core");
    }

    #[test]
    fn read_buf_after_extend_gives_initialized_room() {
        let mut f = framer(r"\n", 100);
        let mut adopted = BytesMut::with_capacity(1 << 16); // spare uninitialized
        adopted.extend_from_slice(b"ab");
        f.extend(adopted);
        let dst = f.read_buf();
        assert!(
            dst.iter().all(|&b| b == 0),
            "fresh zeroed room, not the adopted spare"
        );
        dst[..2].copy_from_slice(b"c\n");
        f.advance(2);
        assert_eq!(drain(&mut f), ok(&[b"abc"]));
    }

    #[test]
    #[should_panic(expected = "without read_buf()")]
    fn advance_after_extend_without_read_buf_panics() {
        let mut f = framer(r"\n", 100);
        let _ = f.read_buf();
        let mut adopted = BytesMut::with_capacity(64);
        adopted.extend_from_slice(b"ab");
        f.extend(adopted);
        f.advance(1);
    }

    #[test]
    #[should_panic(expected = "past the read buffer")]
    fn advance_past_read_buf_panics() {
        let mut f = framer(r"\n", 100);
        let n = f.read_buf().len();
        f.advance(n + 1);
    }

    #[test]
    fn extend_of_adjacent_pieces_copies_nothing() {
        let mut whole = BytesMut::from(&b"alpha\nbeta\ngam"[..]);
        whole.extend_from_slice(b"ma\ndelta\n");
        let base = whole.as_ptr();
        let mut f = framer(r"\n", 100);
        let mut ptrs = Vec::new();
        while !whole.is_empty() {
            let piece = whole.split_to(4.min(whole.len()));
            f.extend(piece);
            let mut frames = f.frames();
            while let Some(frame) = frames.next_frame() {
                let s = frame.unwrap().as_slice();
                ptrs.push((s.to_vec(), s.as_ptr() as usize - base as usize));
            }
        }
        let offsets = vec![
            (b"alpha".to_vec(), 0),
            (b"beta".to_vec(), 6),
            (b"gamma".to_vec(), 11),
            (b"delta".to_vec(), 17),
        ];
        assert_eq!(ptrs, offsets);
    }

    #[test]
    #[should_panic(expected = "out of a frame")]
    fn slice_bytes_outside_the_frame_panics() {
        let mut f = framer(r"\n", 100);
        f.push(b"abc\ndef\n");
        let mut frames = f.frames();
        let frame = frames.next_frame().unwrap().unwrap();
        let _ = frame.slice_bytes(2..5);
    }

    // ---- Properties --------------------------------------------------------

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Bytes that make up terminators and frames: terminator bytes and
        /// the usual suspects, so frames are full of terminator prefixes.
        const ALPHABET: &[u8] = b"\n\r\0ENDab";

        fn terminator() -> impl Strategy<Value = Terminator> {
            let named = prop::sample::select(vec![&b"\n"[..], b"\r\n", b"\0\0", b"END\n", b"aba"]);
            let random = prop::collection::vec(prop::sample::select(ALPHABET), 1..=4);
            prop_oneof![
                2 => named.prop_map(|b| Terminator::new(b).unwrap()),
                3 => random.prop_map(|b| Terminator::new(&b).unwrap()),
            ]
        }

        fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(prop::sample::select(ALPHABET), 0..=max_len)
        }

        /// The first occurrence of `t` in `hay`, naively.
        fn naive_find(hay: &[u8], t: &[u8]) -> Option<usize> {
            hay.windows(t.len()).position(|w| w == t)
        }

        /// `f` changed so that, followed by `t`, its first terminator is
        /// that one: bytes are removed where a terminator would start early.
        fn sanitize(mut f: Vec<u8>, t: &[u8]) -> Vec<u8> {
            loop {
                let mut s = f.clone();
                s.extend_from_slice(t);
                match naive_find(&s, t) {
                    Some(p) if p < f.len() => {
                        f.remove(p);
                    }
                    _ => return f,
                }
            }
        }

        /// What the consumer expects of one frame, and the mode to cut it in.
        #[derive(Debug, Clone)]
        struct Item {
            mode: Mode,
            expect: Result<Vec<u8>, ()>,
        }

        /// A frame ending at the terminator, as the spec says it arrives.
        fn line(frame: &[u8], term: &Terminator, max: usize) -> Item {
            let expect = if frame.len() > max {
                Err(())
            } else if term.as_bytes() == b"\n" && frame.last() == Some(&b'\r') {
                Ok(frame[..frame.len() - 1].to_vec())
            } else {
                Ok(frame.to_vec())
            };
            Item {
                mode: Mode::Terminator,
                expect,
            }
        }

        /// Appends `f`, made free of the terminator, as a terminated frame
        /// to `stream`, and what the framer must make of it to `items`.
        fn push_line(
            f: Vec<u8>,
            term: &Terminator,
            max: usize,
            stream: &mut Vec<u8>,
            items: &mut Vec<Item>,
        ) {
            let f = sanitize(f, term.as_bytes());
            items.push(line(&f, term, max));
            stream.extend_from_slice(&f);
            stream.extend_from_slice(term.as_bytes());
        }

        fn counted(frame: &[u8], max: usize) -> Item {
            Item {
                mode: Mode::Count(frame.len()),
                expect: if frame.len() > max {
                    Err(())
                } else {
                    Ok(frame.to_vec())
                },
            }
        }

        /// How the stream reaches the framer.
        #[derive(Debug, Clone)]
        struct Plan {
            /// Sizes of successive reads (cycled).
            reads: Vec<usize>,
            /// Per read (cycled): 0 = `push`, 1 = `read_buf`/`advance` in
            /// one go if it fits, 2 = `extend` with a separate buffer.
            how: Vec<u8>,
            /// Per read (cycled): how many frames to take before stopping
            /// (`usize::MAX`: all of them).
            take: Vec<usize>,
            read_size: usize,
        }

        fn plan() -> impl Strategy<Value = Plan> {
            (
                prop::collection::vec(
                    prop_oneof![4 => 1usize..8, 2 => 8usize..40, 1 => 40usize..300],
                    1..8,
                ),
                prop::collection::vec(0u8..3, 1..4),
                prop::collection::vec(prop_oneof![3 => Just(usize::MAX), 1 => 0usize..3], 1..4),
                prop_oneof![Just(64usize), Just(100), Just(4096)],
            )
                .prop_map(|(reads, how, take, read_size)| Plan {
                    reads,
                    how,
                    take,
                    read_size,
                })
        }

        /// Feeds `stream` per `plan`, cutting frames in the modes `items`
        /// asks for, and checks that exactly `items` come out, in order.
        /// With `complete`, the stream ends at a frame boundary and nothing
        /// may stay buffered.
        fn check(
            term: Terminator,
            max: usize,
            stream: &[u8],
            items: &[Item],
            plan: &Plan,
            complete: bool,
        ) -> Result<(), TestCaseError> {
            let mut f = Framer::with_read_size(term, max, plan.read_size);
            let mut seen: Vec<Result<Vec<u8>, ()>> = Vec::new();
            let take_frames = |f: &mut Framer, limit: usize, seen: &mut Vec<_>| {
                let mut frames = f.frames();
                let mut taken = 0;
                while taken < limit {
                    if let Some(item) = items.get(seen.len()) {
                        frames.set_mode(item.mode);
                    }
                    let Some(frame) = frames.next_frame() else {
                        break;
                    };
                    seen.push(frame.map(|fr| fr.as_slice().to_vec()).map_err(|_| ()));
                    taken += 1;
                }
            };
            let mut rest = stream;
            let mut i = 0;
            while !rest.is_empty() {
                let n = plan.reads[i % plan.reads.len()].min(rest.len());
                let (piece, tail) = rest.split_at(n);
                match plan.how[i % plan.how.len()] {
                    0 => f.push(piece),
                    1 => {
                        let dst = f.read_buf();
                        let k = dst.len().min(piece.len());
                        dst[..k].copy_from_slice(&piece[..k]);
                        f.advance(k);
                        f.push(&piece[k..]);
                    }
                    _ => f.extend(BytesMut::from(piece)),
                }
                rest = tail;
                take_frames(&mut f, plan.take[i % plan.take.len()], &mut seen);
                i += 1;
            }
            take_frames(&mut f, usize::MAX, &mut seen);
            let expected: Vec<_> = items.iter().map(|it| it.expect.clone()).collect();
            prop_assert_eq!(seen, expected);
            if complete {
                prop_assert_eq!(f.buffered(), 0);
            }
            Ok(())
        }

        fn max_frame() -> impl Strategy<Value = usize> {
            prop_oneof![3 => Just(usize::MAX), 1 => 0usize..24]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Random frames (full of terminator prefixes), random
            /// terminators, random reads: exactly the original frames.
            #[test]
            fn terminated_frames_come_out_as_sent(
                term in terminator(),
                frames in prop::collection::vec(bytes(30), 0..12),
                max in max_frame(),
                plan in plan(),
            ) {
                let mut stream = Vec::new();
                let mut items = Vec::new();
                for f in frames {
                    push_line(f, &term, max, &mut stream, &mut items);
                }
                check(term, max, &stream, &items, &plan, true)?;
            }

            /// Counted frames of any bytes, terminators included.
            #[test]
            fn counted_frames_come_out_as_sent(
                term in terminator(),
                frames in prop::collection::vec(bytes(40), 0..12),
                max in max_frame(),
                plan in plan(),
            ) {
                let stream: Vec<u8> = frames.concat();
                let items: Vec<_> = frames.iter().map(|f| counted(f, max)).collect();
                check(term, max, &stream, &items, &plan, true)?;
            }

            /// Both kinds of frame mixed on one stream, switching at every
            /// frame boundary, wherever the reads cut it.
            #[test]
            fn mixed_modes_come_out_as_sent(
                term in terminator(),
                frames in prop::collection::vec((any::<bool>(), bytes(30)), 0..16),
                max in max_frame(),
                plan in plan(),
            ) {
                let mut stream = Vec::new();
                let mut items = Vec::new();
                for (is_counted, f) in frames {
                    if is_counted {
                        items.push(counted(&f, max));
                        stream.extend_from_slice(&f);
                    } else {
                        push_line(f, &term, max, &mut stream, &mut items);
                    }
                }
                check(term, max, &stream, &items, &plan, true)?;
            }

            /// Any stream at all, against a naive model: frames end at the
            /// first terminator after their start; the partial frame at the
            /// end is not handed out, but reported if already too long.
            #[test]
            fn any_stream_splits_like_the_naive_model(
                term in terminator(),
                stream in bytes(120),
                max in max_frame(),
                plan in plan(),
            ) {
                let t = term.as_bytes();
                let (frames, partial) = naive_split(&stream, t);
                let mut items: Vec<_> = frames.iter().map(|f| line(f, &term, max)).collect();
                if partial.saturating_sub(t.len() - 1) > max {
                    items.push(Item { mode: Mode::Terminator, expect: Err(()) });
                }
                check(term, max, &stream, &items, &plan, false)?;
            }

            /// `parse(escape())` is the identity for every terminator.
            #[test]
            fn escape_then_parse_is_identity(raw in prop::collection::vec(any::<u8>(), 1..=16)) {
                let term = Terminator::new(&raw).unwrap();
                let back = Terminator::parse(&term.escape()).unwrap();
                prop_assert_eq!(back.as_bytes(), &raw[..]);
            }
        }

        /// The complete frames of `hay`, naively, and the length of the
        /// partial frame after them.
        fn naive_split(hay: &[u8], t: &[u8]) -> (Vec<Vec<u8>>, usize) {
            let mut out = Vec::new();
            let mut rest = hay;
            while let Some(p) = naive_find(rest, t) {
                out.push(rest[..p].to_vec());
                rest = &rest[p + t.len()..];
            }
            (out, rest.len())
        }
    }

    #[test]
    fn read_buffer_grows_for_busy_connections_and_shrinks_when_idle() {
        let mut f = Framer::new(t(r"\n"), 1 << 20);
        assert!(f.read_buf().len() < 8 * 1024, "starts small");
        // Full reads double the buffer up to the read size.
        for _ in 0..8 {
            let n = {
                let buf = f.read_buf();
                buf.fill(b'x');
                *buf.last_mut().unwrap() = b'\n';
                buf.len()
            };
            f.advance(n);
            let mut frames = f.frames();
            while frames.next_frame().is_some() {}
        }
        assert!(f.read_buf().len() >= DEFAULT_READ_SIZE / 2);
        // A run of small reads halves it again, and the big allocation is
        // released once nothing is buffered.
        for _ in 0..200 {
            let buf = f.read_buf();
            buf[..5].copy_from_slice(b"PING\n");
            f.advance(5);
            let mut frames = f.frames();
            while frames.next_frame().is_some() {}
        }
        assert!(
            f.read_buf().len() <= MIN_READ_SIZE,
            "{}",
            f.read_buf().len()
        );
    }
}
