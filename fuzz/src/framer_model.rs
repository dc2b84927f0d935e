//! A naive framer: the rules of `tern::framing` (and the protocol's
//! "Frames" section) applied to a plain `Vec` of every byte not yet
//! consumed, searching it from the front on every call.
//!
//! It is asked for frames exactly when the real framer is, with the same
//! mode, so both must hand out the same frames and the same errors,
//! including the length an over-long frame is reported with:
//!
//! * terminator mode: a frame ends at the first terminator after its
//!   start; with the terminator exactly `\n`, one `\r` before it is
//!   dropped. Longer than the maximum (counted before that drop): refused
//!   with its length, and skipped.
//! * a partial frame (no terminator yet) is refused as soon as the bytes
//!   that cannot be part of a terminator (all but the last
//!   `terminator.len() - 1`) are more than the maximum; it is then skipped
//!   up to its terminator, whenever that comes.
//! * counted mode, `Count(n)`: the next `n` bytes whatever they are; over
//!   the maximum, refused at once (length `n`) and its bytes skipped as
//!   they come.

use tern::framing::Mode;

/// What a framer hands out: a frame's bytes, or the length an over-long
/// frame was refused with.
pub type Outcome = Result<Vec<u8>, usize>;

/// The naive framer; see the [module docs](self).
#[derive(Debug)]
pub struct NaiveFramer {
    terminator: Vec<u8>,
    max_frame: usize,
    /// Every byte received and not yet handed out, dropped or skipped.
    data: Vec<u8>,
    /// Inside an over-long partial frame that was already refused.
    discarding: bool,
    /// Bytes of an over-long counted frame still to skip.
    skip: usize,
}

impl NaiveFramer {
    pub fn new(terminator: &[u8], max_frame: usize) -> Self {
        NaiveFramer {
            terminator: terminator.to_vec(),
            max_frame,
            data: Vec::new(),
            discarding: false,
            skip: 0,
        }
    }

    /// Bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Bytes held that belong to no frame refused so far: what the real
    /// framer's `buffered()` must equal whenever [`Self::is_skipping`] is
    /// false (while skipping, the real framer has already let go of some
    /// of them).
    pub fn held(&self) -> usize {
        self.data.len()
    }

    /// Whether the bytes of a refused frame are being skipped.
    pub fn is_skipping(&self) -> bool {
        self.discarding || self.skip > 0
    }

    /// Position of the first terminator in `data`, by trying every start.
    fn find(&self) -> Option<usize> {
        let t = &self.terminator;
        (0..self.data.len())
            .find(|&i| self.data.len() - i >= t.len() && self.data[i..i + t.len()] == t[..])
    }

    /// The next frame in `mode`, `None` when there is none yet.
    pub fn next_frame(&mut self, mode: Mode) -> Option<Outcome> {
        if self.skip > 0 {
            let n = self.skip.min(self.data.len());
            self.data.drain(..n);
            self.skip -= n;
            if self.skip > 0 {
                return None;
            }
        }
        if self.discarding {
            let at = self.find()?;
            self.data.drain(..at + self.terminator.len());
            self.discarding = false;
        }
        match mode {
            Mode::Count(n) if n > self.max_frame => {
                self.skip = n;
                Some(Err(n))
            }
            Mode::Count(n) if self.data.len() < n => None,
            Mode::Count(n) => Some(Ok(self.data.drain(..n).collect())),
            Mode::Terminator => match self.find() {
                Some(at) => {
                    let mut frame: Vec<u8> = self.data.drain(..at).collect();
                    self.data.drain(..self.terminator.len());
                    if at > self.max_frame {
                        return Some(Err(at));
                    }
                    if self.terminator == b"\n" && frame.last() == Some(&b'\r') {
                        frame.pop();
                    }
                    Some(Ok(frame))
                }
                None => {
                    let so_far = self.data.len().saturating_sub(self.terminator.len() - 1);
                    if so_far <= self.max_frame {
                        return None;
                    }
                    self.discarding = true;
                    Some(Err(so_far))
                }
            },
        }
    }
}
