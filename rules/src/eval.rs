//! Evaluating a compiled rule against one event. The body is parsed at most
//! once and only when a test reaches it. The work is bounded by the rule's
//! size times the body's: every candidate a path yields is a distinct node
//! of the body.

use std::cell::OnceCell;
use std::cmp::Ordering;

use serde_json::{Number, Value};

use crate::compile::{Bound, Cmp, Field, Node, Op, Step};

/// The answer depends on `body.*` and the body is not JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyNotJson;

/// What a rule looks at: one event's body, query and headers.
pub struct Input<'a> {
    body: &'a [u8],
    query: &'a str,
    headers: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    parsed: OnceCell<Option<Value>>,
}

impl<'a> Input<'a> {
    /// `query` is the raw query string, without `?`. `headers` is called
    /// with lower-case names.
    pub fn new(
        body: &'a [u8],
        query: &'a str,
        headers: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> Input<'a> {
        Input {
            body,
            query,
            headers,
            parsed: OnceCell::new(),
        }
    }

    fn json(&self) -> Result<&Value, BodyNotJson> {
        self.parsed
            .get_or_init(|| serde_json::from_slice(self.body).ok())
            .as_ref()
            .ok_or(BodyNotJson)
    }
}

impl std::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("body_len", &self.body.len())
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

pub(crate) fn node(node: &Node, input: &Input<'_>) -> Result<bool, BodyNotJson> {
    match node {
        Node::All(nodes) => {
            for n in nodes {
                if !self::node(n, input)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Node::Any(nodes) => {
            for n in nodes {
                if self::node(n, input)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Node::Not(n) => Ok(!self::node(n, input)?),
        Node::Test(field, op) => test(field, op, input),
    }
}

fn test(field: &Field, op: &Op, input: &Input<'_>) -> Result<bool, BodyNotJson> {
    Ok(match field {
        Field::Body(steps) => {
            let found = resolve(input.json()?, steps);
            match op {
                Op::Exists => !found.is_empty(),
                op => found.iter().any(|v| json_test(op, v)),
            }
        }
        Field::Header(name) => match (input.headers)(name) {
            None => false,
            Some(_) if matches!(op, Op::Exists) => true,
            Some(value) => text_test(op, value),
        },
        Field::Query(name) => {
            let mut values = form_urlencoded::parse(input.query.as_bytes())
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v);
            match op {
                Op::Exists => values.next().is_some(),
                op => values.any(|v| text_test(op, v.as_bytes())),
            }
        }
    })
}

/// Every node `steps` reaches from `root`. A step on an array takes the
/// element at its index, or, for a step that is not a number, looks into
/// each element that is an object.
fn resolve<'v>(root: &'v Value, steps: &[Step]) -> Vec<&'v Value> {
    let mut found = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for value in found {
            match value {
                Value::Object(map) => next.extend(map.get(&step.key)),
                Value::Array(items) => match step.index {
                    Some(i) => next.extend(items.get(i)),
                    None => next.extend(items.iter().filter_map(|item| match item {
                        Value::Object(map) => map.get(&step.key),
                        _ => None,
                    })),
                },
                _ => {}
            }
        }
        found = next;
    }
    found
}

/// A test on one JSON value; a test on an array also holds when it holds
/// for one of its elements.
fn json_test(op: &Op, value: &Value) -> bool {
    let here = match op {
        Op::Exists => true,
        Op::Eq(x) => json_eq(value, x),
        Op::In(xs) => xs.iter().any(|x| json_eq(value, x)),
        Op::Cmp(cmp, bound) => {
            let ord = match (value, bound) {
                (Value::Number(n), Bound::Number(b)) => number_cmp(n, b),
                (Value::String(s), Bound::Text(b)) => Some(s.as_str().cmp(b.as_str())),
                _ => None,
            };
            ord.is_some_and(|o| holds(*cmp, o))
        }
        Op::StartsWith(p) => matches!(value, Value::String(s) if s.starts_with(p.as_str())),
        Op::EndsWith(p) => matches!(value, Value::String(s) if s.ends_with(p.as_str())),
        Op::Contains(x) => match (value, x) {
            (Value::String(s), Value::String(part)) => s.contains(part.as_str()),
            (Value::Array(items), x) => return items.iter().any(|item| json_eq(item, x)),
            _ => false,
        },
    };
    here || matches!(value, Value::Array(items) if items.iter().any(|item| json_test_scalar(op, item)))
}

/// `json_test` on an array's element: elements that are arrays themselves
/// are compared whole, not searched again.
fn json_test_scalar(op: &Op, value: &Value) -> bool {
    match value {
        Value::Array(_) => match op {
            Op::Eq(x) => json_eq(value, x),
            Op::In(xs) => xs.iter().any(|x| json_eq(value, x)),
            _ => false,
        },
        _ => json_test(op, value),
    }
}

/// A test on a header or query value, which is text.
fn text_test(op: &Op, value: &[u8]) -> bool {
    match op {
        Op::Exists => true,
        Op::Eq(x) => text_eq(value, x),
        Op::In(xs) => xs.iter().any(|x| text_eq(value, x)),
        Op::Cmp(cmp, bound) => {
            let ord = match bound {
                Bound::Number(b) => text_number(value).and_then(|n| number_cmp(&n, b)),
                Bound::Text(b) => Some(value.cmp(b.as_bytes())),
            };
            ord.is_some_and(|o| holds(*cmp, o))
        }
        Op::StartsWith(p) => value.starts_with(p.as_bytes()),
        Op::EndsWith(p) => value.ends_with(p.as_bytes()),
        Op::Contains(Value::String(part)) => contains(value, part.as_bytes()),
        Op::Contains(_) => false,
    }
}

fn text_eq(value: &[u8], x: &Value) -> bool {
    match x {
        Value::String(s) => value == s.as_bytes(),
        Value::Number(n) => {
            text_number(value).is_some_and(|v| number_cmp(&v, n) == Some(Ordering::Equal))
        }
        Value::Bool(true) => value == b"true",
        Value::Bool(false) => value == b"false",
        _ => false,
    }
}

/// Text that is a JSON number, and nothing else (no spaces, no `+`).
fn text_number(value: &[u8]) -> Option<Number> {
    let plain = !value.is_empty()
        && value.len() <= 64
        && value
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'e' | b'E' | b'+'));
    if !plain || value.first() == Some(&b'+') {
        return None;
    }
    serde_json::from_slice(value).ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn holds(cmp: Cmp, ord: Ordering) -> bool {
    match cmp {
        Cmp::Gt => ord == Ordering::Greater,
        Cmp::Gte => ord != Ordering::Less,
        Cmp::Lt => ord == Ordering::Less,
        Cmp::Lte => ord != Ordering::Greater,
    }
}

/// Integers compare exactly (any i64 or u64); anything with a fraction or
/// exponent compares as f64.
fn number_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// JSON equality in which `1` and `1.0` are the same number.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
