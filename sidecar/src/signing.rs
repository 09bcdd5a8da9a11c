//! Standard Webhooks signing, for outbound deliveries and `edgehook send`:
//! `webhook-signature: v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`
//! with the key decoded from a `whsec_` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};

/// The HMAC key inside a `whsec_` secret (the prefix is optional).
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, &'static str> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    match STANDARD.decode(b64) {
        Ok(key) if !key.is_empty() => Ok(key),
        Ok(_) => Err("secret is empty"),
        Err(_) => Err("secret is not whsec_ followed by standard base64"),
    }
}

/// The `webhook-signature` value for one message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Checks a `webhook-signature` header (any `v1` entry) in constant time.
pub fn verify(key: &[u8], id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Ok(mut mac) = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    header
        .split(' ')
        .filter_map(|e| e.split_once(','))
        .filter(|(v, _)| *v == "v1")
        .filter_map(|(_, s)| STANDARD.decode(s).ok())
        .any(|sig| !sig.is_empty() && mac.clone().verify_slice(&sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            &sig
        ));
        assert!(!verify(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265331,
            br#"{"test": 2432232314}"#,
            &sig
        ));
        assert!(!verify(&key, "x", 1, b"", "v1,"));
    }
}
