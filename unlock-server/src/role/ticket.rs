//! Challenges that cost no database write: the challenge id is a ticket that carries its own
//! expiry and a reference to the agent, authenticated under a key derived from the role's
//! master key, and the nonce is derived from it.
//!
//! Why: a boot asks each role for a challenge and then attests. Storing every challenge made
//! the challenge a durable write, so a boot cost two per role and a stranger who knows an
//! agent id could make the server write at will. Now a challenge is stored once, when it is
//! *used*, inside the release transaction that decides it (the row is what makes it single
//! use, and holds the answer an identical retry gets again). Every replica of a role has the
//! same master key, so a ticket issued by one verifies at all.
//!
//! Layout (45 bytes, base64url without padding: 60 characters, within `Id::MAX_LEN`):
//! `version (1) || expires_at (u32 BE, Unix seconds) || agent_ref (12) || salt (12) || tag (16)`
//! - `agent_ref`: the first 12 bytes of the agent id (which is SHA-256 of the EK), enough to
//!   find the enrollment; the tag binds the whole agent id, so a reference collision can't
//!   redirect a ticket.
//! - `tag`: HMAC-SHA256 under the ticket key over the version, expiry, whole agent id, the AK
//!   name the challenge was issued for and the salt, truncated to 128 bits.
//! - the nonce: HMAC-SHA256 under the ticket key over the salt and the tag: unpredictable
//!   without the key, recomputed at attest instead of stored.

use aws_lc_rs::hmac;
use base64::Engine as _;
use subtle::ConstantTimeEq;
use verifier_core::keysplit::MasterKey;
use verifier_core::proto::v1::{Id, Role};

const VERSION: u8 = 1;
const REF_LEN: usize = 12;
const SALT_LEN: usize = 12;
const TAG_LEN: usize = 16;
const TICKET_LEN: usize = 1 + 4 + REF_LEN + SALT_LEN + TAG_LEN;

/// The key tickets are authenticated under, one per role (derived, never stored).
pub struct TicketKey(hmac::Key);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(<redacted>)")
    }
}

/// A ticket as parsed from a challenge id: not yet authenticated (that needs the agent id
/// its reference points to, see [`TicketKey::open`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Unix seconds after which the challenge is refused.
    pub expires_at: i64,
    /// The agent id's first 24 hex characters.
    pub agent_ref: String,
    salt: [u8; SALT_LEN],
    tag: [u8; TAG_LEN],
}

/// A fresh challenge: its id and nonce.
#[derive(Debug)]
pub struct Issued {
    /// The ticket, as the challenge id.
    pub id: Id,
    /// The nonce the agent binds into its quote.
    pub nonce: [u8; 32],
}

impl TicketKey {
    /// `HMAC-SHA256(master, "unlock/v1 challenge ticket|<role>")`.
    pub fn derive(master: &MasterKey, role: Role) -> Self {
        let k = hmac::Key::new(hmac::HMAC_SHA256, master.expose_secret());
        let label = format!("unlock/v1 challenge ticket|{}", role.as_str());
        let derived = hmac::sign(&k, label.as_bytes());
        Self(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// Issues a challenge for `agent_id`'s AK `ak_name`, valid until `expires_at`.
    pub fn issue(
        &self,
        agent_id: &str,
        ak_name: &[u8],
        expires_at: i64,
    ) -> Result<Issued, TicketError> {
        let expires = u32::try_from(expires_at).map_err(|_| TicketError::ExpiryOutOfRange)?;
        let agent_ref = agent_ref_bytes(agent_id).ok_or(TicketError::AgentId)?;
        let mut salt = [0u8; SALT_LEN];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| TicketError::Rng)?;
        let tag = self.tag(expires, agent_id, ak_name, &salt);
        let mut bytes = Vec::with_capacity(TICKET_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&expires.to_be_bytes());
        bytes.extend_from_slice(&agent_ref);
        bytes.extend_from_slice(&salt);
        bytes.extend_from_slice(&tag);
        let id = Id::try_from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes))
            .map_err(|_| TicketError::Encoding)?;
        Ok(Issued {
            id,
            nonce: self.nonce(&salt, &tag),
        })
    }

    /// The nonce of `ticket` if it was issued by this key for `agent_id`'s AK `ak_name`.
    pub fn open(&self, ticket: &Ticket, agent_id: &str, ak_name: &[u8]) -> Option<[u8; 32]> {
        // The reference is how the agent was found, the tag binds the whole id: both must
        // name the same agent, so no byte of a ticket is left unauthenticated.
        if agent_ref(agent_id)? != ticket.agent_ref {
            return None;
        }
        let expires = u32::try_from(ticket.expires_at).ok()?;
        let want = self.tag(expires, agent_id, ak_name, &ticket.salt);
        bool::from(want.ct_eq(&ticket.tag)).then(|| self.nonce(&ticket.salt, &ticket.tag))
    }

    fn tag(&self, expires: u32, agent_id: &str, ak_name: &[u8], salt: &[u8]) -> [u8; TAG_LEN] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"tag");
        ctx.update(&[VERSION]);
        ctx.update(&expires.to_be_bytes());
        // Length-prefixed: agent ids and AK names are variable-length fields.
        for field in [agent_id.as_bytes(), ak_name] {
            ctx.update(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
            ctx.update(field);
        }
        ctx.update(salt);
        let full = ctx.sign();
        let mut tag = [0u8; TAG_LEN];
        // HMAC-SHA256 is 32 bytes: the zip takes the first TAG_LEN.
        for (t, b) in tag.iter_mut().zip(full.as_ref()) {
            *t = *b;
        }
        tag
    }

    fn nonce(&self, salt: &[u8], tag: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"nonce");
        ctx.update(salt);
        ctx.update(tag);
        let mut nonce = [0u8; 32];
        for (n, b) in nonce.iter_mut().zip(ctx.sign().as_ref()) {
            *n = *b;
        }
        nonce
    }
}

impl Ticket {
    /// Parses a challenge id; `None` for anything that is not a ticket of this version
    /// (an attacker's string, a challenge id of an older server).
    pub fn parse(id: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id)
            .ok()?;
        let bytes: &[u8; TICKET_LEN] = bytes.as_slice().try_into().ok()?;
        let (version, rest) = bytes.split_first()?;
        if *version != VERSION {
            return None;
        }
        let (expires, rest) = rest.split_first_chunk::<4>()?;
        let (agent_ref, rest) = rest.split_first_chunk::<REF_LEN>()?;
        let (salt, tag) = rest.split_first_chunk::<SALT_LEN>()?;
        Some(Self {
            expires_at: i64::from(u32::from_be_bytes(*expires)),
            agent_ref: hex::encode(agent_ref),
            salt: *salt,
            tag: tag.try_into().ok()?,
        })
    }
}

/// The first 12 bytes of an agent id (64 hex characters).
fn agent_ref_bytes(agent_id: &str) -> Option<[u8; REF_LEN]> {
    let prefix = agent_id.get(..REF_LEN * 2)?;
    let mut out = [0u8; REF_LEN];
    hex::decode_to_slice(prefix, &mut out).ok()?;
    Some(out)
}

/// The agent reference a ticket for `agent_id` carries (what the enrollment is found by).
pub fn agent_ref(agent_id: &str) -> Option<String> {
    agent_ref_bytes(agent_id).map(hex::encode)
}

/// Why a ticket could not be issued (server-side faults only).
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// The expiry does not fit the ticket's 32-bit field (after 2106).
    #[error("challenge expiry does not fit a ticket")]
    ExpiryOutOfRange,
    /// The agent id is not hex of at least 12 bytes.
    #[error("agent id is not hex")]
    AgentId,
    /// The random generator failed.
    #[error("RNG failed")]
    Rng,
    /// The encoded ticket is not a valid id (cannot happen for this layout).
    #[error("ticket does not encode to an id")]
    Encoding,
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn key(b: u8, role: Role) -> TicketKey {
        TicketKey::derive(&MasterKey::from_bytes([b; 32]), role)
    }

    #[test]
    fn issued_ticket_opens_to_the_same_nonce_for_its_agent_and_ak() {
        let k = key(1, Role::Verifier);
        let issued = k.issue(AGENT, b"ak", 1_900_000_000).unwrap();
        assert_eq!(issued.id.as_str().len(), 60);
        let t = Ticket::parse(issued.id.as_str()).unwrap();
        assert_eq!(t.expires_at, 1_900_000_000);
        assert_eq!(t.agent_ref, AGENT[..24]);
        assert_eq!(k.open(&t, AGENT, b"ak"), Some(issued.nonce));
    }

    #[test]
    fn a_ticket_does_not_open_for_another_agent_ak_role_or_key() {
        let k = key(1, Role::Verifier);
        let issued = k.issue(AGENT, b"ak", 1_900_000_000).unwrap();
        let t = Ticket::parse(issued.id.as_str()).unwrap();
        let other_agent = format!("{}00", &AGENT[..62]);
        assert_eq!(k.open(&t, &other_agent, b"ak"), None);
        assert_eq!(k.open(&t, AGENT, b"other ak"), None);
        assert_eq!(key(1, Role::Tenant).open(&t, AGENT, b"ak"), None);
        assert_eq!(key(2, Role::Verifier).open(&t, AGENT, b"ak"), None);
    }

    #[test]
    fn every_altered_byte_of_a_ticket_is_refused() {
        let k = key(1, Role::Verifier);
        let issued = k.issue(AGENT, b"ak", 1_900_000_000).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(issued.id.as_str())
            .unwrap();
        for i in 0..bytes.len() {
            let mut forged = bytes.clone();
            forged[i] ^= 0x01;
            let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&forged);
            let opened = Ticket::parse(&id).and_then(|t| k.open(&t, AGENT, b"ak"));
            assert_eq!(opened, None, "byte {i} altered and still accepted");
        }
    }

    #[test]
    fn nonces_differ_between_tickets() {
        let k = key(1, Role::Verifier);
        let a = k.issue(AGENT, b"ak", 1_900_000_000).unwrap();
        let b = k.issue(AGENT, b"ak", 1_900_000_000).unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.nonce, b.nonce);
    }

    #[test]
    fn strings_that_are_not_tickets_do_not_parse() {
        for s in [
            "",
            "a",
            "00112233445566778899aabbccddeeff",
            &"A".repeat(60),
            &"-".repeat(61),
        ] {
            assert_eq!(Ticket::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn expiry_beyond_the_field_is_an_error_not_a_wrap() {
        let k = key(1, Role::Verifier);
        assert!(matches!(
            k.issue(AGENT, b"ak", i64::from(u32::MAX) + 1),
            Err(TicketError::ExpiryOutOfRange)
        ));
        assert!(matches!(
            k.issue("not hex", b"ak", 1),
            Err(TicketError::AgentId)
        ));
    }
}
