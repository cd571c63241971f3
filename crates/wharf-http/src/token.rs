//! The token server (acr-auth.md §4): `GET /oauth2/token` (Basic or anonymous),
//! `POST /oauth2/token` (password and refresh-token grants, form-encoded) and
//! `POST /oauth2/exchange` (the management credential stands in for an Entra token).
//! Scopes come repeated or space-joined; the grant is requested ∩ allowed.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, Limited};
use serde_json::{Value, json};
use wharf_auth::{AuthError, Credentials, Denied, Principal, ResourceScope};

use crate::AppState;
use crate::auth::{ClientAddr, basic_pair, parse_authorization, request_host};

/// Largest form a token request may send.
const MAX_FORM: usize = 64 * 1024;

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message, "detail": null}]});
    (status, axum::Json(body)).into_response()
}

fn refused(e: AuthError) -> Response {
    match e {
        AuthError::Denied(Denied::TooManyAttempts) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            "too many failed logins from this address; try again in a minute",
        ),
        AuthError::Denied(_) => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required, visit https://aka.ms/acr/authorization for more information.",
        ),
        AuthError::Invalid(m) => error(StatusCode::BAD_REQUEST, "UNSUPPORTED", &m),
        other => crate::error::internal(&other).into_response(),
    }
}

fn pairs(s: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(s).into_owned().collect()
}

fn get<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn scopes(form: &[(String, String)]) -> Vec<ResourceScope> {
    wharf_auth::scope::parse_requested(
        form.iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    )
}

/// The principal for a token request in the open mode: everyone may do everything.
fn open_principal(app: &AppState) -> Option<Principal> {
    (!app.auth.enabled()).then_some(Principal::Admin)
}

fn access_response(
    app: &AppState,
    p: &Principal,
    requested: &[ResourceScope],
    service: &str,
    offline: bool,
) -> Response {
    let (token, expires_in) = match app.auth.issue_access(p, requested, service) {
        Ok(t) => t,
        Err(e) => return refused(e),
    };
    let mut body = json!({
        // ACR answers `access_token`; containers/image prefers `token`: both, same value.
        "access_token": token,
        "token": token,
        "expires_in": expires_in,
        "issued_at": wharf_core::format_timestamp(&chrono::Utc::now()),
    });
    if offline && !matches!(p, Principal::Anonymous) {
        match app.auth.issue_refresh(p, service) {
            Ok((r, _)) => body["refresh_token"] = Value::String(r),
            Err(e) => return refused(e),
        }
    }
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// `GET /oauth2/token?service=…&scope=…`, with Basic credentials or none.
pub async fn get_token(State(app): State<AppState>, req: Request) -> Response {
    let form = pairs(req.uri().query().unwrap_or("").as_bytes());
    let service = get(&form, "service")
        .map(str::to_owned)
        .unwrap_or_else(|| app.auth.service(&request_host(&req)));
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let principal = match open_principal(&app) {
        Some(p) => p,
        None => {
            let basic = match parse_authorization(req.headers()) {
                Ok(None) => None,
                Ok(Some((scheme, rest))) if scheme == "basic" => match basic_pair(&rest) {
                    Some(pair) => Some(pair),
                    None => return refused(AuthError::Denied(Denied::Unauthenticated)),
                },
                _ => return refused(AuthError::Denied(Denied::Unauthenticated)),
            };
            let creds = match &basic {
                Some((u, p)) => Credentials::Basic {
                    user: u,
                    password: p,
                },
                None => Credentials::None,
            };
            match authenticate(&app, creds, &service, client).await {
                Ok(p) => p,
                Err(e) => return refused(e),
            }
        }
    };
    let offline = get(&form, "offline_token") == Some("true");
    access_response(&app, &principal, &scopes(&form), &service, offline)
}

/// Anonymous token requests are served only while anonymous pull is on (acr-auth.md §4.10).
async fn authenticate(
    app: &AppState,
    creds: Credentials<'_>,
    service: &str,
    client: Option<std::net::IpAddr>,
) -> Result<Principal, AuthError> {
    let p = app.auth.authenticate(creds, service, client).await?;
    if matches!(p, Principal::Anonymous) && !app.auth.anonymous_pull() {
        return Err(AuthError::Denied(Denied::Unauthenticated));
    }
    Ok(p)
}

async fn read_form(
    req: Request,
) -> Result<(Vec<(String, String)>, Option<std::net::IpAddr>, String), Response> {
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let host = request_host(&req);
    let bytes: Bytes = match Limited::new(req.into_body(), MAX_FORM).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "the token request's form could not be read (at most 64 KiB)",
            ));
        }
    };
    Ok((pairs(&bytes), client, host))
}

/// `POST /oauth2/token`: `grant_type=password` (username and password, or neither for
/// anonymous) or `grant_type=refresh_token`.
pub async fn post_token(State(app): State<AppState>, req: Request) -> Response {
    let (form, client, host) = match read_form(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let service = get(&form, "service")
        .map(str::to_owned)
        .unwrap_or_else(|| app.auth.service(&host));
    let principal = match open_principal(&app) {
        Some(p) => p,
        None => {
            let r = match get(&form, "grant_type") {
                Some("password") => {
                    let creds = match (get(&form, "username"), get(&form, "password")) {
                        (Some(user), Some(password)) => Credentials::Basic { user, password },
                        (None, None) => Credentials::None,
                        _ => return refused(AuthError::Denied(Denied::Unauthenticated)),
                    };
                    authenticate(&app, creds, &service, client).await
                }
                Some("refresh_token") => match get(&form, "refresh_token") {
                    Some(t) => app.auth.from_refresh(t, &service, client).await,
                    None => Err(AuthError::Invalid("refresh_token: required".into())),
                },
                _ => Err(AuthError::Invalid(
                    "grant_type: must be password or refresh_token".into(),
                )),
            };
            match r {
                Ok(p) => p,
                Err(e) => return refused(e),
            }
        }
    };
    let offline = get(&form, "access_type") == Some("offline");
    access_response(&app, &principal, &scopes(&form), &service, offline)
}

/// `POST /oauth2/exchange`: `grant_type=access_token` with the management credential as
/// `access_token`; answers `{"refresh_token"}`.
pub async fn exchange(State(app): State<AppState>, req: Request) -> Response {
    let (form, client, host) = match read_form(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let service = get(&form, "service")
        .map(str::to_owned)
        .unwrap_or_else(|| app.auth.service(&host));
    if !matches!(
        get(&form, "grant_type"),
        Some("access_token" | "access_token_refresh_token")
    ) {
        return refused(AuthError::Invalid(
            "grant_type: must be access_token".into(),
        ));
    }
    let principal = match open_principal(&app) {
        Some(p) => p,
        None => match get(&form, "access_token") {
            Some(t) => match app.auth.exchange(t, client) {
                Ok(p) => p,
                Err(e) => return refused(e),
            },
            None => return refused(AuthError::Denied(Denied::Unauthenticated)),
        },
    };
    match app.auth.issue_refresh(&principal, &service) {
        Ok((t, _)) => (StatusCode::OK, axum::Json(json!({"refresh_token": t}))).into_response(),
        Err(e) => refused(e),
    }
}
