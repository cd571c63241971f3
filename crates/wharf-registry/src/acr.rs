//! The use cases of ACR's `/acr/v1` data plane: repository, tag and manifest attributes,
//! their listings with ACR's ordering and cursors, changes of the changeable attributes, and
//! the release of quarantined manifests. The shapes serialize to ACR's wire names.

use serde::Serialize;
use wharf_core::{Digest, RepoName, Tag};
use wharf_store::attrs::{FAILED, PASSED, Release};
use wharf_store::{Flags, ManifestAttrs, RepoAttrs, TagAttrs};
pub use wharf_store::{FlagsPatch, ManifestPatch, RepoPatch};

use crate::events::{self, RequestInfo};
use crate::{Registry, RegistryError, Result};

/// RFC 3339 UTC with 7 fractional digits, as ACR writes its times.
pub fn acr_time(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    )
}

/// `orderby` of the tag and manifest listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    /// ACR's default: by name (tags) or digest (manifests).
    None,
    TimeDesc,
    TimeAsc,
}

impl OrderBy {
    /// Parses the query value; empty is the default.
    pub fn parse(s: &str) -> Option<OrderBy> {
        match s {
            "" | "none" => Some(OrderBy::None),
            "timedesc" => Some(OrderBy::TimeDesc),
            "timeasc" => Some(OrderBy::TimeAsc),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChangeableAttributes {
    pub delete_enabled: bool,
    pub write_enabled: bool,
    pub read_enabled: bool,
    pub list_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teleport_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_details: Option<String>,
}

impl From<Flags> for ChangeableAttributes {
    fn from(f: Flags) -> Self {
        ChangeableAttributes {
            delete_enabled: f.delete_enabled,
            write_enabled: f.write_enabled,
            read_enabled: f.read_enabled,
            list_enabled: f.list_enabled,
            teleport_enabled: None,
            quarantine_state: None,
            quarantine_details: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryAttributes {
    pub image_name: String,
    pub created_time: String,
    pub last_update_time: String,
    pub manifest_count: i64,
    pub tag_count: i64,
    pub changeable_attributes: ChangeableAttributes,
}

impl From<RepoAttrs> for RepositoryAttributes {
    fn from(r: RepoAttrs) -> Self {
        let mut c = ChangeableAttributes::from(r.flags);
        c.teleport_enabled = r.teleport_enabled;
        RepositoryAttributes {
            image_name: r.name,
            created_time: acr_time(r.created_at),
            last_update_time: acr_time(r.updated_at),
            manifest_count: r.manifest_count,
            tag_count: r.tag_count,
            changeable_attributes: c,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagAttributes {
    pub name: String,
    pub digest: String,
    pub created_time: String,
    pub last_update_time: String,
    pub signed: bool,
    pub changeable_attributes: ChangeableAttributes,
    #[serde(skip)]
    updated_ms: i64,
}

impl From<TagAttrs> for TagAttributes {
    fn from(t: TagAttrs) -> Self {
        TagAttributes {
            name: t.name,
            digest: t.digest,
            created_time: acr_time(t.created_at),
            last_update_time: acr_time(t.updated_at),
            signed: false,
            changeable_attributes: t.flags.into(),
            updated_ms: t.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlatformRef {
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestAttributes {
    pub digest: String,
    pub image_size: i64,
    pub created_time: String,
    pub last_update_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<PlatformRef>>,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_media_type: Option<String>,
    pub tags: Vec<String>,
    pub changeable_attributes: ChangeableAttributes,
}

/// Config media types whose blob is an image config (with `architecture` and `os`).
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Most bytes of a config blob read for `architecture`/`os`.
const MAX_CONFIG: u64 = 1024 * 1024;

/// A page of a listing and the cursor of the next one.
pub struct Page<T> {
    pub items: Vec<T>,
    /// The `last` of the next page, when there is one.
    pub next: Option<String>,
}

/// Cuts one page out of `items` (already in listing order): after `last` (an item's key; if
/// no item has it, the items whose key sorts after it), at most `n`.
fn page<T>(items: Vec<T>, key: impl Fn(&T) -> &str, last: Option<&str>, n: Option<u32>) -> Page<T> {
    let start = match last {
        None => 0,
        Some(l) => match items.iter().position(|i| key(i) == l) {
            Some(p) => p + 1,
            None => items.iter().position(|i| key(i) > l).unwrap_or(items.len()),
        },
    };
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let next = match n {
        Some(n) if rest.len() > n as usize => {
            rest.truncate(n as usize);
            rest.last().map(|i| key(i).to_owned())
        }
        _ => None,
    };
    Page { items: rest, next }
}

fn sort_by_time<T>(items: &mut [T], order: OrderBy, time: impl Fn(&T) -> i64) {
    match order {
        OrderBy::None => {}
        // Stable: equal times keep the default order.
        OrderBy::TimeAsc => items.sort_by_key(|i| time(i)),
        OrderBy::TimeDesc => items.sort_by_key(|i| std::cmp::Reverse(time(i))),
    }
}

fn not_found_repo() -> RegistryError {
    RegistryError::NameUnknown
}

impl Registry {
    pub async fn repository_attributes(&self, repo: &RepoName) -> Result<RepositoryAttributes> {
        let attrs = self.store.attributes();
        match attrs.repository(repo).await? {
            Some(r) => Ok(r.into()),
            None => Err(not_found_repo()),
        }
    }

    pub async fn update_repository_attributes(
        &self,
        repo: &RepoName,
        patch: RepoPatch,
    ) -> Result<RepositoryAttributes> {
        match self
            .store
            .attributes()
            .update_repository(repo, patch)
            .await?
        {
            Some(r) => Ok(r.into()),
            None => Err(not_found_repo()),
        }
    }

    /// Tags with `listEnabled`, in `order`, optionally only those pointing at `digest`.
    pub async fn tag_list(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
        order: OrderBy,
        digest: Option<&Digest>,
        quarantine_reader: bool,
    ) -> Result<Page<TagAttributes>> {
        let tags = self
            .store
            .attributes()
            .tags(repo, true, quarantine_reader)
            .await?
            .ok_or_else(not_found_repo)?;
        let digest = digest.map(|d| d.to_string());
        let mut items: Vec<TagAttributes> = tags
            .into_iter()
            .filter(|t| digest.as_ref().is_none_or(|d| &t.digest == d))
            .map(TagAttributes::from)
            .collect();
        sort_by_time(&mut items, order, |t| t.updated_ms);
        Ok(page(items, |t| t.name.as_str(), last, n))
    }

    pub async fn tag_attributes(&self, repo: &RepoName, tag: &Tag) -> Result<TagAttributes> {
        match self.store.attributes().tag(repo, tag).await? {
            None => Err(not_found_repo()),
            Some(None) => Err(RegistryError::TagUnknown),
            Some(Some(t)) => Ok(t.into()),
        }
    }

    pub async fn update_tag_attributes(
        &self,
        repo: &RepoName,
        tag: &Tag,
        patch: FlagsPatch,
    ) -> Result<TagAttributes> {
        match self.store.attributes().update_tag(repo, tag, patch).await? {
            None => Err(not_found_repo()),
            Some(None) => Err(RegistryError::TagUnknown),
            Some(Some(t)) => Ok(t.into()),
        }
    }

    /// Manifests with `listEnabled`, in `order` (by digest by default).
    pub async fn manifest_list(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
        order: OrderBy,
    ) -> Result<Page<ManifestAttributes>> {
        let mut rows = self
            .store
            .attributes()
            .manifests(repo, true, &[])
            .await?
            .ok_or_else(not_found_repo)?;
        rows.sort_by(|a, b| a.digest.cmp(&b.digest));
        sort_by_time(&mut rows, order, |m| m.updated_at);
        let p = page(rows, |m| m.digest.as_str(), last, n);
        let mut items = Vec::with_capacity(p.items.len());
        for m in p.items {
            // The page's bodies only (for sizes, platforms and references).
            let full = match Digest::parse(&m.digest) {
                Ok(d) => self.store.attributes().manifest(repo, &d).await?.flatten(),
                Err(_) => None,
            };
            // Gone since the listing was read: listed as it was.
            items.push(self.manifest_shape(full.unwrap_or(m)).await);
        }
        Ok(Page {
            items,
            next: p.next,
        })
    }

    pub async fn manifest_attributes(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<ManifestAttributes> {
        match self.store.attributes().manifest(repo, digest).await? {
            None => Err(not_found_repo()),
            Some(None) => Err(RegistryError::ManifestUnknown),
            Some(Some(m)) => Ok(self.manifest_shape(m).await),
        }
    }

    /// Changes a manifest's attributes. Setting `quarantineState` to `Passed` on a
    /// quarantined manifest releases it and raises the `push` events that were held back, in
    /// the same transaction.
    pub async fn update_manifest_attributes(
        &self,
        repo: &RepoName,
        digest: &Digest,
        patch: ManifestPatch,
    ) -> Result<ManifestAttributes> {
        if let Some(s) = &patch.quarantine_state
            && s != PASSED
            && s != FAILED
        {
            return Err(RegistryError::Invalid(format!(
                "quarantineState must be {PASSED:?} or {FAILED:?}"
            )));
        }
        // A chart's name and version live in its config blob: read before the transaction.
        let chart = match self.store.meta.manifest_config(repo, digest).await? {
            Some(c)
                if c.media_type.as_deref() == Some(wharf_core::manifest::media::HELM_CONFIG) =>
            {
                self.read_chart_meta(c.digest.as_ref()).await
            }
            _ => None,
        };
        let hooks = self.store.hooks.clone();
        let out = self
            .store
            .attributes()
            .update_manifest(repo, digest, patch, &self.store.hooks, &|r: &Release| {
                release_events(&hooks, repo, r, chart.as_ref())
            })
            .await?;
        match out {
            None => Err(not_found_repo()),
            Some(None) => Err(RegistryError::ManifestUnknown),
            Some(Some((m, queued))) => {
                if queued > 0 {
                    self.store.wake_dispatcher();
                }
                Ok(self.manifest_shape(m).await)
            }
        }
    }

    async fn manifest_shape(&self, m: ManifestAttrs) -> ManifestAttributes {
        let parsed = wharf_core::parse_manifest(&m.body, Some(&m.media_type)).ok();
        let mut image_size = m.size;
        let mut references = None;
        if let Some(p) = &parsed {
            match p.kind {
                wharf_core::manifest::ManifestKind::Image => {
                    image_size = p.config.iter().chain(&p.references).map(|d| d.size).sum();
                }
                wharf_core::manifest::ManifestKind::Index => {
                    references = Some(index_platforms(&m.body));
                }
            }
        }
        let (architecture, os) = match (&m.config_media_type, &m.config_digest) {
            (Some(t), Some(d)) if IMAGE_CONFIGS.contains(&t.as_str()) => {
                self.config_platform(d).await
            }
            _ => (None, None),
        };
        let mut c = ChangeableAttributes::from(m.flags);
        c.quarantine_state = m.quarantine_state;
        c.quarantine_details = m.quarantine_details;
        ManifestAttributes {
            digest: m.digest,
            image_size,
            created_time: acr_time(m.created_at),
            last_update_time: acr_time(m.updated_at),
            architecture,
            os,
            references,
            media_type: m.media_type,
            config_media_type: m.config_media_type,
            tags: m.tags,
            changeable_attributes: c,
        }
    }

    /// `architecture` and `os` from an image config blob (small JSON).
    async fn config_platform(&self, digest: &str) -> (Option<String>, Option<String>) {
        let Ok(d) = Digest::parse(digest) else {
            return (None, None);
        };
        let Ok(Some(data)) = self.store.blobs.read_small(&d, MAX_CONFIG).await else {
            return (None, None);
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) else {
            return (None, None);
        };
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        (s("architecture"), s("os"))
    }
}

/// The children of an index with their platforms.
fn index_platforms(body: &[u8]) -> Vec<PlatformRef> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    v.get("manifests")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let s = |k: &str| {
                m.get("platform")
                    .and_then(|p| p.get(k))
                    .and_then(|x| x.as_str())
                    .map(str::to_owned)
            };
            Some(PlatformRef {
                digest: m.get("digest")?.as_str()?.to_owned(),
                architecture: s("architecture"),
                os: s("os"),
            })
        })
        .collect()
}

/// The push events a release raises: those the quarantined push held back, with the tags and
/// request it was pushed with.
fn release_events(
    hooks: &wharf_store::Subscribers,
    repo: &RepoName,
    r: &Release,
    chart: Option<&events::ChartMeta>,
) -> Vec<wharf_store::OutboxEvent> {
    let held: serde_json::Value = r
        .held
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_default();
    let s = |k: &str| held.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let tags: Vec<Tag> = held
        .get("tags")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| Tag::parse(t.as_str()?).ok())
        .collect();
    let req = RequestInfo {
        id: s("id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        host: s("host").unwrap_or_default(),
        useragent: s("useragent"),
        addr: s("addr"),
        actor: s("actor"),
        tls: held.get("tls").and_then(|x| x.as_bool()).unwrap_or(false),
    };
    events::push_events_of(
        hooks,
        repo,
        &r.digest,
        &r.media_type,
        r.size,
        &tags,
        chart,
        &req,
        false,
    )
}

/// The JSON a quarantined push stores to raise its `push` on release.
pub(crate) fn held_push(tags: &[Tag], req: &RequestInfo) -> String {
    serde_json::json!({
        "tags": tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "id": req.id,
        "host": req.host,
        "useragent": req.useragent,
        "addr": req.addr,
        "actor": req.actor,
        "tls": req.tls,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_seven_fractional_digits() {
        assert_eq!(acr_time(1_657_317_151_199), "2022-07-08T21:52:31.1990000Z");
        assert_eq!(acr_time(0), "1970-01-01T00:00:00.0000000Z");
    }

    #[test]
    fn pages_follow_the_cursor() {
        let items = vec!["a", "b", "c", "d"];
        let p = page(items.clone(), |s| s, None, Some(2));
        assert_eq!((p.items, p.next.as_deref()), (vec!["a", "b"], Some("b")));
        let p = page(items.clone(), |s| s, Some("b"), Some(2));
        assert_eq!((p.items, p.next), (vec!["c", "d"], None));
        // A cursor that is no longer there: what sorts after it.
        let p = page(items, |s| s, Some("bb"), None);
        assert_eq!(p.items, vec!["c", "d"]);
    }
}
