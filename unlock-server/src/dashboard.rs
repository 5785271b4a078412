//! The operator dashboard: one read-only, server-rendered HTML page (`GET /dashboard`)
//! showing every role this process serves: its machines and their state (armed, released
//! this boot, boot TERMINATED, TERMINATED, revoked, locked out by the failed-attempt limit),
//! their last attestations with the refusal in words, the policy version each machine is on
//! against the latest, releases and refusals per hour over the last 24 h as an inline SVG
//! chart, and the live limits of the edge (connections, body memory, throttled sources).
//!
//! No JavaScript, no stylesheet or font from elsewhere, no image but the inline SVG: the page
//! works on an air-gapped operator network, and its `Content-Security-Policy` forbids every
//! script, so text that got past the escaping would still not run. Everything that comes from
//! a database or an agent (agent ids, reasons, policy names) is HTML-escaped by [`esc`].
//! Nothing secret is read: no share, payload, key or token reaches the page.
//!
//! # Access
//!
//! The admin token (`Authorization: Bearer`), or the separate read-only token
//! `<state-dir>/dashboard.token` (created on first start, mode 0600, like `admin.token`),
//! either as `Authorization: Bearer` or as the password of HTTP Basic authentication (any
//! user name). Basic rather than a `?token=` link that sets a cookie: the browser asks for it
//! itself and resends it on reload, so the token never appears in a URL (browser history,
//! proxy and server logs, `Referer`), there is no session cookie to protect or expire, and
//! the page stays a plain GET with no state on the server. The admin token is accepted only as
//! a bearer header: never from a query string, never by Basic (a browser keeps Basic
//! credentials for the session, and the admin token can change enrollments). The credential
//! check is the first thing done, in constant time and before any database read, so a
//! stranger's requests cost one comparison.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::http::{blocking, AdminToken};
use crate::net::Edge;
use crate::role::{unix_now, RoleService, FAILURE_WINDOW_SECS, MAX_CONSECUTIVE_FAILURES};
use crate::secrets::{load_or_create_hex, SecretFileError};
use crate::store::{
    Attempt, AttemptBucket, Enrollment, EnrollmentState, PolicySummaryRow, Session, SessionState,
};

/// The dashboard's path.
pub const PATH: &str = "/dashboard";

/// File name of the read-only token in the state directory.
pub const TOKEN_FILE: &str = "dashboard.token";

/// Machines listed per role; a larger fleet is summarised by count (each listed machine
/// costs a few indexed reads).
pub const MAX_MACHINES: usize = 500;

/// Attestations shown per machine.
pub const ATTEMPTS_SHOWN: u32 = 3;

/// Hours in the chart, and the width of one bar.
const CHART_HOURS: i64 = 24;
const HOUR: i64 = 3600;

/// The read-only token: lets its holder see the dashboard, nothing else.
#[derive(Clone)]
pub struct ReadToken(Arc<Zeroizing<String>>);

impl ReadToken {
    /// Wraps the token text (hex, as stored).
    pub fn new(token: Zeroizing<String>) -> Self {
        Self(Arc::new(token))
    }

    /// Loads `<state_dir>/dashboard.token`, creating it (random, 0600) on first start;
    /// returns whether it was created.
    pub fn load_or_create(state_dir: &Path) -> Result<(Self, bool), SecretFileError> {
        let (bytes, created) = load_or_create_hex(&state_dir.join(TOKEN_FILE), 32)?;
        Ok((Self::new(Zeroizing::new(hex::encode(&*bytes))), created))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        !presented.is_empty() && bool::from(presented.ct_eq(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for ReadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadToken(<redacted>)")
    }
}

#[derive(Clone)]
struct DashState {
    roles: Vec<Arc<RoleService>>,
    admin: AdminToken,
    read: ReadToken,
    edge: Arc<Edge>,
}

/// The dashboard's route, to merge into the application.
pub fn router(
    roles: &[Arc<RoleService>],
    admin: AdminToken,
    read: ReadToken,
    edge: Arc<Edge>,
) -> Router {
    let state = DashState {
        roles: roles.to_vec(),
        admin,
        read,
        edge,
    };
    Router::new()
        .route(PATH, get(page))
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::http::request_id))
}

/// Longest `Authorization` header looked at (a Basic header with a 64-character token and a
/// short user name is under 120 bytes).
const MAX_AUTH_HEADER: usize = 512;

/// Whether `headers` carry the admin token as a bearer, or the read-only token as a bearer
/// or as a Basic password.
fn authorized(headers: &HeaderMap, admin: &AdminToken, read: &ReadToken) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    if value.len() > MAX_AUTH_HEADER {
        return false;
    }
    if let Some(bearer) = value.strip_prefix(b"Bearer ") {
        // Both compared, so the time taken does not tell which token was nearly right.
        let as_admin = admin.check(headers).is_ok();
        let as_read = read.matches(bearer);
        return as_admin | as_read;
    }
    if let Some(basic) = value.strip_prefix(b"Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic) else {
            return false;
        };
        let decoded = Zeroizing::new(decoded);
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        return decoded
            .get(colon + 1..)
            .is_some_and(|password| read.matches(password));
    }
    false
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Basic realm=\"unlock-server dashboard\", charset=\"UTF-8\"",
                ),
            ),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        "dashboard: missing or wrong token (the admin token as a bearer, or the read-only \
         token dashboard.token as a bearer or as the Basic password)\n",
    )
        .into_response()
}

async fn page(State(s): State<DashState>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &s.admin, &s.read) {
        return unauthorized();
    }
    let live = Live::read(&s.edge);
    let roles = s.roles.clone();
    let now = unix_now();
    match blocking(move || {
        roles
            .iter()
            .map(|r| gather(r, now))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    {
        Ok(views) => html(render(&views, &live, now)),
        Err(e) => e.into_response(),
    }
}

fn html(body: String) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                     form-action 'none'; frame-ancestors 'none'",
                ),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        body,
    )
        .into_response()
}

/// The edge's figures at the time of the request.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Connections open now.
    pub open_connections: u64,
    /// The connection cap.
    pub max_connections: usize,
    /// The per-source connection cap.
    pub max_connections_per_source: usize,
    /// Connections closed at accept (total cap, per-source cap).
    pub rejected: (u64, u64),
    /// Body bytes in memory now.
    pub inflight_body_bytes: u64,
    /// Their cap.
    pub max_inflight_body_bytes: usize,
    /// Sources whose unauthenticated-failure budget is spent now.
    pub sources_refused_now: usize,
    /// Sources the throttle remembers (owing or recently owing).
    pub sources_tracked: usize,
    /// Requests the throttle refused since start.
    pub throttled_total: u64,
}

impl Live {
    fn read(edge: &Edge) -> Self {
        Self {
            open_connections: edge.metrics.open(),
            max_connections: edge.limits.max_connections,
            max_connections_per_source: edge.limits.max_connections_per_source,
            rejected: edge.metrics.rejected_total(),
            inflight_body_bytes: edge.metrics.inflight_body_bytes(),
            max_inflight_body_bytes: edge.limits.max_inflight_body_bytes,
            sources_refused_now: edge.throttle.spent_sources(),
            sources_tracked: edge.throttle.tracked_sources(),
            throttled_total: edge.metrics.throttled_total(),
        }
    }
}

/// One role's part of the page.
#[derive(Debug, Clone)]
pub struct RoleView {
    /// `verifier` or `tenant`.
    pub role: &'static str,
    /// Machines, by agent id (at most [`MAX_MACHINES`]).
    pub machines: Vec<MachineView>,
    /// Enrollments in all (more than `machines.len()` when the list was cut).
    pub total_machines: usize,
    /// Named policies with their latest versions.
    pub policies: Vec<PolicySummaryRow>,
    /// Attempts per hour over the chart's span.
    pub buckets: Vec<AttemptBucket>,
}

/// One machine as the page shows it.
#[derive(Debug, Clone)]
pub struct MachineView {
    /// Agent id.
    pub agent_id: String,
    /// What the operator needs to know first.
    pub state: MachineState,
    /// The named policy version it is pinned to (`None`: an inline policy).
    pub policy_ref: Option<(String, u32)>,
    /// The latest version of that policy, when newer than the pinned one.
    pub newer_policy: Option<u32>,
    /// Boot sessions used, and the lifetime bound.
    pub boots: (u32, Option<u32>),
    /// Releases allowed per boot.
    pub max_attestations: u32,
    /// The last attestations, newest first.
    pub attempts: Vec<Attempt>,
}

/// A machine's state, most urgent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineState {
    /// Revoked by an operator.
    Revoked,
    /// `max_boots` used up: nothing more until re-armed.
    Terminated,
    /// The failed-attempt limit refuses it now.
    LockedOut {
        /// Refused attestations counted in the window.
        failures: u32,
    },
    /// Its last attestation was refused (and the limit has not locked it out yet).
    Refused {
        /// Refused attestations counted in the window.
        failures: u32,
    },
    /// Its latest boot released.
    Released {
        /// resetCount of that boot.
        reset_count: u32,
        /// Releases in it.
        releases: u32,
        /// Whether that boot is TERMINATED (its releases used up).
        terminated: bool,
    },
    /// May release; no boot released yet.
    Armed,
}

impl MachineState {
    /// Decides the state from the enrollment, its latest session and its failure count.
    pub fn of(
        e: &Enrollment,
        latest: Option<&Session>,
        recent_failures: u32,
        last_refused: bool,
    ) -> Self {
        match e.state {
            EnrollmentState::Revoked => return Self::Revoked,
            EnrollmentState::Terminated => return Self::Terminated,
            EnrollmentState::Armed => {}
        }
        if recent_failures >= MAX_CONSECUTIVE_FAILURES {
            return Self::LockedOut {
                failures: recent_failures,
            };
        }
        if last_refused {
            return Self::Refused {
                failures: recent_failures,
            };
        }
        match latest {
            Some(s) if s.releases > 0 || s.state == SessionState::Terminated => Self::Released {
                reset_count: s.reset_count,
                releases: s.releases,
                terminated: s.state == SessionState::Terminated,
            },
            _ => Self::Armed,
        }
    }

    /// A stable key (the `data-state` attribute and the badge's class).
    pub fn key(&self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Terminated => "terminated",
            Self::LockedOut { .. } => "locked-out",
            Self::Refused { .. } => "refused",
            Self::Released { .. } => "released",
            Self::Armed => "armed",
        }
    }

    fn words(&self) -> String {
        match self {
            Self::Revoked => "revoked".into(),
            Self::Terminated => "TERMINATED (max_boots used up)".into(),
            Self::LockedOut { failures } => format!(
                "locked out ({failures} refused in {FAILURE_WINDOW_SECS} s, limit {MAX_CONSECUTIVE_FAILURES})"
            ),
            Self::Refused { failures } => format!(
                "last attestation refused ({failures} of {MAX_CONSECUTIVE_FAILURES} before lock-out)"
            ),
            Self::Released {
                reset_count,
                releases,
                terminated,
            } => format!(
                "released this boot (resetCount {reset_count}, {releases}×){}",
                if *terminated {
                    "; boot TERMINATED"
                } else {
                    ""
                }
            ),
            Self::Armed => "armed".into(),
        }
    }
}

/// Reads one role's view (blocking: database reads).
fn gather(svc: &RoleService, now: i64) -> Result<RoleView, ApiError> {
    let store = svc.store();
    let all = store.list()?;
    let policies = store.policies()?;
    let total_machines = all.len();
    let mut machines = Vec::new();
    for e in all.into_iter().take(MAX_MACHINES) {
        let latest = store.sessions(&e.agent_id)?.into_iter().next();
        let failures =
            store.recent_refusals(&e.agent_id, now.saturating_sub(FAILURE_WINDOW_SECS))?;
        let attempts = store.attempts(&e.agent_id, ATTEMPTS_SHOWN)?;
        let newer_policy = e.policy_ref.as_ref().and_then(|(name, v)| {
            policies
                .iter()
                .find(|p| &p.name == name)
                .map(|p| p.latest_version)
                .filter(|latest| latest > v)
        });
        machines.push(MachineView {
            state: MachineState::of(
                &e,
                latest.as_ref(),
                failures,
                attempts.first().is_some_and(|a| !a.released),
            ),
            agent_id: e.agent_id,
            policy_ref: e.policy_ref,
            newer_policy,
            boots: (e.boots_used, e.max_boots),
            max_attestations: e.max_attestations,
            attempts,
        });
    }
    let since = (now / HOUR - (CHART_HOURS - 1)) * HOUR;
    let buckets = store.attempt_histogram(since, HOUR)?;
    Ok(RoleView {
        role: svc.role().as_str(),
        machines,
        total_machines,
        policies,
        buckets,
    })
}

/// The first 16 characters of an agent id (64 hex characters; the whole id is the cell's
/// tooltip and the row's `data-agent`): enough to tell machines apart on screen.
fn short(agent_id: &str) -> String {
    match agent_id.char_indices().nth(16) {
        Some((i, _)) => format!("{}…", agent_id.get(..i).unwrap_or(agent_id)),
        None => agent_id.to_owned(),
    }
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix seconds.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian, era-based).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px}
header h1{font-size:18px;margin:0}
header p{margin:2px 0 0;color:#aab3c5;font-size:12px}
main{padding:16px 24px}
section{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:12px 16px;margin-bottom:16px}
h2{font-size:16px;margin:0 0 8px}
h3{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;vertical-align:top;overflow-wrap:anywhere}
th{font-size:12px;color:#5b6475;font-weight:600;overflow-wrap:normal;white-space:nowrap}
code{font:12px ui-monospace,monospace;word-break:break-all}
code.id{white-space:nowrap;word-break:normal}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;white-space:nowrap}
.armed{background:#e3ecfb;color:#1f4fa3}
.released{background:#dff3e4;color:#17692e}
.terminated,.revoked{background:#e6e6e6;color:#333}
.locked-out{background:#fde0de;color:#9b1c13}
.refused{background:#fff1d6;color:#7a5200}
.ok{color:#17692e}.no{color:#9b1c13}
ul.att{margin:0;padding-left:16px}
.limits{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:8px}
.limits div{background:#f7f8fa;border-radius:4px;padding:6px 10px}
.limits b{display:block;font-size:18px}
.muted{color:#5b6475;font-size:12px}
";

/// Renders the whole page.
pub fn render(roles: &[RoleView], live: &Live, now: i64) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let names: Vec<&str> = roles.iter().map(|r| r.role).collect();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>unlock-server dashboard</title><style>{STYLE}</style></head><body>\
         <header><h1>unlock-server dashboard</h1><p>roles: {} · generated {} UTC · read-only; reload to refresh</p></header><main>",
        esc(&names.join(", ")),
        utc(now)
    );
    render_live(&mut h, live);
    for r in roles {
        render_role(&mut h, r, now);
    }
    h.push_str("</main></body></html>\n");
    h
}

fn render_live(h: &mut String, l: &Live) {
    let cell = |h: &mut String, id: &str, value: String, label: &str| {
        let _ = write!(h, "<div id=\"{id}\"><b>{value}</b>{label}</div>");
    };
    h.push_str("<section id=\"limits\"><h2>Live limits</h2><div class=\"limits\">");
    cell(
        h,
        "open-connections",
        format!("{} / {}", l.open_connections, l.max_connections),
        "connections open / cap",
    );
    cell(
        h,
        "rejected-connections",
        format!("{} + {}", l.rejected.0, l.rejected.1),
        &format!(
            "refused at accept (total cap + per-source cap of {})",
            l.max_connections_per_source
        ),
    );
    cell(
        h,
        "body-bytes",
        format!("{} / {}", l.inflight_body_bytes, l.max_inflight_body_bytes),
        "request-body bytes in memory / cap",
    );
    cell(
        h,
        "throttled-sources",
        format!("{} / {}", l.sources_refused_now, l.sources_tracked),
        "sources throttled now / remembered",
    );
    cell(
        h,
        "throttled-total",
        l.throttled_total.to_string(),
        "requests refused by the throttle since start",
    );
    cell(
        h,
        "failure-limit",
        format!("{MAX_CONSECUTIVE_FAILURES} in {FAILURE_WINDOW_SECS} s"),
        "refused attestations before a machine is locked out",
    );
    h.push_str("</div></section>");
}

fn render_role(h: &mut String, r: &RoleView, now: i64) {
    let role = esc(r.role);
    let _ = write!(
        h,
        "<section id=\"role-{role}\"><h2>{role} role</h2><h3>Releases and refusals, per hour, last {CHART_HOURS} h</h3>"
    );
    chart(h, r.role, &r.buckets, now);
    let _ = write!(h, "<h3>Machines ({} enrolled)</h3>", r.total_machines);
    if r.machines.is_empty() {
        h.push_str("<p class=\"muted\">No machine is enrolled with this role.</p>");
    } else {
        h.push_str(
            "<table class=\"machines\"><thead><tr><th>agent id</th><th>state</th><th>policy</th>\
             <th>boots</th><th>last attestations (UTC)</th></tr></thead><tbody>",
        );
        for m in &r.machines {
            machine_row(h, m);
        }
        h.push_str("</tbody></table>");
        if r.total_machines > r.machines.len() {
            let _ = write!(
                h,
                "<p class=\"muted\">{} more not listed (first {MAX_MACHINES} by agent id); use <code>unlockctl list</code>.</p>",
                r.total_machines - r.machines.len()
            );
        }
    }
    h.push_str("<h3>Named policies</h3>");
    if r.policies.is_empty() {
        h.push_str("<p class=\"muted\">No named policy (machines carry inline policies).</p>");
    } else {
        h.push_str(
            "<table class=\"policies\"><thead><tr><th>name</th><th>latest version</th><th>updated (UTC)</th>\
             <th>machines</th><th>on an older version</th></tr></thead><tbody>",
        );
        for p in &r.policies {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>v{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.name),
                p.latest_version,
                utc(p.updated_at),
                p.enrollments,
                p.behind
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>");
}

fn machine_row(h: &mut String, m: &MachineView) {
    let id = esc(&m.agent_id);
    let key = m.state.key();
    let _ = write!(
        h,
        "<tr data-agent=\"{id}\" data-state=\"{key}\"><td><code class=\"id\" title=\"{id}\">{}</code></td>\
         <td><span class=\"badge {key}\">{}</span></td><td>",
        esc(&short(&m.agent_id)),
        esc(&m.state.words())
    );
    match &m.policy_ref {
        Some((name, v)) => {
            let _ = write!(h, "<code>{}</code> v{v}", esc(name));
            if let Some(latest) = m.newer_policy {
                let _ = write!(h, " <span class=\"no\">(v{latest} available)</span>");
            }
        }
        None => h.push_str("inline"),
    }
    let _ = write!(h, "</td><td>{}", m.boots.0);
    match m.boots.1 {
        Some(max) => {
            let _ = write!(h, " / {max}");
        }
        None => h.push_str(" / ∞"),
    }
    let _ = write!(
        h,
        "<br><span class=\"muted\">{} per boot</span></td><td>",
        m.max_attestations
    );
    if m.attempts.is_empty() {
        h.push_str("<span class=\"muted\">none</span>");
    } else {
        h.push_str("<ul class=\"att\">");
        for a in &m.attempts {
            if a.released {
                let _ = write!(
                    h,
                    "<li>{} <span class=\"ok\">released</span></li>",
                    utc(a.at)
                );
            } else {
                let _ = write!(
                    h,
                    "<li>{} <span class=\"no\">refused:</span> <span class=\"reason\">{}</span></li>",
                    utc(a.at),
                    esc(&a.reason)
                );
            }
        }
        h.push_str("</ul>");
    }
    h.push_str("</td></tr>");
}

/// The chart: one stacked bar per hour (released below, refused above), drawn server-side.
fn chart(h: &mut String, role: &str, buckets: &[AttemptBucket], now: i64) {
    const W: i64 = 720;
    const PLOT_H: i64 = 140;
    const LEFT: i64 = 40;
    const TOP: i64 = 10;
    let first = (now / HOUR - (CHART_HOURS - 1)) * HOUR;
    let slot = (W - LEFT) / CHART_HOURS;
    let hours: Vec<(i64, u64, u64)> = (0..CHART_HOURS)
        .map(|i| {
            let start = first + i * HOUR;
            let b = buckets.iter().find(|b| b.start == start);
            (
                start,
                b.map_or(0, |b| b.released),
                b.map_or(0, |b| b.refused),
            )
        })
        .collect();
    let max = hours
        .iter()
        .map(|(_, a, b)| a + b)
        .max()
        .unwrap_or(0)
        .max(1);
    let (released, refused): (u64, u64) = hours
        .iter()
        .fold((0, 0), |(a, b), (_, x, y)| (a + x, b + y));
    let role = esc(role);
    let _ = write!(
        h,
        "<svg id=\"chart-{role}\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" \
         viewBox=\"0 0 {W} {}\" role=\"img\" aria-label=\"{role}: {released} released and {refused} refused in the last {CHART_HOURS} hours\">",
        TOP + PLOT_H + 30,
        TOP + PLOT_H + 30
    );
    let base = TOP + PLOT_H;
    let _ = write!(
        h,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{W}\" y2=\"{base}\" stroke=\"#8a93a3\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{base}\" stroke=\"#8a93a3\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5b6475\">{max}</text>\
         <text x=\"{}\" y=\"{base}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5b6475\">0</text>",
        LEFT - 4,
        TOP + 10,
        LEFT - 4
    );
    let scale = |n: u64| -> i64 {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let m = i64::try_from(max).unwrap_or(i64::MAX);
        n.saturating_mul(PLOT_H) / m
    };
    for (i, (start, ok, no)) in hours.iter().enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        let x = LEFT + i * slot + 2;
        let w = slot - 4;
        let ok_h = scale(*ok);
        let no_h = scale(*no);
        let when = utc(*start);
        let label = format!(
            "{} UTC: {ok} released, {no} refused",
            when.get(..16).unwrap_or(&when)
        );
        if ok_h > 0 {
            let _ = write!(
                h,
                "<rect class=\"released\" x=\"{x}\" y=\"{}\" width=\"{w}\" height=\"{ok_h}\" fill=\"#2e9e50\"><title>{label}</title></rect>",
                base - ok_h
            );
        }
        if no_h > 0 {
            let _ = write!(
                h,
                "<rect class=\"refused\" x=\"{x}\" y=\"{}\" width=\"{w}\" height=\"{no_h}\" fill=\"#d2392c\"><title>{label}</title></rect>",
                base - ok_h - no_h
            );
        }
        if i % 6 == 0 || i == CHART_HOURS - 1 {
            let _ = write!(
                h,
                "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#5b6475\">{}</text>",
                x + w / 2,
                base + 14,
                when.get(11..16).unwrap_or(&when)
            );
        }
    }
    let _ = write!(
        h,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"11\" fill=\"#2e9e50\">■ released ({released})</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#d2392c\">■ refused ({refused})</text></svg>",
        base + 28,
        LEFT + 140,
        base + 28
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn enrollment(state: EnrollmentState) -> Enrollment {
        Enrollment {
            agent_id: "a".repeat(64),
            ek_pub: Vec::new(),
            policy: "{}".into(),
            max_attestations: 1,
            max_boots: None,
            share_wrapped: Vec::new(),
            payload_ct: None,
            state,
            boots_used: 0,
            created_at: 0,
            updated_at: 0,
            policy_ref: None,
            admitted_by: None,
        }
    }

    fn session(state: SessionState, releases: u32) -> Session {
        Session {
            reset_count: 7,
            releases,
            state,
            first_release_at: 0,
            last_release_at: 0,
        }
    }

    #[test]
    fn state_puts_the_most_urgent_first() {
        let armed = enrollment(EnrollmentState::Armed);
        let open = session(SessionState::Open, 1);
        assert_eq!(
            MachineState::of(&armed, None, 0, false),
            MachineState::Armed
        );
        assert_eq!(
            MachineState::of(&armed, Some(&open), 0, false),
            MachineState::Released {
                reset_count: 7,
                releases: 1,
                terminated: false
            }
        );
        assert_eq!(
            MachineState::of(
                &armed,
                Some(&session(SessionState::Terminated, 1)),
                0,
                false
            ),
            MachineState::Released {
                reset_count: 7,
                releases: 1,
                terminated: true
            }
        );
        assert_eq!(
            MachineState::of(&armed, Some(&open), MAX_CONSECUTIVE_FAILURES, false),
            MachineState::LockedOut {
                failures: MAX_CONSECUTIVE_FAILURES
            }
        );
        assert_eq!(
            MachineState::of(&armed, Some(&open), MAX_CONSECUTIVE_FAILURES - 1, false).key(),
            "released"
        );
        assert_eq!(
            MachineState::of(&armed, Some(&open), 3, true),
            MachineState::Refused { failures: 3 }
        );
        assert_eq!(
            MachineState::of(&armed, Some(&open), MAX_CONSECUTIVE_FAILURES, true).key(),
            "locked-out"
        );
        assert_eq!(
            MachineState::of(&enrollment(EnrollmentState::Revoked), None, 99, false),
            MachineState::Revoked
        );
        assert_eq!(
            MachineState::of(&enrollment(EnrollmentState::Terminated), None, 99, false),
            MachineState::Terminated
        );
    }

    #[test]
    fn hostile_text_is_escaped_everywhere_it_is_shown() {
        let hostile = "<script>alert(\"x\")</script>&'";
        let m = MachineView {
            agent_id: hostile.into(),
            state: MachineState::Armed,
            policy_ref: Some((hostile.into(), 1)),
            newer_policy: Some(2),
            boots: (0, None),
            max_attestations: 1,
            attempts: vec![Attempt {
                challenge_id: None,
                at: 0,
                released: false,
                reason: hostile.into(),
            }],
        };
        let view = RoleView {
            role: "verifier",
            machines: vec![m],
            total_machines: 1,
            policies: vec![PolicySummaryRow {
                name: hostile.into(),
                latest_version: 2,
                updated_at: 0,
                enrollments: 1,
                behind: 1,
            }],
            buckets: Vec::new(),
        };
        let page = render(&[view], &Live::default(), 0);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("alert(\""), "{page}");
        assert_eq!(
            page.matches("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;")
                .count(),
            5,
            "agent id (attribute and text), policy of the machine, reason, policy table"
        );
    }

    #[test]
    fn chart_bars_follow_the_buckets() {
        let now = 100 * HOUR + 5;
        let buckets = [
            AttemptBucket {
                start: 100 * HOUR,
                released: 2,
                refused: 2,
            },
            AttemptBucket {
                start: 90 * HOUR,
                released: 0,
                refused: 1,
            },
            // Outside the chart: ignored.
            AttemptBucket {
                start: 10 * HOUR,
                released: 50,
                refused: 0,
            },
        ];
        let mut h = String::new();
        chart(&mut h, "verifier", &buckets, now);
        assert_eq!(h.matches("<rect class=\"released\"").count(), 1, "{h}");
        assert_eq!(h.matches("<rect class=\"refused\"").count(), 2, "{h}");
        // The tallest hour (4 attempts) fills the plot: 2 of 4 is half of it each.
        assert!(h.contains("height=\"70\" fill=\"#2e9e50\""), "{h}");
        assert!(h.contains("2 released and 3 refused"), "{h}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_798_761_599), "2026-12-31 23:59:59");
    }

    /// A fleet larger than the list: the first [`MAX_MACHINES`] by agent id are listed and
    /// the rest counted; the time of one page (reads and rendering) is printed.
    #[test]
    fn a_large_fleet_is_cut_at_the_cap_and_counted() {
        use crate::store::{NewEnrollment, Store};
        use verifier_core::ekcert::TrustStore;
        use verifier_core::keysplit::MasterKey;
        use verifier_core::proto::v1::Role;

        let store = Store::open_in_memory().unwrap();
        let n = MAX_MACHINES + 100;
        for i in 0..n {
            let agent_id = format!("{i:064x}");
            store
                .enroll(
                    &NewEnrollment {
                        agent_id: agent_id.clone(),
                        ek_pub: vec![1],
                        policy: "{\"version\":1,\"pcrs\":[]}".into(),
                        max_attestations: 1,
                        max_boots: None,
                        share_wrapped: vec![2],
                        payload_ct: Some(vec![3]),
                    },
                    1_000,
                )
                .unwrap();
            store
                .record_refusal(&agent_id, Some("c"), "policy: <denied>", true, 1_000)
                .unwrap();
        }
        let svc = RoleService::new(
            Role::Verifier,
            store,
            MasterKey::generate().unwrap(),
            crate::role::RoleSettings {
                ek_trust: Arc::new(TrustStore::new()),
                iak_trust: Arc::new(TrustStore::new()),
                allow_ek_without_cert: true,
                ek_cert_hook: None,
                challenge_ttl_secs: 60,
                registration_ttl_secs: 120,
            },
        );
        let started = std::time::Instant::now();
        let view = gather(&svc, 1_010).unwrap();
        let page = render(&[view], &Live::default(), 1_010);
        eprintln!(
            "page of {n} machines ({MAX_MACHINES} listed), SQLite in memory: {:?}, {} bytes",
            started.elapsed(),
            page.len()
        );
        assert_eq!(page.matches("<tr data-agent=").count(), MAX_MACHINES);
        assert!(page.contains(&format!("{:064x}", MAX_MACHINES - 1)));
        assert!(!page.contains(&format!("{:064x}", MAX_MACHINES)));
        assert!(page.contains("100 more not listed"), "the rest is counted");
        assert!(page.contains(&format!("Machines ({n} enrolled)")));
        assert_eq!(page.matches("data-state=\"refused\"").count(), MAX_MACHINES);
        assert!(page.contains(&format!("0 released and {n} refused")));
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn tokens_are_accepted_only_where_they_may_be() {
        let admin = AdminToken::new(Zeroizing::new("adm1".into()));
        let read = ReadToken::new(Zeroizing::new("rd42".into()));
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(authorized(&headers("Bearer adm1"), &admin, &read));
        assert!(authorized(&headers("Bearer rd42"), &admin, &read));
        assert!(authorized(
            &headers(&format!("Basic {}", b64("ops:rd42"))),
            &admin,
            &read
        ));
        assert!(authorized(
            &headers(&format!("Basic {}", b64(":rd42"))),
            &admin,
            &read
        ));
        // The admin token is a bearer only.
        assert!(!authorized(
            &headers(&format!("Basic {}", b64("ops:adm1"))),
            &admin,
            &read
        ));
        for wrong in [
            "Bearer ",
            "Bearer rd4",
            "Bearer rd421",
            "bearer rd42",
            "rd42",
            "Basic",
            "Basic !!!",
            &format!("Basic {}", b64("rd42")),
            &format!("Basic {}", b64("ops:")),
            &format!("Basic {}", b64("ops:rd43")),
        ] {
            assert!(!authorized(&headers(wrong), &admin, &read), "{wrong}");
        }
        assert!(!authorized(&HeaderMap::new(), &admin, &read));
        let long = format!("Bearer rd42{}", " ".repeat(MAX_AUTH_HEADER));
        assert!(!authorized(&headers(&long), &admin, &read));
    }
}
