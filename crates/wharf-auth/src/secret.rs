//! Generated credentials and their hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

/// argon2id with 7 MiB and 5 passes, one of OWASP's equivalent argon2id settings: token
/// passwords are never shown again, so only this hash is kept. The small-memory setting keeps
/// the registry's footprint down (verifications reuse their memory, see
/// [`verify_password_with`]); verified credentials are cached, so it is paid once a minute.
fn argon2() -> Argon2<'static> {
    let params = Params::new(7 * 1024, 5, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes of larger memory than this are refused unverified: a hash is ours, but a tampered
/// database must not make one login allocate gigabytes.
const MAX_M_COST_KIB: u32 = 64 * 1024;

pub fn hash_password(p: &str) -> Result<String, StoreError> {
    let salt = wharf_store::seal::random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|_| StoreError::Unavailable("encoding a salt failed".into()))?;
    argon2()
        .hash_password(p.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| StoreError::Unavailable("hashing a password failed".into()))
}

/// Verifies `p` against a PHC-format argon2 hash, computing in `memory` (grown as the hash's
/// parameters need, and kept by the caller for the next verification: allocating megabytes
/// per login leaves the allocator holding them). Constant-time comparison.
pub fn verify_password_with(p: &str, hash: &str, memory: &mut Vec<Block>) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(alg), Ok(params)) = (Algorithm::try_from(h.algorithm), Params::try_from(&h)) else {
        return false;
    };
    let version = match h.version {
        Some(v) => match Version::try_from(v) {
            Ok(v) => v,
            Err(_) => return false,
        },
        None => Version::default(),
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST_KIB {
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    memory.resize(params.block_count(), Block::default());
    let mut out = vec![0u8; expected.len()];
    Argon2::new(alg, version, params)
        .hash_password_into_with_memory(p.as_bytes(), salt, &mut out, &mut memory[..])
        .is_ok()
        && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// [`verify_password_with`] on fresh memory.
#[cfg(test)]
fn verify_password(p: &str, hash: &str) -> bool {
    verify_password_with(p, hash, &mut Vec::new())
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
        assert!(
            h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$") && !h.contains(&p),
            "{h}"
        );
        assert!(verify_password(&p, &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password(&p, "not a hash"));
        // Hashes made with other parameters (the crate's defaults) still verify, on reused
        // memory.
        let old = {
            use argon2::PasswordHasher;
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            Argon2::default()
                .hash_password(b"old", &salt)
                .unwrap()
                .to_string()
        };
        let mut mem = Vec::new();
        assert!(verify_password_with("old", &old, &mut mem));
        assert!(verify_password_with(&p, &h, &mut mem));
        assert!(!verify_password_with("wrong", &old, &mut mem));
        let m = generate_management_token().unwrap();
        assert!(m.starts_with("wharfm_") && m.len() > 40);
        assert!(secret_eq("abc", "abc") && !secret_eq("abc", "abd") && !secret_eq("abc", "ab"));
    }
}
