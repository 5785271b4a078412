//! `/metrics` and `x-request-id` over real HTTP: the router served in process (plain HTTP on
//! loopback, in-memory stores) and a simulated agent (`verifier_core::sim`) talking v1 to it.

// Test code: a failed unwrap or index is a failed test, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use unlock_server::http::{router, AdminToken};
use unlock_server::role::{unix_now, RoleService, RoleSettings};
use unlock_server::store::Store;
use verifier_core::ekcert::TrustStore;
use verifier_core::keysplit::MasterKey;
use verifier_core::proto::v1::{
    self, ActivateResponse, AttestResponse, ChallengeResponse, ErrorResponse, RegisterResponse,
    Role,
};
use verifier_core::sim::{enroll_requests, SimAgent};
use zeroize::Zeroizing;

const PAYLOAD: &[u8] = b"the LUKS key of the simulated machine";

/// The router of both roles on an ephemeral port; the runtime lives as long as the value.
struct InProcess {
    base: String,
    roles: Vec<Arc<RoleService>>,
    http: ureq::Agent,
    _rt: tokio::runtime::Runtime,
}

impl InProcess {
    fn start() -> Self {
        let roles: Vec<Arc<RoleService>> = [Role::Verifier, Role::Tenant]
            .into_iter()
            .map(|r| {
                Arc::new(RoleService::new(
                    r,
                    Store::open_in_memory().unwrap(),
                    MasterKey::generate().unwrap(),
                    RoleSettings {
                        ek_trust: Arc::new(TrustStore::new()),
                        iak_trust: Arc::new(TrustStore::new()),
                        allow_ek_without_cert: true,
                        ek_cert_hook: None,
                        challenge_ttl_secs: 60,
                        registration_ttl_secs: 120,
                    },
                ))
            })
            .collect();
        let app = router(
            &roles,
            AdminToken::new(Zeroizing::new("t".repeat(64))),
            1 << 20,
            Arc::new(unlock_server::net::Edge::default()),
        );
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        Self {
            base: format!("http://{addr}"),
            roles,
            http,
            _rt: rt,
        }
    }

    /// POSTs to a role's path; status, body and the answer's request id.
    fn post(
        &self,
        role: Role,
        path: &str,
        body: &[u8],
        id: Option<&str>,
    ) -> (u16, Vec<u8>, String) {
        let mut req = self
            .http
            .post(format!("{}/{}{path}", self.base, role.as_str()))
            .content_type("application/json");
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        let resp = req.send(body).unwrap();
        let rid = resp
            .headers()
            .get("x-request-id")
            .expect("every answer carries x-request-id")
            .to_str()
            .unwrap()
            .to_owned();
        (
            resp.status().as_u16(),
            resp.into_body().read_to_vec().unwrap(),
            rid,
        )
    }

    fn call<
        Req: serde::Serialize + v1::Validate,
        Resp: serde::de::DeserializeOwned + v1::Validate,
    >(
        &self,
        role: Role,
        path: &str,
        req: &Req,
    ) -> Resp {
        let (status, body, _) = self.post(role, path, &v1::encode(req).unwrap(), None);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        v1::decode(&body).unwrap()
    }

    fn metrics(&self) -> String {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        resp.into_body().read_to_string().unwrap()
    }

    /// Enrolls, registers and activates `agent` with both roles.
    fn enroll_and_register(&self, agent: &SimAgent) {
        let reqs = enroll_requests(
            &agent.agent_id(),
            agent.tpm().ek_pub_bytes(),
            &agent.learn_policy(),
            PAYLOAD,
            1,
        )
        .unwrap();
        for (svc, (r, req)) in self.roles.iter().zip(&reqs) {
            assert_eq!(svc.role(), *r);
            svc.enroll(req, unix_now()).unwrap();
            let reg: RegisterResponse =
                self.call(*r, v1::path::REGISTER, &agent.register_request());
            let act: ActivateResponse = self.call(
                *r,
                v1::path::ACTIVATE,
                &agent.activate_request(&reg).unwrap(),
            );
            agent.check_activation(&act).unwrap();
        }
    }

    /// One attestation with each role: status and body per role. With `id`, the attests
    /// carry the request id `{id}-{role}`.
    fn attest(&self, agent: &mut SimAgent, id: Option<&str>) -> Vec<(u16, Vec<u8>)> {
        let challenges: Vec<ChallengeResponse> = self
            .roles
            .iter()
            .map(|svc| self.call(svc.role(), v1::path::CHALLENGE, &agent.challenge_request()))
            .collect();
        let reqs = agent.attest_requests(&challenges).unwrap();
        self.roles
            .iter()
            .zip(&reqs)
            .map(|(svc, req)| {
                let rid = id.map(|id| format!("{id}-{}", svc.role().as_str()));
                let (s, b, echoed) = self.post(
                    svc.role(),
                    v1::path::ATTEST,
                    &v1::encode(req).unwrap(),
                    rid.as_deref(),
                );
                if let Some(rid) = rid {
                    assert_eq!(echoed, rid);
                }
                (s, b)
            })
            .collect()
    }
}

/// The value of the one series line starting with `series ` (0 when absent: Prometheus
/// counters that never moved may be omitted).
fn value(text: &str, series: &str) -> u64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().unwrap())
}

#[test]
fn a_release_and_a_refusal_are_counted_per_role_and_reason() {
    let server = InProcess::start();
    let before = server.metrics();
    assert_eq!(
        value(
            &before,
            "unlock_attestations_total{role=\"verifier\",result=\"released\",reason=\"\"}"
        ),
        0
    );

    let mut agent = SimAgent::new().unwrap();
    server.enroll_and_register(&agent);
    let answers: Vec<AttestResponse> = server
        .attest(&mut agent, None)
        .into_iter()
        .map(|(s, b)| {
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            v1::decode(&b).unwrap()
        })
        .collect();
    assert_eq!(agent.finish(&answers).unwrap().as_slice(), PAYLOAD);
    agent.extend_release_pcr().unwrap();
    // A second quote in this boot shows the extended release PCR: both roles refuse it.
    for (status, body) in server.attest(&mut agent, None) {
        assert_eq!(status, 403);
        let e: ErrorResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(e.code, v1::ErrorCode::PolicyDenied);
    }

    let text = server.metrics();
    for role in ["verifier", "tenant"] {
        let released =
            format!("unlock_attestations_total{{role=\"{role}\",result=\"released\",reason=\"\"}}");
        let denied = format!(
            "unlock_attestations_total{{role=\"{role}\",result=\"refused\",reason=\"policy_denied\"}}"
        );
        assert_eq!(value(&text, &released), 1, "{text}");
        assert_eq!(value(&text, &denied), 1, "{text}");
        assert_eq!(
            value(&text, &format!("unlock_releases_total{{role=\"{role}\"}}")),
            1
        );
        assert_eq!(
            value(
                &text,
                &format!("unlock_sessions_terminated_total{{role=\"{role}\"}}")
            ),
            1,
            "max_attestations 1: the release terminates the session"
        );
        assert_eq!(
            value(
                &text,
                &format!("unlock_registrations_total{{role=\"{role}\"}}")
            ),
            1
        );
        assert_eq!(
            value(
                &text,
                &format!("unlock_attest_duration_seconds_count{{role=\"{role}\"}}")
            ),
            2
        );
        assert_eq!(
            value(
                &text,
                &format!("unlock_attest_duration_seconds_bucket{{role=\"{role}\",le=\"+Inf\"}}")
            ),
            2
        );
        // Enrollment, registration, activation, challenge, release, refusal: each durable.
        let requests = value(
            &text,
            &format!("unlock_db_requests_total{{role=\"{role}\"}}"),
        );
        let commits = value(
            &text,
            &format!("unlock_db_commits_total{{role=\"{role}\"}}"),
        );
        assert!(requests >= 6, "{text}");
        assert!((1..=requests).contains(&commits), "{text}");
    }
    assert!(
        !text.contains(agent.agent_id().as_str()),
        "no agent ids in /metrics"
    );
}

#[test]
fn request_ids_are_echoed_when_well_formed_and_generated_otherwise() {
    let server = InProcess::start();
    let garbage = b"{}";
    // Kept: a well-formed client id, on an error answer too.
    let (status, _, rid) = server.post(
        Role::Verifier,
        v1::path::ATTEST,
        garbage,
        Some("boot-42_Ab"),
    );
    assert_eq!(status, 400);
    assert_eq!(rid, "boot-42_Ab");
    // Replaced: too long, or characters that could forge log structure.
    for bad in [
        "a".repeat(65),
        "x y".to_owned(),
        "id\"=1".to_owned(),
        String::new(),
    ] {
        let (_, _, rid) = server.post(Role::Tenant, v1::path::ATTEST, garbage, Some(&bad));
        assert_ne!(rid, bad);
        assert!(unlock_server::http::valid_request_id(&rid), "{rid}");
    }
    let longest = "Z".repeat(64);
    let (_, _, rid) = server.post(Role::Tenant, v1::path::ATTEST, garbage, Some(&longest));
    assert_eq!(rid, longest);
    // Generated when absent, different each time; unknown paths get one too.
    let (_, _, a) = server.post(Role::Tenant, v1::path::CHALLENGE, garbage, None);
    let (_, _, b) = server.post(Role::Tenant, v1::path::CHALLENGE, garbage, None);
    assert_ne!(a, b);
    assert!(unlock_server::http::valid_request_id(&a));
    let resp = server
        .http
        .get(format!("{}/no/such/path", server.base))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(resp.headers().contains_key("x-request-id"));
}

/// Everything the global subscriber wrote.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn log_lines_of_a_request_carry_its_id_even_from_the_blocking_pool() {
    let logs = Capture::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .init();
    let server = InProcess::start();
    let mut agent = SimAgent::new().unwrap();
    server.enroll_and_register(&agent);
    let first = server.attest(&mut agent, None);
    assert!(first.iter().all(|(s, _)| *s == 200));
    agent.extend_release_pcr().unwrap();
    let second = server.attest(&mut agent, Some("boot-7"));
    assert!(second.iter().all(|(s, _)| *s == 403));

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for role in ["verifier", "tenant"] {
        // The refusal is logged by the role on the blocking pool, inside the request span.
        let refused = text
            .lines()
            .find(|l| l.contains(&format!("request_id=boot-7-{role}")) && l.contains("refused"))
            .unwrap_or_else(|| panic!("no refusal line with the request id for {role}:\n{text}"));
        assert!(refused.contains("PolicyDenied"), "{refused}");
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("request_id=boot-7-{role}"))
                    && l.contains("answered")
                    && l.contains("status=403")),
            "{text}"
        );
    }
}
