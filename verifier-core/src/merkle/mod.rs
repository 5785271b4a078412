//! Merkle batching of the roles' nonces (RFC 6962 / RFC 9162 section 2.1).
//!
//! Each role (verifier, tenant, later a provider) issues its own 32-byte nonce, but a hardware
//! TPM quote costs hundreds of milliseconds, so the agent asks for ONE quote whose `extraData`
//! commits to all nonces at once: the root of a Merkle tree with one leaf per nonce (see
//! [`quote_extra_data`]). Each role then receives an [`InclusionProof`] showing that *its*
//! nonce is a leaf under the quoted root, without learning or trusting the other roles' nonces.
//!
//! The tree is exactly RFC 6962's Merkle Tree Hash: leaves are hashed as
//! `SHA-256(0x00 || leaf)` and inner nodes as `SHA-256(0x01 || left || right)`, and a tree of
//! `n` leaves splits at the largest power of two smaller than `n`. The distinct prefixes are
//! what stop an inner node from being presented as a leaf (second preimage). Following the RFC
//! rather than a home-grown variant means the proofs are ordinary audit paths that any
//! Certificate Transparency verifier can check, and the published CT vectors test us.

use crate::crypto::digest;

use crate::wire::Reader;
use crate::ParseError;

/// Most leaves a tree may have. A handful of roles is the real use; the bound keeps the work
/// and memory a proof can demand small (a proof is at most 16 siblings).
pub const MAX_LEAVES: usize = 65_536;

/// Most siblings an inclusion proof can have for a tree of at most [`MAX_LEAVES`] leaves.
pub const MAX_PROOF_SIBLINGS: usize = 16;

/// Domain-separation prefix of a leaf hash (RFC 6962 section 2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an inner node hash (RFC 6962 section 2.1).
const NODE_PREFIX: u8 = 0x01;

/// Label that starts the quote binding, so the 32 bytes cannot be mistaken for any other
/// SHA-256 the agent might get a TPM to sign.
const EXTRA_DATA_LABEL: &[u8] = b"unlock/v1";

/// A Merkle tree or inclusion proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// A tree needs at least one leaf (one nonce per role).
    #[error("Merkle tree: no leaves given (at least one role nonce is required)")]
    Empty,
    /// More leaves than [`MAX_LEAVES`].
    #[error("Merkle tree: {count} leaves exceed the maximum {max}")]
    TooManyLeaves {
        /// Leaves given.
        count: usize,
        /// Largest allowed number of leaves.
        max: usize,
    },
    /// The proof's tree size is zero or above [`MAX_LEAVES`].
    #[error("inclusion proof: tree_size {tree_size} is outside 1..={max}")]
    InvalidTreeSize {
        /// Tree size claimed by the proof.
        tree_size: u32,
        /// Largest allowed tree size.
        max: usize,
    },
    /// The leaf index is not inside the tree.
    #[error("inclusion proof: leaf_index {leaf_index} is not below tree_size {tree_size}")]
    IndexOutOfRange {
        /// Index claimed by the proof (or asked of the tree).
        leaf_index: u32,
        /// Number of leaves in the tree.
        tree_size: u32,
    },
    /// The proof has more or fewer siblings than the audit path for its index and size.
    #[error(
        "inclusion proof: {actual} siblings, but leaf {leaf_index} of a {tree_size}-leaf tree \
         needs exactly {expected}"
    )]
    WrongSiblingCount {
        /// Index claimed by the proof.
        leaf_index: u32,
        /// Tree size claimed by the proof.
        tree_size: u32,
        /// Length of the audit path for that index and size.
        expected: usize,
        /// Siblings the proof carries.
        actual: usize,
    },
    /// The recomputed root differs from the quoted one: wrong leaf, index, size or sibling.
    #[error("inclusion proof: the recomputed root does not match the quoted Merkle root")]
    RootMismatch,
    /// The serialized proof could not be decoded.
    #[error("inclusion proof: {0}")]
    Malformed(#[from] ParseError),
}

/// RFC 6962 leaf hash: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(data);
    finish(ctx)
}

/// RFC 6962 inner node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

/// The quote's `extraData`: `SHA-256("unlock/v1" || merkle_root || SHA-256(nk_pub))`.
///
/// This one value binds the TPM quote to every role's nonce (through the root) and to the
/// agent's ephemeral key NK, so a man in the middle who swaps NK invalidates the quote.
/// `nk_pub` is NK's public key exactly as sent on the wire (32 raw bytes for X25519).
pub fn quote_extra_data(merkle_root: &[u8; 32], nk_pub: &[u8]) -> [u8; 32] {
    let nk_digest = digest::digest(&digest::SHA256, nk_pub);
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(EXTRA_DATA_LABEL);
    ctx.update(merkle_root);
    ctx.update(nk_digest.as_ref());
    finish(ctx)
}

fn finish(ctx: digest::Context) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A Merkle tree over the roles' nonces, kept level by level so proofs cost `O(log n)`.
///
/// Building bottom-up, pairing nodes left to right and promoting an unpaired last node
/// unchanged, yields the same tree as RFC 6962's largest-power-of-two split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[0]` are the leaf hashes; the last level holds only the root.
    levels: Vec<Vec<[u8; 32]>>,
}

impl MerkleTree {
    /// Builds the tree over 32-byte nonces, one leaf each, in the order given.
    ///
    /// The order is part of what the root commits to: every party must use the same one
    /// (the protocol's role order).
    pub fn new(leaves: &[[u8; 32]]) -> Result<Self, MerkleError> {
        check_leaf_count(leaves.len())?;
        Self::from_leaf_hashes(leaves.iter().map(|leaf| leaf_hash(leaf)).collect())
    }

    /// Builds the tree over already-hashed leaves (see [`leaf_hash`]).
    ///
    /// For leaves that are not 32-byte nonces, such as the Certificate Transparency test
    /// vectors; the protocol itself uses [`MerkleTree::new`].
    pub fn from_leaf_hashes(leaf_hashes: Vec<[u8; 32]>) -> Result<Self, MerkleError> {
        check_leaf_count(leaf_hashes.len())?;
        let mut levels = vec![leaf_hashes];
        loop {
            let below = match levels.last() {
                Some(level) if level.len() > 1 => level,
                _ => break,
            };
            let mut pairs = below.chunks_exact(2);
            let mut above: Vec<[u8; 32]> = pairs
                .by_ref()
                .filter_map(|pair| match pair {
                    [left, right] => Some(node_hash(left, right)),
                    _ => None,
                })
                .collect();
            // An unpaired last node moves up unchanged (RFC 6962's split, seen bottom-up).
            above.extend_from_slice(pairs.remainder());
            levels.push(above);
        }
        Ok(Self { levels })
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    /// Always false: a tree has at least one leaf. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Merkle Tree Hash (RFC 6962 `MTH`) of all leaves.
    pub fn root(&self) -> [u8; 32] {
        self.levels
            .last()
            .and_then(|level| level.first())
            .copied()
            .unwrap_or([0u8; 32])
    }

    /// The RFC 6962 audit path for leaf `index`, siblings ordered from the leaf upwards.
    pub fn proof(&self, index: usize) -> Result<InclusionProof, MerkleError> {
        let size = self.len();
        // Sizes are bounded by MAX_LEAVES, so both conversions always succeed.
        let tree_size = u32::try_from(size).map_err(|_| MerkleError::TooManyLeaves {
            count: size,
            max: MAX_LEAVES,
        })?;
        let leaf_index = u32::try_from(index).unwrap_or(u32::MAX);
        if index >= size {
            return Err(MerkleError::IndexOutOfRange {
                leaf_index,
                tree_size,
            });
        }
        let mut siblings = Vec::new();
        let mut pos = index;
        for level in &self.levels {
            if let Some(sibling) = level.get(pos ^ 1) {
                siblings.push(*sibling);
            }
            pos >>= 1;
        }
        Ok(InclusionProof {
            leaf_index,
            tree_size,
            siblings,
        })
    }
}

fn check_leaf_count(count: usize) -> Result<(), MerkleError> {
    if count == 0 {
        return Err(MerkleError::Empty);
    }
    if count > MAX_LEAVES {
        return Err(MerkleError::TooManyLeaves {
            count,
            max: MAX_LEAVES,
        });
    }
    Ok(())
}

/// Proof that one leaf is in a tree of `tree_size` leaves: the RFC 6962 audit path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Zero-based position of the leaf (the role's slot in the protocol's role order).
    pub leaf_index: u32,
    /// Number of leaves in the tree.
    pub tree_size: u32,
    /// Sibling hashes from the leaf level upwards.
    pub siblings: Vec<[u8; 32]>,
}

impl InclusionProof {
    /// Serializes as `leaf_index (u32 BE) || tree_size (u32 BE) || count (u8) || siblings`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 32 * self.siblings.len());
        out.extend_from_slice(&self.leaf_index.to_be_bytes());
        out.extend_from_slice(&self.tree_size.to_be_bytes());
        // A proof of more than 255 siblings cannot verify; saturate so the count stays honest
        // about being wrong rather than wrapping to a small number.
        out.push(u8::try_from(self.siblings.len()).unwrap_or(u8::MAX));
        for sibling in &self.siblings {
            out.extend_from_slice(sibling);
        }
        out
    }

    /// Decodes [`InclusionProof::to_bytes`] output from untrusted bytes.
    ///
    /// The sibling count is bounded by [`MAX_PROOF_SIBLINGS`] before anything is allocated;
    /// whether the count fits the index and size is checked by [`verify_inclusion`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MerkleError> {
        let mut r = Reader::new("InclusionProof", bytes);
        let leaf_index = r.u32("leaf_index")?;
        let tree_size = r.u32("tree_size")?;
        let count = usize::from(r.u8("count")?);
        let body = r.bounded(
            count.saturating_mul(32),
            "siblings",
            MAX_PROOF_SIBLINGS * 32,
        )?;
        r.finish()?;
        let siblings = body
            .chunks_exact(32)
            .map(|chunk| {
                let mut sibling = [0u8; 32];
                sibling.copy_from_slice(chunk);
                sibling
            })
            .collect();
        Ok(Self {
            leaf_index,
            tree_size,
            siblings,
        })
    }
}

/// Length of the RFC 6962 audit path of leaf `index` in a tree of `size` leaves.
fn path_len(index: u32, size: u32) -> usize {
    let (mut pos, mut last) = (index, size.saturating_sub(1));
    let mut len = 0;
    while last > 0 {
        // A node has a sibling unless it is the unpaired last node of its level.
        if pos != last || pos & 1 == 1 {
            len += 1;
        }
        pos >>= 1;
        last >>= 1;
    }
    len
}

/// Checks that `leaf` (a role's 32-byte nonce) is leaf `proof.leaf_index` of the tree whose
/// root is `root`.
///
/// Refuses a zero or oversize tree, an index outside the tree, a sibling count that differs
/// from the audit path length for that index and size (no extra or missing siblings), and any
/// root mismatch.
///
/// As in RFC 6962, the root commits to the leaves but not to `tree_size` on its own: sizes
/// that give the same audit path length give the same hash chain. A role that expects a given
/// number of roles or its own slot compares `proof.tree_size` / `proof.leaf_index` itself.
pub fn verify_inclusion(
    leaf: &[u8; 32],
    proof: &InclusionProof,
    root: &[u8; 32],
) -> Result<(), MerkleError> {
    verify_inclusion_hash(&leaf_hash(leaf), proof, root)
}

/// [`verify_inclusion`] for an already-hashed leaf (see [`leaf_hash`]).
pub fn verify_inclusion_hash(
    leaf_hash: &[u8; 32],
    proof: &InclusionProof,
    root: &[u8; 32],
) -> Result<(), MerkleError> {
    if root_from_leaf_hash(leaf_hash, proof)? != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// The root that `proof` proves `leaf` (a role's nonce) to be in.
///
/// A role does not know the root in advance: the quote binds only
/// `SHA-256("unlock/v1" || root || SHA-256(NK))`. So it computes the root from its own nonce
/// and the agent's audit path, and the quote signature then decides: a proof for any other
/// leaf gives another root, and the quote's extraData will not match.
pub fn root_from_proof(leaf: &[u8; 32], proof: &InclusionProof) -> Result<[u8; 32], MerkleError> {
    root_from_leaf_hash(&leaf_hash(leaf), proof)
}

fn root_from_leaf_hash(
    leaf_hash: &[u8; 32],
    proof: &InclusionProof,
) -> Result<[u8; 32], MerkleError> {
    let (index, size) = (proof.leaf_index, proof.tree_size);
    if size == 0 || usize::try_from(size).map_or(true, |s| s > MAX_LEAVES) {
        return Err(MerkleError::InvalidTreeSize {
            tree_size: size,
            max: MAX_LEAVES,
        });
    }
    if index >= size {
        return Err(MerkleError::IndexOutOfRange {
            leaf_index: index,
            tree_size: size,
        });
    }
    let expected = path_len(index, size);
    if proof.siblings.len() != expected {
        return Err(MerkleError::WrongSiblingCount {
            leaf_index: index,
            tree_size: size,
            expected,
            actual: proof.siblings.len(),
        });
    }

    // RFC 9162 section 2.1.3.2.
    let (mut fnode, mut snode) = (index, size - 1);
    let mut hash = *leaf_hash;
    for sibling in &proof.siblings {
        if snode == 0 {
            return Err(MerkleError::RootMismatch);
        }
        if fnode & 1 == 1 || fnode == snode {
            hash = node_hash(sibling, &hash);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(MerkleError::RootMismatch);
    }
    Ok(hash)
}
