//! The server's unavoidable crypto for one boot, measured on one thread in the same run:
//! the yardstick for the server CPU per boot the storm measures.

use std::time::{Duration, Instant};

use verifier_core::evidence::{self, Expected, Submitted};
use verifier_core::keysplit::{seal_share, MasterKey, Share};
use verifier_core::makecred::make_credential;
use verifier_core::proto::v1::{self, ChallengeResponse, Id};
use verifier_core::proto::Base64Bytes;
use verifier_core::sim::SimAgent;
use verifier_core::wire::{HashAlg, Signature};

use crate::ROLES;

/// Operations per second of `f` on this thread (median of 5 runs).
pub fn ops_per_sec(mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() > Duration::from_millis(60) {
            break;
        }
        batch *= 2;
    }
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch * 4 {
                f();
            }
            (batch * 4) as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[2]
}

/// One challenge per role, as the roles would answer (the benches' fixed input).
pub fn challenges() -> Vec<ChallengeResponse> {
    ROLES
        .iter()
        .enumerate()
        .map(|(i, &role)| ChallengeResponse {
            challenge_id: Id::try_from(format!("c{i}")).unwrap(),
            nonce: Base64Bytes::new(vec![i as u8 + 1; 32]),
            pcr_selection: vec![v1::PcrSelection {
                hash: HashAlg::Sha256,
                pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7, 15],
            }],
            hash_alg: HashAlg::Sha256,
            expires_at: 0,
            role,
            params: None,
        })
        .collect()
}

/// The server's unavoidable crypto for one boot, both roles (MakeCredential when the boot
/// registers, validation, share unwrap, HPKE seal), in boots/s on one thread.
pub fn crypto_floor(registration: bool) -> f64 {
    let mut agent = SimAgent::new().unwrap();
    let challenges = challenges();
    let reqs = agent.attest_requests(&challenges).unwrap();
    let req = &reqs[0];
    let nonce = challenges[0].nonce().unwrap();
    let ak = agent.ak().ak().clone();
    let ek = agent.tpm().ek_public().clone();
    let ak_name = ak.name().to_vec();
    let nk = req.nk_pub.to_keysplit().unwrap();
    let master = MasterKey::generate().unwrap();
    let wrapped = master
        .wrap_share(&Share::from_bytes([9; 32]), b"ctx")
        .unwrap();
    ops_per_sec(|| {
        for role in ROLES {
            if registration {
                make_credential(&ek, &ak_name, &[7; 32]).unwrap();
            }
            let sig = Signature::parse(req.signature.as_bytes()).unwrap();
            let pcrs = req.pcr_values().unwrap();
            let proof = req.inclusion.to_merkle().unwrap();
            evidence::validate(
                Expected {
                    ak: &ak,
                    nonce: &nonce,
                },
                Submitted {
                    attest: req.quote.as_bytes(),
                    signature: &sig,
                    pcrs: &pcrs,
                    nk_pub: nk.as_bytes(),
                    proof: &proof,
                    event_log: None,
                    ima_log: None,
                },
            )
            .unwrap();
            let s = master.unwrap_share(&wrapped, b"ctx").unwrap();
            seal_share(&nk, role.as_str(), b"c0", &s).unwrap();
        }
    })
}
