//! Secrets at rest: webhook service URIs, custom header values and signing secrets, and the
//! admin passwords are stored sealed with AES-256-GCM under a key that never enters the
//! database. The key is a 32-byte master key, read from the configuration (base64) or from
//! `wharf.key` in the data directory (created 0600 on first start). Keys for other purposes
//! (the JWT signing key) are derived from it with HKDF, so one file is all an operator backs up
//! and protects.
//!
//! Sealed values are text: `sealed:v1:` + base64(nonce ‖ ciphertext ‖ tag), with a fresh random
//! 96-bit nonce each time. A value without the prefix is a plaintext row from before sealing;
//! [`Sealer::open`] passes it through so start-up can migrate it.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::StoreError;

const PREFIX: &str = "sealed:v1:";
const KEY_FILE: &str = "wharf.key";

/// Seals and opens secrets (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<LessSafeKey>,
    master: std::sync::Arc<[u8; 32]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(******)")
    }
}

/// Random bytes from the system RNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| StoreError::Unavailable("the system random number generator failed".into()))?;
    Ok(b)
}

impl Sealer {
    /// The master key from `configured` (base64 of 32 bytes) or from the data directory's key
    /// file, which is created (0600) if missing.
    pub fn load_or_create(data_dir: &Path, configured: Option<&str>) -> Result<Sealer, StoreError> {
        let decode = |s: &str, from: &str| -> Result<[u8; 32], StoreError> {
            B64.decode(s.trim())
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "{from}: the secret key must be 32 bytes, base64-encoded"
                    ))
                })
        };
        let master = match configured {
            Some(k) => decode(k, "the configured secret key")?,
            None => {
                let path = data_dir.join(KEY_FILE);
                match std::fs::read_to_string(&path) {
                    Ok(s) => decode(&s, &path.display().to_string())?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let key = random_bytes::<32>()?;
                        write_private(&path, &B64.encode(key))?;
                        key
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        Ok(Sealer::from_master(master))
    }

    pub fn from_master(master: [u8; 32]) -> Sealer {
        let seal_key = derive(&master, b"wharf seal v1");
        // UnboundKey::new fails only for a wrong key length, and the length is fixed here.
        let key = match UnboundKey::new(&AES_256_GCM, &seal_key) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable!("AES-256 key of 32 bytes"),
        };
        Sealer {
            key: std::sync::Arc::new(key),
            master: std::sync::Arc::new(master),
        }
    }

    /// A 32-byte key for another purpose, derived from the master key.
    pub fn derive_key(&self, label: &[u8]) -> [u8; 32] {
        derive(&self.master, label)
    }

    pub fn seal(&self, plain: &str) -> Result<String, StoreError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::empty(),
                &mut buf,
            )
            .map_err(|_| StoreError::Unavailable("sealing a secret failed".into()))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", B64.encode(out)))
    }

    /// Opens a sealed value; a value that is not sealed (a row from before sealing) is
    /// returned as it is.
    pub fn open(&self, stored: &str) -> Result<String, StoreError> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let corrupt = || StoreError::Corrupt("a sealed secret does not open with this key".into());
        let raw = B64.decode(b64).map_err(|_| corrupt())?;
        if raw.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| corrupt())?;
        String::from_utf8(plain.to_vec()).map_err(|_| corrupt())
    }

    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }
}

fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    struct Len32;
    impl ring::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"wharf").extract(master);
    let mut out = [0u8; 32];
    // expand/fill fail only for an output longer than 255 hash lengths; 32 bytes is not.
    if let Ok(okm) = prk.expand(&[label], Len32) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// Writes a new file readable by its owner only.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), StoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_and_never_show_the_secret() {
        let s = Sealer::from_master([7; 32]);
        let a = s.seal("https://hooks.example/x?token=s3cret").unwrap();
        let b = s.seal("https://hooks.example/x?token=s3cret").unwrap();
        assert!(a.starts_with(PREFIX) && !a.contains("s3cret"));
        assert_ne!(a, b, "fresh nonce per seal");
        assert_eq!(s.open(&a).unwrap(), "https://hooks.example/x?token=s3cret");
        assert_eq!(s.open("plain-from-before").unwrap(), "plain-from-before");
        let other = Sealer::from_master([8; 32]);
        assert!(other.open(&a).is_err(), "another key cannot open it");
        let mut tampered = a.clone();
        tampered.pop();
        tampered.push('A');
        assert!(s.open(&tampered).is_err());
        assert_ne!(s.derive_key(b"a"), s.derive_key(b"b"));
        assert!(!format!("{s:?}").contains('7'));
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s1 = Sealer::load_or_create(dir.path(), None).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = s1.seal("x").unwrap();
        let s2 = Sealer::load_or_create(dir.path(), None).unwrap();
        assert_eq!(s2.open(&sealed).unwrap(), "x");
        let configured = B64.encode([1u8; 32]);
        let s3 = Sealer::load_or_create(dir.path(), Some(&configured)).unwrap();
        assert!(
            s3.open(&sealed).is_err(),
            "a configured key wins over the file"
        );
        assert!(Sealer::load_or_create(dir.path(), Some("short")).is_err());
    }
}
