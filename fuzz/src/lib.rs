//! What tern's fuzz targets (`fuzz_targets/`) share: a reader that turns
//! libFuzzer's bytes into the choices a target makes, and the naive models
//! the differential targets check tern against.
//!
//! The models are written from the specs (`docs/protocol.md`, the module
//! docs of `tern::framing`), not from tern's code, and as plainly as
//! possible: they search from scratch, copy freely and keep everything, so
//! that a disagreement points at tern rather than at the model.

pub mod framer_model;
pub mod line_model;
pub mod subject_model;

/// libFuzzer's input, consumed from the front: each target reads its
/// parameters first and usually takes the rest as the byte stream to parse.
/// Reading past the end gives zeros, so every input means something.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// The next byte, 0 once the input is used up.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n` bytes (fewer if the input ends first).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A count byte (at most `max`) followed by that many bytes: how the
    /// targets encode a short list of choices (read sizes, modes).
    pub fn list(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.byte()) % (max + 1);
        self.take(n)
    }

    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Checks the bound on what a framer holds between reads (the memory one
/// connection can pin), with the figures in the message if it fails.
pub fn assert_holds_at_most(framer: &tern::framing::Framer, bound: usize) {
    let held = framer.buffered();
    assert!(held <= bound, "holds {held} bytes, bound {bound}");
}

/// Read sizes a plan byte selects (its low three bits): small ones to cut
/// every token and terminator, large ones to take many frames per read.
pub const READ_SIZES: [usize; 8] = [1, 2, 3, 5, 8, 21, 100, usize::MAX];

/// Cuts `stream` into reads: read `i` is `READ_SIZES[plan[i % len] & 7]`
/// bytes (the whole rest for an empty plan). Returns each read's bytes and
/// the plan byte that chose it (for targets that read more from it).
pub fn reads<'a>(stream: &'a [u8], plan: &[u8]) -> Vec<(&'a [u8], u8)> {
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let p = if plan.is_empty() {
            7
        } else {
            plan[i % plan.len()]
        };
        let n = READ_SIZES[usize::from(p & 7)].min(rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push((piece, p));
        rest = tail;
        i += 1;
    }
    out
}
