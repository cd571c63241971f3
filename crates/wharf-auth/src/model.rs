//! The management operations on identities and their ARM shapes (acr-auth.md §2–3): the
//! registry's admin user and anonymous pull, scope maps (ACR's five system ones, read-only,
//! plus user-defined), tokens with `password1`/`password2`, and `generateCredentials`.
//! Password values appear only in the answers of `generateCredentials`, `listCredentials` and
//! `regenerateCredential`; token passwords are never stored in clear, so they cannot be shown
//! again.

use serde::Deserialize;
use serde_json::{Value, json};
use wharf_store::StoreError;
use wharf_store::identities::{PasswordRow, ScopeMapRow, TokenRow};

use crate::scope::{RuleSet, SYSTEM_SCOPE_MAPS, system_scope_map};
use crate::secret;
use crate::service::{Auth, AuthError, keys};

/// The latest published api-version of the ACR management API (acr-auth.md §1).
pub const API_VERSION: &str = "2025-11-01";

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| wharf_core::format_timestamp(&t))
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Expiry as given: RFC 3339, or absent/null/year 9999 for "never".
fn parse_expiry(v: Option<&str>) -> Result<Option<i64>, AuthError> {
    let Some(s) = v else {
        return Ok(None);
    };
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|_| AuthError::Invalid("expiry: must be an RFC 3339 date and time".into()))?;
    if t.timestamp_millis() <= now_ms() {
        return Err(AuthError::Invalid("expiry: must be in the future".into()));
    }
    Ok((t.format("%Y").to_string() != "9999").then(|| t.timestamp_millis()))
}

fn valid_name(kind: &str, name: &str, extra: &[char]) -> Result<(), AuthError> {
    let ok = (5..=50).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    if ok {
        Ok(())
    } else {
        let allowed: String = extra.iter().map(|c| format!(" '{c}'")).collect();
        Err(AuthError::Invalid(format!(
            "{kind}: must be 5 to 50 letters, digits or{allowed}"
        )))
    }
}

/// What follows `prefix` in the ARM id `id` (compared ignoring ASCII case, as ARM ids are),
/// if anything does. `get` rather than slicing: the id comes from a request body, and
/// `prefix.len()` may fall inside one of its multi-byte characters (slicing there panicked;
/// found by the property tests below).
fn child_of<'a>(id: &'a str, prefix: &str) -> Option<&'a str> {
    let head = id.get(..prefix.len())?;
    let rest = &id[prefix.len()..];
    (head.eq_ignore_ascii_case(prefix) && !rest.is_empty()).then_some(rest)
}

/// The scope map a `scopeMapId` (full ARM id or bare name) names, if it belongs to the
/// registry whose ARM id is `registry_id`.
fn scope_map_name(registry_id: &str, id: &str) -> Result<String, AuthError> {
    let prefix = format!("{registry_id}/scopeMaps/");
    let name = if let Some(name) = child_of(id, &prefix) {
        name
    } else if !id.contains('/') {
        id
    } else {
        return Err(AuthError::Invalid(
            "scopeMapId: must be a scope map of this registry".into(),
        ));
    };
    Ok(name.to_owned())
}

// ---- request bodies -------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryUpdate {
    pub properties: Option<RegistryUpdateProps>,
    /// Accepted and ignored, as ARM clients send them.
    pub tags: Option<Value>,
    pub sku: Option<Value>,
    pub identity: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryUpdateProps {
    pub admin_user_enabled: Option<bool>,
    pub anonymous_pull_enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ScopeMapBody {
    pub properties: Option<ScopeMapProps>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ScopeMapProps {
    pub description: Option<String>,
    pub actions: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenBody {
    pub properties: Option<TokenProps>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenProps {
    pub scope_map_id: Option<String>,
    pub status: Option<String>,
    pub credentials: Option<TokenCredentialsBody>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenCredentialsBody {
    pub passwords: Option<Vec<PasswordName>>,
    pub certificates: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PasswordName {
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateCredentials {
    pub token_id: Option<String>,
    pub expiry: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RegenerateCredential {
    pub name: Option<String>,
}

// ---- operations -----------------------------------------------------------------------

impl Auth {
    fn registry(&self) -> &str {
        &self.config().arm.registry
    }

    /// `{R}`: the registry's ARM id.
    fn registry_id(&self) -> String {
        self.config().arm.registry_id()
    }

    /// The registry's ARM `creationDate`, Unix ms: fixed the first time it is asked for, so
    /// it stays the same across restarts.
    pub async fn creation_date(&self) -> Result<i64, AuthError> {
        if let Some(ms) = self.store().setting(keys::CREATED_AT).await?
            && let Ok(ms) = ms.parse()
        {
            return Ok(ms);
        }
        let now = now_ms();
        // Insert-if-absent: of two first readers, both end up with the one stored.
        self.store()
            .init_settings(&[(keys::CREATED_AT, &now.to_string())])
            .await?;
        Ok(self
            .store()
            .setting(keys::CREATED_AT)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(now))
    }

    pub async fn update_registry(&self, u: RegistryUpdate) -> Result<(), AuthError> {
        let Some(p) = u.properties else {
            return Ok(());
        };
        let mut pairs = Vec::new();
        if let Some(v) = p.admin_user_enabled {
            pairs.push((keys::ADMIN_ENABLED, v.to_string()));
        }
        if let Some(v) = p.anonymous_pull_enabled {
            pairs.push((keys::ANONYMOUS_PULL, v.to_string()));
        }
        if self.store().setting(keys::ADMIN_PASSWORD).await?.is_none() {
            // Access control was off at the first start: the admin user gets its passwords
            // the first time it is configured.
            pairs.push((
                keys::ADMIN_PASSWORD,
                self.sealer().seal(&secret::generate_password()?)?,
            ));
            pairs.push((
                keys::ADMIN_PASSWORD2,
                self.sealer().seal(&secret::generate_password()?)?,
            ));
        }
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.store().set_settings(&refs).await?;
        self.reload().await?;
        Ok(())
    }

    /// `listCredentials`: the admin user and both passwords.
    pub async fn list_credentials(&self) -> Result<Value, AuthError> {
        let mut pw = Vec::new();
        for (name, key) in [
            ("password", keys::ADMIN_PASSWORD),
            ("password2", keys::ADMIN_PASSWORD2),
        ] {
            let v = match self.store().setting(key).await? {
                Some(s) => self.sealer().open(&s)?,
                None => {
                    let p = secret::generate_password()?;
                    self.store()
                        .set_settings(&[(key, &self.sealer().seal(&p)?)])
                        .await?;
                    p
                }
            };
            pw.push(json!({"name": name, "value": v}));
        }
        self.reload().await?;
        Ok(json!({"username": self.registry(), "passwords": pw}))
    }

    /// `regenerateCredential`: a new `password` or `password2`; both are returned.
    pub async fn regenerate_credential(&self, r: RegenerateCredential) -> Result<Value, AuthError> {
        let key = match r.name.as_deref() {
            Some("password") => keys::ADMIN_PASSWORD,
            Some("password2") => keys::ADMIN_PASSWORD2,
            _ => {
                return Err(AuthError::Invalid(
                    "name: must be password or password2".into(),
                ));
            }
        };
        let p = secret::generate_password()?;
        self.store()
            .set_settings(&[(key, &self.sealer().seal(&p)?)])
            .await?;
        self.reload().await?;
        self.list_credentials().await
    }

    // ---- scope maps ----

    fn scope_map_json(
        &self,
        name: &str,
        description: &str,
        actions: &[String],
        system: bool,
        created: i64,
    ) -> Value {
        json!({
            "id": self.config().arm.child_id("scopeMaps", name),
            "name": name,
            "type": "Microsoft.ContainerRegistry/registries/scopeMaps",
            "properties": {
                "description": description,
                "type": if system { "SystemDefined" } else { "UserDefined" },
                "creationDate": rfc3339(created),
                "provisioningState": "Succeeded",
                "actions": actions,
            },
        })
    }

    fn system_json(&self, m: &(&str, &str, &[&str])) -> Value {
        let actions: Vec<String> = m.2.iter().map(|a| (*a).to_owned()).collect();
        self.scope_map_json(m.0, m.1, &actions, true, 0)
    }

    pub async fn list_scope_maps(&self) -> Result<Vec<Value>, AuthError> {
        let mut out: Vec<Value> = SYSTEM_SCOPE_MAPS
            .iter()
            .map(|m| self.system_json(m))
            .collect();
        for m in self.store().scope_maps().await? {
            out.push(self.scope_map_json(&m.name, &m.description, &m.actions, false, m.created_at));
        }
        Ok(out)
    }

    pub async fn get_scope_map(&self, name: &str) -> Result<Value, AuthError> {
        if let Some(m) = system_scope_map(name) {
            return Ok(self.system_json(m));
        }
        let m = self
            .store()
            .scope_map(name)
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("scope map {name}")))?;
        Ok(self.scope_map_json(&m.name, &m.description, &m.actions, false, m.created_at))
    }

    /// PUT (create or replace; `actions` required) or PATCH (only what is given changes).
    /// Returns the resource and whether it was created.
    pub async fn put_scope_map(
        &self,
        name: &str,
        body: ScopeMapBody,
        patch: bool,
    ) -> Result<(Value, bool), AuthError> {
        if system_scope_map(name).is_some() {
            return Err(AuthError::Invalid(format!(
                "name: {name} is a system scope map and cannot be changed"
            )));
        }
        valid_name("name", name, &['-', '_'])?;
        let props = body.properties.unwrap_or_default();
        let existing = self.store().scope_map(name).await?;
        if patch && existing.is_none() {
            return Err(AuthError::NotFound(format!("scope map {name}")));
        }
        let actions = match (props.actions, &existing) {
            (Some(a), _) => a,
            (None, Some(e)) if patch => e.actions.clone(),
            _ => return Err(AuthError::Invalid("actions: required".into())),
        };
        if actions.is_empty() || actions.len() > 500 {
            return Err(AuthError::Invalid(
                "actions: between 1 and 500 actions".into(),
            ));
        }
        RuleSet::parse(&actions).map_err(AuthError::Invalid)?;
        let actions: Vec<String> = actions.iter().map(|a| lower_repo(a)).collect();
        let description = match (props.description, &existing) {
            (Some(d), _) => d,
            (None, Some(e)) if patch => e.description.clone(),
            _ => String::new(),
        };
        if description.len() > 256 {
            return Err(AuthError::Invalid(
                "description: at most 256 characters".into(),
            ));
        }
        let row = ScopeMapRow {
            name: existing
                .as_ref()
                .map(|e| e.name.clone())
                .unwrap_or_else(|| name.to_owned()),
            description,
            actions,
            created_at: existing
                .as_ref()
                .map(|e| e.created_at)
                .unwrap_or_else(now_ms),
        };
        let created = self.store().put_scope_map(&row).await?;
        self.reload().await?;
        Ok((
            self.scope_map_json(
                &row.name,
                &row.description,
                &row.actions,
                false,
                row.created_at,
            ),
            created,
        ))
    }

    pub async fn delete_scope_map(&self, name: &str) -> Result<bool, AuthError> {
        if system_scope_map(name).is_some() {
            return Err(AuthError::Invalid(format!(
                "name: {name} is a system scope map and cannot be deleted"
            )));
        }
        match self.store().delete_scope_map(name).await {
            Ok(gone) => {
                self.reload().await?;
                Ok(gone)
            }
            Err(StoreError::Conflict) => Err(AuthError::Conflict(format!(
                "scope map {name} is used by a token; change or delete the token first"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    // ---- tokens ----

    fn token_json(&self, t: &TokenRow) -> Value {
        let passwords: Vec<Value> = t
            .passwords
            .iter()
            .map(|p| {
                let mut v = json!({"name": p.name, "creationTime": rfc3339(p.created_at)});
                if let Some(e) = p.expiry {
                    v["expiry"] = json!(rfc3339(e));
                }
                v
            })
            .collect();
        json!({
            "id": self.config().arm.child_id("tokens", &t.name),
            "name": t.name,
            "type": "Microsoft.ContainerRegistry/registries/tokens",
            "properties": {
                "creationDate": rfc3339(t.created_at),
                "scopeMapId": self.config().arm.child_id("scopeMaps", &t.scope_map),
                "provisioningState": "Succeeded",
                "status": if t.enabled { "enabled" } else { "disabled" },
                "credentials": {"passwords": passwords, "certificates": []},
            },
        })
    }

    pub async fn list_tokens(&self) -> Result<Vec<Value>, AuthError> {
        Ok(self
            .store()
            .tokens()
            .await?
            .iter()
            .map(|t| self.token_json(t))
            .collect())
    }

    pub async fn get_token(&self, name: &str) -> Result<Value, AuthError> {
        let t = self
            .store()
            .token(name)
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("token {name}")))?;
        Ok(self.token_json(&t))
    }

    /// PUT (create or replace; `scopeMapId` required) or PATCH. A `credentials.passwords` list
    /// names the passwords to keep (that is how a password is deleted, acr-auth.md §3.2).
    pub async fn put_token(
        &self,
        name: &str,
        body: TokenBody,
        patch: bool,
    ) -> Result<(Value, bool), AuthError> {
        valid_name("name", name, &['-'])?;
        let props = body.properties.unwrap_or_default();
        let existing = self.store().token(name).await?;
        if patch && existing.is_none() {
            return Err(AuthError::NotFound(format!("token {name}")));
        }
        let scope_map = match (props.scope_map_id, &existing) {
            (Some(id), _) => {
                let n = scope_map_name(&self.registry_id(), &id)?;
                let known =
                    system_scope_map(&n).is_some() || self.store().scope_map(&n).await?.is_some();
                if !known {
                    return Err(AuthError::Invalid(format!("scopeMapId: no scope map {n}")));
                }
                system_scope_map(&n).map(|m| m.0.to_owned()).unwrap_or(n)
            }
            (None, Some(e)) => e.scope_map.clone(),
            (None, None) => return Err(AuthError::Invalid("scopeMapId: required".into())),
        };
        let enabled = match props.status.as_deref() {
            Some("enabled") => true,
            Some("disabled") => false,
            Some(_) => {
                return Err(AuthError::Invalid(
                    "status: must be enabled or disabled".into(),
                ));
            }
            None => existing.as_ref().is_none_or(|e| e.enabled),
        };
        let mut passwords = existing
            .as_ref()
            .map(|e| e.passwords.clone())
            .unwrap_or_default();
        if let Some(keep) = props.credentials.and_then(|c| c.passwords) {
            for k in &keep {
                if k.name != "password1" && k.name != "password2" {
                    return Err(AuthError::Invalid(
                        "credentials.passwords: names must be password1 or password2".into(),
                    ));
                }
            }
            passwords.retain(|p| keep.iter().any(|k| k.name == p.name));
        }
        let row = TokenRow {
            name: existing
                .as_ref()
                .map(|e| e.name.clone())
                .unwrap_or_else(|| name.to_owned()),
            scope_map,
            enabled,
            passwords,
            created_at: existing
                .as_ref()
                .map(|e| e.created_at)
                .unwrap_or_else(now_ms),
        };
        let created = self.store().put_token(&row).await?;
        self.reload().await?;
        Ok((self.token_json(&row), created))
    }

    pub async fn delete_token(&self, name: &str) -> Result<bool, AuthError> {
        let gone = self.store().delete_token(name).await?;
        self.reload().await?;
        Ok(gone)
    }

    /// `generateCredentials`: new `password1` and/or `password2` for a token, shown this once.
    /// The regenerated one comes first (the CLI reads `passwords[0]`).
    pub async fn generate_credentials(&self, g: GenerateCredentials) -> Result<Value, AuthError> {
        let id = g
            .token_id
            .ok_or_else(|| AuthError::Invalid("tokenId: required".into()))?;
        let prefix = format!("{}/tokens/", self.registry_id());
        let name = if let Some(name) = child_of(&id, &prefix) {
            name.to_owned()
        } else if !id.contains('/') {
            id.clone()
        } else {
            return Err(AuthError::Invalid(
                "tokenId: must be a token of this registry".into(),
            ));
        };
        let mut t = self
            .store()
            .token(&name)
            .await?
            .ok_or_else(|| AuthError::Invalid(format!("tokenId: no token {name}")))?;
        let names: Vec<&str> = match g.name.as_deref() {
            None => vec!["password1", "password2"],
            Some(n @ ("password1" | "password2")) => vec![n],
            Some(_) => {
                return Err(AuthError::Invalid(
                    "name: must be password1 or password2".into(),
                ));
            }
        };
        let expiry = parse_expiry(g.expiry.as_deref())?;
        let mut shown = Vec::new();
        for n in names {
            let value = secret::generate_password()?;
            let hash = {
                let v = value.clone();
                tokio::task::spawn_blocking(move || secret::hash_password(&v))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("hashing failed: {e}")))??
            };
            t.passwords.retain(|p| p.name != n);
            t.passwords.push(PasswordRow {
                name: n.to_owned(),
                hash,
                created_at: now_ms(),
                expiry,
            });
            let mut v = json!({"name": n, "value": value});
            v["expiry"] = match expiry {
                Some(e) => json!(rfc3339(e)),
                None => Value::Null,
            };
            shown.push(v);
        }
        t.passwords.sort_by(|a, b| a.name.cmp(&b.name));
        self.store().put_token(&t).await?;
        self.reload().await?;
        Ok(json!({"username": t.name, "passwords": shown}))
    }
}

/// Lower-cases the repository of a scope-map action, as the CLI does.
fn lower_repo(action: &str) -> String {
    match action.strip_prefix("repositories/").and_then(|r| {
        let (repo_area, kind) = r.rsplit_once('/')?;
        let (repo, area) = repo_area.rsplit_once('/')?;
        Some(format!(
            "repositories/{}/{area}/{kind}",
            repo.to_ascii_lowercase()
        ))
    }) {
        Some(s) => s,
        None => action.to_owned(),
    }
}

/// Property tests of the ARM ids that name a scope map or a token in a request body.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn registry_id(registry: &str) -> String {
        wharf_core::ArmIdentity {
            registry: registry.to_owned(),
            ..Default::default()
        }
        .registry_id()
    }

    /// The start of `full` cut at a random point, often within a few bytes of its end, so that
    /// what the client appends straddles the place where the prefix would end.
    fn cut(full: String) -> impl Strategy<Value = String> {
        let n = full.len();
        prop_oneof![0..=n, n.saturating_sub(3)..=n].prop_map(move |k| full[..k].to_owned())
    }

    /// The case the properties found: a multi-byte character across the prefix's end.
    #[test]
    fn a_character_across_the_prefix_end_is_refused_not_a_panic() {
        let prefix = format!("{}/scopeMaps/", registry_id("myreg"));
        let id = format!("{}é/x", &prefix[..prefix.len() - 1]);
        assert!(scope_map_name(&registry_id("myreg"), &id).is_err());
        assert_eq!(child_of(&id, &prefix), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn scope_map_ids_never_panic(
            (registry, head) in "[a-z0-9]{5,12}".prop_flat_map(|r| {
                let prefix = format!("{}/scopeMaps/", registry_id(&r));
                (Just(r), cut(prefix))
            }),
            tail in any::<String>(),
        ) {
            let _ = scope_map_name(&registry_id(&registry), &format!("{head}{tail}"));
        }

        /// The helper `generateCredentials` reads its `tokenId` with, too.
        #[test]
        fn children_of_arm_ids_never_panic(
            (prefix, head) in "[a-z0-9]{5,12}".prop_flat_map(|r| {
                let prefix = format!("{}/tokens/", registry_id(&r));
                (Just(prefix.clone()), cut(prefix))
            }),
            tail in any::<String>(),
        ) {
            let id = format!("{head}{tail}");
            let got = child_of(&id, &prefix);
            if head.len() == prefix.len() {
                prop_assert_eq!(got, Some(tail.as_str()).filter(|t| !t.is_empty()));
            }
        }

        #[test]
        fn scope_map_ids_name_their_scope_map(
            registry in "[a-z0-9]{5,12}",
            name in "[a-zA-Z0-9_-]{5,50}",
            upper in any::<bool>(),
        ) {
            let mut id = format!("{}/scopeMaps/{name}", registry_id(&registry));
            if upper {
                id = id.to_ascii_uppercase();
            }
            let want = if upper { name.to_ascii_uppercase() } else { name.clone() };
            prop_assert_eq!(scope_map_name(&registry_id(&registry), &id).ok(), Some(want));
            prop_assert_eq!(scope_map_name(&registry_id(&registry), &name).ok(), Some(name));
            let other = format!("{}/scopeMaps/x", registry_id(&format!("{registry}x")));
            prop_assert!(scope_map_name(&registry_id(&registry), &other).is_err());
        }
    }
}
