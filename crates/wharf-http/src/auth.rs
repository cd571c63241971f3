//! Authorization of every route, from one table: [`needs`] maps a request (method and path)
//! to what it needs — an action on a repository, the catalog, the management API, any
//! credential, or nothing (the token server) — and [`authorize`] checks the caller against it,
//! answering ACR's challenge when it falls short.
//!
//! With access control off (the open development mode), nothing is checked except that the
//! request was addressed to a loopback host: a browser page on another site cannot reach the
//! registry through DNS rebinding.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;
use wharf_auth::{Credentials, Denied, Need, Principal, RepoAction};

use crate::AppState;
use crate::path::{OciEndpoint, parse};

/// The peer address of a request's connection (inserted by the serve loop).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Whether a request's connection is TLS (inserted by the serve loop).
#[derive(Debug, Clone, Copy)]
pub struct IsTls(pub bool);

/// Who the caller is, for the handlers and the access log.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: String,
    /// Whether a mount without `from` may look in every repository (only callers that may
    /// read every repository: otherwise it would reveal blobs of repositories they cannot
    /// read).
    pub may_mount_anywhere: bool,
    /// Whether the caller may pull quarantined images (ACR's AcrQuarantineReader): the
    /// registry's owners only, the admin user and the management credential, so a scanner
    /// running as either can read what it scans. Nobody else, and nobody in the open mode.
    pub quarantine_reader: bool,
}

/// What a route needs, by method and path: the route × permission table (acr-auth.md §3.8).
/// `None`: the route authenticates itself (the token server).
pub fn needs(method: &Method, path: &str, query: Option<&str>) -> Option<Vec<Need>> {
    use RepoAction::*;
    if path.starts_with("/oauth2/") {
        return None;
    }
    if let Some(rest) = path.strip_prefix("/acr/v1/") {
        use crate::path::AcrEndpoint as A;
        let repo = match crate::path::parse_acr(&decode(rest)) {
            Ok(A::Catalog) => return Some(vec![Need::Catalog]),
            Ok(A::Repo(n) | A::Tags(n) | A::Tag(n, _) | A::Manifests(n) | A::Manifest(n, _)) => {
                n.to_string()
            }
            // The handler answers with the spec's error, to a caller who could use the registry.
            Err(_) => return Some(vec![Need::Authenticated]),
        };
        // acr-auth.md §3.8: metadata reads, attribute changes, and untag / repository delete.
        return Some(match *method {
            Method::DELETE => vec![Need::Repo(repo, Delete)],
            Method::PATCH => vec![Need::Repo(repo, MetadataWrite)],
            _ => vec![Need::Repo(repo, MetadataRead)],
        });
    }
    if path == "/acr" || path.starts_with("/acr/") {
        // No data-plane endpoint (those are under `/acr/v1/`, above): the handler's OCI-shaped
        // 404, to a caller who could use the registry.
        return Some(vec![Need::Authenticated]);
    }
    if path == "/wharf/v1/gc" {
        // Garbage collection deletes content across every repository: the registry's owners
        // (the admin user and the management credential), as for the management API.
        return Some(vec![Need::Management]);
    }
    let Some(rest) = path.strip_prefix("/v2") else {
        // The management API: webhooks, and the ARM routes of identities.
        return Some(vec![Need::Management]);
    };
    let rest = decode(rest.strip_prefix('/').unwrap_or(rest));
    let repo = |n: &wharf_core::RepoName, a| vec![Need::Repo(n.to_string(), a)];
    Some(match parse(&rest) {
        Ok(OciEndpoint::Base) => vec![Need::Authenticated],
        Ok(OciEndpoint::Catalog) => vec![Need::Catalog],
        Ok(OciEndpoint::Tags(n)) => repo(&n, MetadataRead),
        Ok(OciEndpoint::Manifest(n, _) | OciEndpoint::InvalidTag(n, _)) => match *method {
            Method::GET | Method::HEAD => repo(&n, Pull),
            Method::DELETE => repo(&n, Delete),
            _ => repo(&n, Push),
        },
        Ok(OciEndpoint::Blob(n, _)) => match *method {
            Method::DELETE => repo(&n, Delete),
            _ => repo(&n, Pull),
        },
        Ok(OciEndpoint::UploadStart(n)) => {
            let mut v = repo(&n, Push);
            // A mount also reads the source repository.
            if let Some(from) = query_param(query, "from") {
                v.push(Need::Repo(from.to_ascii_lowercase(), Pull));
            }
            v
        }
        Ok(OciEndpoint::Upload(n, _)) => repo(&n, Push),
        Ok(OciEndpoint::Referrers(n, _)) => repo(&n, Pull),
        // Not a valid endpoint: the handler answers with the spec's error, but only to a
        // caller who could use the registry at all.
        Err(_) => vec![Need::Authenticated],
    })
}

/// Percent-decodes a path: the Azure SDK sends `a%2Fb` and `sha256%3A…`.
pub fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| decode(v))
    })
}

/// The host the client addressed (HTTP/2 carries it in the URI's authority).
pub fn request_host(req: &Request) -> String {
    host_of(req.headers(), req.uri())
}

/// [`request_host`] for a handler that has the headers and URI but not the request (its body
/// goes to another extractor).
pub fn host_of(headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// Whether a Host names this machine's loopback: `localhost`, `*.localhost`, 127.0.0.0/8 or
/// `[::1]`, with any port.
pub fn is_loopback_host(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    let h = h.to_ascii_lowercase();
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An `Authorization` header that is present but not `<scheme> <credentials>`.
#[derive(Debug)]
pub struct MalformedAuthorization;

/// Splits `Authorization` into its lower-cased scheme and its credentials. A header that is
/// present but malformed is an error, never anonymous.
pub fn parse_authorization(
    headers: &HeaderMap,
) -> Result<Option<(String, String)>, MalformedAuthorization> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| MalformedAuthorization)?;
    let (scheme, rest) = v.split_once(' ').ok_or(MalformedAuthorization)?;
    Ok(Some((scheme.to_ascii_lowercase(), rest.trim().to_owned())))
}

/// Splits a Basic header's payload into user and password.
pub fn basic_pair(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// The middleware: checks every request against [`needs`].
pub async fn authorize(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let host = request_host(&req);
    if !app.auth.enabled() {
        // The operator's explicit --insecure-open-registry serves every host.
        if !app.open_to_network && !is_loopback_host(&host) {
            return forbidden_host();
        }
        if let Some(r) = refuse_cross_site(&req) {
            return r;
        }
        let caller = Caller {
            identity: "anonymous".into(),
            may_mount_anywhere: true,
            quarantine_reader: false,
        };
        req.extensions_mut().insert(caller.clone());
        let mut resp = next.run(req).await;
        resp.extensions_mut().insert(caller);
        return resp;
    }
    let Some(needs) = needs(req.method(), req.uri().path(), req.uri().query()) else {
        return next.run(req).await;
    };
    let management = needs.contains(&Need::Management);
    let service = app.auth.service(&host);
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let tls = req.extensions().get::<IsTls>().is_some_and(|t| t.0);
    // Borrowed, and the header text built only on a refusal: the hot path (an allowed blob
    // HEAD) pays for none of it.
    let challenge = Challenge {
        host: &host,
        tls,
        service: &service,
        needs: &needs,
        management,
    };
    let pair = match parse_authorization(req.headers()) {
        Ok(p) => p,
        Err(MalformedAuthorization) => return challenge.refuse(Denied::Unauthenticated),
    };
    let basic;
    let creds = match &pair {
        None => Credentials::None,
        Some((scheme, rest)) if scheme == "basic" => {
            basic = basic_pair(rest);
            match &basic {
                Some((u, p)) => Credentials::Basic {
                    user: u,
                    password: p,
                },
                None => return challenge.refuse(Denied::Unauthenticated),
            }
        }
        Some((scheme, rest)) if scheme == "bearer" => Credentials::Bearer(rest),
        Some(_) => return challenge.refuse(Denied::Unauthenticated),
    };
    let principal = match app.auth.authenticate(creds, &service, client).await {
        Ok(p) => p,
        Err(wharf_auth::AuthError::Denied(d)) => return challenge.refuse(d),
        Err(e) => {
            tracing::error!(error = %e, "authentication failed internally");
            return crate::error::internal(&e).into_response();
        }
    };
    if let Err(d) = app.auth.check(&principal, &needs) {
        tracing::debug!(identity = %principal.identity(), "request refused: insufficient scope");
        return challenge.refuse(d);
    }
    let identity = principal.identity();
    let caller = Caller {
        // Admin and management, whether by Basic or by a bearer token issued to them.
        quarantine_reader: identity == "admin" || identity == "management",
        identity,
        may_mount_anywhere: app.auth.catalog_allowed(&principal)
            && !matches!(principal, Principal::Anonymous),
    };
    req.extensions_mut().insert(caller.clone());
    let mut resp = next.run(req).await;
    // For the access log, which wraps this layer.
    resp.extensions_mut().insert(caller);
    resp
}

/// In the open mode, a management call that may change something (POST, PUT, PATCH) must say
/// `application/json`: a page on another site can make a browser send a form post
/// (`application/x-www-form-urlencoded`, `multipart/form-data`, `text/plain`) without a CORS
/// preflight, but not a JSON one (which needs a preflight this server never grants). DELETE
/// always needs a preflight.
///
/// One exception: ARM's parameterless actions (ping, listEvents, listCredentials,
/// getCallbackConfig…), which the Azure SDK POSTs with no body and no Content-Type. Such a
/// POST is accepted when it carries no `Origin` of another site: a browser can also send a
/// body-less POST without a preflight, but it always names the page's origin on a cross-origin
/// POST, while the SDK, curl and Wharf's CLI send no `Origin` at all.
fn refuse_cross_site(req: &Request) -> Option<Response> {
    let path = req.uri().path();
    let management =
        !path.starts_with("/v2") && !path.starts_with("/oauth2/") && !path.starts_with("/acr/");
    if !management || !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return None;
    }
    let content_type = req.headers().get(header::CONTENT_TYPE);
    let json = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if json {
        return None;
    }
    let bodyless_action = *req.method() == Method::POST
        && content_type.is_none()
        && axum::body::HttpBody::size_hint(req.body()).exact() == Some(0)
        && same_origin_or_none(req);
    (!bodyless_action).then(|| {
        crate::mgmt::arm_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "management calls must be sent with Content-Type: application/json (an action without parameters may instead be a POST with no body and no Content-Type)",
        )
    })
}

/// Whether a request names no `Origin`, or the origin of the host it was sent to.
fn same_origin_or_none(req: &Request) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    // `Origin: null` (a sandboxed or opaque origin) is another site.
    let host = request_host(req);
    origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .is_some_and(|(_, authority)| !host.is_empty() && authority.eq_ignore_ascii_case(&host))
}

fn forbidden_host() -> Response {
    let body = json!({"errors": [{
        "code": "DENIED",
        "message": "this registry runs without access control and answers only requests addressed to a loopback host (localhost, 127.0.0.1, [::1]); turn access control on to serve other hosts",
        "detail": null,
    }]});
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

struct Challenge<'a> {
    host: &'a str,
    tls: bool,
    service: &'a str,
    needs: &'a [Need],
    management: bool,
}

impl Challenge<'_> {
    /// ACR's answer to a refused request (acr-auth.md §4.1, §4.9).
    fn refuse(&self, d: Denied) -> Response {
        let realm = format!(
            "{}://{}/oauth2/token",
            if self.tls { "https" } else { "http" },
            self.host
        );
        // The first need that names a scope; `GET /v2/` names none.
        let need = self
            .needs
            .iter()
            .find(|n| n.challenge_scope().is_some())
            .unwrap_or(&Need::Authenticated);
        if d == Denied::TooManyAttempts {
            const MESSAGE: &str = "too many failed logins from this address; try again in a minute";
            // Management calls get ARM's error shape, which carries the `wharf-api` header the
            // CLI needs to trust the answer.
            let mut r = if self.management {
                crate::mgmt::arm_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", MESSAGE)
            } else {
                let body = json!({"errors": [{"code": "TOOMANYREQUESTS", "message": MESSAGE, "detail": null}]});
                (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
            };
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            return r;
        }
        let mut www = format!("Bearer realm=\"{}\",service=\"{}\"", realm, self.service);
        if let Some(scope) = need.challenge_scope() {
            www.push_str(&format!(",scope=\"{scope}\""));
        }
        if d == Denied::InsufficientScope {
            www.push_str(",error=\"insufficient_scope\"");
        }
        let mut r = if self.management {
            crate::mgmt::arm_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "the management API needs the management credential (Bearer) or the admin user",
            )
        } else {
            let detail = match need {
                Need::Repo(name, action) => {
                    json!([{"Type": "repository", "Name": name, "Action": action.as_str()}])
                }
                Need::Catalog => json!([{"Type": "registry", "Name": "catalog", "Action": "*"}]),
                _ => json!(null),
            };
            let body = json!({"errors": [{
                "code": "UNAUTHORIZED",
                "message": "authentication required, visit https://aka.ms/acr/authorization for more information.",
                "detail": detail,
            }]});
            let mut r = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            // Docker recognises a v2 registry by this header, on 401s too.
            r.headers_mut().insert(
                header::HeaderName::from_static("docker-distribution-api-version"),
                HeaderValue::from_static("registry/2.0"),
            );
            r
        };
        if let Ok(v) = HeaderValue::from_str(&www) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "a.localhost:1",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "",
            "example.com",
            "10.0.0.1:5000",
            "localhost.evil.com",
            "[::2]:1",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn paths_are_percent_decoded_before_they_are_authorized() {
        let d = "a".repeat(64);
        let path = format!("/v2/library%2Fhello/manifests/sha256%3A{d}");
        let n = needs(&Method::GET, &path, None);
        assert!(matches!(&n.unwrap()[0], Need::Repo(r, RepoAction::Pull) if r == "library/hello"));
        let n = needs(&Method::DELETE, "/acr/v1/a%2Fb", None).unwrap();
        assert_eq!(n, vec![Need::Repo("a/b".into(), RepoAction::Delete)]);
        let n = needs(
            &Method::POST,
            "/v2/t/blobs/uploads/",
            Some("mount=sha256:x&from=Src%2Fa"),
        )
        .unwrap();
        assert_eq!(n[1], Need::Repo("src/a".into(), RepoAction::Pull));
        assert_eq!(needs(&Method::POST, "/oauth2/token", None), None);
    }
}

/// Property tests of what the middleware reads from a request before anything is checked: the
/// `Authorization` header, Basic credentials and percent-encoded paths.
#[cfg(test)]
mod proptests {
    use base64::engine::general_purpose::STANDARD;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    use proptest::prelude::*;

    use super::*;

    const NAME: &str = r"[a-z0-9]{1,6}((\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}(/[a-z0-9]{1,6}((\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}){0,2}";

    fn authorization(value: &[u8]) -> Option<HeaderMap> {
        let v = HeaderValue::from_bytes(value).ok()?;
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v);
        Some(h)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_authorization_headers_never_panic(v in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Some(h) = authorization(&v)
                && let Ok(Some((_, rest))) = parse_authorization(&h)
            {
                let _ = basic_pair(&rest);
            }
        }

        #[test]
        fn schemes_are_split_off_and_lower_cased(
            scheme in "[A-Za-z]{1,10}",
            credentials in "[!-~]([ !-~]{0,30}[!-~])?|",
            gap in " {1,3}",
            tail in " {0,2}",
        ) {
            let h = authorization(format!("{scheme}{gap}{credentials}{tail}").as_bytes()).unwrap();
            let got = parse_authorization(&h).unwrap();
            prop_assert_eq!(got, Some((scheme.to_ascii_lowercase(), credentials)));
        }

        #[test]
        fn headers_without_a_space_are_malformed(v in "[!-~]{0,40}") {
            let h = authorization(v.as_bytes()).unwrap();
            prop_assert!(parse_authorization(&h).is_err());
        }

        #[test]
        fn arbitrary_basic_payloads_never_panic(s in any::<String>(), b64 in "[A-Za-z0-9+/=]{0,24}") {
            let _ = basic_pair(&s);
            let _ = basic_pair(&b64);
        }

        /// The user cannot contain `:` (the first one ends it); the password can.
        #[test]
        fn basic_credentials_round_trip(user in "[^:]{0,16}", password in any::<String>()) {
            let b64 = STANDARD.encode(format!("{user}:{password}"));
            let h = authorization(format!("Basic {b64}").as_bytes()).unwrap();
            let (scheme, rest) = parse_authorization(&h).unwrap().unwrap();
            prop_assert_eq!(scheme, "basic");
            prop_assert_eq!(basic_pair(&rest), Some((user, password)));
        }

        #[test]
        fn decode_never_panics(s in any::<String>(), near in r"(%[0-9a-fA-F]{0,2}|%|[a-z/:]|é){0,12}") {
            let _ = decode(&s);
            let _ = decode(&near);
        }

        #[test]
        fn decode_inverts_percent_encoding(s in any::<String>()) {
            let encoded = utf8_percent_encode(&s, NON_ALPHANUMERIC).to_string();
            prop_assert_eq!(decode(&encoded), s);
        }

        /// The Azure SDK's `a%2Fb` and `sha256%3A…` name the same repository as the plain path.
        #[test]
        fn encoded_paths_need_what_plain_paths_need(
            name in NAME,
            hex in "[a-f0-9]{64}",
            tag in r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}",
        ) {
            let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
            let digest = format!("sha256:{hex}");
            let want = |a| Some(vec![Need::Repo(name.clone(), a)]);
            let manifest = format!("/v2/{}/manifests/{}", enc(&name), enc(&tag));
            prop_assert_eq!(needs(&Method::GET, &manifest, None), want(RepoAction::Pull));
            prop_assert_eq!(needs(&Method::PUT, &manifest, None), want(RepoAction::Push));
            let blob = format!("/v2/{}/blobs/{}", enc(&name), enc(&digest));
            prop_assert_eq!(needs(&Method::DELETE, &blob, None), want(RepoAction::Delete));
            let acr = format!("/acr/v1/{}", enc(&name));
            prop_assert_eq!(needs(&Method::PATCH, &acr, None), want(RepoAction::MetadataWrite));
        }

        /// The Host guard of the open mode: loopback in every spelling, and nothing that only
        /// starts like loopback.
        #[test]
        fn loopback_hosts_are_recognised(
            host in prop_oneof![
                "localhost|LocalHost|[a-z0-9-]{1,8}\\.localhost".prop_map(String::from),
                (0..=255u8, 0..=255u8, 0..=255u8).prop_map(|(a, b, c)| format!("127.{a}.{b}.{c}")),
            ],
            port in proptest::option::of(any::<u16>()),
            v6_port in proptest::option::of(any::<u16>()),
            domain in "[a-z]{1,8}\\.(com|io|nip\\.io)",
            junk in any::<String>(),
        ) {
            let with_port = |h: &str, p: Option<u16>| match p {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            };
            prop_assert!(is_loopback_host(&with_port(&host, port)));
            prop_assert!(is_loopback_host(&with_port("[::1]", v6_port)));
            let lookalike = format!("{host}.{domain}");
            prop_assert!(!is_loopback_host(&with_port(&lookalike, port)));
            let _ = is_loopback_host(&junk);
        }

        #[test]
        fn arbitrary_routes_never_panic(
            path in prop_oneof![any::<String>(), r"/(v2|acr/v1|oauth2)/[a-z%0-9/:._-]{0,30}"],
            query in proptest::option::of(prop_oneof![any::<String>(), r"(from|mount)=[a-zA-Z%0-9/]{0,12}(&[a-z]{0,4}=?[a-z%]{0,4}){0,2}"]),
            method in prop::sample::select(vec![Method::GET, Method::HEAD, Method::PUT, Method::POST, Method::PATCH, Method::DELETE]),
        ) {
            let _ = needs(&method, &path, query.as_deref());
        }
    }
}
