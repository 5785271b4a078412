//! A minimal stand-in for unlock-server's two roles, built from verifier-core's server-side
//! primitives (MakeCredential, activation proof check, evidence validation, policy, HPKE
//! sealing), so the agent binary can be run end to end before the real server exists. Plain
//! HTTP/1.1, one thread per connection, `Connection: close`.
//!
//! Faults can be injected per path: 503 answers, a dropped attest answer (the "lost
//! response" case), a refusal.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use verifier_core::evidence::{validate, Expected, Submitted};
use verifier_core::keysplit::{enroll_material, seal_share, Share};
use verifier_core::makecred::make_credential;
use verifier_core::policy::{Evaluator, Policy};
use verifier_core::proto::v1::{
    self, verify_activation_proof, ActivateRequest, ActivateResponse, AgentId, AttestRequest,
    AttestResponse, ChallengeRequest, ChallengeResponse, ErrorCode, ErrorResponse, Id,
    PcrSelection as WireSel, RegisterRequest, RegisterResponse, Role, Sealed, SessionInfo,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::quote::AkPublic;
use verifier_core::wire::{HashAlg, Public, Signature};

/// Injected misbehaviour.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Answer 503 to the first N requests of a path (e.g. "/tenant/v1/challenge").
    pub unavailable: HashMap<String, u32>,
    /// Process the first attest of this role, then close the connection without answering.
    pub drop_attest_answer: Option<Role>,
    /// Refuse every attest of this role with this code.
    pub refuse_attest: Option<(Role, ErrorCode)>,
    /// Refuse the first N attests of this role with `challenge_expired` (the role was
    /// unreachable past the challenge's lifetime).
    pub expire_attest: Option<(Role, u32)>,
    /// Seal this role's half with the *other* role's name in the HPKE info (a confused or
    /// malicious server passing one half off as the other).
    pub seal_as_other_role: Option<Role>,
}

/// A challenge: its role, nonce, and the attest body it was answered for.
type Challenge = (Role, [u8; 32], Option<Vec<u8>>);

#[derive(Debug, Default)]
struct State {
    seq: u64,
    registrations: HashMap<String, (Vec<u8>, Vec<u8>)>, // id -> (secret, ak_pub)
    aks: HashMap<String, Vec<u8>>,                      // agent_id -> ak_pub
    challenges: HashMap<String, Challenge>,
    answered: HashMap<String, Vec<u8>>, // challenge id -> response json
    releases: HashMap<&'static str, u32>,
    requests: Vec<(String, Vec<u8>)>,
    request_ids: Vec<(String, String)>, // (path, x-request-id)
    faults: Faults,
}

/// The two roles on one listener: `{base}/verifier/v1/...` and `{base}/tenant/v1/...`.
pub struct MockServer {
    pub base: String,
    state: Arc<Mutex<State>>,
    enrolled: Arc<Enrolled>,
}

struct Enrolled {
    agent_id: String,
    u: Share,
    v: Share,
    payload_ct: Vec<u8>,
    policy: Policy,
}

impl MockServer {
    /// Starts the server with `payload` enrolled for `agent_id`.
    pub fn start(agent_id: &str, payload: &[u8], faults: Faults) -> Self {
        Self::start_inner(agent_id, payload, faults, None)
    }

    /// The same over TLS with the given certificate chain and key (PEM).
    pub fn start_tls(
        agent_id: &str,
        payload: &[u8],
        faults: Faults,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Self {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Self::start_inner(agent_id, payload, faults, Some(Arc::new(config)))
    }

    fn start_inner(
        agent_id: &str,
        payload: &[u8],
        faults: Faults,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let m = enroll_material(agent_id, payload).unwrap();
        let enrolled = Arc::new(Enrolled {
            agent_id: agent_id.to_owned(),
            u: m.u,
            v: m.v,
            payload_ct: m.payload_ct.into_bytes(),
            policy: Policy::from_json(r#"{"version": 1}"#).unwrap(),
        });
        let state = Arc::new(Mutex::new(State {
            faults,
            ..State::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let (s, e) = (state.clone(), enrolled.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (s, e, tls) = (s.clone(), e.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(conn, &s, &e),
                    Some(cfg) => {
                        let Ok(server) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(server, conn), &s, &e);
                    }
                });
            }
        });
        Self {
            base,
            state,
            enrolled,
        }
    }

    /// Releases made per role ("verifier", "tenant").
    pub fn releases(&self, role: &str) -> u32 {
        *self.state.lock().unwrap().releases.get(role).unwrap_or(&0)
    }

    /// The `x-request-id` of every request that had one: (path, id).
    pub fn request_ids(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().request_ids.clone()
    }

    /// Every request received: (path, body).
    pub fn requests(&self) -> Vec<(String, Vec<u8>)> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn serve<S: Read + Write>(conn: S, state: &Mutex<State>, enrolled: &Enrolled) {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
            if k.eq_ignore_ascii_case("x-request-id") {
                let id = (path.clone(), v.trim().to_owned());
                state.lock().unwrap().request_ids.push(id);
            }
        }
    }
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }

    let answer = handle(&path, &body, state, enrolled);
    let Some((status, json)) = answer else {
        return; // dropped: close without answering
    };
    let conn = reader.get_mut();
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        json.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&json);
    let _ = conn.flush();
}

fn error(status: u16, code: ErrorCode, message: &str) -> Option<(u16, Vec<u8>)> {
    let e = ErrorResponse {
        code,
        message: message.into(),
    };
    Some((status, v1::encode(&e).unwrap()))
}

fn ok<T: serde::Serialize + v1::Validate>(msg: &T) -> Option<(u16, Vec<u8>)> {
    Some((200, v1::encode(msg).unwrap()))
}

fn role_of(prefix: &str) -> Option<Role> {
    match prefix {
        "verifier" => Some(Role::Verifier),
        "tenant" => Some(Role::Tenant),
        _ => None,
    }
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::Verifier => "verifier",
        Role::Tenant => "tenant",
    }
}

fn handle(path: &str, body: &[u8], state: &Mutex<State>, e: &Enrolled) -> Option<(u16, Vec<u8>)> {
    let mut st = state.lock().unwrap();
    st.requests.push((path.to_owned(), body.to_vec()));
    if let Some(n) = st.faults.unavailable.get_mut(path) {
        if *n > 0 {
            *n -= 1;
            return error(503, ErrorCode::Internal, "injected outage");
        }
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let role = role_of(parts.next()?)?;
    let rest = format!("/{}", parts.next()?);
    st.seq += 1;
    let seq = st.seq;
    match rest.as_str() {
        v1::path::REGISTER => {
            let req: RegisterRequest = match v1::decode(body) {
                Ok(r) => r,
                Err(err) => return error(400, ErrorCode::MalformedRequest, &err.to_string()),
            };
            let ek = Public::parse(req.ek_pub.as_bytes()).unwrap();
            let ak = Public::parse(req.ak_pub.as_bytes()).unwrap();
            let secret = HashAlg::Sha256
                .hash(format!("secret {seq}").as_bytes())
                .as_bytes()
                .to_vec();
            let made = make_credential(&ek, &ak.name(), &secret).unwrap();
            let id = format!("reg-{seq}");
            st.registrations
                .insert(id.clone(), (secret, req.ak_pub.as_bytes().to_vec()));
            ok(&RegisterResponse {
                registration_id: Id::try_from(id).unwrap(),
                credential_blob: made.credential_blob[2..].to_vec().into(),
                encrypted_secret: made.encrypted_secret[2..].to_vec().into(),
            })
        }
        v1::path::ACTIVATE => {
            let req: ActivateRequest = v1::decode(body).unwrap();
            let Some((secret, ak_pub)) =
                st.registrations.get(req.registration_id.as_str()).cloned()
            else {
                return error(404, ErrorCode::UnknownRegistration, "no such registration");
            };
            if verify_activation_proof(&secret, &req.registration_id, req.proof.as_bytes()).is_err()
            {
                return error(403, ErrorCode::ActivationFailed, "bad proof");
            }
            st.aks.insert(e.agent_id.clone(), ak_pub);
            ok(&ActivateResponse {
                agent_id: AgentId::try_from(e.agent_id.clone()).unwrap(),
            })
        }
        v1::path::CHALLENGE => {
            let req: ChallengeRequest = v1::decode(body).unwrap();
            if !st.aks.contains_key(req.agent_id.as_str()) {
                return error(403, ErrorCode::UnknownAgent, "not activated");
            }
            let nonce: [u8; 32] = HashAlg::Sha256
                .hash(format!("nonce {seq}").as_bytes())
                .as_bytes()
                .try_into()
                .unwrap();
            let id = format!("ch-{}-{seq}", role_str(role));
            st.challenges.insert(id.clone(), (role, nonce, None));
            // The verifier asks for the policy's PCRs, the tenant for more: the agent quotes
            // the union.
            let pcr_selection = match role {
                Role::Verifier => vec![WireSel {
                    hash: HashAlg::Sha256,
                    pcrs: vec![15],
                }],
                Role::Tenant => vec![
                    WireSel {
                        hash: HashAlg::Sha256,
                        pcrs: vec![0, 7, 15],
                    },
                    WireSel {
                        hash: HashAlg::Sha1,
                        pcrs: vec![0],
                    },
                ],
            };
            ok(&ChallengeResponse {
                challenge_id: Id::try_from(id).unwrap(),
                nonce: nonce.to_vec().into(),
                pcr_selection,
                hash_alg: HashAlg::Sha256,
                expires_at: u64::MAX,
                role,
                params: None,
            })
        }
        v1::path::ATTEST => {
            let req: AttestRequest = match v1::decode(body) {
                Ok(r) => r,
                Err(err) => return error(400, ErrorCode::MalformedRequest, &err.to_string()),
            };
            let Some((ch_role, nonce, answered)) =
                st.challenges.get(req.challenge_id.as_str()).cloned()
            else {
                return error(404, ErrorCode::UnknownChallenge, "no such challenge");
            };
            if ch_role != role {
                return error(
                    403,
                    ErrorCode::UnknownChallenge,
                    "challenge of another role",
                );
            }
            if let Some(prev_body) = answered {
                // Byte-identical evidence gets the same answer, without a second release.
                if prev_body == body {
                    let json = st.answered.get(req.challenge_id.as_str()).unwrap().clone();
                    return Some((200, json));
                }
                return error(409, ErrorCode::ChallengeUsed, "challenge already used");
            }
            if let Some((r, n)) = &mut st.faults.expire_attest {
                if *r == role && *n > 0 {
                    *n -= 1;
                    return error(403, ErrorCode::ChallengeExpired, "injected expiry");
                }
            }
            if let Some((r, code)) = st.faults.refuse_attest {
                if r == role {
                    return error(403, code, "injected refusal");
                }
            }
            let ak_pub = st.aks.get(&e.agent_id).unwrap().clone();
            let ak = AkPublic::try_from(Public::parse(&ak_pub).unwrap()).unwrap();
            let sig = Signature::parse(req.signature.as_bytes()).unwrap();
            let pcrs = req.pcr_values().unwrap();
            let proof = req.inclusion.to_merkle().unwrap();
            let evidence = match validate(
                Expected {
                    ak: &ak,
                    nonce: &nonce,
                },
                Submitted {
                    attest: req.quote.as_bytes(),
                    signature: &sig,
                    pcrs: &pcrs,
                    nk_pub: req.nk_pub.key.as_bytes(),
                    proof: &proof,
                    event_log: None,
                    ima_log: None,
                },
            ) {
                Ok(ev) => ev,
                Err(err) => return error(403, ErrorCode::QuoteInvalid, &err.to_string()),
            };
            let verdict = e.policy.evaluate(&evidence);
            if !verdict.accepted() {
                return error(403, ErrorCode::PolicyDenied, &verdict.to_string());
            }
            let nk = req.nk_pub.to_keysplit().unwrap();
            let share = match role {
                Role::Verifier => &e.v,
                Role::Tenant => &e.u,
            };
            let seal_role = if st.faults.seal_as_other_role == Some(role) {
                match role {
                    Role::Verifier => Role::Tenant,
                    Role::Tenant => Role::Verifier,
                }
            } else {
                role
            };
            let sealed = seal_share(
                &nk,
                role_str(seal_role),
                req.challenge_id.as_str().as_bytes(),
                share,
            )
            .unwrap();
            let releases = {
                let r = st.releases.entry(role_str(role)).or_default();
                *r += 1;
                *r
            };
            let resp = AttestResponse {
                role,
                sealed_half: Sealed::from_keysplit(&sealed),
                payload: (role == Role::Verifier).then(|| Base64Bytes::new(e.payload_ct.clone())),
                session: SessionInfo {
                    reset_count: evidence.quote().reset_count(),
                    releases,
                    max_attestations: releases.max(1),
                    terminated: true,
                },
            };
            let json = v1::encode(&resp).unwrap();
            st.challenges.insert(
                req.challenge_id.as_str().to_owned(),
                (role, nonce, Some(body.to_vec())),
            );
            st.answered
                .insert(req.challenge_id.as_str().to_owned(), json.clone());
            if st.faults.drop_attest_answer == Some(role) {
                st.faults.drop_attest_answer = None;
                return None;
            }
            Some((200, json))
        }
        _ => error(404, ErrorCode::MalformedRequest, "no such path"),
    }
}

/// A throwaway PKI made with the openssl CLI: (CA PEM, server chain PEM, server key PEM) for
/// a server certificate valid for 127.0.0.1.
pub fn make_pki(dir: &std::path::Path, name: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&d)
            .output()
            .expect("the openssl CLI is required for the TLS tests (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test unlock CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        std::fs::read(d.join("ca.pem")).unwrap(),
        std::fs::read(d.join("srv.pem")).unwrap(),
        std::fs::read(d.join("srv.key")).unwrap(),
    )
}
