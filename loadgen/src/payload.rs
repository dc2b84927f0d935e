//! The payload every published message carries, and its parser.
//!
//! A payload is ASCII: four decimal numbers, each followed by a separator,
//! then padding up to `--size` bytes:
//!
//! ```text
//! <publisher>,<sequence>,<intended send ns>,<actual − intended ns>,......
//! ```
//!
//! The times are nanoseconds since the generator's own monotonic epoch
//! (every worker shares it), so a subscriber can compute both the
//! coordinated-omission-free latency (receive − intended) and the service
//! time (receive − actual) from the payload alone, without any shared state
//! with the publisher. The actual send time is stored as a delta from the
//! intended one because it is usually tiny, which keeps the header short
//! enough for small `--size`s.
//!
//! # Never the terminator
//!
//! In the line protocol a payload must never contain the frame terminator.
//! A payload is made of ten digit bytes, a separator and a pad byte; it can
//! only contain the terminator if *every* byte of the terminator is one of
//! those twelve. [`Alphabet::for_terminator`] picks between two disjoint
//! alphabets, and since a non-empty terminator cannot lie entirely inside
//! two disjoint sets, one of them is always safe.

use thiserror::Error;

/// Shortest `--size` accepted: room for a header of realistic numbers
/// (publisher < 10⁴, sequence < 10⁹, run < 1000 s). A header that does not
/// fit is still sent whole (the payload is then longer than `--size`).
pub const MIN_SIZE: usize = 32;

/// The bytes a payload is written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alphabet {
    digits: [u8; 10],
    /// The two digits of each number below 100: numbers are written two
    /// digits per division (one division per digit was about a fifth of a
    /// generator's CPU at full speed, `perf record`, 1→1). That cut the
    /// generator's instructions, not its full-speed rate, which stayed the
    /// same in interleaved runs.
    pairs: [[u8; 2]; 100],
    sep: u8,
    pad: u8,
    /// Digit value of each byte, or 0xff.
    value: [u8; 256],
}

impl Alphabet {
    /// `0-9`, `,` and `.`: what users will see in a packet capture.
    pub fn decimal() -> Self {
        Self::new(*b"0123456789", b',', b'.')
    }

    /// `A-J`, `;` and `_`: disjoint from [`Alphabet::decimal`].
    pub fn letters() -> Self {
        Self::new(*b"ABCDEFGHIJ", b';', b'_')
    }

    fn new(digits: [u8; 10], sep: u8, pad: u8) -> Self {
        // `read_number` counts on `digits[0] + d` being digit `d`, below 0x80.
        assert!(
            digits
                .iter()
                .enumerate()
                .all(|(d, &b)| b == digits[0] + d as u8 && b < 0x80),
            "an alphabet's digits are ten ASCII bytes in a row"
        );
        let mut value = [0xff; 256];
        for (v, &d) in digits.iter().enumerate() {
            value[d as usize] = v as u8;
        }
        let pairs = std::array::from_fn(|n| [digits[n / 10], digits[n % 10]]);
        Alphabet {
            digits,
            pairs,
            sep,
            pad,
            value,
        }
    }

    /// The decimal alphabet unless the terminator is made only of its bytes
    /// (say `\x30`, the digit `0`), else the letter one.
    pub fn for_terminator(terminator: &[u8]) -> Self {
        let decimal = Self::decimal();
        if terminator.iter().all(|&b| decimal.contains(b)) {
            Self::letters()
        } else {
            decimal
        }
    }

    fn contains(&self, b: u8) -> bool {
        self.value[b as usize] != 0xff || b == self.sep || b == self.pad
    }
}

/// What a payload says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher index, `0..--publishers`.
    pub publisher: u32,
    /// The publisher's sequence number, from 0.
    pub seq: u64,
    /// When the schedule said to send it (ns since the generator's epoch).
    pub intended_ns: u64,
    /// When it was actually handed to the socket (same clock).
    pub actual_ns: u64,
}

/// A payload that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayloadError {
    #[error("payload is not `publisher,sequence,time,delta,padding` (field {0})")]
    Malformed(usize),
    #[error("payload padding is damaged")]
    BadPadding,
}

/// Writes and reads payloads of one size in one alphabet.
#[derive(Debug, Clone)]
pub struct PayloadCodec {
    alphabet: Alphabet,
    size: usize,
    /// `size` pad bytes: padding is copied from here and checked against it
    /// with one `memcmp`, not byte by byte (the check is most of a
    /// subscriber's per-message work otherwise).
    pad: Box<[u8]>,
}

impl PayloadCodec {
    /// A codec for payloads of `size` bytes (at least the header).
    pub fn new(alphabet: Alphabet, size: usize) -> Self {
        let pad = vec![alphabet.pad; size].into_boxed_slice();
        PayloadCodec {
            alphabet,
            size,
            pad,
        }
    }

    /// The payload size this codec pads to.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The exact length of the payload for `stamp`: `size`, or the header
    /// length if the header alone is longer.
    #[inline]
    pub fn encoded_len(&self, stamp: &Stamp) -> usize {
        // Four u64s and their separators never exceed this: no need to
        // count digits (this runs for every NATS and Redis publish).
        const MAX_HEADER: usize = 4 * 21;
        if self.size >= MAX_HEADER {
            self.size
        } else {
            self.header_len(stamp).max(self.size)
        }
    }

    fn header_len(&self, s: &Stamp) -> usize {
        digits(s.publisher as u64)
            + digits(s.seq)
            + digits(s.intended_ns)
            + digits(s.actual_ns.saturating_sub(s.intended_ns))
            + 4
    }

    /// Appends the payload for `stamp` to `out`.
    #[inline]
    pub fn encode(&self, stamp: &Stamp, out: &mut Vec<u8>) {
        let start = out.len();
        let a = &self.alphabet;
        for v in [
            stamp.publisher as u64,
            stamp.seq,
            stamp.intended_ns,
            stamp.actual_ns.saturating_sub(stamp.intended_ns),
        ] {
            push_number(v, a, out);
            out.push(a.sep);
        }
        let written = out.len() - start;
        if written < self.size {
            out.extend_from_slice(&self.pad[written..]);
        }
    }

    /// Reads a payload written by [`PayloadCodec::encode`], checking its
    /// padding (a relay that damages bytes is caught here).
    #[inline]
    pub fn decode(&self, payload: &[u8]) -> Result<Stamp, PayloadError> {
        let a = &self.alphabet;
        let mut pos = 0;
        let mut fields = [0u64; 4];
        for (i, field) in fields.iter_mut().enumerate() {
            let (v, len) = read_number(&payload[pos..], a).ok_or(PayloadError::Malformed(i))?;
            if payload.get(pos + len) != Some(&a.sep) {
                return Err(PayloadError::Malformed(i));
            }
            pos += len + 1;
            *field = v;
        }
        let publisher = u32::try_from(fields[0]).map_err(|_| PayloadError::Malformed(0))?;
        let rest = &payload[pos..];
        // The padding is exactly what fills the payload to `size`.
        if payload.len() != self.size.max(pos) || rest != &self.pad[..rest.len()] {
            return Err(PayloadError::BadPadding);
        }
        Ok(Stamp {
            publisher,
            seq: fields[1],
            intended_ns: fields[2],
            actual_ns: fields[2].saturating_add(fields[3]),
        })
    }
}

/// Number of decimal digits of `v` (at least 1).
fn digits(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// Appends `v` in `a`'s digits.
#[inline]
fn push_number(mut v: u64, a: &Alphabet, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    while v >= 100 {
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&a.pairs[(v % 100) as usize]);
        v /= 100;
    }
    if v >= 10 {
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&a.pairs[v as usize]);
    } else {
        i -= 1;
        tmp[i] = a.digits[v as usize];
    }
    out.extend_from_slice(&tmp[i..]);
}

/// The number written in `a`'s digits at the front of `s`, and how many
/// digits it has; `None` if there are none or it does not fit a `u64`.
/// Eight bytes at a time: the byte-at-a-time loop was about a fifth of a
/// subscriber's instructions (callgrind, NATS 1→8).
#[inline]
fn read_number(s: &[u8], a: &Alphabet) -> Option<(u64, usize)> {
    let zero = a.digits[0];
    let mut v: u64 = 0;
    let mut len = 0;
    let mut words = s.chunks_exact(8);
    for word in words.by_ref() {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let n = digits_in_front(w, zero);
        if n > 0 {
            v = v
                .checked_mul(POWERS_OF_TEN[n])?
                .checked_add(value_of_front(w, zero, n))?;
            len += n;
        }
        if n < 8 {
            return (len > 0).then_some((v, len));
        }
    }
    for &b in words.remainder() {
        let d = b.wrapping_sub(zero);
        if d > 9 {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
        len += 1;
    }
    (len > 0).then_some((v, len))
}

/// 10⁰ to 10⁸.
const POWERS_OF_TEN: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// How many of the bytes of `w` (first byte lowest) are digits, from its
/// first, for an alphabet whose digits are `zero..zero + 10`.
#[inline]
fn digits_in_front(w: u64, zero: u8) -> usize {
    // Per byte, on its low seven bits (a byte with the high bit set is
    // never a digit): adding 0x80 − zero sets the high bit where the byte
    // is at least `zero`, adding 0x7f − (zero + 9) where it is past the
    // last digit. Neither sum carries out of its byte.
    let low = w & !HIGHS;
    let at_least_zero = low.wrapping_add(ONES * u64::from(0x80 - zero)) & HIGHS;
    let past_nine = low.wrapping_add(ONES * u64::from(0x7f - (zero + 9))) & HIGHS;
    let digits = at_least_zero & !past_nine & !(w & HIGHS);
    (!digits & HIGHS).trailing_zeros() as usize / 8
}

/// The value of the first `n` (1 to 8) bytes of `w`, all digits.
#[inline]
fn value_of_front(w: u64, zero: u8, n: usize) -> u64 {
    // The first `n` bytes are at least `zero`, so subtracting borrows only
    // in the bytes after them, which the shift drops. Shifted up, the
    // digits sit behind 8 − n zero bytes: leading zeros.
    let d = w.wrapping_sub(ONES * u64::from(zero)) << (8 * (8 - n));
    // Pairs, then quads, then all eight (the first byte is the most
    // significant digit).
    let d = (d * 10 + (d >> 8)) & 0x00ff_00ff_00ff_00ff;
    let d = (d * 100 + (d >> 16)) & 0x0000_ffff_0000_ffff;
    (d * 10_000 + (d >> 32)) & 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            publisher: 7,
            seq: 123_456,
            intended_ns: 9_876_543_210,
            actual_ns: 9_876_543_250,
        }
    }

    #[test]
    fn round_trip_is_padded_to_size() {
        let codec = PayloadCodec::new(Alphabet::decimal(), 128);
        let mut out = b"prefix".to_vec();
        codec.encode(&stamp(), &mut out);
        assert_eq!(out.len(), 6 + 128);
        let payload = &out[6..];
        assert!(payload.starts_with(b"7,123456,9876543210,40,..."));
        assert_eq!(codec.encoded_len(&stamp()), 128);
        assert_eq!(codec.decode(payload).unwrap(), stamp());
    }

    #[test]
    fn zero_values_and_exact_header_size() {
        let s = Stamp {
            publisher: 0,
            seq: 0,
            intended_ns: 0,
            actual_ns: 0,
        };
        let codec = PayloadCodec::new(Alphabet::decimal(), 8);
        let mut out = Vec::new();
        codec.encode(&s, &mut out);
        assert_eq!(out, b"0,0,0,0,");
        assert_eq!(codec.decode(&out).unwrap(), s);
    }

    #[test]
    fn header_longer_than_size_is_sent_whole() {
        let codec = PayloadCodec::new(Alphabet::decimal(), MIN_SIZE);
        let big = Stamp {
            publisher: u32::MAX,
            seq: u64::MAX,
            intended_ns: u64::MAX / 2,
            actual_ns: u64::MAX / 2 + 5,
        };
        let mut out = Vec::new();
        codec.encode(&big, &mut out);
        assert!(out.len() > MIN_SIZE);
        assert_eq!(out.len(), codec.encoded_len(&big));
        assert_eq!(codec.decode(&out).unwrap(), big);
    }

    #[test]
    fn letters_alphabet_round_trips() {
        let codec = PayloadCodec::new(Alphabet::letters(), 64);
        let mut out = Vec::new();
        codec.encode(&stamp(), &mut out);
        assert!(out.iter().all(|b| !b.is_ascii_digit()));
        assert_eq!(codec.decode(&out).unwrap(), stamp());
    }

    #[test]
    fn alphabet_never_contains_the_terminator() {
        for t in [
            &b"\n"[..],
            b"\r\n",
            b"0",
            b"42",
            b",",
            b"..",
            b"0,",
            b"END\n",
            b"A",
            b"_;",
        ] {
            let alphabet = Alphabet::for_terminator(t);
            let codec = PayloadCodec::new(alphabet, 200);
            let mut out = Vec::new();
            for seq in [0, 1, 42, 1_000_000_007] {
                out.clear();
                codec.encode(&Stamp { seq, ..stamp() }, &mut out);
                assert!(
                    !out.windows(t.len()).any(|w| w == t),
                    "payload {:?} contains terminator {t:?}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    #[test]
    fn damaged_payloads_are_refused() {
        let codec = PayloadCodec::new(Alphabet::decimal(), 64);
        let mut good = Vec::new();
        codec.encode(&stamp(), &mut good);
        assert!(codec.decode(&good[..63]).is_err(), "short");
        let mut long = good.clone();
        long.push(b'.');
        assert_eq!(codec.decode(&long), Err(PayloadError::BadPadding));
        let mut bad_pad = good.clone();
        bad_pad[60] = b'x';
        assert_eq!(codec.decode(&bad_pad), Err(PayloadError::BadPadding));
        assert_eq!(codec.decode(b"7,x,1,2,"), Err(PayloadError::Malformed(1)));
        assert_eq!(codec.decode(b",1,2,3,"), Err(PayloadError::Malformed(0)));
        assert_eq!(codec.decode(b"1,2,3"), Err(PayloadError::Malformed(2)));
        assert_eq!(
            codec.decode(b"99999999999999999999999,1,1,1,"),
            Err(PayloadError::Malformed(0))
        );
    }

    /// Every digit count, and the edges of each, in both alphabets.
    #[test]
    fn numbers_round_trip_at_every_digit_count() {
        let mut values = vec![0, u64::MAX, u64::MAX - 1];
        let mut p: u64 = 1;
        for _ in 0..19 {
            p *= 10;
            values.extend([p - 1, p, p + 1, p / 2 + 7]);
        }
        for alphabet in [Alphabet::decimal(), Alphabet::letters()] {
            let codec = PayloadCodec::new(alphabet, 32);
            for &v in &values {
                let st = Stamp {
                    publisher: (v % 1000) as u32,
                    seq: v,
                    intended_ns: v / 3,
                    actual_ns: v,
                };
                let mut out = Vec::new();
                codec.encode(&st, &mut out);
                assert_eq!(
                    codec.decode(&out),
                    Ok(st),
                    "{v}: {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    #[test]
    fn the_largest_u64_reads_and_one_more_is_malformed() {
        // Size 0: no padding, the header alone.
        let codec = PayloadCodec::new(Alphabet::decimal(), 0);
        let max = b"1,18446744073709551615,1,1,";
        assert_eq!(codec.decode(max).map(|s| s.seq), Ok(u64::MAX));
        let over = b"1,18446744073709551616,1,1,";
        assert_eq!(codec.decode(over), Err(PayloadError::Malformed(1)));
        let zeros = b"1,000000000000000000000000000042,1,1,";
        assert_eq!(codec.decode(zeros).map(|s| s.seq), Ok(42));
    }

    /// The eight-byte reading agrees with reading a byte at a time, for
    /// every count of digits in front and any bytes behind them.
    #[test]
    fn digits_are_read_eight_at_a_time_like_one_at_a_time() {
        let behind = [b',', b'.', b'/', b':', b'@', b'K', 0x80, 0xb0, 0xff, 0];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for alphabet in [Alphabet::decimal(), Alphabet::letters()] {
            for _ in 0..2000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = (seed % 23) as usize;
                let mut s: Vec<u8> = (0..n)
                    .map(|i| alphabet.digits[((seed >> (i % 60)) % 10) as usize])
                    .collect();
                s.push(behind[(seed >> 40) as usize % behind.len()]);
                s.extend_from_slice(&seed.to_le_bytes());
                let mut want: Option<u64> = Some(0);
                for &b in &s[..n] {
                    let d = u64::from(alphabet.value[b as usize]);
                    want = want.and_then(|v| v.checked_mul(10)?.checked_add(d));
                }
                let want = want.filter(|_| n > 0).map(|v| (v, n));
                assert_eq!(
                    read_number(&s, &alphabet),
                    want,
                    "{:?}",
                    String::from_utf8_lossy(&s)
                );
            }
        }
    }
}
