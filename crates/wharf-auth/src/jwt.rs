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
