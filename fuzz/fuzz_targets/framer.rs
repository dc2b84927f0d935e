//! The framer (`tern::framing`) against the naive model
//! (`tern_fuzz::framer_model`): any bytes, any terminator, any maximum,
//! read in any pieces through every way of feeding a framer, with the
//! consumer switching between terminated and counted frames and stopping
//! part-way through a read's frames. Both must hand out the same frames
//! and the same errors, in the same calls; the real framer must also keep
//! its memory bound, and never write over a frame the consumer still
//! holds (as a forwarded message is held past later reads).
//!
//! Input: `[terminator] [max_frame] [read_size, keep] [plan list] [mode
//! list] stream…` (see `choose_*` below; a list is a count byte and that
//! many bytes).

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tern::framing::{FrameError, Framer, Mode, Terminator, DEFAULT_READ_SIZE};
use tern_fuzz::framer_model::{NaiveFramer, Outcome};
use tern_fuzz::{assert_holds_at_most, reads, Input};

/// Terminators the first byte picks (its low three bits; 7: the next
/// `1 + (byte >> 3) % 16` input bytes), the spec's examples first.
const TERMINATORS: [&[u8]; 7] = [b"\n", b"\r\n", b"\0\0", b"END\n", b"aba", b"\x1e", b"\n\n"];

fn choose_terminator(input: &mut Input) -> Terminator {
    let b = input.byte();
    let bytes = match TERMINATORS.get(usize::from(b & 7)) {
        Some(t) => t.to_vec(),
        None => {
            let custom = input.take(1 + usize::from(b >> 3) % 16);
            if custom.is_empty() {
                b"\n".to_vec()
            } else {
                custom.to_vec()
            }
        }
    };
    Terminator::new(&bytes).expect("1 to 16 bytes")
}

/// 255: no maximum; below 128: that many bytes; else a multiple of 64.
fn choose_max_frame(input: &mut Input) -> usize {
    match input.byte() {
        255 => usize::MAX,
        m @ 0..=127 => usize::from(m),
        m => usize::from(m & 0x7f) * 64,
    }
}

/// The read size (low two bits) and which frames the consumer keeps (the
/// next two).
fn choose_read_size_and_keep(input: &mut Input) -> (usize, Keep) {
    let b = input.byte();
    let size = [64, 100, 4096, DEFAULT_READ_SIZE][usize::from(b & 3)];
    (size, Keep::from_bits(b >> 2))
}

/// A mode byte: below 128 terminator mode, else `Count` of its low six
/// bits, times 50 if bit 6 is set (counts up to 3150, past every small
/// maximum and across many reads).
fn mode(b: u8) -> Mode {
    match b {
        0..=127 => Mode::Terminator,
        _ if b & 0x40 != 0 => Mode::Count(usize::from(b & 0x3f) * 50),
        _ => Mode::Count(usize::from(b & 0x3f)),
    }
}

/// How many frames the consumer takes after a read (bits 5..8 of its plan
/// byte) before it stops and reads again.
fn take_limit(p: u8) -> usize {
    match p >> 5 {
        4 => 0,
        5 => 1,
        6 => 2,
        7 => 3,
        _ => usize::MAX,
    }
}

/// The framer's outcome in the model's terms, after checking that every
/// view of the frame agrees. With `keep`, the frame is also kept, as an
/// owned `Bytes` sharing the read buffer, in `kept`.
fn outcome(
    r: Result<tern::framing::Frame<'_>, FrameError>,
    max: usize,
    keep: bool,
    kept: &mut Vec<Bytes>,
) -> Outcome {
    match r {
        Ok(frame) => {
            let bytes = frame.as_slice();
            assert_eq!(frame.len(), bytes.len());
            assert_eq!(frame.is_empty(), bytes.is_empty());
            let owned = frame.to_bytes();
            assert_eq!(&owned[..], bytes);
            if keep {
                kept.push(owned);
            }
            assert_eq!(&frame.slice_bytes(0..bytes.len())[..], bytes);
            let (chunk, range) = frame.chunk();
            assert_eq!(&chunk[range], bytes);
            Ok(bytes.to_vec())
        }
        Err(FrameError::TooLong { len, max: m }) => {
            assert_eq!(m, max, "error reports another maximum");
            assert!(len > max, "refused a frame of {len} bytes within {max}");
            Err(len)
        }
    }
}

struct Harness {
    real: Framer,
    model: NaiveFramer,
    modes: Vec<u8>,
    /// Frames (and errors) handed out so far: which mode comes next.
    taken: usize,
    /// A cap on frames handed out, so `Count(0)` forever still ends.
    budget: usize,
    max: usize,
    tlen: usize,
    /// Which frames the consumer holds on to (see [`Keep`]).
    keep: Keep,
    /// Frames held, still sharing the buffer they were read into (as a
    /// message forwarded to another shard does), and their bytes: the
    /// framer must never write over memory a frame still uses.
    kept: Vec<Bytes>,
    expected: Vec<Vec<u8>>,
}

/// Which frames the consumer keeps alive after taking them. Holding none
/// lets the framer reuse its buffer; holding some makes it leave them be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    None,
    All,
    EveryFourth,
    /// Until the next read arrives.
    UntilNextRead,
}

impl Keep {
    fn from_bits(b: u8) -> Keep {
        [
            Keep::None,
            Keep::All,
            Keep::EveryFourth,
            Keep::UntilNextRead,
        ][usize::from(b & 3)]
    }

    fn keeps(self, n: usize) -> bool {
        match self {
            Keep::None => false,
            Keep::EveryFourth => n.is_multiple_of(4),
            Keep::All | Keep::UntilNextRead => true,
        }
    }
}

/// The mode the consumer wants for frame number `taken`.
fn mode_of(modes: &[u8], taken: usize) -> Mode {
    match modes.len() {
        0 => Mode::Terminator,
        n => mode(modes[taken % n]),
    }
}

impl Harness {
    /// Takes up to `limit` frames from both, comparing each call, and
    /// checks what the framer holds after.
    fn take(&mut self, limit: usize) {
        let ran_out = self.compare(limit);
        self.check_held();
        if ran_out {
            self.check_bound();
        }
    }

    /// Asks both for up to `limit` frames, in the modes the consumer wants;
    /// whether they ran out of frames.
    fn compare(&mut self, limit: usize) -> bool {
        let mut frames = self.real.frames();
        let mut n = 0;
        while n < limit && self.taken < self.budget {
            let mode = mode_of(&self.modes, self.taken);
            frames.set_mode(mode);
            assert_eq!(frames.mode(), mode);
            let keep = self.keep.keeps(self.taken);
            let got = frames
                .next_frame()
                .map(|r| outcome(r, self.max, keep, &mut self.kept));
            let want = self.model.next_frame(mode);
            assert_eq!(got, want, "frame {} in {mode:?}", self.taken);
            match got {
                None => return true,
                Some(Ok(frame)) if keep => self.expected.push(frame),
                Some(_) => {}
            }
            self.taken += 1;
            n += 1;
        }
        false
    }

    /// What the framer holds: exactly the model's bytes unless a refused
    /// frame is being skipped (then at most those).
    fn check_held(&self) {
        let held = self.real.buffered();
        if self.model.is_skipping() {
            assert!(held <= self.model.held(), "{held} > {}", self.model.held());
        } else {
            assert_eq!(held, self.model.held(), "buffered()");
        }
    }

    /// The frames held still hold what they held when handed out.
    fn check_kept(&self) {
        let kept: Vec<&[u8]> = self.kept.iter().map(|b| &b[..]).collect();
        assert!(kept == self.expected, "a frame handed out was overwritten");
    }

    /// After `next_frame` gave `None`: at most the partial frame, which is
    /// refused once it is longer than the maximum (plus what may start a
    /// terminator), so the memory a connection pins stays bounded.
    fn check_bound(&self) {
        assert_holds_at_most(&self.real, self.max.saturating_add(self.tlen - 1));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let terminator = choose_terminator(&mut input);
    let max = choose_max_frame(&mut input);
    let (read_size, keep) = choose_read_size_and_keep(&mut input);
    let plan = input.list(16).to_vec();
    let modes = input.list(32).to_vec();
    let stream = input.rest();

    let mut h = Harness {
        model: NaiveFramer::new(terminator.as_bytes(), max),
        tlen: terminator.len(),
        real: Framer::with_read_size(terminator, max, read_size),
        modes,
        keep,
        kept: Vec::new(),
        expected: Vec::new(),
        taken: 0,
        budget: 2 * stream.len() + 64,
        max,
    };
    // Pieces of one buffer, for `extend` of adjacent pieces (no copy).
    let mut shared = BytesMut::from(stream);
    for (piece, p) in reads(stream, &plan) {
        if h.keep == Keep::UntilNextRead {
            h.check_kept();
            h.kept.clear();
            h.expected.clear();
        }
        let adjacent = shared.split_to(piece.len());
        match (p >> 3) & 3 {
            0 => h.real.push(piece),
            1 => {
                // As a socket read: into the framer's own buffer, the rest
                // (if it does not fit) pushed after.
                let dst = h.real.read_buf();
                let k = dst.len().min(piece.len());
                dst[..k].copy_from_slice(&piece[..k]);
                h.real.advance(k);
                h.real.push(&piece[k..]);
            }
            2 => h.real.extend(BytesMut::from(piece)),
            _ => h.real.extend(adjacent),
        }
        h.model.push(piece);
        // Between reads the mode is set on the framer itself (within a
        // batch, on `Frames`).
        let m = mode_of(&h.modes, h.taken);
        h.real.set_mode(m);
        assert_eq!(h.real.mode(), m);
        h.take(take_limit(p));
    }
    h.take(usize::MAX);
    h.check_kept();
});
