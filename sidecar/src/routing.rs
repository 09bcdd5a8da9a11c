//! Which destinations want an event: by source, by event-type glob and by
//! an optional JSON match, with the same rule language as the filter's
//! rules (the shared `edgehook-rules` crate). Decided once, at ingest, so
//! each destination's jobs are written in the same transaction as the event.

use edgehook_proto::v1::Event;
use edgehook_rules::{EventTypes, Input, Match};

use crate::config::DestinationConfig;
use crate::store::{DestId, RoutedTo};

#[derive(Debug, Clone)]
struct Route {
    to: RoutedTo,
    sources: Vec<String>,
    event_types: EventTypes,
    rule: Option<Match>,
}

#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// Compiles a destination's `match`; the error names the place inside the
/// rule (`["body.amount"].$gtee: ...`).
pub fn compile_match(rule: &serde_json::Value) -> Result<Match, String> {
    Match::compile(rule).map_err(|e| {
        if e.path.is_empty() {
            e.message
        } else {
            format!("{}: {}", e.path.trim_start_matches('.'), e.message)
        }
    })
}

impl Router {
    /// Fails, naming the destination, when a `match` does not compile
    /// (config loading checks this first).
    pub fn new<'a>(
        destinations: impl IntoIterator<Item = (DestId, &'a DestinationConfig)>,
    ) -> Result<Router, String> {
        let mut routes = Vec::new();
        for (dest, d) in destinations {
            let rule = match &d.match_rule {
                None => None,
                Some(r) => Some(
                    r.to_json()
                        .and_then(|j| compile_match(&j))
                        .map_err(|e| format!("destination {}: match: {e}", d.name))?,
                ),
            };
            let types: Vec<&str> = d.event_types.iter().map(String::as_str).collect();
            routes.push(Route {
                to: RoutedTo {
                    dest,
                    ordered: d.ordered,
                },
                sources: d.sources.clone(),
                event_types: EventTypes::new(&types, &[]),
                rule,
            });
        }
        Ok(Router { routes })
    }

    /// Destinations for an event. An empty list in the config means "all";
    /// an event without a type matches only destinations that do not filter
    /// on type; a `match` on `body.*` does not match a body that is not JSON.
    pub fn destinations(&self, event: &Event) -> Vec<RoutedTo> {
        let headers = |name: &str| {
            event
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.as_slice())
        };
        let input = Input::new(&event.body, &event.query, &headers);
        self.routes
            .iter()
            .filter(|r| r.sources.is_empty() || r.sources.contains(&event.source))
            .filter(|r| r.event_types.admits(Some(&event.event_type)))
            .filter(|r| {
                r.rule
                    .as_ref()
                    .is_none_or(|m| m.evaluate(&input).unwrap_or(false))
            })
            .map(|r| r.to)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgehook_proto::v1::Header;

    fn dest(sources: &[&str], types: &[&str], rule: Option<&str>) -> DestinationConfig {
        let mut toml = String::from("name = \"x\"\nurl = \"http://x\"\n");
        toml += &format!("sources = {sources:?}\nevent_types = {types:?}\n");
        if let Some(r) = rule {
            toml += &format!("match = '{r}'\n");
        }
        toml::from_str(&toml).unwrap()
    }

    fn event(source: &str, event_type: &str, body: &str) -> Event {
        Event {
            source: source.into(),
            event_type: event_type.into(),
            body: body.as_bytes().to_vec(),
            headers: vec![Header {
                name: "x-env".into(),
                value: b"prod".to_vec(),
            }],
            query: "account=acme".into(),
            ..Default::default()
        }
    }

    fn dests(r: &Router, e: &Event) -> Vec<DestId> {
        r.destinations(e).into_iter().map(|t| t.dest).collect()
    }

    #[test]
    fn routes_by_source_and_type() {
        let all = dest(&[], &[], None);
        let stripe_invoices = dest(&["stripe"], &["invoice.*"], None);
        let r = Router::new([(1, &all), (2, &stripe_invoices)]).unwrap();
        assert_eq!(
            dests(&r, &event("stripe", "invoice.paid", "{}")),
            vec![1, 2]
        );
        assert_eq!(dests(&r, &event("stripe", "charge.failed", "{}")), vec![1]);
        assert_eq!(dests(&r, &event("github", "invoice.paid", "{}")), vec![1]);
        assert_eq!(dests(&r, &event("stripe", "", "{}")), vec![1]);
    }

    #[test]
    fn routes_by_json_match_on_body_headers_and_query() {
        let big = dest(&[], &[], Some(r#"{"body.amount": {"$gte": 100}}"#));
        let prod = dest(
            &[],
            &[],
            Some(r#"{"headers.x-env": "prod", "query.account": "acme"}"#),
        );
        let r = Router::new([(1, &big), (2, &prod)]).unwrap();
        assert_eq!(dests(&r, &event("s", "", r#"{"amount": 250}"#)), vec![1, 2]);
        assert_eq!(dests(&r, &event("s", "", r#"{"amount": 5}"#)), vec![2]);
        assert_eq!(
            dests(&r, &event("s", "", "not json")),
            vec![2],
            "a body rule does not match a body that is not JSON"
        );
    }

    #[test]
    fn ordered_destinations_are_marked() {
        let mut d = dest(&[], &[], None);
        d.ordered = true;
        let r = Router::new([(4, &d)]).unwrap();
        assert_eq!(
            r.destinations(&event("s", "", "{}")),
            vec![RoutedTo {
                dest: 4,
                ordered: true
            }]
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let e = compile_match(&serde_json::json!({"body.amount": {"$gtee": 1}})).unwrap_err();
        assert!(e.contains("$gtee"), "{e}");
    }
}
