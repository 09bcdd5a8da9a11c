//! From a rule as written (JSON) to a checked tree, once, at config load.
//! Every mistake is found here, with the position inside the rule, so that
//! evaluating a compiled rule has nothing left to refuse.

use std::fmt;

use serde_json::{Map, Number, Value};

use crate::eval::{self, BodyNotJson, Input};

/// A compiled match rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    root: Node,
}

/// What is wrong with a rule, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The position inside the rule, ready to append to the rule's own
    /// field path: `["body.amount"].$gtee`, `.$or[1]`; empty for the rule
    /// itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for RuleError {}

impl RuleError {
    fn at(path: &str, message: impl Into<String>) -> RuleError {
        RuleError {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Test(Field, Op),
}

/// Where a test looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    /// A path into the parsed body; empty for the whole body.
    Body(Vec<Step>),
    /// A header, by lower-case name.
    Header(String),
    /// A query parameter, by decoded name.
    Query(String),
}

/// One segment of a body path. A segment that is a number indexes an array
/// and is also an object key (`{"0": ...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub key: String,
    pub index: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Eq(Value),
    In(Vec<Value>),
    Cmp(Cmp, Bound),
    Exists,
    StartsWith(String),
    EndsWith(String),
    Contains(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// What `$gt`..`$lte` compare with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bound {
    Number(Number),
    Text(String),
}

const OPERATORS: &str = "$eq, $neq, $in, $nin, $gt, $gte, $lt, $lte, $exists, $startsWith, $endsWith, $contains, $and, $or, $not";

impl Match {
    /// Checks and compiles `rule`, which must be a JSON object. `{}` matches
    /// everything.
    pub fn compile(rule: &Value) -> Result<Match, RuleError> {
        let Value::Object(map) = rule else {
            return Err(RuleError::at(
                "",
                "a rule is a JSON object such as {\"body.type\": \"invoice.paid\"}",
            ));
        };
        Ok(Match {
            root: compile_object(map, &Base::Root, "")?,
        })
    }

    /// True when the rule looks at `body.*`, so evaluating it may parse the
    /// body (and may meet a body that is not JSON).
    pub fn needs_body(&self) -> bool {
        self.root.needs_body()
    }

    /// Whether the input matches. `Err(BodyNotJson)` when the answer depends
    /// on the body and the body is not JSON. Tests that need no body run
    /// first, so a rule decided by headers or query never parses the body.
    pub fn evaluate(&self, input: &Input<'_>) -> Result<bool, BodyNotJson> {
        eval::node(&self.root, input)
    }
}

impl Node {
    pub(crate) fn needs_body(&self) -> bool {
        match self {
            Node::All(nodes) | Node::Any(nodes) => nodes.iter().any(Node::needs_body),
            Node::Not(node) => node.needs_body(),
            Node::Test(field, _) => matches!(field, Field::Body(_)),
        }
    }
}

/// Where the keys of the object being compiled point.
#[derive(Debug, Clone)]
enum Base {
    /// The rule's top level: keys start with `body`, `headers` or `query`.
    Root,
    Field(Field),
    /// `{"headers": {...}}`: each key is a header name.
    Headers,
    /// `{"query": {...}}`: each key is a parameter name.
    Query,
}

fn compile_object(map: &Map<String, Value>, base: &Base, at: &str) -> Result<Node, RuleError> {
    let mut nodes = Vec::with_capacity(map.len());
    for (key, value) in map {
        let here = key_path(at, key);
        let node = if key.starts_with('$') {
            compile_operator(key, value, base, &here)?
        } else {
            let next = descend(base, key, &here)?;
            match value {
                Value::Object(inner) if inner.is_empty() => {
                    return Err(RuleError::at(
                        &here,
                        "an empty object tests nothing; use {\"$exists\": true}",
                    ));
                }
                Value::Object(inner) => compile_object(inner, &next, &here)?,
                literal => Node::Test(field_of(&next, &here)?, Op::Eq(literal.clone())),
            }
        };
        nodes.push(node);
    }
    Ok(all(nodes))
}

/// Several conditions that must all hold; the ones that need no body first
/// (a stable sort keeps the rest in order).
fn all(mut nodes: Vec<Node>) -> Node {
    if nodes.len() == 1
        && let Some(node) = nodes.pop()
    {
        return node;
    }
    nodes.sort_by_key(Node::needs_body);
    Node::All(nodes)
}

fn any(mut nodes: Vec<Node>) -> Node {
    nodes.sort_by_key(Node::needs_body);
    Node::Any(nodes)
}

fn compile_operator(key: &str, value: &Value, base: &Base, here: &str) -> Result<Node, RuleError> {
    match key {
        "$and" | "$or" => {
            let Value::Array(items) = value else {
                return Err(RuleError::at(here, "expects an array of conditions"));
            };
            if items.is_empty() {
                return Err(RuleError::at(here, "expects at least one condition"));
            }
            let mut nodes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let at = format!("{here}[{i}]");
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        nodes.push(compile_object(map, base, &at)?)
                    }
                    _ => return Err(RuleError::at(&at, "expects a non-empty object")),
                }
            }
            Ok(if key == "$and" {
                all(nodes)
            } else {
                any(nodes)
            })
        }
        "$not" => match value {
            Value::Object(map) if !map.is_empty() => {
                Ok(Node::Not(Box::new(compile_object(map, base, here)?)))
            }
            _ => Err(RuleError::at(here, "expects a non-empty object")),
        },
        _ => {
            let op = field_operator(key, value, here)?;
            let field = field_of(base, here).map_err(|_| {
                RuleError::at(
                    here,
                    format!(
                        "{key} tests a field and needs a path, as in {{\"body.type\": {{\"{key}\": ...}}}}"
                    ),
                )
            })?;
            Ok(match op {
                Negated::No(op) => Node::Test(field, op),
                Negated::Yes(op) => Node::Not(Box::new(Node::Test(field, op))),
            })
        }
    }
}

enum Negated {
    No(Op),
    Yes(Op),
}

fn field_operator(key: &str, value: &Value, here: &str) -> Result<Negated, RuleError> {
    let text = |what: &str| match value {
        Value::String(s) => Ok(s.clone()),
        _ => Err(RuleError::at(here, format!("{what} expects a string"))),
    };
    let list = || match value {
        Value::Array(items) => Ok(items.clone()),
        _ => Err(RuleError::at(here, format!("{key} expects an array"))),
    };
    let bound = || match value {
        Value::Number(n) => Ok(Bound::Number(n.clone())),
        Value::String(s) => Ok(Bound::Text(s.clone())),
        _ => Err(RuleError::at(
            here,
            format!("{key} expects a number or a string"),
        )),
    };
    Ok(match key {
        "$eq" => Negated::No(Op::Eq(value.clone())),
        "$neq" => Negated::Yes(Op::Eq(value.clone())),
        "$in" => Negated::No(Op::In(list()?)),
        "$nin" => Negated::Yes(Op::In(list()?)),
        "$gt" => Negated::No(Op::Cmp(Cmp::Gt, bound()?)),
        "$gte" => Negated::No(Op::Cmp(Cmp::Gte, bound()?)),
        "$lt" => Negated::No(Op::Cmp(Cmp::Lt, bound()?)),
        "$lte" => Negated::No(Op::Cmp(Cmp::Lte, bound()?)),
        "$exists" => match value {
            Value::Bool(true) => Negated::No(Op::Exists),
            Value::Bool(false) => Negated::Yes(Op::Exists),
            _ => return Err(RuleError::at(here, "$exists expects true or false")),
        },
        "$startsWith" => Negated::No(Op::StartsWith(text(key)?)),
        "$endsWith" => Negated::No(Op::EndsWith(text(key)?)),
        "$contains" => Negated::No(Op::Contains(value.clone())),
        _ => {
            return Err(RuleError::at(
                here,
                format!("unknown operator {key} (known: {OPERATORS})"),
            ));
        }
    })
}

/// The field a path key leads to from `base`.
fn descend(base: &Base, key: &str, here: &str) -> Result<Base, RuleError> {
    match base {
        Base::Root => {
            let (root, rest) = match key.split_once('.') {
                Some((root, rest)) => (root, Some(rest)),
                None => (key, None),
            };
            match (root, rest) {
                ("body", None) => Ok(Base::Field(Field::Body(Vec::new()))),
                ("body", Some(rest)) => Ok(Base::Field(Field::Body(steps(rest, here)?))),
                ("headers", None) => Ok(Base::Headers),
                ("headers", Some(name)) => header(name, here),
                ("query", None) => Ok(Base::Query),
                ("query", Some(name)) => query(name, here),
                _ => Err(RuleError::at(
                    here,
                    "malformed path: a path starts with body, headers or query (\"body.data.type\", \"headers.x-event\", \"query.account\")",
                )),
            }
        }
        Base::Field(Field::Body(prefix)) => {
            let mut all = prefix.clone();
            all.extend(steps(key, here)?);
            Ok(Base::Field(Field::Body(all)))
        }
        Base::Headers => header(key, here),
        Base::Query => query(key, here),
        Base::Field(Field::Header(_) | Field::Query(_)) => Err(RuleError::at(
            here,
            "malformed path: header and query values are text and have no fields",
        )),
    }
}

fn steps(path: &str, here: &str) -> Result<Vec<Step>, RuleError> {
    path.split('.')
        .map(|segment| {
            if segment.is_empty() {
                return Err(RuleError::at(
                    here,
                    "malformed path: empty segment (two dots, or a dot at an end)",
                ));
            }
            let index = (segment.bytes().all(|b| b.is_ascii_digit()) && segment.len() <= 9)
                .then(|| segment.parse().ok())
                .flatten();
            Ok(Step {
                key: segment.to_string(),
                index,
            })
        })
        .collect()
}

fn header(name: &str, here: &str) -> Result<Base, RuleError> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b));
    if !token {
        return Err(RuleError::at(
            here,
            "malformed path: headers.<name> needs an HTTP header name",
        ));
    }
    Ok(Base::Field(Field::Header(name.to_ascii_lowercase())))
}

fn query(name: &str, here: &str) -> Result<Base, RuleError> {
    if name.is_empty() {
        return Err(RuleError::at(
            here,
            "malformed path: query.<name> needs a parameter name",
        ));
    }
    Ok(Base::Field(Field::Query(name.to_string())))
}

fn field_of(base: &Base, here: &str) -> Result<Field, RuleError> {
    match base {
        Base::Field(field) => Ok(field.clone()),
        Base::Root => Err(RuleError::at(here, "needs a path")),
        Base::Headers => Err(RuleError::at(
            here,
            "malformed path: headers.<name> needs a header name",
        )),
        Base::Query => Err(RuleError::at(
            here,
            "malformed path: query.<name> needs a parameter name",
        )),
    }
}

/// `at` extended by an object key: `.key` when that reads unambiguously,
/// else `["key"]` (keys such as `body.amount` hold dots themselves).
fn key_path(at: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$');
    if plain {
        format!("{at}.{key}")
    } else {
        format!("{at}[{}]", Value::String(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_and_operators_compile_to_the_expected_tree() {
        let m = Match::compile(&json!({"body.items.0.sku": {"$neq": "x"}})).unwrap();
        assert_eq!(
            m.root,
            Node::Not(Box::new(Node::Test(
                Field::Body(vec![
                    Step {
                        key: "items".into(),
                        index: None
                    },
                    Step {
                        key: "0".into(),
                        index: Some(0)
                    },
                    Step {
                        key: "sku".into(),
                        index: None
                    },
                ]),
                Op::Eq(json!("x"))
            )))
        );
        let nested = Match::compile(&json!({"headers": {"X-Event": "push"}})).unwrap();
        assert_eq!(
            nested.root,
            Node::Test(Field::Header("x-event".into()), Op::Eq(json!("push")))
        );
        assert!(!nested.needs_body());
        assert!(m.needs_body());
    }

    #[test]
    fn tests_without_the_body_run_first() {
        let m = Match::compile(&json!({"body.a": 1, "query.b": "2"})).unwrap();
        let Node::All(nodes) = &m.root else {
            panic!("{:?}", m.root)
        };
        assert!(!nodes[0].needs_body() && nodes[1].needs_body());
    }

    #[test]
    fn key_paths_quote_keys_with_dots() {
        assert_eq!(key_path("", "$or"), ".$or");
        assert_eq!(key_path(".$or[0]", "body.a"), r#".$or[0]["body.a"]"#);
        assert_eq!(key_path("", "a\"b"), r#"["a\"b"]"#);
    }
}
