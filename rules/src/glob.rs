//! `*` globs, and the allow/deny lists of event types built from them.

/// `*` matches any run of characters (dots included); everything else is
/// literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    matches_parts(&parts, text)
}

/// A glob split at its stars once, for patterns checked on every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    parts: Vec<String>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob {
            pattern: pattern.to_string(),
            parts: pattern.split('*').map(str::to_string).collect(),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        let parts: Vec<&str> = self.parts.iter().map(String::as_str).collect();
        matches_parts(&parts, text)
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// `parts` is the pattern split at `*` (so never empty).
fn matches_parts(parts: &[&str], text: &str) -> bool {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if parts.len() == 1 {
        return *first == text;
    }
    // Strip the fixed ends first; what is left must hold the middle parts
    // in order, each matched as early as possible.
    let Some(rest) = text.strip_prefix(first) else {
        return false;
    };
    let Some(mut rest) = rest.strip_suffix(last) else {
        return false;
    };
    let middle = parts.get(1..parts.len() - 1).unwrap_or_default();
    for part in middle {
        match rest.split_once(part) {
            Some((_, after)) => rest = after,
            None => return false,
        }
    }
    true
}

/// Which event types pass: none of `deny`, and one of `allow` when `allow`
/// is not empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventTypes {
    allow: Vec<Glob>,
    deny: Vec<Glob>,
}

impl EventTypes {
    pub fn new<S: AsRef<str>>(allow: &[S], deny: &[S]) -> EventTypes {
        EventTypes {
            allow: allow.iter().map(|g| Glob::new(g.as_ref())).collect(),
            deny: deny.iter().map(|g| Glob::new(g.as_ref())).collect(),
        }
    }

    /// True when neither list has an entry: every event passes.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// An event without a type (or with an empty one) cannot match an allow
    /// list, so it passes only when there is none.
    pub fn admits(&self, event_type: Option<&str>) -> bool {
        match event_type.filter(|t| !t.is_empty()) {
            None => self.allow.is_empty(),
            Some(t) => {
                !self.deny.iter().any(|g| g.matches(t))
                    && (self.allow.is_empty() || self.allow.iter().any(|g| g.matches(t)))
            }
        }
    }
}
