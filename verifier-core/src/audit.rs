//! The audit trail's records and their hash chain, defined once for the server that appends
//! them and for `unlockctl audit verify`, which checks them without trusting the server.
//!
//! Each record carries the hash of the previous one, so a record changed, removed or
//! inserted after the fact breaks the chain at that point. The hash is
//! `SHA-256("unlock/v1 audit" || prev_hash || seq || at || kind || agent_id || actor ||
//! detail)`, every variable-length field prefixed by its length (u32 big-endian), integers
//! as i64 big-endian, a missing agent id as length `u32::MAX`. The first record's
//! `prev_hash` is 32 zero bytes.
//!
//! What it proves: that the records an exporter shows are the ones appended, in that order,
//! with none missing between the first and the last shown. What it does not: a database
//! administrator who rewrites the whole chain from some point on (and the head) is not
//! detected by the chain alone; keep exported copies (or their last hash) elsewhere, and
//! `verify --expect-head` compares the last hash with one recorded earlier.

use serde::{Deserialize, Serialize};

use crate::proto::v1::Validate;
use crate::proto::ProtoError;

/// Domain separation of the record hash.
const DOMAIN: &[u8] = b"unlock/v1 audit";

/// The `prev_hash` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// Largest `detail` a record may carry (bytes of JSON text).
pub const MAX_DETAIL: usize = 4096;

/// One appended record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the chain: 1, 2, ... without gaps.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// What happened: `release`, `reseal`, `refusal`, `enroll`, `revoke`, `rearm`, `delete`,
    /// `ak_pinned`, `ak_unpinned`, `iak_bound`, `policy_create`, `policy_version`, `policy_apply`,
    /// `auto_admit` (a rule admitted an unknown EK), `auto_enroll` (its deposit armed it).
    pub kind: String,
    /// The machine it concerns, if one.
    pub agent_id: Option<String>,
    /// Who: `agent` (the unlock path) or `admin` (a holder of the admin token).
    pub actor: String,
    /// The particulars, as JSON text (what the hash covers, byte for byte).
    pub detail: String,
    /// Hex of the previous record's hash.
    pub prev_hash: String,
    /// Hex of this record's hash.
    pub hash: String,
}

/// A page of records, oldest first: `GET /admin/v1/audit?after=SEQ&limit=N[&agent=ID]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    /// The records.
    pub records: Vec<AuditRecord>,
    /// The chain's last sequence number and hash (hex) when the page was read.
    pub head_seq: i64,
    /// Hex of the head's hash.
    pub head_hash: String,
}

impl Validate for AuditPage {
    fn validate(&self) -> Result<(), ProtoError> {
        for r in &self.records {
            if r.detail.len() > MAX_DETAIL {
                return Err(ProtoError::TooLarge {
                    field: "detail",
                    len: r.detail.len(),
                    max: MAX_DETAIL,
                });
            }
        }
        Ok(())
    }
}

/// The hash of a record with these fields.
pub fn record_hash(
    prev_hash: &[u8],
    seq: i64,
    at: i64,
    kind: &str,
    agent_id: Option<&str>,
    actor: &str,
    detail: &str,
) -> [u8; 32] {
    let mut ctx = crate::crypto::digest::Context::new(&crate::crypto::digest::SHA256);
    ctx.update(DOMAIN);
    let field = |ctx: &mut crate::crypto::digest::Context, b: &[u8]| {
        ctx.update(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
        ctx.update(b);
    };
    field(&mut ctx, prev_hash);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&at.to_be_bytes());
    field(&mut ctx, kind.as_bytes());
    match agent_id {
        Some(a) => field(&mut ctx, a.as_bytes()),
        None => ctx.update(&u32::MAX.to_be_bytes()),
    }
    field(&mut ctx, actor.as_bytes());
    field(&mut ctx, detail.as_bytes());
    let mut out = [0u8; 32];
    for (o, b) in out.iter_mut().zip(ctx.finish().as_ref()) {
        *o = *b;
    }
    out
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// A sequence number is not the previous one plus one (a record removed or inserted).
    #[error(
        "record {seq}: expected sequence number {expected} (a record is missing or was inserted)"
    )]
    Gap {
        /// The record's number.
        seq: i64,
        /// The number it should have.
        expected: i64,
    },
    /// A record's `prev_hash` is not the previous record's hash.
    #[error("record {seq}: prev_hash does not match the previous record's hash")]
    Link {
        /// The record's number.
        seq: i64,
    },
    /// A record's hash is not the hash of its fields (the record was altered).
    #[error("record {seq}: its hash does not match its contents (the record was altered)")]
    Altered {
        /// The record's number.
        seq: i64,
    },
    /// The last record is not the head the caller expected.
    #[error("the chain ends at record {seq} with another hash than the expected head")]
    Head {
        /// The last record's number.
        seq: i64,
    },
}

/// Checks `records` (consecutive, oldest first) as a chain continuing from `prev` (the
/// hash of the record before the first, [`GENESIS`] from the start) and numbered from
/// `first_seq`; the first break, if any.
pub fn verify_chain<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    first_seq: i64,
    prev: [u8; 32],
) -> Result<Option<(i64, [u8; 32])>, ChainBreak> {
    let mut expected = first_seq;
    let mut prev = prev;
    let mut last = None;
    for r in records {
        if r.seq != expected {
            return Err(ChainBreak::Gap {
                seq: r.seq,
                expected,
            });
        }
        if !hex_eq(&r.prev_hash, &prev) {
            return Err(ChainBreak::Link { seq: r.seq });
        }
        let h = record_hash(
            &prev,
            r.seq,
            r.at,
            &r.kind,
            r.agent_id.as_deref(),
            &r.actor,
            &r.detail,
        );
        if !hex_eq(&r.hash, &h) {
            return Err(ChainBreak::Altered { seq: r.seq });
        }
        prev = h;
        last = Some((r.seq, h));
        expected = expected.saturating_add(1);
    }
    Ok(last)
}

fn hex_eq(text: &str, bytes: &[u8; 32]) -> bool {
    let mut decoded = [0u8; 32];
    hex::decode_to_slice(text, &mut decoded).is_ok() && decoded == *bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let detail = format!("{{\"n\":{seq}}}");
                let agent = (seq % 2 == 0).then(|| "ab".repeat(32));
                let h = record_hash(
                    &prev,
                    seq,
                    100 + seq,
                    "release",
                    agent.as_deref(),
                    "agent",
                    &detail,
                );
                let r = AuditRecord {
                    seq,
                    at: 100 + seq,
                    kind: "release".into(),
                    agent_id: agent,
                    actor: "agent".into(),
                    detail,
                    prev_hash: hex::encode(prev),
                    hash: hex::encode(h),
                };
                prev = h;
                r
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_to_its_last_record() {
        let c = chain(5);
        let (seq, h) = verify_chain(&c, 1, GENESIS).unwrap().unwrap();
        assert_eq!(seq, 5);
        assert_eq!(hex::encode(h), c[4].hash);
        // A page in the middle continues from the previous record's hash.
        let mut prev = [0u8; 32];
        hex::decode_to_slice(&c[1].hash, &mut prev).unwrap();
        assert!(verify_chain(&c[2..], 3, prev).is_ok());
    }

    #[test]
    fn each_kind_of_tampering_is_found_where_it_happened() {
        let c = chain(5);
        let mut altered = c.clone();
        altered[2].detail = "{\"n\":99}".into();
        assert_eq!(
            verify_chain(&altered, 1, GENESIS),
            Err(ChainBreak::Altered { seq: 3 })
        );
        let mut removed = c.clone();
        removed.remove(1);
        assert_eq!(
            verify_chain(&removed, 1, GENESIS),
            Err(ChainBreak::Gap {
                seq: 3,
                expected: 2
            })
        );
        // A record rewritten with a fresh, self-consistent hash still breaks the next link.
        let mut rewritten = c.clone();
        rewritten[1].at = 1;
        let mut prev = [0u8; 32];
        hex::decode_to_slice(&rewritten[0].hash, &mut prev).unwrap();
        let r = &rewritten[1];
        rewritten[1].hash = hex::encode(record_hash(
            &prev,
            r.seq,
            r.at,
            &r.kind,
            r.agent_id.as_deref(),
            &r.actor,
            &r.detail,
        ));
        assert_eq!(
            verify_chain(&rewritten, 1, GENESIS),
            Err(ChainBreak::Link { seq: 3 })
        );
        // Renumbered to hide a removal: the hash covers the number.
        let mut renumbered = c;
        renumbered.remove(1);
        for r in renumbered.iter_mut().skip(1) {
            r.seq -= 1;
        }
        assert!(verify_chain(&renumbered, 1, GENESIS).is_err());
    }

    #[test]
    fn the_hash_separates_its_fields() {
        let a = record_hash(&GENESIS, 1, 2, "ab", Some("c"), "x", "d");
        let b = record_hash(&GENESIS, 1, 2, "a", Some("bc"), "x", "d");
        let c = record_hash(&GENESIS, 1, 2, "ab", None, "x", "cd");
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
