//! The rules engine as tables: (rule, input, expected outcome), and (bad
//! rule, the path the error names, words in its message). Plus properties:
//! no rule and no input makes evaluation panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use edgehook_rules::{BodyNotJson, EventTypes, Glob, Input, Match, glob_match};
use proptest::prelude::*;
use serde_json::{Value, json};

const BODY: &str = r#"{
  "type": "invoice.paid",
  "livemode": true,
  "created": "2026-03-01T10:00:00Z",
  "note": null,
  "data": {"object": {"amount": 4200, "currency": "eur", "ratio": 0.5,
                      "big": 18446744073709551615, "neg": -3}},
  "tags": ["vip", "eu"],
  "matrix": [[1, 2], [3]],
  "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 5, "meta": {"gift": true}}],
  "0": "zero-key",
  "k.dot": 1
}"#;

const QUERY: &str = "account=acct_1&mode=live&mode=test&n=42&space=a+b&pct=caf%C3%A9&empty=";

fn headers(name: &str) -> Option<&'static [u8]> {
    match name {
        "x-github-event" => Some(b"push"),
        "x-count" => Some(b"17"),
        "x-flag" => Some(b"true"),
        "x-bytes" => Some(&[b'a', 0xff, b'b']),
        "x-spaced" => Some(b" 5"),
        _ => None,
    }
}

fn eval(rule: &Value, body: &[u8]) -> Result<bool, BodyNotJson> {
    let m = Match::compile(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
    let lookup = |name: &str| headers(name);
    let input = Input::new(body, QUERY, &lookup);
    m.evaluate(&input)
}

#[test]
fn the_rules_table() {
    let t = Ok(true);
    let f = Ok(false);
    let cases: Vec<(Value, Result<bool, BodyNotJson>)> = vec![
        // Literals are $eq; nested objects continue the path.
        (json!({}), t),
        (json!({"body.type": "invoice.paid"}), t),
        (json!({"body.type": "invoice.paid "}), f),
        (json!({"body": {"type": "invoice.paid"}}), t),
        (
            json!({"body": {"data": {"object": {"currency": "eur"}}}}),
            t,
        ),
        (json!({"body.data": {"object.currency": "eur"}}), t),
        (json!({"body.livemode": true}), t),
        (json!({"body.note": null}), t),
        (json!({"body.missing": null}), f),
        // $eq / $neq: numbers by value, objects and arrays whole.
        (json!({"body.data.object.amount": {"$eq": 4200}}), t),
        (json!({"body.data.object.amount": {"$eq": 4200.0}}), t),
        (json!({"body.data.object.amount": {"$eq": "4200"}}), f),
        (
            json!({"body.data.object.big": {"$eq": 18446744073709551615u64}}),
            t,
        ),
        (
            json!({"body.data.object.big": {"$eq": 18446744073709551614u64}}),
            f,
        ),
        (json!({"body.items.1.meta": {"$eq": {"gift": true}}}), t),
        (json!({"body.tags": {"$eq": ["vip", "eu"]}}), t),
        (json!({"body.tags": {"$eq": ["eu", "vip"]}}), f),
        (json!({"body.type": {"$neq": "invoice.paid"}}), f),
        (json!({"body.type": {"$neq": "charge.failed"}}), t),
        (json!({"body.missing": {"$neq": 1}}), t),
        // Arrays: a test holds for the array or any element.
        (json!({"body.tags": "vip"}), t),
        (json!({"body.tags": "us"}), f),
        (json!({"body.tags": {"$neq": "vip"}}), f),
        (json!({"body.matrix": [3]}), t),
        (json!({"body.matrix": 3}), f),
        (json!({"body.items.sku": "B-2"}), t),
        (json!({"body.items.qty": {"$gt": 4}}), t),
        (json!({"body.items.qty": {"$gt": 5}}), f),
        (json!({"body.items.meta.gift": true}), t),
        (json!({"body.items.0.sku": "A-1"}), t),
        (json!({"body.items.1.sku": "A-1"}), f),
        (json!({"body.items.9.sku": {"$exists": true}}), f),
        (json!({"body.tags.0": "vip"}), t),
        (json!({"body.0": "zero-key"}), t),
        // $in / $nin.
        (
            json!({"body.data.object.currency": {"$in": ["usd", "eur"]}}),
            t,
        ),
        (json!({"body.data.object.currency": {"$in": []}}), f),
        (
            json!({"body.data.object.currency": {"$nin": ["usd", "eur"]}}),
            f,
        ),
        (json!({"body.data.object.currency": {"$nin": ["usd"]}}), t),
        (json!({"body.tags": {"$in": ["us", "eu"]}}), t),
        (json!({"body.missing": {"$nin": ["x"]}}), t),
        // $gt .. $lte: numbers with numbers, strings with strings.
        (json!({"body.data.object.amount": {"$gte": 100}}), t),
        (json!({"body.data.object.amount": {"$gt": 4200}}), f),
        (
            json!({"body.data.object.amount": {"$gte": 4200, "$lt": 5000}}),
            t,
        ),
        (json!({"body.data.object.amount": {"$lte": 4199.5}}), f),
        (json!({"body.data.object.ratio": {"$lt": 1}}), t),
        (json!({"body.data.object.neg": {"$lt": 0}}), t),
        (
            json!({"body.data.object.big": {"$gt": 9223372036854775807i64}}),
            t,
        ),
        (json!({"body.data.object.amount": {"$gt": "1"}}), f),
        (json!({"body.created": {"$gte": "2026-01-01T00:00:00Z"}}), t),
        (json!({"body.created": {"$lt": "2026-01-01T00:00:00Z"}}), f),
        (json!({"body.type": {"$gt": 1}}), f),
        // $exists: null is present.
        (json!({"body.note": {"$exists": true}}), t),
        (json!({"body.missing": {"$exists": true}}), f),
        (json!({"body.missing": {"$exists": false}}), t),
        (json!({"body.type.deeper": {"$exists": true}}), f),
        (json!({"body": {"$exists": true}}), t),
        // Strings.
        (json!({"body.type": {"$startsWith": "invoice."}}), t),
        (json!({"body.type": {"$startsWith": "charge."}}), f),
        (json!({"body.type": {"$endsWith": ".paid"}}), t),
        (json!({"body.tags": {"$startsWith": "v"}}), t),
        (json!({"body.data.object.amount": {"$startsWith": "4"}}), f),
        (json!({"body.type": {"$contains": "ce.pa"}}), t),
        (json!({"body.type": {"$contains": "xyz"}}), f),
        (json!({"body.tags": {"$contains": "eu"}}), t),
        (json!({"body.tags": {"$contains": "e"}}), f),
        (json!({"body.matrix": {"$contains": [3]}}), t),
        // Logic.
        (json!({"$or": [{"body.type": "x"}, {"body.tags": "eu"}]}), t),
        (json!({"$or": [{"body.type": "x"}, {"body.tags": "us"}]}), f),
        (
            json!({"$and": [{"body.type": "invoice.paid"}, {"body.livemode": true}]}),
            t,
        ),
        (
            json!({"$and": [{"body.type": "invoice.paid"}, {"body.livemode": false}]}),
            f,
        ),
        (json!({"$not": {"body.type": "invoice.paid"}}), f),
        (
            json!({"body.data.object.amount": {"$not": {"$lt": 100}}}),
            t,
        ),
        (
            json!({"body.data.object.amount": {"$or": [{"$lt": 10}, {"$gt": 4000}]}}),
            t,
        ),
        (
            json!({"body.data": {"$or": [{"object.currency": "usd"}, {"object.amount": 4200}]}}),
            t,
        ),
        (
            json!({"body.type": "invoice.paid", "headers.x-github-event": "pull"}),
            f,
        ),
        // Headers: text, case-insensitive names, bytes kept.
        (json!({"headers.x-github-event": "push"}), t),
        (json!({"headers.X-GitHub-Event": "push"}), t),
        (
            json!({"headers": {"x-github-event": {"$in": ["push", "ping"]}}}),
            t,
        ),
        (json!({"headers.x-github-event": "Push"}), f),
        (json!({"headers.x-count": 17}), t),
        (json!({"headers.x-count": {"$gt": 9}}), t),
        (json!({"headers.x-count": {"$gt": "9"}}), f),
        (json!({"headers.x-spaced": 5}), f),
        (json!({"headers.x-flag": true}), t),
        (json!({"headers.x-flag": "true"}), t),
        (json!({"headers.x-bytes": {"$startsWith": "a"}}), t),
        (json!({"headers.x-bytes": {"$contains": "b"}}), t),
        (json!({"headers.x-bytes": "ab"}), f),
        (json!({"headers.x-missing": {"$exists": false}}), t),
        (json!({"headers.x-missing": {"$neq": "a"}}), t),
        (json!({"headers.x-github-event": null}), f),
        // Query: decoded, any of several values.
        (json!({"query.account": "acct_1"}), t),
        (json!({"query.mode": "test"}), t),
        (json!({"query.mode": {"$nin": ["test"]}}), f),
        (json!({"query.n": {"$lte": 42}}), t),
        (json!({"query.space": "a b"}), t),
        (json!({"query.pct": "café"}), t),
        (json!({"query.empty": ""}), t),
        (json!({"query.empty": {"$exists": true}}), t),
        (json!({"query.nope": {"$exists": true}}), f),
        (json!({"query": {"account": {"$startsWith": "acct_"}}}), t),
    ];
    for (rule, want) in cases {
        assert_eq!(eval(&rule, BODY.as_bytes()), want, "{rule}");
    }
}

#[test]
fn a_body_that_is_not_json_is_its_own_outcome() {
    let not_json: &[&[u8]] = &[b"", b"a=1&b=2", b"{\"type\":", &[0xff, 0xfe], b"{} x"];
    for body in not_json {
        assert_eq!(eval(&json!({"body.type": "x"}), body), Err(BodyNotJson));
        assert_eq!(
            eval(&json!({"body.type": {"$exists": false}}), body),
            Err(BodyNotJson)
        );
        // Decided without the body: the body is never looked at.
        assert_eq!(
            eval(
                &json!({"headers.x-github-event": "pull", "body.type": "x"}),
                body
            ),
            Ok(false)
        );
        assert_eq!(
            eval(&json!({"$or": [{"body.type": "x"}, {"query.n": 42}]}), body),
            Ok(true)
        );
        assert_eq!(eval(&json!({"query.n": 42}), body), Ok(true));
    }
    // Any JSON document is a body, not only objects.
    assert_eq!(eval(&json!({"body": 5}), b"5"), Ok(true));
    assert_eq!(eval(&json!({"body.a": 5}), b"[{\"a\":5}]"), Ok(true));
}

#[test]
fn needs_body_says_whether_the_body_is_read() {
    let m = |r: Value| Match::compile(&r).unwrap().needs_body();
    assert!(m(json!({"body.a": 1})));
    assert!(m(
        json!({"$not": {"$or": [{"query.a": 1}, {"body": {"b": 1}}]}})
    ));
    assert!(!m(json!({"headers.a": 1, "query.b": {"$exists": true}})));
    assert!(!m(json!({})));
}

#[test]
fn bad_rules_are_refused_with_the_path() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!([]), "", "JSON object"),
        (json!("body.a"), "", "JSON object"),
        (
            json!({"body.a": {"$gtee": 1}}),
            r#"["body.a"].$gtee"#,
            "unknown operator $gtee",
        ),
        (
            json!({"body": {"a": {"$regex": "x"}}}),
            ".body.a.$regex",
            "unknown operator",
        ),
        (json!({"$xor": []}), ".$xor", "unknown operator"),
        (json!({"$eq": 1}), ".$eq", "needs a path"),
        (
            json!({"type": "x"}),
            ".type",
            "starts with body, headers or query",
        ),
        (
            json!({"data.type": "x"}),
            r#"["data.type"]"#,
            "malformed path",
        ),
        (json!({"body..a": 1}), r#"["body..a"]"#, "empty segment"),
        (json!({"body.a.": 1}), r#"["body.a."]"#, "empty segment"),
        (
            json!({"body": {".a": 1}}),
            r#".body[".a"]"#,
            "empty segment",
        ),
        (json!({"headers": 1}), ".headers", "header name"),
        (json!({"headers.": 1}), r#"["headers."]"#, "header name"),
        (
            json!({"headers.bad name": 1}),
            r#"["headers.bad name"]"#,
            "header name",
        ),
        (
            json!({"headers": {"$exists": true}}),
            ".headers.$exists",
            "needs a path",
        ),
        (
            json!({"headers.x-a": {"b": 1}}),
            r#"["headers.x-a"].b"#,
            "no fields",
        ),
        (json!({"query": {"$eq": "x"}}), ".query.$eq", "needs a path"),
        (json!({"query.": "x"}), r#"["query."]"#, "parameter name"),
        (json!({"body.a": {}}), r#"["body.a"]"#, "empty object"),
        (
            json!({"body.a": {"$in": "x"}}),
            r#"["body.a"].$in"#,
            "array",
        ),
        (
            json!({"body.a": {"$nin": 1}}),
            r#"["body.a"].$nin"#,
            "array",
        ),
        (
            json!({"body.a": {"$gt": true}}),
            r#"["body.a"].$gt"#,
            "number or a string",
        ),
        (
            json!({"body.a": {"$lte": null}}),
            r#"["body.a"].$lte"#,
            "number or a string",
        ),
        (
            json!({"body.a": {"$exists": "yes"}}),
            r#"["body.a"].$exists"#,
            "true or false",
        ),
        (
            json!({"body.a": {"$startsWith": 1}}),
            r#"["body.a"].$startsWith"#,
            "string",
        ),
        (
            json!({"body.a": {"$endsWith": []}}),
            r#"["body.a"].$endsWith"#,
            "string",
        ),
        (json!({"$or": {}}), ".$or", "array"),
        (json!({"$and": []}), ".$and", "at least one"),
        (json!({"$or": [{"body.a": 1}, 2]}), ".$or[1]", "object"),
        (json!({"$or": [{"body.a": 1}, {}]}), ".$or[1]", "object"),
        (
            json!({"$or": [{"body.a": {"$bad": 1}}]}),
            r#".$or[0]["body.a"].$bad"#,
            "unknown operator",
        ),
        (json!({"$not": []}), ".$not", "object"),
        (
            json!({"$not": {"body.x": {"$in": 3}}}),
            r#".$not["body.x"].$in"#,
            "array",
        ),
    ];
    for (rule, path, words) in cases {
        let e = Match::compile(&rule).expect_err(&rule.to_string());
        assert_eq!(e.path, path, "{rule}: {e}");
        assert!(e.message.contains(words), "{rule}: {e}");
        assert!(e.to_string().contains(&e.message));
    }
}

#[test]
fn globs() {
    for (p, t, want) in [
        ("invoice.*", "invoice.paid", true),
        ("invoice.*", "invoice.", true),
        ("invoice.*", "invoices.paid", false),
        ("*", "", true),
        ("*", "anything.at.all", true),
        ("**", "x", true),
        ("*.paid", "invoice.paid", true),
        ("*.paid", "invoice.paid.not", false),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "abc", true),
        ("a*b*c", "acb", false),
        ("ab*ba", "aba", false),
        ("ab*ba", "abba", true),
        ("a*a*a", "aaa", true),
        ("a*a*a", "aa", false),
        ("exact", "exact", true),
        ("exact", "exactly", false),
        ("", "", true),
        ("", "x", false),
        ("caf*", "café", true),
        ("*é", "café", true),
    ] {
        assert_eq!(glob_match(p, t), want, "{p} {t}");
        assert_eq!(Glob::new(p).matches(t), want, "{p} {t}");
    }
    assert_eq!(Glob::new("a.*").as_str(), "a.*");
}

#[test]
fn event_type_lists() {
    let none = EventTypes::default();
    assert!(none.is_empty());
    assert!(none.admits(Some("x")) && none.admits(None));

    let allow = EventTypes::new(&["invoice.*", "charge.succeeded"], &[]);
    assert!(allow.admits(Some("invoice.paid")));
    assert!(allow.admits(Some("charge.succeeded")));
    assert!(!allow.admits(Some("charge.failed")));
    assert!(!allow.admits(None), "no type cannot match an allow list");
    assert!(!allow.admits(Some("")));

    let deny: EventTypes = EventTypes::new(&[] as &[&str], &["*.test", "ping"]);
    assert!(deny.admits(Some("invoice.paid")));
    assert!(!deny.admits(Some("invoice.test")));
    assert!(!deny.admits(Some("ping")));
    assert!(deny.admits(None), "no type passes a deny-only list");

    let both = EventTypes::new(&["invoice.*"], &["invoice.draft*"]);
    assert!(both.admits(Some("invoice.paid")));
    assert!(!both.admits(Some("invoice.drafted")), "deny wins");
}

/// Arbitrary JSON, a few levels deep, biased towards the names rules use.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-c$.0-9]{0,4}".prop_map(Value::String),
        prop_oneof![
            Just("$eq"),
            Just("$in"),
            Just("$nin"),
            Just("$gt"),
            Just("$exists"),
            Just("$contains"),
            Just("$startsWith"),
            Just("$not"),
            Just("$or"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("body".to_string()),
            Just("body.a".to_string()),
            Just("body.a.0".to_string()),
            Just("headers.x".to_string()),
            Just("query.q".to_string()),
            Just("a".to_string()),
            Just("0".to_string()),
            Just("$eq".to_string()),
            Just("$neq".to_string()),
            Just("$in".to_string()),
            Just("$gt".to_string()),
            Just("$lte".to_string()),
            Just("$exists".to_string()),
            Just("$contains".to_string()),
            Just("$endsWith".to_string()),
            Just("$and".to_string()),
            Just("$or".to_string()),
            Just("$not".to_string()),
            "[a-z$.]{0,5}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any rule either compiles or is refused, and any compiled rule
    /// evaluates against any body, query and header bytes without a panic.
    #[test]
    fn no_rule_and_no_input_panics(
        rule in arb_json(),
        body_json in arb_json(),
        raw_body in prop::collection::vec(any::<u8>(), 0..40),
        use_raw in any::<bool>(),
        query in "[a-z=&%+0-9.]{0,20}",
        header in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let body = if use_raw { raw_body } else { body_json.to_string().into_bytes() };
        let lookup = |name: &str| (name == "x").then_some(header.as_slice());
        if let Ok(m) = Match::compile(&rule) {
            let input = Input::new(&body, &query, &lookup);
            let first = m.evaluate(&input);
            // Evaluation is a pure function of the input.
            prop_assert_eq!(first, m.evaluate(&input));
            if !m.needs_body() {
                prop_assert!(first.is_ok());
            }
        }
    }

    #[test]
    fn globs_never_panic_and_star_matches_everything(p in "[a*.é]{0,8}", t in "[a.é]{0,8}") {
        let _ = glob_match(&p, &t);
        prop_assert!(glob_match("*", &t));
        prop_assert_eq!(glob_match(&t, &t), !t.contains('*'));
    }
}
