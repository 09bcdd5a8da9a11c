//! The admin token check: every admin call must carry
//! `authorization: Bearer <token>`. The comparison is over SHA-256 digests
//! in constant time, so neither the token's bytes nor its length leak
//! through timing. A refusal counts in `edgehook_admin_unauthenticated_total`
//! and never echoes what was sent.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct RequireToken {
    digest: [u8; 32],
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RequireToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequireToken(<redacted>)")
    }
}

impl RequireToken {
    pub fn new(token: &str, metrics: Arc<Metrics>) -> RequireToken {
        RequireToken {
            digest: Sha256::digest(token.as_bytes()).into(),
            metrics,
        }
    }

    /// Whether an `authorization` header value carries the token.
    pub fn accepts(&self, header: &[u8]) -> bool {
        let presented = match header.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &header[7..],
            _ => return false,
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        digest.ct_eq(&self.digest).into()
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let verdict = match req.metadata().get("authorization") {
            None => Err("missing authorization metadata; send \"authorization: Bearer <token>\""),
            Some(v) if self.accepts(v.as_bytes()) => Ok(()),
            Some(_) => Err("wrong admin token"),
        };
        match verdict {
            Ok(()) => Ok(req),
            Err(why) => {
                self.metrics.unauthenticated();
                Err(Status::unauthenticated(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_token_itself_is_accepted() {
        let check = RequireToken::new("s3cret-token", Arc::default());
        assert!(check.accepts(b"Bearer s3cret-token"));
        assert!(check.accepts(b"bearer s3cret-token"));
        assert!(!check.accepts(b"Bearer s3cret-toke"));
        assert!(!check.accepts(b"Bearer s3cret-token2"));
        assert!(!check.accepts(b"Basic s3cret-token"));
        assert!(!check.accepts(b"s3cret-token"));
        assert!(!check.accepts(b""));
    }

    #[test]
    fn refusals_count_and_do_not_echo_the_token() {
        let metrics = Arc::new(Metrics::new());
        let mut check = RequireToken::new("s3cret-token", metrics.clone());
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer guess-123".parse().unwrap());
        let err = check.call(req).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(!err.message().contains("guess-123"));
        let err = check.call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(
            metrics
                .encode()
                .contains("edgehook_admin_unauthenticated_total 2")
        );
    }
}
