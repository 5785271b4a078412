//! Sealing a role's share to the agent's NK, in the protocol's context.
//!
//! `info = "unlock/v1 share" || role` and `aad = challenge_id`: a tenant's sealed U cannot be
//! passed off as the verifier's V (different info), and an answer captured in one challenge
//! cannot be replayed into another (different aad), even to the same NK.

use super::hpke::{seal, NkPrivate, NkPublic, Sealed};
use super::share::Share;
use super::KeySplitError;

/// Prefix of the HPKE `info` for a sealed share (protocol v1).
pub const SHARE_INFO_PREFIX: &[u8] = b"unlock/v1 share";

/// The HPKE `info` for `role`'s share: `"unlock/v1 share" || role`.
pub fn share_info(role: &str) -> Vec<u8> {
    let mut info = Vec::with_capacity(SHARE_INFO_PREFIX.len() + role.len());
    info.extend_from_slice(SHARE_INFO_PREFIX);
    info.extend_from_slice(role.as_bytes());
    info
}

/// Seals `role`'s share to NK for the challenge `challenge_id` (role side).
pub fn seal_share(
    nk_pub: &NkPublic,
    role: &str,
    challenge_id: &[u8],
    share: &Share,
) -> Result<Sealed, KeySplitError> {
    seal(
        nk_pub,
        &share_info(role),
        challenge_id,
        share.expose_secret(),
    )
}

impl NkPrivate {
    /// Opens `role`'s share sealed for `challenge_id` (agent side).
    pub fn open_share(
        &self,
        sealed: &Sealed,
        role: &str,
        challenge_id: &[u8],
    ) -> Result<Share, KeySplitError> {
        let plain = self.open(sealed, &share_info(role), challenge_id)?;
        Share::from_slice(&plain)
    }
}
