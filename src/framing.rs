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
//! [`Bytes`] chunk — one atomic operation per read, not per frame — and hands
//! out [`Frame`]s that are plain borrowed views into that chunk. A frame that
//! must outlive the read (a message forwarded to another core) is turned into
//! an owned [`Bytes`] with [`Frame::to_bytes`], which shares the chunk's
//! memory; only those frames pay a reference count.
//!
//! The partial frame at the end of a read stays in the read buffer, so a
//! frame that arrives over many reads is never copied, and the terminator
//! search resumes where it stopped: feeding a 1 MiB frame one byte per read
//! costs O(n), not O(n²).
//!
//! # Limits
//!
//! A frame longer than the configured maximum is reported once as
//! [`FrameError::TooLong`] and skipped. If its terminator has not arrived yet,
//! the framer drops its bytes as they come (keeping only the last
//! `terminator.len() - 1`, which may be the start of a terminator), so memory
//! stays bounded by `max_frame + read_size` however long the frame is.
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

/// Default size of one socket read.
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
    #[error("`\\x` must be followed by two hex digits, e.g. \\x1e")]
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
}

impl Terminator {
    /// A terminator from raw bytes (1 to [`MAX_TERMINATOR_LEN`]).
    pub fn new(bytes: &[u8]) -> Result<Self, TerminatorError> {
        match bytes.len() {
            0 => return Err(TerminatorError::Empty),
            n if n > MAX_TERMINATOR_LEN => return Err(TerminatorError::TooLong(n)),
            _ => {}
        }
        let finder = (bytes.len() > 1).then(|| memmem::Finder::new(bytes).into_owned());
        Ok(Terminator {
            bytes: bytes.into(),
            finder,
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
                    // Report the whole character, not a UTF-8 fragment.
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

    /// End (exclusive) of the last terminator in `haystack`. Only used to
    /// bound a chunk: for self-overlapping terminators (`\0\0`) the forward
    /// parse may end up to `len() - 1` bytes earlier, which the framer
    /// handles.
    #[inline]
    fn rfind_end(&self, haystack: &[u8]) -> Option<usize> {
        let start = match &self.finder {
            None => memchr::memrchr(self.bytes[0], haystack),
            Some(_) => memmem::rfind(haystack, &self.bytes),
        };
        start.map(|s| s + self.bytes.len())
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
    /// After exactly this many bytes (asynchat's integer terminator).
    Count(usize),
}

/// A frame the framer refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is longer than the maximum. `len` is what was seen of it
    /// when this was reported: its whole length if it was complete, else a
    /// lower bound. Its bytes are skipped.
    #[error("frame too long ({len}+ bytes, maximum {max})")]
    TooLong { len: usize, max: usize },
}

/// One frame: a borrowed view into the chunk it was read into.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    chunk: &'a Bytes,
    start: usize,
    end: usize,
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
    #[inline]
    pub fn slice_bytes(&self, range: std::ops::Range<usize>) -> Bytes {
        debug_assert!(range.end <= self.end - self.start);
        self.chunk
            .slice(self.start + range.start..self.start + range.end)
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

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:?})", String::from_utf8_lossy(self.as_slice()))
    }
}

/// A byte-stream framer; see the [module docs](self).
pub struct Framer {
    /// Bytes received and not yet frozen into a chunk. Invariant: if
    /// `spare_initialized`, every byte of its spare capacity is initialized
    /// memory (see [`Framer::read_buf`]).
    buf: BytesMut,
    /// Whether `buf`'s spare capacity is known to be initialized: true for
    /// buffers this framer allocated zeroed, false after [`Framer::extend`]
    /// adopted a buffer of unknown provenance.
    spare_initialized: bool,
    /// How many bytes at the front of `buf` were already searched for the
    /// terminator without finding one; the next search starts
    /// `terminator.len() - 1` bytes before this, in case the terminator
    /// straddles two reads. This is what makes a long frame O(n).
    searched: usize,
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
    /// Capacity of a freshly allocated read buffer, and the least spare room
    /// [`Framer::read_buf`] offers.
    read_size: usize,
}

impl fmt::Debug for Framer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("buffered", &self.buf.len())
            .field("mode", &self.mode)
            .field("terminator", &self.terminator)
            .field("max_frame", &self.max_frame)
            .field("discarding", &self.discarding)
            .finish()
    }
}

impl Framer {
    /// A framer splitting at `terminator`, refusing frames over `max_frame`
    /// bytes.
    pub fn new(terminator: Terminator, max_frame: usize) -> Self {
        Self::with_read_size(terminator, max_frame, DEFAULT_READ_SIZE)
    }

    /// Like [`Framer::new`] with a given socket read size.
    pub fn with_read_size(terminator: Terminator, max_frame: usize, read_size: usize) -> Self {
        let strip_cr = terminator.as_bytes() == b"\n";
        Framer {
            buf: BytesMut::new(),
            spare_initialized: true, // no spare capacity at all yet
            searched: 0,
            mode: Mode::Terminator,
            terminator,
            strip_cr,
            max_frame,
            discarding: false,
            skip: 0,
            read_size: read_size.max(64),
        }
    }

    /// The terminator this framer splits at.
    pub fn terminator(&self) -> &Terminator {
        &self.terminator
    }

    /// The mode the next frame will be cut in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Sets how the next frame ends (between batches; within one use
    /// [`Frames::set_mode`]).
    pub fn set_mode(&mut self, mode: Mode) {
        if mode != self.mode {
            self.mode = mode;
            self.searched = 0;
        }
    }

    /// Bytes received and not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Spare room to read into: at least `read_size / 2` bytes, initialized.
    /// After writing `n` bytes at its front, call [`Framer::advance`]`(n)`.
    pub fn read_buf(&mut self) -> &mut [u8] {
        let want = self.read_size / 2;
        let spare = self.buf.capacity() - self.buf.len();
        if spare < want || !self.spare_initialized {
            // Reuse the current allocation if every frame handed out of it
            // is gone (no allocation, memory we zeroed ourselves);
            // otherwise start a fresh zeroed one and move the partial frame
            // over. Growth doubles, so a long frame is copied O(1) times
            // per byte on average.
            if !(self.spare_initialized && self.buf.try_reclaim(want)) {
                let cap = self
                    .read_size
                    .max(self.buf.len() * 2)
                    .max(self.buf.len() + want);
                let mut fresh = BytesMut::zeroed(cap);
                fresh.clear();
                fresh.extend_from_slice(&self.buf);
                self.buf = fresh;
                self.spare_initialized = true;
            }
        }
        let spare = self.buf.spare_capacity_mut();
        // SAFETY: `spare_initialized` holds (established just above if it
        // did not), so every byte of `buf`'s allocation past `len` was
        // written: zeroed when this framer allocated it, or filled by an
        // earlier read and since handed out. `try_reclaim` never allocates,
        // so it only ever hands back room in that same allocation.
        // `MaybeUninit<u8>` has the layout of `u8`.
        unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) }
    }

    /// Marks `n` bytes at the front of [`Framer::read_buf`] as received.
    ///
    /// # Panics
    /// If `n` is larger than the slice `read_buf` returned.
    pub fn advance(&mut self, n: usize) {
        let spare = self.buf.capacity() - self.buf.len();
        assert!(n <= spare, "advance({n}) past the read buffer ({spare})");
        // SAFETY: `n` bytes of spare capacity were initialized (see
        // `read_buf`'s invariant) and, per this method's contract, written.
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
    /// directly follows what is buffered in memory (as successive
    /// `split_to` pieces of one buffer do); otherwise its bytes are copied.
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
        Frames {
            framer: self,
            chunk: Bytes::new(),
            pos: 0,
        }
    }

    /// Freezes the next run of complete frames (under the current mode) off
    /// the front of `buf`. Returns `Err` once when an over-long frame is
    /// detected before it is complete, `Ok(None)` when no complete frame is
    /// buffered.
    fn next_chunk(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if self.skip > 0 {
                let drop = self.skip.min(self.buf.len());
                self.buf.advance(drop);
                self.skip -= drop;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            match self.mode {
                Mode::Count(n) if n > self.max_frame => {
                    // Reported now, skipped as it arrives, never buffered.
                    self.skip = n;
                    self.mode = Mode::Terminator;
                    self.searched = 0;
                    return Err(FrameError::TooLong {
                        len: n,
                        max: self.max_frame,
                    });
                }
                Mode::Count(n) => {
                    if self.buf.len() < n {
                        return Ok(None);
                    }
                    self.searched = 0;
                    return Ok(Some(self.buf.split_to(n).freeze()));
                }
                Mode::Terminator => {
                    let tlen = self.terminator.len();
                    let from = self.searched.saturating_sub(tlen - 1);
                    let Some(at) = self.terminator.find(&self.buf[from..]) else {
                        self.searched = self.buf.len();
                        // The last `tlen - 1` bytes may start a terminator;
                        // everything before them belongs to the frame.
                        let frame_so_far = self.buf.len().saturating_sub(tlen - 1);
                        if self.discarding || frame_so_far > self.max_frame {
                            self.buf.advance(frame_so_far);
                            self.searched = self.buf.len();
                            if !self.discarding {
                                self.discarding = true;
                                return Err(FrameError::TooLong {
                                    len: frame_so_far,
                                    max: self.max_frame,
                                });
                            }
                        }
                        return Ok(None);
                    };
                    let first_end = from + at + tlen;
                    self.searched = 0;
                    if self.discarding {
                        // The over-long frame ends here; it was reported.
                        self.buf.advance(first_end);
                        self.discarding = false;
                        continue;
                    }
                    // Everything up to the last terminator in the buffer is
                    // complete frames; searching backwards from the end
                    // reads at most one partial frame.
                    let end = first_end
                        + self
                            .terminator
                            .rfind_end(&self.buf[first_end..])
                            .unwrap_or(0);
                    return Ok(Some(self.buf.split_to(end).freeze()));
                }
            }
        }
    }

    /// Puts the unconsumed tail of a chunk back in front of `buf`.
    fn unfreeze(&mut self, tail: &[u8]) {
        if tail.is_empty() {
            return;
        }
        let cap = self
            .read_size
            .max(tail.len() + self.buf.len() + self.read_size / 2);
        let mut fresh = BytesMut::zeroed(cap);
        fresh.clear();
        fresh.extend_from_slice(tail);
        fresh.extend_from_slice(&self.buf);
        self.buf = fresh;
        self.spare_initialized = true;
        self.searched = 0;
    }
}

/// The complete frames of a [`Framer`], handed out in order by
/// [`Frames::next_frame`]. Dropping it keeps what was not handed out.
pub struct Frames<'a> {
    framer: &'a mut Framer,
    /// Frozen bytes holding complete frames; frames are views into it.
    chunk: Bytes,
    /// Offset in `chunk` of the next frame.
    pos: usize,
}

impl Frames<'_> {
    /// The next frame, an error for a frame that was refused, or `None`
    /// when no complete frame is left (read more, then call again).
    ///
    /// Empty frames are returned too; the caller decides what they mean.
    #[inline]
    #[allow(clippy::should_implement_trait)] // a lending iterator: frames borrow `self`
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, FrameError>> {
        loop {
            if self.pos < self.chunk.len() {
                let rest = &self.chunk[self.pos..];
                let framer = &mut *self.framer;
                let (len, skip) = match framer.mode {
                    Mode::Terminator => match framer.terminator.find(rest) {
                        Some(at) => (at, at + framer.terminator.len()),
                        None => {
                            self.give_back();
                            continue;
                        }
                    },
                    Mode::Count(n) if n <= rest.len() && n <= framer.max_frame => (n, n),
                    Mode::Count(_) => {
                        self.give_back();
                        continue;
                    }
                };
                let start = self.pos;
                self.pos += skip;
                if len > framer.max_frame {
                    return Some(Err(FrameError::TooLong {
                        len,
                        max: framer.max_frame,
                    }));
                }
                let mut end = start + len;
                if framer.mode == Mode::Terminator {
                    if framer.strip_cr && len > 0 && self.chunk[end - 1] == b'\r' {
                        end -= 1;
                    }
                } else {
                    framer.mode = Mode::Terminator;
                }
                return Some(Ok(Frame {
                    chunk: &self.chunk,
                    start,
                    end,
                }));
            }
            match self.framer.next_chunk() {
                Ok(Some(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Sets how the next frame ends. A [`Mode::Count`] frame is followed by
    /// terminator mode again unless set otherwise.
    pub fn set_mode(&mut self, mode: Mode) {
        self.framer.mode = mode;
    }

    /// Returns the chunk's unconsumed bytes to the framer (they do not form
    /// a complete frame in the current mode).
    fn give_back(&mut self) {
        let tail = self.chunk.slice(self.pos..);
        self.chunk = Bytes::new();
        self.pos = 0;
        self.framer.unfreeze(&tail);
    }
}

impl Drop for Frames<'_> {
    fn drop(&mut self) {
        if self.pos < self.chunk.len() {
            self.give_back();
        }
    }
}
