//! HTTP routes. Each role is mounted under its name (`/verifier`, `/tenant`), so one process
//! can serve both and a split deployment serves one; the paths below a role are the
//! protocol's (`/v1/...`) and the admin API (`/admin/v1/...`, bearer token).
//!
//! `/healthz`, `/readyz` and `/metrics` need no token: they say whether the process and its
//! databases answer and how many attestations went which way, never a secret or an agent
//! id. Every request carries an id (`x-request-id`, the client's when it is well formed,
//! else a new one): it is in the span of the request's log lines and in every answer, so an
//! agent's console line leads to the server's log.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use subtle::ConstantTimeEq;
use tracing::Instrument;
use verifier_core::proto::v1::{self, AgentId, ErrorCode, Validate};
use zeroize::Zeroizing;

use crate::error::{ApiError, Charge};
use crate::net::body::BoundedBody;
use crate::net::{Edge, Peer};
use crate::role::provider::{LinkError, ProviderService, RequestError};
use crate::role::{unix_now, RoleService};

/// A bearer token (hex text as stored in its file): the admin token, or the provider
/// role's host-agent token.
#[derive(Clone)]
pub struct AdminToken(Arc<Zeroizing<String>>);

impl AdminToken {
    /// Wraps the token text.
    pub fn new(token: Zeroizing<String>) -> Self {
        Self(Arc::new(token))
    }

    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.check_for(headers, "admin API")
    }

    /// Checks the bearer token of `what` (named in the refusal).
    fn check_for(&self, headers: &HeaderMap, what: &'static str) -> Result<(), ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if bool::from(presented.as_bytes().ct_eq(self.0.as_bytes())) && !presented.is_empty() {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                format!("{what}: missing or wrong bearer token"),
            ))
        }
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Clone)]
struct RoleState {
    svc: Arc<RoleService>,
    token: AdminToken,
    max_body: usize,
    edge: Arc<Edge>,
}

/// Largest body of `register`, `activate` and `challenge`: an EK public area with its
/// certificate and an AK (a few KiB) with room to spare. Only `attest` (event log, IMA
/// list) and the admin API may send up to `max_body_bytes`.
pub const AGENT_SMALL_BODY: usize = 64 * 1024;

/// The whole application: health check plus one sub-router per role. `edge` bounds the
/// bodies and holds the unauthenticated-failure throttle; its counters are on `/metrics`.
pub fn router(
    roles: &[Arc<RoleService>],
    token: AdminToken,
    max_body: usize,
    edge: Arc<Edge>,
) -> Router {
    let ready_roles: Vec<Arc<RoleService>> = roles.to_vec();
    let metric_roles: Vec<Arc<RoleService>> = roles.to_vec();
    let metric_edge = edge.clone();
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let roles = ready_roles.clone();
                async move { readyz(roles).await }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let roles = metric_roles.clone();
                let edge = metric_edge.clone();
                async move { metrics(&roles, &edge) }
            }),
        );
    for svc in roles {
        let state = RoleState {
            svc: svc.clone(),
            token: token.clone(),
            max_body,
            edge: edge.clone(),
        };
        app = app.nest(&format!("/{}", svc.role().as_str()), role_router(state));
    }
    app.layer(axum::middleware::from_fn(request_id))
}

/// The header carrying a request's id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted client request id.
pub const MAX_REQUEST_ID: usize = 64;

/// A client's id is kept only when it cannot forge log structure: short, and only
/// `[A-Za-z0-9_-]`.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// 96 random bits, hex; a counter stands in if the RNG fails (ids are for logs, not
/// security).
fn new_request_id() -> String {
    let mut b = [0u8; 12];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        return format!(
            "local-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
    }
    hex::encode(b)
}

/// Puts the request id in a span around the request and in the answer, errors included.
pub(crate) async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_request_id(s))
        .map_or_else(new_request_id, str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path()
    );
    let mut resp = async move {
        let resp = next.run(req).await;
        tracing::debug!(status = resp.status().as_u16(), "answered");
        resp
    }
    .instrument(span)
    .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

fn metrics(roles: &[Arc<RoleService>], edge: &Edge) -> Response {
    let all: Vec<_> = roles.iter().map(|r| (r.role(), r.metrics())).collect();
    let db: Vec<_> = roles
        .iter()
        .map(|r| (r.role(), r.store().group_commit_stats()))
        .collect();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&all)
            + &crate::metrics::render_group_commit(&db)
            + &edge.metrics.render(),
    )
        .into_response()
}

fn role_router(state: RoleState) -> Router {
    Router::new()
        .route(v1::path::REGISTER, post(register))
        .route(v1::path::ACTIVATE, post(activate))
        .route(v1::path::REGISTER_IAK, post(register_iak))
        .route(v1::path::REGISTER_SNP_VTPM, post(register_snp_vtpm))
        .route(v1::path::CHALLENGE, post(challenge))
        .route(v1::path::ATTEST, post(attest))
        .route(v1::PENDING_PATH, post(pending_submit))
        .route(v1::DEPOSIT_NONCE_PATH, post(deposit_nonce))
        .route(v1::DEPOSIT_PATH, post(deposit))
        .route(v1::ADMIN_PENDING_PATH, get(pending_list))
        .route("/admin/v1/pending/{id}/decide", post(pending_decide))
        .route(v1::admin_path::ENROLLMENTS, get(list).post(enroll))
        .route("/admin/v1/enrollments/{agent_id}", get(show).delete(delete))
        .route("/admin/v1/enrollments/{agent_id}/rearm", post(rearm))
        .route("/admin/v1/enrollments/{agent_id}/revoke", post(revoke))
        .route("/admin/v1/enrollments/{agent_id}/unpin-ak", post(unpin_ak))
        .route(
            v1::admin_path::POLICIES,
            get(policy_list).post(policy_create),
        )
        .route(v1::admin_path::AUDIT, get(audit))
        .route(v1::admin_path::IAK_BINDINGS, post(bind_iak))
        .route("/admin/v1/policies/{name}", get(policy_show))
        .route("/admin/v1/policies/{name}/versions", post(policy_update))
        .route("/admin/v1/policies/{name}/diff", get(policy_diff))
        .route("/admin/v1/policies/{name}/apply", post(policy_apply))
        .route("/admin/v1/policies/{name}/retire", post(policy_retire))
        .with_state(state)
}

/// Ready when every role's database answers: a load balancer takes a replica out while its
/// database is unreachable.
async fn readyz(roles: Vec<Arc<RoleService>>) -> Response {
    let r = blocking(move || {
        for svc in &roles {
            svc.store().ping().map_err(ApiError::internal)?;
        }
        Ok(())
    })
    .await;
    match r {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response(),
    }
}

/// Runs blocking work (SQLite, crypto) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    // The request's span follows the work, so its log lines carry the request id.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(ApiError::internal)?
}

fn json<T: Serialize + Validate>(status: StatusCode, msg: &T) -> Response {
    match v1::encode(msg) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

fn raw_json(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Reads a body (at most `limit` bytes, under the edge's rate and budget), decodes it and
/// runs `f` on the blocking pool; the common shape of every agent and admin POST.
async fn handle<Req, Resp>(
    state: &RoleState,
    peer: Option<std::net::IpAddr>,
    body: Body,
    limit: usize,
    f: impl FnOnce(&RoleService, &Req, &[u8], i64) -> Result<Resp, ApiError> + Send + 'static,
) -> Result<Resp, ApiError>
where
    Req: DeserializeOwned + Validate + Send + 'static,
    Resp: Send + 'static,
{
    let bytes: BoundedBody = crate::net::body::read(&state.edge, peer, body, limit).await?;
    let svc = state.svc.clone();
    blocking(move || {
        let req: Req = v1::decode(&bytes)?;
        f(&svc, &req, &bytes, unix_now())
    })
    .await
}

/// An agent route: refused at once while the source (or all sources) has spent its budget
/// of unauthenticated failures; otherwise [`handle`], and a refusal nobody authenticated
/// is charged to the source (never to the agent it names).
async fn agent_call<Req, Resp>(
    state: &RoleState,
    peer: Option<Extension<Peer>>,
    body: Body,
    limit: usize,
    f: impl FnOnce(&RoleService, &Req, &[u8], i64) -> Result<Resp, ApiError> + Send + 'static,
) -> Result<Resp, ApiError>
where
    Req: DeserializeOwned + Validate + Send + 'static,
    Resp: Send + 'static,
{
    let ip = peer.map(|Extension(Peer(ip))| ip);
    let throttle = &state.edge.throttle;
    if let Some(ip) = ip {
        if let Err(spent) = throttle.check(ip) {
            state.edge.metrics.throttled();
            tracing::debug!(%ip, ?spent, "refused: unauthenticated-failure budget spent");
            return Err(crate::net::throttle::refusal(spent));
        }
    }
    let r = handle(state, ip, body, limit, f).await;
    if let (Some(ip), Err(e)) = (ip, &r) {
        if e.charge == Charge::Source {
            throttle.failed(ip);
        }
    }
    r
}

/// An agent route answering JSON: [`agent_call`], then the answer or the refusal.
async fn agent_json<Req, Resp>(
    state: &RoleState,
    peer: Option<Extension<Peer>>,
    body: Body,
    f: impl FnOnce(&RoleService, &Req, i64) -> Result<Resp, ApiError> + Send + 'static,
) -> Response
where
    Req: DeserializeOwned + Validate + Send + 'static,
    Resp: Serialize + Validate + Send + 'static,
{
    let r = agent_call(state, peer, body, AGENT_SMALL_BODY, |svc, req, _, now| {
        f(svc, req, now)
    });
    match r.await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

async fn register(
    State(s): State<RoleState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    agent_json(&s, peer, body, RoleService::register).await
}

/// Registration of a confidential VM's vTPM (evidence kind `azure-snp-vtpm`).
async fn register_snp_vtpm(
    State(s): State<RoleState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    agent_json(&s, peer, body, RoleService::register_snp_vtpm).await
}

async fn activate(
    State(s): State<RoleState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    agent_json(&s, peer, body, RoleService::activate).await
}

async fn register_iak(
    State(s): State<RoleState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    agent_json(&s, peer, body, RoleService::register_iak).await
}

async fn challenge(
    State(s): State<RoleState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    agent_json(&s, peer, body, RoleService::challenge).await
}

/// A machine's own request for a policy change (authenticated by its AK's quote over it).
/// A pending change carries the images' Authenticode signatures (up to 6 of 16 KiB, base64
/// in JSON) beside its digests.
const PENDING_BODY: usize = 192 * 1024;

async fn pending_submit(
    State(s): State<RoleState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    let r = agent_call(&s, peer, body, PENDING_BODY, |svc, req, _, now| {
        svc.submit_pending(req, now)
    });
    match r.await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

async fn deposit_nonce(
    State(s): State<RoleState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    agent_json(&s, peer, body, RoleService::deposit_nonce).await
}

/// A deposit carries the payload ciphertext (up to 64 KiB, base64 in JSON).
const DEPOSIT_BODY: usize = 192 * 1024;

async fn deposit(
    State(s): State<RoleState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    let r = agent_call(&s, peer, body, DEPOSIT_BODY, |svc, req, _, now| {
        svc.deposit(req, now)
    });
    match r.await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

async fn pending_list(State(s): State<RoleState>, headers: HeaderMap) -> Response {
    admin_get(s, &headers, |svc| svc.list_pending()).await
}

async fn pending_decide(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    admin_post(&s, &headers, body, StatusCode::OK, move |svc, req, now| {
        svc.decide_pending(&id, req, now)
    })
    .await
}

async fn attest(State(s): State<RoleState>, peer: Option<Extension<Peer>>, body: Body) -> Response {
    let started = Instant::now();
    let limit = s.max_body;
    let r = agent_call(&s, peer, body, limit, |svc, req, _, now| {
        svc.attest(req, now)
    })
    .await;
    let m = s.svc.metrics();
    m.observe_attest(started.elapsed());
    match r {
        Ok(r) => {
            m.attest_released();
            raw_json(r)
        }
        Err(e) => {
            m.attest_refused(e.code);
            e.into_response()
        }
    }
}

/// An admin POST: bearer token first, then [`handle`], answering `status` with the result.
async fn admin_post<Req, Resp>(
    s: &RoleState,
    headers: &HeaderMap,
    body: Body,
    status: StatusCode,
    f: impl FnOnce(&RoleService, &Req, i64) -> Result<Resp, ApiError> + Send + 'static,
) -> Response
where
    Req: DeserializeOwned + Validate + Send + 'static,
    Resp: Serialize + Validate + Send + 'static,
{
    if let Err(e) = s.token.check(headers) {
        return e.into_response();
    }
    // Admin calls carry the token: their bodies are not counted in a source's share.
    match handle(s, None, body, s.max_body, move |svc, req, _, now| {
        f(svc, req, now)
    })
    .await
    {
        Ok(r) => json(status, &r),
        Err(e) => e.into_response(),
    }
}

async fn enroll(State(s): State<RoleState>, headers: HeaderMap, body: Body) -> Response {
    admin_post(&s, &headers, body, StatusCode::CREATED, |svc, req, now| {
        svc.enroll(req, now)
    })
    .await
}

async fn bind_iak(State(s): State<RoleState>, headers: HeaderMap, body: Body) -> Response {
    admin_post(&s, &headers, body, StatusCode::OK, |svc, req, now| {
        svc.bind_iak(req, now)
    })
    .await
}

async fn list(State(s): State<RoleState>, headers: HeaderMap) -> Response {
    if let Err(e) = s.token.check(&headers) {
        return e.into_response();
    }
    let svc = s.svc.clone();
    match blocking(move || svc.list()).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

/// Runs an admin action on one agent (path parameter checked first).
async fn on_agent<T: Serialize + Validate + Send + 'static>(
    s: RoleState,
    headers: &HeaderMap,
    agent_id: String,
    f: impl FnOnce(&RoleService, &str, i64) -> Result<T, ApiError> + Send + 'static,
) -> Response {
    if let Err(e) = s.token.check(headers) {
        return e.into_response();
    }
    let agent_id = match AgentId::try_from(agent_id) {
        Ok(a) => a,
        Err(e) => return ApiError::new(ErrorCode::MalformedRequest, e).into_response(),
    };
    let svc = s.svc.clone();
    match blocking(move || f(&svc, agent_id.as_str(), unix_now())).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

async fn show(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> Response {
    on_agent(s, &headers, agent_id, |svc, a, _| svc.show(a)).await
}

async fn rearm(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> Response {
    on_agent(s, &headers, agent_id, |svc, a, now| svc.rearm(a, now)).await
}

async fn unpin_ak(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> Response {
    on_agent(s, &headers, agent_id, |svc, a, now| svc.unpin_ak(a, now)).await
}

async fn revoke(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> Response {
    on_agent(s, &headers, agent_id, |svc, a, now| svc.revoke(a, now)).await
}

async fn delete(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> Response {
    if let Err(e) = s.token.check(&headers) {
        return e.into_response();
    }
    let agent_id = match AgentId::try_from(agent_id) {
        Ok(a) => a,
        Err(e) => return ApiError::new(ErrorCode::MalformedRequest, e).into_response(),
    };
    let svc = s.svc.clone();
    match blocking(move || svc.delete(agent_id.as_str(), crate::role::unix_now())).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `?version=N`, `?from=A&to=B`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: Option<u32>,
    from: Option<u32>,
    to: Option<u32>,
}

/// `?after=SEQ&limit=N&agent=ID` of the audit trail.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<i64>,
    limit: Option<u32>,
    agent: Option<String>,
}

async fn audit(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    admin_get(s, &headers, move |svc| {
        svc.audit(
            q.after.unwrap_or(0),
            q.limit.unwrap_or(crate::store::AUDIT_PAGE),
            q.agent.as_deref(),
        )
    })
    .await
}

/// Runs an admin action that needs no body (token checked first).
async fn admin_get<T: Serialize + Validate + Send + 'static>(
    s: RoleState,
    headers: &HeaderMap,
    f: impl FnOnce(&RoleService) -> Result<T, ApiError> + Send + 'static,
) -> Response {
    if let Err(e) = s.token.check(headers) {
        return e.into_response();
    }
    let svc = s.svc.clone();
    match blocking(move || f(&svc)).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

async fn policy_list(State(s): State<RoleState>, headers: HeaderMap) -> Response {
    admin_get(s, &headers, |svc| svc.list_policies()).await
}

async fn policy_show(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Response {
    admin_get(s, &headers, move |svc| svc.show_policy(&name, q.version)).await
}

async fn policy_diff(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Response {
    admin_get(s, &headers, move |svc| {
        let from = q.from.ok_or_else(|| {
            ApiError::new(ErrorCode::MalformedRequest, "diff needs ?from=VERSION")
        })?;
        svc.diff_policy(&name, from, q.to)
    })
    .await
}

async fn policy_create(State(s): State<RoleState>, headers: HeaderMap, body: Body) -> Response {
    admin_post(&s, &headers, body, StatusCode::CREATED, |svc, req, now| {
        svc.create_policy(req, now)
    })
    .await
}

async fn policy_update(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    admin_post(
        &s,
        &headers,
        body,
        StatusCode::CREATED,
        move |svc, req, now| svc.update_policy(&name, req, now),
    )
    .await
}

async fn policy_apply(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    admin_post(&s, &headers, body, StatusCode::OK, move |svc, req, now| {
        svc.apply_policy(&name, req, now)
    })
    .await
}

async fn policy_retire(
    State(s): State<RoleState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    admin_post(&s, &headers, body, StatusCode::OK, move |svc, req, now| {
        svc.retire_policy(&name, req, now)
    })
    .await
}

#[derive(Clone)]
struct ProviderState {
    svc: Arc<ProviderService>,
    host_token: AdminToken,
    max_body: usize,
    edge: Arc<Edge>,
}

/// The provider role's routes, at the root (the same paths as `initrd-agent provider
/// --listen`, so a requester works with either): requesters' `POST /v1/provider/quote` and
/// `GET /v1/provider/ak` (no credentials: answers are self-authenticating), and the host
/// agent's hello, long poll and quote post (host bearer token).
pub fn provider_router(
    svc: Arc<ProviderService>,
    host_token: AdminToken,
    max_body: usize,
    edge: Arc<Edge>,
) -> Router {
    let state = ProviderState {
        svc,
        host_token,
        max_body,
        edge,
    };
    Router::new()
        .route(v1::HOST_QUOTE_PATH, post(provider_quote))
        .route(v1::HOST_AK_PATH, get(provider_ak))
        .route(v1::HOST_HELLO_PATH, post(host_hello))
        .route(v1::HOST_NEXT_PATH, post(host_next))
        .route(v1::HOST_RESULT_PATH, post(host_result))
        .with_state(state)
}

/// A refusal with an explicit status (the provider's 502/503/504 have no code of their own).
fn refuse(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let mut r = ApiError::new(code, message).into_response();
    *r.status_mut() = status;
    r
}

fn request_refusal(e: RequestError) -> Response {
    match e {
        RequestError::Busy => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RateLimited,
            "provider busy, retry later",
        ),
        RequestError::SourceBusy(max) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RateLimited,
            format!("this address has {max} requests waiting already (its share); retry later"),
        ),
        RequestError::NoHost => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RateLimited,
            "no host agent is connected to this provider; retry later",
        ),
        RequestError::Timeout(m) => refuse(StatusCode::GATEWAY_TIMEOUT, ErrorCode::Internal, m),
        RequestError::BadHostQuote(m) => refuse(
            StatusCode::BAD_GATEWAY,
            ErrorCode::Internal,
            format!("this batch's host quote failed the provider's verification: {m}"),
        ),
        RequestError::Internal(m) => ApiError::internal(m).into_response(),
    }
}

fn link_refusal(e: &LinkError) -> Response {
    // The link's failures mapped once, exhaustively: the code from the evidence check that
    // failed (the same codes the attest path gives), the status from the code's class.
    let (status, code) = match e {
        LinkError::UnknownSession => (StatusCode::NOT_FOUND, ErrorCode::UnknownAgent),
        LinkError::UnknownJob => (StatusCode::NOT_FOUND, ErrorCode::UnknownChallenge),
        LinkError::Ak(_) => (StatusCode::FORBIDDEN, ErrorCode::AkNotAcceptable),
        LinkError::EventLog(_) => (StatusCode::BAD_REQUEST, ErrorCode::EventLogMismatch),
        LinkError::Pcrs(_) => (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest),
        LinkError::Quote(q) => (StatusCode::FORBIDDEN, q.code()),
        LinkError::NoHost | LinkError::Timeout(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::RateLimited)
        }
        LinkError::Rng => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
    };
    refuse(status, code, e.to_string())
}

async fn provider_quote(
    State(p): State<ProviderState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    // A HostQuoteRequest is about 60 bytes.
    let ip = peer.as_ref().map(|Extension(Peer(ip))| *ip);
    let bytes = match crate::net::body::read(&p.edge, ip, body, 4096).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let nonce = match v1::decode::<v1::HostQuoteRequest>(&bytes).and_then(|r| r.nonce()) {
        Ok(n) => n,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match p.svc.quote(nonce, ip).await {
        Ok(body) => raw_json(body),
        Err(e) => request_refusal(e),
    }
}

async fn provider_ak(State(p): State<ProviderState>) -> Response {
    match p.svc.ak() {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => request_refusal(e),
    }
}

/// Token, body, decode and `f` on the blocking pool (event logs are parsed, quotes
/// verified); the common shape of the host's posts.
async fn host_call<Req, T>(
    p: &ProviderState,
    headers: &HeaderMap,
    body: Body,
    f: impl FnOnce(&ProviderService, &Req) -> Result<T, LinkError> + Send + 'static,
) -> Result<T, Response>
where
    Req: DeserializeOwned + Validate + Send + 'static,
    T: Send + 'static,
{
    p.host_token
        .check_for(headers, "provider host API")
        .map_err(IntoResponse::into_response)?;
    let bytes = crate::net::body::read(&p.edge, None, body, p.max_body)
        .await
        .map_err(IntoResponse::into_response)?;
    let svc = p.svc.clone();
    let r = blocking(move || {
        let req: Req = v1::decode(&bytes)?;
        Ok(f(&svc, &req))
    })
    .await
    .map_err(IntoResponse::into_response)?;
    r.map_err(|e| link_refusal(&e))
}

async fn host_hello(State(p): State<ProviderState>, headers: HeaderMap, body: Body) -> Response {
    match host_call(&p, &headers, body, |svc, req| svc.hello(req)).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(r) => r,
    }
}

async fn host_next(State(p): State<ProviderState>, headers: HeaderMap, body: Body) -> Response {
    let req = match host_call(&p, &headers, body, |_, req: &v1::HostNextRequest| {
        Ok(req.clone())
    })
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    match p.svc.next(&req.session_id).await {
        Ok(Some(job)) => json(StatusCode::OK, &job),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => link_refusal(&e),
    }
}

async fn host_result(State(p): State<ProviderState>, headers: HeaderMap, body: Body) -> Response {
    match host_call(&p, &headers, body, |svc, req| svc.post_quote(req)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}
