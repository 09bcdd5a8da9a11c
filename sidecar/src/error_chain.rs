//! An error with its causes, for messages a person reads: the top-level
//! message of reqwest or tonic says little ("error sending request",
//! "transport error"); the chain says why.

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
