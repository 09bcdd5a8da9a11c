//! Request headers as the host hands them over: names lower-case, values raw
//! bytes. Values are client-controlled and may hold any byte, so nothing here
//! assumes UTF-8 until a caller asks for a string and handles the refusal.

/// The request's headers, including Envoy's pseudo-headers (`:path`, ...).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pairs: Vec<(String, Vec<u8>)>,
}

/// A header that must be text held a byte that is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8;

impl Headers {
    pub fn new(pairs: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        let pairs = pairs
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        Headers { pairs }
    }

    /// The first value of `name` (compared case-insensitively).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as text; `Err` when it is not UTF-8.
    pub fn get_str(&self, name: &str) -> Result<Option<&str>, NotUtf8> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v).map(Some).map_err(|_| NotUtf8),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
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
    }
}
