//! The metrics endpoint's request reading (`tern::metrics::fuzzing`): a
//! request head collected in a bounded buffer read by read, as the server
//! does, parsed after each read; then the query string of a parsed request
//! through both pages' query parsers.
//!
//! Checked: no panic; the buffer never takes more than its size (a head
//! that does not fit is `HeadTooLarge`); the reads do not matter (cut
//! anywhere, the head gives what it gives in one read); a parsed request
//! has a path that starts with `/`, without its query, both taken from the
//! bytes sent.
//!
//! Input: `[max_head] [plan list] bytes…`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::metrics::fuzzing::{parse_queries, parse_request, HeadBuffer, HttpError, Request};
use tern_fuzz::{reads, Input};

/// Head buffer sizes the first byte picks: tiny, to hit the bound often,
/// up to the server's default (8 KiB).
const MAX_HEADS: [usize; 4] = [16, 64, 512, 8 * 1024];

/// Feeds `bytes` read by read as the server does: each read fills at most
/// the room left; the outcome once the head is parsed or refused, or
/// `Ok(None)` if the bytes ran out first.
fn feed(bytes: &[u8], plan: &[u8], max_head: usize) -> Result<Option<Request>, HttpError> {
    let mut head = HeadBuffer::new(max_head);
    let mut received = 0;
    for (piece, _) in reads(bytes, plan) {
        let mut piece = piece;
        while !piece.is_empty() {
            let spare = head.spare()?;
            let n = spare.len().min(piece.len());
            spare[..n].copy_from_slice(&piece[..n]);
            received += n;
            assert!(
                received <= max_head,
                "took {received} bytes into {max_head}"
            );
            match head.filled(n)? {
                None => piece = &piece[n..],
                done => return Ok(done),
            }
        }
    }
    Ok(None)
}

/// The same in one read: parse what fits; a head still incomplete then is
/// too large if more was sent.
fn at_once(bytes: &[u8], max_head: usize) -> Result<Option<Request>, HttpError> {
    let fits = &bytes[..bytes.len().min(max_head)];
    match parse_request(fits)? {
        None if bytes.len() > max_head => Err(HttpError::HeadTooLarge),
        r => Ok(r),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max_head = MAX_HEADS[usize::from(input.byte() & 3)];
    let plan = input.list(16).to_vec();
    let bytes = input.rest();

    let got = feed(bytes, &plan, max_head);
    assert_eq!(got, at_once(bytes, max_head), "reads changed the outcome");
    match got {
        Ok(Some(request)) => {
            assert!(!request.method.is_empty());
            assert!(request.path.starts_with('/'), "path {:?}", request.path);
            assert!(!request.path.contains('?'), "query left in the path");
            let target = if request.query.is_empty() {
                request.path.clone()
            } else {
                format!("{}?{}", request.path, request.query)
            };
            let sent = &bytes[..bytes.len().min(max_head)];
            assert!(
                sent.windows(target.len()).any(|w| w == target.as_bytes()),
                "target {target:?} not in the bytes sent"
            );
            for answer in parse_queries(&request.query) {
                if let Err(reason) = answer {
                    assert!(!reason.is_empty());
                }
            }
        }
        Ok(None) => assert!(bytes.len() <= max_head),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
