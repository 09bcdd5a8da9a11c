//! edgehook's match rules: `*` globs on event types and JSON match rules on
//! an event's body, headers and query, in the operator style of Hookdeck and
//! Convoy filters.
//!
//! A crate of its own because two programs must agree on what a rule means:
//! the proxy-wasm filter drops events at the edge (a source's `rules`), and
//! the sidecar routes events to destinations (a destination's `match` and
//! `event_types`). It depends on neither proxy-wasm nor tokio, builds for
//! `wasm32-wasip1` and the host, and never panics on any input.
//!
//! # API summary
//!
//! * [`glob_match`]`(pattern, text)`: `*` matches any run of characters,
//!   dots included; everything else is literal. [`Glob`] is the same,
//!   compiled once.
//! * [`EventTypes::new`]`(allow, deny)` and [`EventTypes::admits`]`(Option<&str>)`:
//!   denied if any deny glob matches; otherwise admitted if the allow list is
//!   empty or one of its globs matches. An event without a type is admitted
//!   only when there is no allow list.
//! * [`Match::compile`]`(&serde_json::Value)`: checks and compiles a rule once,
//!   at config load. A [`RuleError`] carries `path`, the position inside the
//!   rule (`["body.amount"].$gtee`; append it to the field's own path, e.g.
//!   `format!("destinations[2].match{}", e.path)`), and a `message`.
//! * [`Input::new`]`(body, query, &headers)`: what a rule looks at. `body` is
//!   the raw bytes (parsed as JSON at most once, and only if a rule needs it),
//!   `query` the raw query string without `?`, `headers` a lookup
//!   `Fn(&str) -> Option<&[u8]>` called with lower-case names (compare
//!   case-insensitively).
//! * [`Match::evaluate`]`(&input) -> Result<bool, BodyNotJson>`: `Err` when the
//!   answer depends on `body.*` and the body is not JSON; the caller decides
//!   what that means (the filter: 400 or "not matching", per source).
//!
//! ```
//! use edgehook_rules::{EventTypes, Input, Match};
//! use serde_json::json;
//!
//! let rule = Match::compile(&json!({
//!     "body.data.object.amount": {"$gte": 100},
//!     "headers.x-env": {"$in": ["prod", "staging"]},
//! }))
//! .map_err(|e| format!("match{}: {}", e.path, e.message))?;
//!
//! // The sidecar's stored headers, say: (name, value) pairs.
//! let stored: Vec<(String, Vec<u8>)> = vec![("x-env".into(), b"prod".to_vec())];
//! let headers = |name: &str| {
//!     stored
//!         .iter()
//!         .find(|(n, _)| n.eq_ignore_ascii_case(name))
//!         .map(|(_, v)| v.as_slice())
//! };
//! let body = br#"{"data":{"object":{"amount":250}}}"#;
//! let input = Input::new(body, "", &headers);
//! assert_eq!(rule.evaluate(&input), Ok(true));
//!
//! let types = EventTypes::new(&["invoice.*"], &["invoice.draft*"]);
//! assert!(types.admits(Some("invoice.paid")));
//! assert!(!types.admits(Some("invoice.drafted")));
//! # Ok::<(), String>(())
//! ```
//!
//! # Rule language
//!
//! A rule is a JSON object. Keys are dotted paths whose first segment is
//! `body`, `headers` or `query` (`"body.data.items.0.sku"`,
//! `"headers.x-github-event"`, `"query.account"`), or one of `$and`, `$or`
//! (arrays of rules) and `$not` (a rule). Several keys in one object must
//! all hold. A path's value is a literal (`$eq`), an object of operators
//! (`{"$gte": 100, "$lt": 200}`), or a nested object that continues the path
//! (`{"body": {"data": {"type": "x"}}}`, so a nested object is a partial
//! match; use `$eq` for whole-object equality).
//!
//! Operators: `$eq $neq $in $nin $gt $gte $lt $lte $exists $startsWith
//! $endsWith $contains`, plus `$and $or $not` at any level. In `body`, a
//! numeric segment indexes an array; any other segment applied to an array
//! looks into each of its objects, and a test on an array holds when it holds
//! for the array or for any element (Convoy's "array contains"). `$neq` and
//! `$nin` are the negations of `$eq` and `$in`, so they hold for a missing
//! field. `$gt`..`$lte` compare numbers with numbers and strings with strings
//! (byte order, which suits RFC 3339 times); anything else does not match.
//! `$contains` is a substring test on strings and an element test on arrays.
//! Header and query values are text: compared with a number they are parsed
//! as one, with `true`/`false` as booleans. A query parameter given several
//! times matches when any of its values does.

mod compile;
mod eval;
mod glob;

pub use compile::{Match, RuleError};
pub use eval::{BodyNotJson, Input};
pub use glob::{EventTypes, Glob, glob_match};
