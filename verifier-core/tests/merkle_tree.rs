//! RFC 6962 Merkle batching of role nonces: known answers, every tree shape, and each forged
//! proof refused.
// Test helpers outside #[test] functions are test code too (clippy.toml allows these in tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use aws_lc_rs::digest;
use verifier_core::merkle::{
    leaf_hash, node_hash, quote_extra_data, verify_inclusion, verify_inclusion_hash,
    InclusionProof, MerkleError, MerkleTree, MAX_LEAVES,
};

fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .try_into()
        .unwrap()
}

fn h32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// The nonces the python reference below uses: SHA-256("unlock-test-nonce" || u32 BE i).
fn nonce(i: u32) -> [u8; 32] {
    let mut input = b"unlock-test-nonce".to_vec();
    input.extend_from_slice(&i.to_be_bytes());
    sha256(&input)
}

fn nonces(n: u32) -> Vec<[u8; 32]> {
    (0..n).map(nonce).collect()
}

/// Certificate Transparency's eight reference leaves (RFC 6962 test data, as published in
/// transparency-dev/merkle and google/certificate-transparency).
const CT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// MTH of the first 1..=8 CT leaves.
const CT_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn ct_tree(n: usize) -> MerkleTree {
    let hashes = CT_LEAVES[..n]
        .iter()
        .map(|l| leaf_hash(&hex::decode(l).unwrap()))
        .collect();
    MerkleTree::from_leaf_hashes(hashes).unwrap()
}

#[test]
fn certificate_transparency_roots() {
    for n in 1..=8 {
        assert_eq!(hex::encode(ct_tree(n).root()), CT_ROOTS[n - 1], "size {n}");
    }
}

#[test]
fn certificate_transparency_audit_paths() {
    let tree = ct_tree(8);
    let root = tree.root();
    let cases: [(usize, [&str; 3]); 2] = [
        (
            0,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, expected) in cases {
        let proof = tree.proof(index).unwrap();
        let got: Vec<String> = proof.siblings.iter().map(hex::encode).collect();
        assert_eq!(got, expected, "leaf {index}");
        let leaf = leaf_hash(&hex::decode(CT_LEAVES[index]).unwrap());
        verify_inclusion_hash(&leaf, &proof, &root).unwrap();
    }
}

/// Roots computed independently by a python3 one-off (recursive RFC 6962 MTH with the
/// largest-power-of-two split over `nonce(i)` for i in 0..n, hashlib.sha256):
///   mth(L) = H(0x00||L[0]) if len(L)==1 else H(0x01||mth(L[:k])||mth(L[k:]))
/// and its audit path of leaf 999 of 1000 (8 siblings, the first two listed).
#[test]
fn nonce_trees_match_independent_reference() {
    let cases = [
        (
            3,
            "62dd5ee1c1714091e4b301e7a92917069ccbf58de29b5a013cd2a2b4d242ecd9",
        ),
        (
            7,
            "764c19a27fce978df10cb3436aa2d824b084bf8ad66f4a9bb989c406c0d359f1",
        ),
        (
            1000,
            "736a325822211d4d36e0b1bc11accf0c4489b38bcb7618f9e4480f688432026b",
        ),
    ];
    for (n, root) in cases {
        assert_eq!(
            hex::encode(MerkleTree::new(&nonces(n)).unwrap().root()),
            root,
            "size {n}"
        );
    }
    let tree = MerkleTree::new(&nonces(1000)).unwrap();
    let proof = tree.proof(999).unwrap();
    assert_eq!(proof.siblings.len(), 8);
    assert_eq!(
        hex::encode(proof.siblings[0]),
        "4194233b56b67745481a48075e54bae5cf4610d3d00b20499f93f95380b7c959"
    );
    assert_eq!(
        hex::encode(proof.siblings[1]),
        "a0423fe35c150eebcc00d160142fb6f60db77bf13b762c8a74520b79263bc8dd"
    );
    assert_eq!(tree.proof(0).unwrap().siblings.len(), 10);
}

#[test]
fn every_size_up_to_1000_proves_its_leaves() {
    let all = nonces(1000);
    for n in 1..=1000usize {
        let tree = MerkleTree::new(&all[..n]).unwrap();
        assert_eq!(tree.len(), n);
        let root = tree.root();
        let indices: Vec<usize> = if n <= 64 {
            (0..n).collect()
        } else {
            // Ends, middle, both sides of the power-of-two split, and a spread in between.
            let split = n.next_power_of_two() / 2;
            let mut v = vec![0, 1, n / 2, split - 1, split % n, n - 2, n - 1];
            v.extend((0..8).map(|k| (k * 7919 + n) % n));
            v
        };
        for i in indices {
            let proof = tree.proof(i).unwrap();
            assert_eq!(proof.leaf_index as usize, i);
            assert_eq!(proof.tree_size as usize, n);
            verify_inclusion(&all[i], &proof, &root)
                .unwrap_or_else(|e| panic!("size {n} leaf {i}: {e}"));
            // And the proof of leaf i never proves a different nonce.
            let other = all[(i + 1) % all.len()];
            assert_eq!(
                verify_inclusion(&other, &proof, &root),
                Err(MerkleError::RootMismatch)
            );
        }
    }
}

#[test]
fn single_leaf_root_is_the_leaf_hash_and_proof_is_empty() {
    let n = nonce(7);
    let tree = MerkleTree::new(&[n]).unwrap();
    let mut input = vec![0x00];
    input.extend_from_slice(&n);
    assert_eq!(tree.root(), sha256(&input));
    let proof = tree.proof(0).unwrap();
    assert!(proof.siblings.is_empty());
    assert_eq!((proof.leaf_index, proof.tree_size), (0, 1));
    verify_inclusion(&n, &proof, &tree.root()).unwrap();
}

fn eight() -> (Vec<[u8; 32]>, MerkleTree) {
    let leaves = nonces(8);
    let tree = MerkleTree::new(&leaves).unwrap();
    (leaves, tree)
}

#[test]
fn wrong_leaf_refused() {
    let (leaves, tree) = eight();
    let proof = tree.proof(3).unwrap();
    assert_eq!(
        verify_inclusion(&nonce(99), &proof, &tree.root()),
        Err(MerkleError::RootMismatch)
    );
    // The right leaf still verifies, so the refusal is about the leaf.
    verify_inclusion(&leaves[3], &proof, &tree.root()).unwrap();
}

#[test]
fn wrong_index_refused() {
    let (leaves, tree) = eight();
    let mut proof = tree.proof(3).unwrap();
    proof.leaf_index = 2;
    assert_eq!(
        verify_inclusion(&leaves[3], &proof, &tree.root()),
        Err(MerkleError::RootMismatch)
    );
    proof.leaf_index = 8;
    assert_eq!(
        verify_inclusion(&leaves[3], &proof, &tree.root()),
        Err(MerkleError::IndexOutOfRange {
            leaf_index: 8,
            tree_size: 8
        })
    );
    assert!(matches!(
        tree.proof(8),
        Err(MerkleError::IndexOutOfRange { .. })
    ));
}

#[test]
fn altered_sibling_refused() {
    let (leaves, tree) = eight();
    for s in 0..3 {
        let mut proof = tree.proof(5).unwrap();
        proof.siblings[s][0] ^= 0x01;
        assert_eq!(
            verify_inclusion(&leaves[5], &proof, &tree.root()),
            Err(MerkleError::RootMismatch),
            "sibling {s}"
        );
    }
}

#[test]
fn wrong_tree_size_refused() {
    let (leaves, tree) = eight();
    let root = tree.root();
    let mut proof = tree.proof(0).unwrap();
    // A size whose audit path for this index is shorter or longer is refused by count.
    for (size, expected) in [(2, 1), (4, 2), (9, 4), (17, 5)] {
        proof.tree_size = size;
        assert_eq!(
            verify_inclusion(&leaves[0], &proof, &root),
            Err(MerkleError::WrongSiblingCount {
                leaf_index: 0,
                tree_size: size,
                expected,
                actual: 3
            }),
            "size {size}"
        );
    }
    // RFC 6962 property, asserted so a change is noticed: sizes giving the same path length
    // give the same hash chain (5..=8 for leaf 0), so the root, not tree_size, is what binds;
    // a role that cares about the size compares `tree_size` with its own role count.
    proof.tree_size = 5;
    assert_eq!(verify_inclusion(&leaves[0], &proof, &root), Ok(()));
    proof.tree_size = 0;
    assert!(matches!(
        verify_inclusion(&leaves[0], &proof, &root),
        Err(MerkleError::InvalidTreeSize { tree_size: 0, .. })
    ));
    proof.tree_size = u32::try_from(MAX_LEAVES).unwrap() + 1;
    assert!(matches!(
        verify_inclusion(&leaves[0], &proof, &root),
        Err(MerkleError::InvalidTreeSize { .. })
    ));
}

#[test]
fn extra_or_missing_siblings_refused() {
    let (leaves, tree) = eight();
    let mut proof = tree.proof(6).unwrap();
    proof.siblings.push([0u8; 32]);
    assert!(matches!(
        verify_inclusion(&leaves[6], &proof, &tree.root()),
        Err(MerkleError::WrongSiblingCount {
            expected: 3,
            actual: 4,
            ..
        })
    ));
    proof.siblings.truncate(2);
    assert!(matches!(
        verify_inclusion(&leaves[6], &proof, &tree.root()),
        Err(MerkleError::WrongSiblingCount {
            expected: 3,
            actual: 2,
            ..
        })
    ));
}

#[test]
fn root_of_another_tree_refused() {
    let (leaves, tree) = eight();
    let other = MerkleTree::new(&nonces(9)).unwrap();
    let proof = tree.proof(4).unwrap();
    assert_eq!(
        verify_inclusion(&leaves[4], &proof, &other.root()),
        Err(MerkleError::RootMismatch)
    );
}

/// Second preimage: the inner node over leaves 0 and 1 of a 4-leaf tree, presented as a
/// nonce of a 2-leaf tree with the other inner node as sibling. Without the 0x00/0x01 domain
/// separation this would reproduce the root.
#[test]
fn inner_node_presented_as_leaf_refused() {
    let leaves = nonces(4);
    let tree = MerkleTree::new(&leaves).unwrap();
    let n01 = node_hash(&leaf_hash(&leaves[0]), &leaf_hash(&leaves[1]));
    let n23 = node_hash(&leaf_hash(&leaves[2]), &leaf_hash(&leaves[3]));
    assert_eq!(node_hash(&n01, &n23), tree.root(), "test setup");
    let forged = InclusionProof {
        leaf_index: 0,
        tree_size: 2,
        siblings: vec![n23],
    };
    assert_eq!(
        verify_inclusion(&n01, &forged, &tree.root()),
        Err(MerkleError::RootMismatch)
    );
    // Likewise a leaf hash presented as the nonce itself.
    let proof = tree.proof(0).unwrap();
    assert_eq!(
        verify_inclusion(&leaf_hash(&leaves[0]), &proof, &tree.root()),
        Err(MerkleError::RootMismatch)
    );
}

#[test]
fn tree_size_bounds() {
    assert_eq!(MerkleTree::new(&[]).unwrap_err(), MerkleError::Empty);
    let too_many = vec![[0u8; 32]; MAX_LEAVES + 1];
    assert_eq!(
        MerkleTree::new(&too_many).unwrap_err(),
        MerkleError::TooManyLeaves {
            count: MAX_LEAVES + 1,
            max: MAX_LEAVES
        }
    );
    assert_eq!(
        MerkleTree::from_leaf_hashes(Vec::new()).unwrap_err(),
        MerkleError::Empty
    );
}

#[test]
fn proof_bytes_round_trip_and_bounds() {
    let leaves = nonces(5);
    let tree = MerkleTree::new(&leaves).unwrap();
    for (i, leaf) in leaves.iter().enumerate() {
        let proof = tree.proof(i).unwrap();
        let bytes = proof.to_bytes();
        assert_eq!(bytes.len(), 9 + 32 * proof.siblings.len());
        let back = InclusionProof::from_bytes(&bytes).unwrap();
        assert_eq!(back, proof);
        verify_inclusion(leaf, &back, &tree.root()).unwrap();
    }
    let bytes = tree.proof(0).unwrap().to_bytes();
    // Truncated sibling, trailing byte, and a count above the bound (before any allocation).
    assert!(matches!(
        InclusionProof::from_bytes(&bytes[..bytes.len() - 1]),
        Err(MerkleError::Malformed(_))
    ));
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        InclusionProof::from_bytes(&long),
        Err(MerkleError::Malformed(_))
    ));
    let mut huge = vec![0, 0, 0, 0, 0, 0, 0, 1, 255];
    huge.extend_from_slice(&[0u8; 64]);
    assert!(matches!(
        InclusionProof::from_bytes(&huge),
        Err(MerkleError::Malformed(
            verifier_core::ParseError::TooLarge { .. }
        ))
    ));
}

/// extraData = SHA-256("unlock/v1" || root || SHA-256(NK_pub)); expected value from python3:
/// sha256(b"unlock/v1" + bytes(range(32)) + sha256(bytes([0x42]*32))).
#[test]
fn quote_extra_data_binds_root_and_nk() {
    let root: [u8; 32] = core::array::from_fn(|i| i as u8);
    let nk = [0x42u8; 32];
    let expected = h32("4013ae0d22753f23f77bbbf9bc895d5e72e21fddffd31036049053ece0ea2266");
    assert_eq!(quote_extra_data(&root, &nk), expected);
    let mut other_nk = nk;
    other_nk[31] ^= 1;
    assert_ne!(quote_extra_data(&root, &other_nk), expected);
    let mut other_root = root;
    other_root[0] ^= 1;
    assert_ne!(quote_extra_data(&other_root, &nk), expected);
}
