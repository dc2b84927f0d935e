//! A `server_id` for `INFO`, shaped like nats-server's.
//!
//! nats-server's id is the public key of a random server nkey: one prefix
//! byte (server, 13 << 3), 32 key bytes and a CRC-16/XMODEM of those 33
//! bytes (little-endian), in unpadded RFC 4648 base32 — 56 characters, the
//! first `N`, the second one of `A`–`D`. tern draws the 32 bytes from
//! `std`'s [`RandomState`], which is seeded from the operating system's
//! random source, mixed with the time and the process id. That makes ids
//! unique per process and unpredictable to clients (which is all an id is
//! for: telling servers apart); it is not a key anybody signs with.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// The nkey prefix byte of a server key.
const PREFIX_SERVER: u8 = 13 << 3;

/// RFC 4648 base32 alphabet.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A fresh random server id (56 characters, `N…`). Call once per process.
pub fn new_server_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut key = [0u8; 32];
    for (i, part) in key.chunks_mut(8).enumerate() {
        // Each `RandomState` has its own keys (random per thread, then
        // stepped), so the four words are independent.
        let mut h = RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_usize(i);
        part.copy_from_slice(&h.finish().to_le_bytes());
    }
    encode_server_key(&key)
}

/// The nkey public-key text of server key `key`.
fn encode_server_key(key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(35);
    raw.push(PREFIX_SERVER);
    raw.extend_from_slice(key);
    let crc = crc16_xmodem(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    base32(&raw)
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0, not reflected).
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Unpadded RFC 4648 base32.
fn base32(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[(acc >> bits) as usize & 31] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[(acc << (5 - bits)) as usize & 31] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_base32_match_their_standards() {
        // The check value of CRC-16/XMODEM.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        // RFC 4648 test vectors, without padding.
        for (input, want) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), want);
        }
    }

    #[test]
    fn ids_look_like_nats_servers_and_differ() {
        let a = new_server_id();
        let b = new_server_id();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 56, "{id}");
            assert!(id.starts_with('N'), "{id}");
            assert!(matches!(id.as_bytes()[1], b'A'..=b'D'), "{id}");
            assert!(id.bytes().all(|c| BASE32.contains(&c)), "{id}");
        }
    }

    #[test]
    fn the_checksum_covers_prefix_and_key() {
        let id = encode_server_key(&[0; 32]);
        let other = encode_server_key(&[1; 32]);
        assert_eq!(id.len(), 56);
        // Decode back and check the CRC of what was encoded.
        let decode = |s: &str| {
            let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
            for c in s.bytes() {
                let v = BASE32.iter().position(|&x| x == c).unwrap() as u32;
                acc = (acc << 5) | v;
                bits += 5;
                if bits >= 8 {
                    bits -= 8;
                    out.push((acc >> bits) as u8);
                }
            }
            out
        };
        for s in [&id, &other] {
            let raw = decode(s);
            assert_eq!(raw.len(), 35);
            assert_eq!(raw[0], PREFIX_SERVER);
            let crc = u16::from_le_bytes([raw[33], raw[34]]);
            assert_eq!(crc, crc16_xmodem(&raw[..33]));
        }
    }
}
