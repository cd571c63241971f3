//! Builds the ACR events a registry change raises, for the store's outbox.
//!
//! Events are built only for actions some enabled webhook subscribes to, so a registry with
//! no webhooks pays nothing. Per ACR: one `push` (and one `quarantine`) per tag, a push by
//! digest carries no tag; `delete` carries no tag and fires only when a manifest goes, never
//! for an untag. Helm charts (config media type `application/vnd.cncf.helm.config.v1+json`)
//! also raise `chart_push` / `chart_delete` in the shape of ACR's legacy chart events: media
//! type `application/vnd.acr.helm.chart`, `name` and `version` from the chart's config, and
//! `tag` the package file name `<name>-<version>.tgz` (the OCI tag only selects webhooks by
//! scope).

use chrono::Utc;
use wharf_core::event::ChartAction;
use wharf_core::payload::{self, Extras};
use wharf_core::{Digest, Event, EventRequest, ParsedManifest, RepoName, Tag, WebhookAction};
use wharf_store::{DeletedManifest, OutboxEvent, Subscribers};

/// What the HTTP layer knows of the request that caused a change.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub id: String,
    /// The host the client addressed (its `Host` header).
    pub host: String,
    pub useragent: Option<String>,
    /// The client's address, `ip:port`.
    pub addr: Option<String>,
    /// The identity that made the request; None: anonymous, or the registry itself.
    pub actor: Option<String>,
    /// Whether the request came over TLS.
    pub tls: bool,
}

impl RequestInfo {
    /// The extras line the outbox stores after ACR's body (see `wharf_core::payload`).
    fn extras(&self, hooks: &Subscribers) -> Extras {
        Extras {
            addr: self.addr.clone(),
            actor: self.actor.clone(),
            source: hooks.source().clone(),
            tls: self.tls,
        }
    }

    fn event_request(&self, method: &str) -> EventRequest {
        EventRequest {
            id: self.id.clone(),
            host: self.host.clone(),
            method: method.to_owned(),
            useragent: self.useragent.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChartMeta {
    pub name: String,
    pub version: String,
}

/// The media type ACR's chart events carry, whatever the manifest's own.
const ACR_HELM_CHART: &str = "application/vnd.acr.helm.chart";

impl ChartMeta {
    /// The chart package file name, which ACR's chart events carry as `tag`.
    fn package_file(&self) -> String {
        format!("{}-{}.tgz", self.name, self.version)
    }
}

/// A new event id. Version 7 (time-ordered) rather than random: ids of events written close
/// together sort close together, so the outbox's indexes on them (the events' key, the
/// deliveries' `event_id`) grow at one end instead of dirtying a random page per push. Still an
/// opaque UUID to consumers, as ACR's ids are.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn outbox(
    ev: Event,
    extras: &Extras,
    action: WebhookAction,
    repo: &RepoName,
    tag: Option<&str>,
    tagless: bool,
) -> OutboxEvent {
    OutboxEvent {
        id: ev.id.clone(),
        action,
        body: payload::stored_body(ev.to_bytes(), Some(extras)),
        repository: repo.to_string(),
        match_tags: tag.map(|t| vec![t.to_owned()]).unwrap_or_default(),
        tagless,
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn push_events(
    hooks: &Subscribers,
    repo: &RepoName,
    digest: &Digest,
    parsed: &ParsedManifest,
    size: i64,
    tags: &[Tag],
    chart: Option<&ChartMeta>,
    req: &RequestInfo,
) -> Vec<OutboxEvent> {
    push_events_of(
        hooks,
        repo,
        digest,
        &parsed.media_type,
        size,
        tags,
        chart,
        req,
        true,
    )
}

/// The events of a push: `push` (and `chart_push`) per tag, and with `quarantine` also the
/// `quarantine` events (a release raises only the held-back `push`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn push_events_of(
    hooks: &Subscribers,
    repo: &RepoName,
    digest: &Digest,
    media_type: &str,
    size: i64,
    tags: &[Tag],
    chart: Option<&ChartMeta>,
    req: &RequestInfo,
    quarantine: bool,
) -> Vec<OutboxEvent> {
    let now = Utc::now();
    // Built only if some webhook wants an event: a push with no webhooks pays nothing.
    let extras = std::cell::LazyCell::new(|| req.extras(hooks));
    let tag_opts: Vec<Option<&str>> = if tags.is_empty() {
        vec![None]
    } else {
        tags.iter().map(|t| Some(t.as_str())).collect()
    };
    let mut out = Vec::new();
    if hooks.any_wants(WebhookAction::Push) {
        for t in &tag_opts {
            let ev = Event::push(
                new_id(),
                now,
                repo.as_str(),
                digest.to_string(),
                media_type.to_owned(),
                size,
                t.map(str::to_owned),
                req.event_request("PUT"),
            );
            out.push(outbox(
                ev,
                &extras,
                WebhookAction::Push,
                repo,
                *t,
                t.is_none(),
            ));
        }
    }
    if quarantine && hooks.any_wants(WebhookAction::Quarantine) {
        for t in &tag_opts {
            let ev = Event::quarantine(
                new_id(),
                now,
                repo.as_str(),
                digest.to_string(),
                size,
                t.map(str::to_owned),
                req.event_request("PUT"),
            );
            out.push(outbox(
                ev,
                &extras,
                WebhookAction::Quarantine,
                repo,
                *t,
                t.is_none(),
            ));
        }
    }
    if let Some(c) = chart.filter(|_| hooks.any_wants(WebhookAction::ChartPush)) {
        for t in &tag_opts {
            let ev = Event::chart(
                new_id(),
                now,
                ChartAction::Push,
                repo.as_str(),
                digest.to_string(),
                ACR_HELM_CHART,
                size,
                c.package_file(),
                c.name.clone(),
                c.version.clone(),
            );
            out.push(outbox(
                ev,
                &extras,
                WebhookAction::ChartPush,
                repo,
                *t,
                t.is_none(),
            ));
        }
    }
    out
}

pub(crate) fn delete_events(
    hooks: &Subscribers,
    repo: &RepoName,
    del: &DeletedManifest,
    chart: Option<&ChartMeta>,
    req: &RequestInfo,
) -> Vec<OutboxEvent> {
    let now = Utc::now();
    // Built only if some webhook wants an event: a push with no webhooks pays nothing.
    let extras = std::cell::LazyCell::new(|| req.extras(hooks));
    let mut out = Vec::new();
    if hooks.any_wants(WebhookAction::Delete) {
        let ev = Event::delete(
            new_id(),
            now,
            repo.as_str(),
            del.digest.to_string(),
            del.media_type.clone(),
            req.event_request("DELETE"),
        );
        let mut o = outbox(ev, &extras, WebhookAction::Delete, repo, None, true);
        o.match_tags = del.tags.clone();
        out.push(o);
    }
    if let Some(c) = chart.filter(|_| hooks.any_wants(WebhookAction::ChartDelete)) {
        let ev = Event::chart(
            new_id(),
            now,
            ChartAction::Delete,
            repo.as_str(),
            del.digest.to_string(),
            ACR_HELM_CHART,
            del.size,
            c.package_file(),
            c.name.clone(),
            c.version.clone(),
        );
        let mut o = outbox(ev, &extras, WebhookAction::ChartDelete, repo, None, true);
        o.match_tags = del.tags.clone();
        out.push(o);
    }
    out
}
