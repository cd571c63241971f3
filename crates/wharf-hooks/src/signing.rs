//! Standard Webhooks v1 signatures (HMAC-SHA256), Wharf's opt-in extension of ACR webhooks.
//!
//! A signed delivery carries `webhook-id` (the event id, the same on every retry),
//! `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`: `v1,` + the
//! base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under each active secret, space-separated,
//! the current secret first. The HMAC key is the base64-decoded part of the `whsec_` secret,
//! as the reference libraries read it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// How a symmetric Standard Webhooks secret is written.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated secret: 256 bits, inside the spec's 24 to 64 bytes and the
/// size of the HMAC-SHA256 block's natural key.
pub const SECRET_BYTES: usize = 32;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// The headers signing sets, which custom headers must not name while it is on.
pub const SIGNING_HEADERS: [&str; 3] = [HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE];

/// A fresh secret from the operating system's random source.
pub fn generate_secret() -> Result<String, ring::error::Unspecified> {
    let mut key = [0u8; SECRET_BYTES];
    SystemRandom::new().fill(&mut key)?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

/// The `v1,<base64>` signature of one message under one secret; None if the secret is not a
/// `whsec_` base64 string (it always is when the server generated it).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    Some(format!("v1,{}", STANDARD.encode(ctx.sign().as_ref())))
}

/// The `webhook-signature` value under every secret given, in order, space-separated; None
/// if no secret gave a signature.
pub fn signature_header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let sigs: Vec<String> = secrets
        .iter()
        .filter_map(|s| sign(s, id, timestamp, body))
        .collect();
    (!sigs.is_empty()).then(|| sigs.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vector of the Standard Webhooks Rust library's tests.
    #[test]
    fn matches_the_reference_vector() {
        assert_eq!(
            sign(
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            )
            .as_deref(),
            Some("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
    }

    #[test]
    fn two_secrets_give_two_signatures_current_first() {
        let (new, old) = (generate_secret().unwrap(), generate_secret().unwrap());
        let h = signature_header(&[&new, &old], "id1", 1, b"{}").unwrap();
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&new, "id1", 1, b"{}").unwrap());
        assert_eq!(parts[1], sign(&old, "id1", 1, b"{}").unwrap());
        assert_eq!(signature_header(&[], "id1", 1, b"{}"), None);
    }

    #[test]
    fn generated_secrets_are_whsec_and_32_random_bytes() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        let raw = STANDARD
            .decode(a.strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(raw.len(), SECRET_BYTES);
        assert_eq!(sign("not-a-secret", "id", 1, b""), None);
        assert_eq!(sign("whsec_***", "id", 1, b""), None);
    }
}
