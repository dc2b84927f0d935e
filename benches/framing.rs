//! How close the framer runs to the speed of finding terminators at all.
//!
//! `cargo bench --bench framing` (it finishes in under two minutes, and
//! prints a table and, for scripts, one `framing size=… ratio=…` line per
//! case). For each frame size and terminator, a ~64 MiB stream of frames is
//! split three ways:
//!
//! * **limit** — `memchr::memchr_iter` (one-byte terminator) or
//!   `memmem::Finder::find_iter` (longer) over the whole stream, folding
//!   every frame's length and first byte into a checksum. This is the
//!   floor: locating every terminator and touching each frame once. (Not
//!   `.count()`, which counts with SIMD without locating anything.)
//! * **framer** — the relay's path: [`Framer`] fed in 64 KiB reads, every
//!   frame taken as a borrowed [`tern::framing::Frame`] and folded into the
//!   same checksum.
//! * **owned** — the naive zero-copy framer: one `Bytes` per frame
//!   (`split_to` + `freeze`, an atomic reference-count pair per frame).
//!
//! # How the reads are fed
//!
//! The stream is one `BytesMut`; each "read" is the next 64 KiB `split_to`
//! piece of it, handed to the framer with [`Framer::extend`]. Successive
//! pieces are adjacent in memory, so `extend` adopts them without copying.
//! This measures framing alone: in the relay the kernel copies a read into
//! the framer's buffer (`Framer::read_buf`), and a `memcpy` here standing in
//! for that copy would only add the cost of a copy the relay does not make
//! itself. It also keeps the three contenders on equal terms: each scans the
//! same 64 MiB of memory once.
//!
//! Each contender gets a fresh copy of the stream before every timed run
//! (made outside the timing), so all of them start from the same cache
//! state. Every figure is the median of [`RUNS`] runs; the checksums of the
//! three must agree, which also checks that the framer found every frame.
//!
//! A frame's size is its length without the terminator. Throughput is in
//! GB/s (10^9 bytes of stream, terminators included, per second) of the
//! benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall-clock
//! time: the machine is shared, and time spent descheduled says nothing
//! about the code. The work is single-threaded and does not block, so on an
//! idle machine the two agree.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use memchr::memmem;
use tern::framing::{Framer, Terminator};
use tern::sys::{cpu_time, CpuClock};

/// Bytes of stream per case (rounded down to whole frames).
const STREAM: usize = 64 << 20;
/// Size of one simulated socket read.
const READ: usize = 64 << 10;
/// Timed runs per contender and case; the median is reported.
const RUNS: usize = 7;
/// The framer's maximum frame length (the relay's default).
const MAX_FRAME: usize = 1 << 20;

const SIZES: [usize; 4] = [16, 128, 1024, 16384];
const TERMINATORS: [&str; 4] = [r"\n", r"\r\n", r"\0\0", r"END\n"];

/// What every contender computes for a frame: its length and first byte,
/// folded so that a missed, extra or misplaced frame changes the result.
#[inline(always)]
fn fold(sum: u64, frame_len: usize, first: u8) -> u64 {
    sum.rotate_left(7) ^ ((frame_len as u64) << 8 | first as u64)
}

/// `frames` frames of `size` bytes of lowercase letters, digits and spaces
/// (none of which occurs in any benchmarked terminator), each followed by
/// `term`.
fn make_stream(size: usize, term: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ";
    let frames = STREAM / (size + term.len());
    let mut out = Vec::with_capacity(frames * (size + term.len()));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15; // xorshift64 state
    for _ in 0..frames {
        for _ in 0..size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(ALPHABET[(x % ALPHABET.len() as u64) as usize]);
        }
        out.extend_from_slice(term);
    }
    out
}

fn limit(stream: &[u8], term: &Terminator) -> u64 {
    let tlen = term.len();
    let mut sum = 0u64;
    let mut start = 0;
    let mut consume = |at: usize| {
        let len = at - start;
        let first = if len > 0 { stream[start] } else { 0 };
        sum = fold(sum, len, first);
        start = at + tlen;
    };
    if tlen == 1 {
        memchr::memchr_iter(term.as_bytes()[0], stream).for_each(&mut consume);
    } else {
        let finder = memmem::Finder::new(term.as_bytes());
        finder.find_iter(stream).for_each(&mut consume);
    }
    sum
}

/// `stream` is left empty but alive, so that freeing its memory is not
/// timed (the limit does not free it either).
fn framer(stream: &mut BytesMut, term: &Terminator) -> u64 {
    let mut framer = Framer::new(term.clone(), MAX_FRAME);
    let mut sum = 0u64;
    while !stream.is_empty() {
        let read = stream.split_to(READ.min(stream.len()));
        framer.extend(read);
        let mut frames = framer.frames();
        while let Some(frame) = frames.next_frame() {
            let frame = frame.expect("no frame is too long");
            let bytes = frame.as_slice();
            sum = fold(sum, bytes.len(), bytes.first().copied().unwrap_or(0));
        }
    }
    sum
}

/// The straightforward zero-copy framer the issue compares against: the
/// same resumable search, but every frame becomes its own `Bytes`.
fn owned(stream: &mut BytesMut, term: &Terminator) -> u64 {
    let tlen = term.len();
    let mut buf = BytesMut::new();
    let mut searched: usize = 0;
    let mut sum = 0u64;
    while !stream.is_empty() {
        buf.unsplit(stream.split_to(READ.min(stream.len())));
        loop {
            let from = searched.saturating_sub(tlen - 1);
            let Some(at) = term.find(&buf[from..]) else {
                searched = buf.len();
                break;
            };
            let frame = buf.split_to(from + at + tlen).freeze();
            searched = 0;
            let len = frame.len() - tlen;
            sum = fold(
                sum,
                len,
                frame.first().copied().filter(|_| len > 0).unwrap_or(0),
            );
        }
    }
    sum
}

/// Runs `f` and returns its result and the thread CPU time it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = cpu_time(CpuClock::Thread);
    let out = f();
    (out, cpu_time(CpuClock::Thread) - start)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

struct Row {
    size: usize,
    term: String,
    /// Bytes per frame on the wire (frame + terminator).
    wire: usize,
    limit: f64,
    framer: f64,
    owned: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; there are no options to parse. For
    // profiling one case, `FRAMING_CASE=<size>,<escaped terminator>` (e.g.
    // `128,\n`) runs only that one.
    let only = std::env::var("FRAMING_CASE").ok();
    let started = Instant::now();
    let mut rows = Vec::new();
    for &size in &SIZES {
        for &spec in &TERMINATORS {
            if only
                .as_ref()
                .is_some_and(|o| *o != format!("{size},{spec}"))
            {
                continue;
            }
            let term = Terminator::parse(spec).expect("valid terminator");
            let stream = make_stream(size, term.as_bytes());
            let fresh = || BytesMut::from(&stream[..]);
            let expected = limit(&stream, &term);
            let (mut t_limit, mut t_framer, mut t_owned) = (vec![], vec![], vec![]);
            // One untimed round first, to settle allocator and page state.
            for round in 0..=RUNS {
                let copy = fresh();
                let (sum, d_limit) = timed(|| limit(black_box(&copy), &term));
                assert_eq!(black_box(sum), expected);
                drop(copy);

                let mut copy = fresh();
                let (sum, d_framer) = timed(|| framer(black_box(&mut copy), &term));
                assert_eq!(black_box(sum), expected, "framer disagrees with limit");
                drop(copy);

                let mut copy = fresh();
                let (sum, d_owned) = timed(|| owned(black_box(&mut copy), &term));
                assert_eq!(black_box(sum), expected, "owned disagrees with limit");
                drop(copy);

                if round > 0 {
                    t_limit.push(d_limit);
                    t_framer.push(d_framer);
                    t_owned.push(d_owned);
                }
            }
            rows.push(Row {
                size,
                term: term.escape(),
                wire: size + term.len(),
                limit: gbps(stream.len(), median(t_limit)),
                framer: gbps(stream.len(), median(t_framer)),
                owned: gbps(stream.len(), median(t_owned)),
            });
        }
    }

    println!();
    println!(
        "framing: {} MiB per case in {} KiB reads, median of {RUNS} runs, GB/s of thread CPU time; Mf/s = the framer's millions of frames per second",
        STREAM >> 20,
        READ >> 10
    );
    println!(
        "{:>6}  {:>6}  {:>7}  {:>7}  {:>6}  {:>7}  {:>6}  {:>7}",
        "size", "term", "limit", "framer", "ratio", "owned", "o.rat", "Mf/s"
    );
    for r in &rows {
        println!(
            "{:>6}  {:>6}  {:>7.2}  {:>7.2}  {:>6.2}  {:>7.2}  {:>6.2}  {:>7.1}",
            r.size,
            r.term,
            r.limit,
            r.framer,
            r.framer / r.limit,
            r.owned,
            r.owned / r.limit,
            r.framer * 1e3 / r.wire as f64
        );
    }
    println!();
    for r in &rows {
        println!(
            "framing size={} term={} limit_gbps={:.2} framer_gbps={:.2} ratio={:.2} owned_gbps={:.2} owned_ratio={:.2}",
            r.size,
            r.term,
            r.limit,
            r.framer,
            r.framer / r.limit,
            r.owned,
            r.owned / r.limit
        );
    }
    println!();
    println!("framing: done in {:.1} s", started.elapsed().as_secs_f64());
}
