//! The JWTs of the token server: access tokens carrying granted `access` scopes, and refresh
//! tokens naming the principal. Signed with HS256 under a key derived from the server's master
//! key: only this server verifies them, so a shared-secret MAC is all that is needed, and
//! there is no key pair to distribute.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::scope::ResourceScope;

pub const ISSUER: &str = "Wharf";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The principal: a token's name, the registry name for the admin user, `management`, or
    /// `acr_anon_pull` (ACR's anonymous subject).
    pub sub: String,
    /// What kind of principal `sub` is: `admin`, `token`, `management` or `anonymous`.
    pub kind: String,
    /// The login server (the token server's `service`).
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    /// `access_token` or `refresh_token`.
    pub grant_type: String,
    #[serde(default)]
    pub access: Vec<ResourceScope>,
    pub version: String,
}

#[derive(Clone)]
pub struct Keys {
    enc: EncodingKey,
    dec: DecodingKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(******)")
    }
}

impl Keys {
    pub fn new(secret: &[u8; 32]) -> Keys {
        Keys {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
        }
    }

    pub fn sign(&self, c: &Claims) -> Option<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), c, &self.enc).ok()
    }

    /// Verifies signature, algorithm, issuer, expiry and not-before (60 s leeway); the
    /// audience is compared by the caller, case-insensitively, as login servers are.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.validate_aud = false;
        v.validate_nbf = true;
        v.leeway = 60;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "sub", "aud"]);
        jsonwebtoken::decode::<Claims>(token, &self.dec, &v)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: ISSUER.into(),
            sub: "ci".into(),
            kind: "token".into(),
            aud: "reg.local".into(),
            exp: now + exp_in,
            nbf: now,
            iat: now,
            jti: "j".into(),
            grant_type: "access_token".into(),
            access: vec![ResourceScope::repository("a", &[crate::RepoAction::Pull])],
            version: "1.0".into(),
        }
    }

    #[test]
    fn tokens_verify_only_with_the_key_and_in_time() {
        let k = Keys::new(&[1; 32]);
        let t = k.sign(&claims(60)).unwrap();
        assert_eq!(
            k.verify(&t),
            Some(claims(60)).map(|mut c| {
                c.exp = k.verify(&t).unwrap().exp;
                c.nbf = k.verify(&t).unwrap().nbf;
                c.iat = k.verify(&t).unwrap().iat;
                c
            })
        );
        assert!(
            Keys::new(&[2; 32]).verify(&t).is_none(),
            "forged: another key"
        );
        assert!(
            k.verify(&k.sign(&claims(-120)).unwrap()).is_none(),
            "expired"
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        parts[0] = none_header;
        assert!(k.verify(&parts.join(".")).is_none(), "alg none");
        assert!(k.verify("garbage").is_none());
    }

    #[test]
    fn access_entries_with_capitalised_keys_are_read() {
        let v: ResourceScope =
            serde_json::from_str(r#"{"Type":"repository","Name":"x","Actions":["pull"]}"#).unwrap();
        assert_eq!(v.kind, "repository");
        let out = serde_json::to_string(&v).unwrap();
        assert!(
            out.contains("\"type\"") && out.contains("\"actions\""),
            "{out}"
        );
    }
}

/// Property tests: verification never panics, accepts exactly what the key signed, and refuses
/// any token whose signed part or signature was changed.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::scope::ResourceScope;

    /// The base64url alphabet that JWT segments are written in.
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    fn claims() -> impl Strategy<Value = Claims> {
        (
            ".{0,12}",
            "admin|token|management|anonymous",
            ".{0,12}",
            ".{0,8}",
            "access_token|refresh_token",
            prop::collection::vec(
                (
                    "[a-z]{1,10}",
                    ".{1,12}",
                    prop::collection::vec("[a-z_*]{1,8}", 0..3),
                ),
                0..3,
            ),
        )
            .prop_map(|(sub, kind, aud, jti, grant_type, access)| {
                // Valid for an hour around now: far from the 60 s leeway at either end.
                let now = chrono::Utc::now().timestamp();
                Claims {
                    iss: ISSUER.into(),
                    sub,
                    kind,
                    aud,
                    exp: now + 3600,
                    nbf: now,
                    iat: now,
                    jti,
                    grant_type,
                    access: access
                        .into_iter()
                        .map(|(kind, name, actions)| ResourceScope {
                            kind,
                            name,
                            actions,
                        })
                        .collect(),
                    version: "1.0".into(),
                }
            })
    }

    proptest! {
        // Each case signs and verifies an HMAC or two: cheap, but fewer cases suffice.
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_strings_never_verify(key in any::<[u8; 32]>(), s in any::<String>()) {
            prop_assert!(Keys::new(&key).verify(&s).is_none());
        }

        /// Three base64url segments, the shape that gets past the splitting.
        #[test]
        fn arbitrary_three_part_tokens_never_verify(
            key in any::<[u8; 32]>(),
            s in r"[A-Za-z0-9_=+/-]{0,40}\.[A-Za-z0-9_=+/-]{0,60}\.[A-Za-z0-9_=+/-]{0,44}",
        ) {
            prop_assert!(Keys::new(&key).verify(&s).is_none());
        }

        #[test]
        fn signed_tokens_verify_with_their_key_only(key in any::<[u8; 32]>(), other in any::<[u8; 32]>(), c in claims()) {
            let k = Keys::new(&key);
            let t = k.sign(&c).unwrap();
            prop_assert_eq!(k.verify(&t), Some(c));
            if other != key {
                prop_assert!(Keys::new(&other).verify(&t).is_none());
            }
        }

        /// Same secret, another HMAC: the algorithm is pinned, not taken from the header.
        #[test]
        fn other_algorithms_are_refused(key in any::<[u8; 32]>(), c in claims(), hs512 in any::<bool>()) {
            let alg = if hs512 { Algorithm::HS512 } else { Algorithm::HS384 };
            let t = jsonwebtoken::encode(&Header::new(alg), &c, &EncodingKey::from_secret(&key)).unwrap();
            prop_assert!(Keys::new(&key).verify(&t).is_none());
        }

        /// One character of the signature replaced by another of the alphabet. The last
        /// character of a 32-byte signature carries 4 bits and 2 unused ones: a replacement
        /// that differs only in the unused bits names the same bytes, so it is skipped.
        #[test]
        fn a_changed_signature_character_fails(
            key in any::<[u8; 32]>(),
            c in claims(),
            at in any::<prop::sample::Index>(),
            to in prop::sample::select(B64URL),
        ) {
            let k = Keys::new(&key);
            let t = k.sign(&c).unwrap();
            let sig_start = t.rfind('.').unwrap() + 1;
            let mut bytes = t.into_bytes();
            let i = sig_start + at.index(bytes.len() - sig_start);
            let six = |b: u8| B64URL.iter().position(|&x| x == b).unwrap();
            let same_bytes = if i == bytes.len() - 1 {
                six(bytes[i]) >> 2 == six(to) >> 2
            } else {
                bytes[i] == to
            };
            prop_assume!(!same_bytes);
            bytes[i] = to;
            let forged = String::from_utf8(bytes).unwrap();
            prop_assert!(k.verify(&forged).is_none());
        }

        /// Any one-character edit anywhere (dots included). An edit to the header or the
        /// payload changes the MAC's input, so the token is refused; an edit may at most leave
        /// the claims as they were, never produce other ones.
        #[test]
        fn edited_tokens_never_panic_nor_yield_other_claims(
            key in any::<[u8; 32]>(),
            c in claims(),
            at in any::<prop::sample::Index>(),
            to in prop_oneof![prop::sample::select(B64URL), Just(b'.'), Just(b'='), any::<u8>()],
            edit in 0..3u8,
        ) {
            let k = Keys::new(&key);
            let t = k.sign(&c).unwrap();
            let signed_len = t.rfind('.').unwrap();
            let mut bytes = t.clone().into_bytes();
            let i = at.index(bytes.len());
            match edit {
                0 => bytes[i] = to,
                1 => bytes.insert(i, to),
                _ => {
                    bytes.remove(i);
                }
            }
            let edited = String::from_utf8_lossy(&bytes).into_owned();
            let got = k.verify(&edited);
            if edited == t {
                // Replaced by the same character: no edit at all.
                prop_assert_eq!(got, Some(c));
            } else if i < signed_len {
                prop_assert!(got.is_none());
            } else if let Some(got) = got {
                prop_assert_eq!(got, c);
            }
        }
    }
}
