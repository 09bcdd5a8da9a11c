//! Request headers as the host hands them over: values raw bytes. Values are
//! client-controlled and may hold any byte, so nothing here assumes UTF-8
//! until a caller asks for a string and handles the refusal.
//!
//! The headers stay in the host's serialized map (one buffer) and are looked
//! up in place: taking them apart into a `String` and a `Vec` per header cost
//! two dozen allocations per request, a measurable share of a request the
//! filter refuses.

use std::ops::Range;

/// The request's headers, including Envoy's pseudo-headers (`:path`, ...).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    /// The proxy-wasm map encoding: a little-endian u32 count, a (name
    /// length, value length) u32 pair per header, then each name and value
    /// followed by a NUL.
    raw: Vec<u8>,
    /// Where each header's name and value are in `raw`.
    spans: Vec<(Range<usize>, Range<usize>)>,
}

/// A header that must be text held a byte that is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8;

/// The host's map did not parse (it never should).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedMap;

fn read_u32(raw: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = raw.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(bytes)).ok()
}

impl Headers {
    pub fn new(pairs: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        let pairs: Vec<(String, Vec<u8>)> = pairs.into_iter().collect();
        let mut raw = Vec::new();
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        raw.extend_from_slice(&len(pairs.len()));
        for (name, value) in &pairs {
            raw.extend_from_slice(&len(name.len()));
            raw.extend_from_slice(&len(value.len()));
        }
        for (name, value) in &pairs {
            raw.extend_from_slice(name.as_bytes());
            raw.push(0);
            raw.extend_from_slice(value);
            raw.push(0);
        }
        Headers::from_serialized(raw).unwrap_or_default()
    }

    /// Headers from the host's serialized map, bounds-checked throughout.
    pub fn from_serialized(raw: Vec<u8>) -> Result<Self, MalformedMap> {
        if raw.is_empty() {
            return Ok(Headers::default());
        }
        let count = read_u32(&raw, 0).ok_or(MalformedMap)?;
        // Each header takes at least 10 bytes (two lengths, two NULs): a
        // count the buffer cannot hold is refused before allocating for it.
        if count > raw.len() / 10 {
            return Err(MalformedMap);
        }
        let mut spans = Vec::with_capacity(count);
        let mut at = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(4))
            .ok_or(MalformedMap)?;
        for i in 0..count {
            let lengths = 4 + i * 8;
            let name_len = read_u32(&raw, lengths).ok_or(MalformedMap)?;
            let value_len = read_u32(&raw, lengths + 4).ok_or(MalformedMap)?;
            let name = at..at.checked_add(name_len).ok_or(MalformedMap)?;
            let value_start = name.end.checked_add(1).ok_or(MalformedMap)?;
            let value = value_start..value_start.checked_add(value_len).ok_or(MalformedMap)?;
            at = value.end.checked_add(1).ok_or(MalformedMap)?;
            if at > raw.len() {
                return Err(MalformedMap);
            }
            spans.push((name, value));
        }
        Ok(Headers { raw, spans })
    }

    /// The first value of `name` (compared case-insensitively).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter_bytes()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name` as text; `Err` when it is not UTF-8.
    pub fn get_str(&self, name: &str) -> Result<Option<&str>, NotUtf8> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v).map(Some).map_err(|_| NotUtf8),
        }
    }

    fn iter_bytes(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().filter_map(|(name, value)| {
            Some((self.raw.get(name.clone())?, self.raw.get(value.clone())?))
        })
    }

    /// Every header, names lower-case. A name that is not UTF-8 (Envoy's
    /// codecs never let one through) is skipped.
    pub fn iter(&self) -> impl Iterator<Item = (String, &[u8])> {
        self.iter_bytes().filter_map(|(n, v)| {
            std::str::from_utf8(n)
                .ok()
                .map(|n| (n.to_ascii_lowercase(), v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_keeps_bytes() {
        let h = Headers::new([
            ("Webhook-Id".to_string(), b"msg_1".to_vec()),
            ("x-bad".to_string(), vec![b'a', 0xff]),
        ]);
        assert_eq!(h.get("webhook-id"), Some(&b"msg_1"[..]));
        assert_eq!(h.get_str("WEBHOOK-ID"), Ok(Some("msg_1")));
        assert_eq!(h.get("x-bad"), Some(&[b'a', 0xff][..]));
        assert_eq!(h.get_str("x-bad"), Err(NotUtf8));
        assert_eq!(h.get_str("missing"), Ok(None));
        let names: Vec<String> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["webhook-id", "x-bad"]);
    }

    #[test]
    fn empty_values_and_an_empty_map_parse() {
        let h = Headers::new([("x-empty".to_string(), Vec::new())]);
        assert_eq!(h.get("x-empty"), Some(&b""[..]));
        assert_eq!(
            Headers::from_serialized(Vec::new()).map(|h| h.iter().count()),
            Ok(0)
        );
    }

    #[test]
    fn a_truncated_or_lying_map_is_refused() {
        let good = Headers::new([("a".to_string(), b"bc".to_vec())]).raw;
        for cut in 1..good.len() {
            assert_eq!(
                Headers::from_serialized(good[..cut].to_vec()).map(|_| ()),
                Err(MalformedMap),
                "cut at {cut}"
            );
        }
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Headers::from_serialized(huge).map(|_| ()),
            Err(MalformedMap)
        );
        let mut long_value = good;
        long_value[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Headers::from_serialized(long_value).map(|_| ()),
            Err(MalformedMap)
        );
    }
}
