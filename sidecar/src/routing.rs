//! Which destinations want an event: by source and by event-type glob.
//! Decided once, at ingest, so each destination's jobs are written in the
//! same transaction as the event.

use crate::config::DestinationConfig;
use crate::store::DestId;

#[derive(Debug, Clone)]
struct Route {
    dest: DestId,
    sources: Vec<String>,
    event_types: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new<'a>(
        destinations: impl IntoIterator<Item = (DestId, &'a DestinationConfig)>,
    ) -> Router {
        let routes = destinations
            .into_iter()
            .map(|(dest, d)| Route {
                dest,
                sources: d.sources.clone(),
                event_types: d.event_types.clone(),
            })
            .collect();
        Router { routes }
    }

    /// Destinations for an event. An empty list in the config means "all";
    /// an event without a type matches only destinations that do not filter
    /// on type.
    pub fn destinations(&self, source: &str, event_type: &str) -> Vec<DestId> {
        self.routes
            .iter()
            .filter(|r| r.sources.is_empty() || r.sources.iter().any(|s| s == source))
            .filter(|r| {
                r.event_types.is_empty()
                    || (!event_type.is_empty()
                        && r.event_types.iter().any(|g| glob_match(g, event_type)))
            })
            .map(|r| r.dest)
            .collect()
    }
}

/// `*` matches any run of characters (including dots); everything else is
/// literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("invoice.*", "invoice.paid", true),
            ("invoice.*", "invoice.", true),
            ("invoice.*", "invoices.paid", false),
            ("*", "", true),
            ("*.paid", "invoice.paid", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} {t}");
        }
    }

    #[test]
    fn routes_by_source_and_type() {
        let mk = |sources: &[&str], types: &[&str]| DestinationConfig {
            name: "x".into(),
            url: "http://x".into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            event_types: types.iter().map(|s| s.to_string()).collect(),
            timeout_ms: 1,
            max_concurrency: 1,
            signing_secret: None,
            retry: Default::default(),
        };
        let all = mk(&[], &[]);
        let stripe_invoices = mk(&["stripe"], &["invoice.*"]);
        let r = Router::new([(1, &all), (2, &stripe_invoices)]);
        assert_eq!(r.destinations("stripe", "invoice.paid"), vec![1, 2]);
        assert_eq!(r.destinations("stripe", "charge.failed"), vec![1]);
        assert_eq!(r.destinations("github", "invoice.paid"), vec![1]);
        assert_eq!(r.destinations("stripe", ""), vec![1]);
    }
}
