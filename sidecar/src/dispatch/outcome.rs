//! The one place that decides what an attempt's result means: delivered,
//! worth retrying, or hopeless. The waiting policy is elsewhere.

use std::time::Duration;

/// What came back from one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Response {
        status: u16,
        retry_after: Option<Duration>,
        body: Vec<u8>,
    },
    ConnectError(String),
    Timeout,
    OtherError(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry { retry_after: Option<Duration> },
    GiveUp,
}

/// 2xx delivered; connect errors, timeouts, 408, 425, 429 and 5xx are
/// worth retrying, and so are the destination's `retry_statuses`; other
/// 4xx (and redirects, which are not followed) will not get better by
/// waiting.
pub fn classify(result: &AttemptResult, retry_statuses: &[u16]) -> Verdict {
    match result {
        AttemptResult::Response {
            status,
            retry_after,
            ..
        } => match status {
            200..=299 => Verdict::Delivered,
            408 | 425 | 429 | 500..=599 => Verdict::Retry {
                retry_after: *retry_after,
            },
            s if retry_statuses.contains(s) => Verdict::Retry {
                retry_after: *retry_after,
            },
            _ => Verdict::GiveUp,
        },
        AttemptResult::ConnectError(_) | AttemptResult::Timeout | AttemptResult::OtherError(_) => {
            Verdict::Retry { retry_after: None }
        }
    }
}

impl Verdict {
    /// How an attempt's outcome is named in the store and the admin API.
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Retry { .. } => "retry",
            Verdict::GiveUp => "give_up",
        }
    }
}

impl AttemptResult {
    pub fn status(&self) -> u16 {
        match self {
            AttemptResult::Response { status, .. } => *status,
            _ => 0,
        }
    }

    /// A short description for logs and dead letters.
    pub fn describe(&self) -> String {
        match self {
            AttemptResult::Response { status, .. } => format!("HTTP {status}"),
            AttemptResult::ConnectError(e) => format!("connect error: {e}"),
            AttemptResult::Timeout => "timed out".to_string(),
            AttemptResult::OtherError(e) => format!("error: {e}"),
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> Verdict {
        classify(
            &AttemptResult::Response {
                status: s,
                retry_after: None,
                body: vec![],
            },
            &[],
        )
    }

    #[test]
    fn table() {
        for s in [200, 202, 204, 299] {
            assert_eq!(status(s), Verdict::Delivered, "{s}");
        }
        for s in [408, 425, 429, 500, 502, 503, 599] {
            assert!(matches!(status(s), Verdict::Retry { .. }), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            assert_eq!(status(s), Verdict::GiveUp, "{s}");
        }
        assert!(matches!(
            classify(&AttemptResult::Timeout, &[]),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            classify(&AttemptResult::ConnectError("x".into()), &[]),
            Verdict::Retry { .. }
        ));
        let not_found = AttemptResult::Response {
            status: 404,
            retry_after: None,
            body: vec![],
        };
        assert!(matches!(
            classify(&not_found, &[404]),
            Verdict::Retry { .. }
        ));
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:40:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
