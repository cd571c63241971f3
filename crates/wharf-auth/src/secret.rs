//! Generated credentials and their hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use wharf_store::StoreError;

/// A random password of 32 characters from `[A-Za-z0-9]`, as ACR's are: about 190 bits.
pub fn generate_password() -> Result<String, StoreError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = wharf_store::seal::random_bytes::<64>()?;
    // Rejection sampling keeps the distribution uniform (62 does not divide 256).
    let out: String = bytes
        .iter()
        .filter(|b| usize::from(**b) < 62 * 4)
        .take(32)
        .map(|b| ALPHABET[usize::from(*b) % 62] as char)
        .collect();
    if out.len() < 32 {
        // 64 bytes give fewer than 32 usable ones with probability ~1e-11: draw again.
        return generate_password();
    }
    Ok(out)
}

/// The management credential: 32 random bytes, base64url, prefixed so it is recognisable in a
/// leak scan.
pub fn generate_management_token() -> Result<String, StoreError> {
    let b = wharf_store::seal::random_bytes::<32>()?;
    Ok(format!(
        "wharfm_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    ))
}

/// argon2id with the crate's defaults (19 MiB, 2 passes): token passwords are never shown
/// again, so only this hash is kept; verifying costs tens of milliseconds, so verified
/// credentials are cached (see the service).
pub fn hash_password(p: &str) -> Result<String, StoreError> {
    let salt = wharf_store::seal::random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|_| StoreError::Unavailable("encoding a salt failed".into()))?;
    argon2::Argon2::default()
        .hash_password(p.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| StoreError::Unavailable("hashing a password failed".into()))
}

/// Constant-time through argon2's own comparison.
pub fn verify_password(p: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(p.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// SHA-256 of a high-entropy secret (the management credential): a slow hash buys nothing
/// against 256 random bits.
pub fn fast_hash(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(d.as_ref())
}

/// Compares two secrets in constant time (the length is not secret).
pub fn secret_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_look_right_and_hashes_verify() {
        let p = generate_password().unwrap();
        assert_eq!(p.len(), 32);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(p, generate_password().unwrap());
        let h = hash_password(&p).unwrap();
        assert!(h.starts_with("$argon2id$") && !h.contains(&p));
        assert!(verify_password(&p, &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password(&p, "not a hash"));
        let m = generate_management_token().unwrap();
        assert!(m.starts_with("wharfm_") && m.len() > 40);
        assert!(secret_eq("abc", "abc") && !secret_eq("abc", "abd") && !secret_eq("abc", "ab"));
    }
}
