//! AMD's key hierarchy for SEV-SNP: VCEK → ASK → ARK, to roots shipped with this crate.
//!
//! The ARK (AMD Root Key) and ASK (AMD SEV Key) of each product line are public data that
//! AMD's Key Distribution Service publishes (`https://kdsintf.amd.com/vcek/v1/<product>/cert_chain`).
//! The copies under `verifier-core/data/amd/` and where they were taken from are listed in
//! `verifier-core/data/amd/README.md` with their SHA-256 fingerprints; a test checks that
//! each ARK is self-signed and signs its ASK (RSA-PSS SHA-384).
//!
//! The VCEK (Versioned Chip Endorsement Key) is specific to one chip and one TCB: its
//! extensions (OIDs under 1.3.6.1.4.1.3704.1) carry the chip's hwID and the SPL of each
//! firmware component it was derived for. [`VerifiedVcek`] exposes both so the report check
//! can require that they are the report's own.
//!
//! Only the ARKs are trust anchors; the ASKs are shipped as untrusted intermediates, so an
//! ASK is accepted only with a valid ARK signature over it. Revocation (AMD's CRL per
//! product) is not checked: this crate does no I/O.

use std::time::SystemTime;

use crate::ekcert::{pem_certificates, Certificate, EkCertError, TrustStore};

use super::snp::TcbVersion;

/// The roots, as shipped: (product, ARK PEM, ASK PEM).
const SHIPPED: [(&str, &[u8], &[u8]); 2] = [
    (
        "Milan",
        include_bytes!("../../data/amd/milan-ark.pem"),
        include_bytes!("../../data/amd/milan-ask.pem"),
    ),
    (
        "Genoa",
        include_bytes!("../../data/amd/genoa-ark.pem"),
        include_bytes!("../../data/amd/genoa-ask.pem"),
    ),
];

/// AMD SEV vendor extensions (DER content bytes of the OIDs under 1.3.6.1.4.1.3704.1).
const OID_PRODUCT_NAME: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01, 0x02];
const OID_BL_SPL: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01, 0x03, 0x01];
const OID_TEE_SPL: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01, 0x03, 0x02];
const OID_SNP_SPL: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01, 0x03, 0x03];
const OID_UCODE_SPL: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01, 0x03, 0x08];
const OID_HW_ID: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01, 0x04];

/// Why a VCEK is not acceptable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VcekError {
    /// The chain to an AMD root failed (malformed certificate, signature, validity, CA
    /// constraints, unknown issuer).
    #[error("VCEK chain to the AMD roots: {0}")]
    Chain(#[from] EkCertError),
    /// The VCEK claims to be a CA.
    #[error("VCEK has basicConstraints cA=TRUE")]
    IsCa,
    /// The VCEK's key is not a P-384 key.
    #[error("VCEK public key is not an ECDSA P-384 key")]
    NotP384,
    /// A required AMD extension is missing or malformed (its OID).
    #[error("VCEK extension {0} is missing or malformed")]
    Extension(&'static str),
}

/// The AMD roots (ARKs) and their ASKs.
#[derive(Debug, Clone)]
pub struct AmdRoots {
    arks: TrustStore,
    asks: Vec<Vec<u8>>,
    /// (ARK subject DER, product name), to say which product a chain ended at.
    products: Vec<(Vec<u8>, &'static str)>,
    /// Latest notBefore and earliest notAfter over every shipped ARK and ASK: a cached
    /// VCEK is reused only inside this window and its own validity.
    roots_window: (i64, i64),
}

/// Most VCEKs a [`VcekCache`] holds (one per chip and TCB in a fleet); when full it is
/// cleared, which costs only re-verification.
pub const VCEK_CACHE_MAX: usize = 4096;

/// Verified VCEKs by the SHA-256 of their DER, so that the chain's RSA-4096 signatures are
/// checked once per chip and TCB rather than once per attestation. An entry is used only at
/// a time inside its certificates' validity; the cache belongs to one [`AmdRoots`].
#[derive(Debug, Default)]
pub struct VcekCache {
    map: std::sync::Mutex<std::collections::HashMap<[u8; 32], CachedVcek>>,
}

#[derive(Debug, Clone)]
struct CachedVcek {
    vcek: VerifiedVcek,
    not_before: i64,
    not_after: i64,
}

impl VcekCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached VCEKs.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AmdRoots {
    /// The roots shipped with this crate (Milan, Genoa).
    pub fn shipped() -> Result<Self, EkCertError> {
        Self::from_pems(&SHIPPED)
    }

    /// Roots from (product name, ARK PEM, ASK PEM) triples: for product lines this build
    /// does not ship (an operator adds AMD's published chain for, say, Turin), or to narrow
    /// the set. Only the ARKs become trust anchors.
    pub fn from_pems(sets: &[(&'static str, &[u8], &[u8])]) -> Result<Self, EkCertError> {
        let mut arks = TrustStore::new();
        let mut asks = Vec::new();
        let mut products = Vec::new();
        for &(product, ark_pem, ask_pem) in sets {
            for der in pem_certificates(ark_pem)? {
                let cert = Certificate::from_der(&der)?;
                products.push((cert.subject.clone(), product));
                arks.add_der(&der)?;
            }
            asks.extend(pem_certificates(ask_pem)?);
        }
        let mut roots_window = (i64::MIN, i64::MAX);
        for der in asks.iter().cloned().chain(
            sets.iter()
                .flat_map(|(_, ark, _)| pem_certificates(ark).unwrap_or_default()),
        ) {
            let (nb, na) = Certificate::from_der(&der)?.validity();
            roots_window = (roots_window.0.max(nb), roots_window.1.min(na));
        }
        Ok(Self {
            arks,
            asks,
            products,
            roots_window,
        })
    }

    /// [`Self::verify_vcek`] through `cache`: a VCEK verified before (same DER) is reused
    /// while `now` is inside its and the shipped roots' validity; otherwise it is verified
    /// and, on success, cached.
    pub fn verify_vcek_cached(
        &self,
        cache: &VcekCache,
        vcek_der: &[u8],
        now: SystemTime,
    ) -> Result<VerifiedVcek, VcekError> {
        let key = crate::wire::HashAlg::Sha256.hash(vcek_der);
        let mut id = [0u8; 32];
        id.copy_from_slice(key.as_bytes());
        let t = crate::ekcert::unix_seconds(now)?;
        if let Ok(map) = cache.map.lock() {
            if let Some(c) = map.get(&id) {
                if (c.not_before..=c.not_after).contains(&t) {
                    return Ok(c.vcek.clone());
                }
            }
        }
        let vcek = self.verify_vcek(vcek_der, &[], now)?;
        let (nb, na) = Certificate::from_der(vcek_der)
            .map_err(EkCertError::from)?
            .validity();
        if let Ok(mut map) = cache.map.lock() {
            if map.len() >= VCEK_CACHE_MAX {
                map.clear();
            }
            map.insert(
                id,
                CachedVcek {
                    vcek: vcek.clone(),
                    not_before: nb.max(self.roots_window.0),
                    not_after: na.min(self.roots_window.1),
                },
            );
        }
        Ok(vcek)
    }

    /// Product lines whose roots are in this set.
    pub fn products(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.products.iter().map(|(_, p)| *p)
    }

    /// Verifies `vcek_der` at time `now`: it chains through a shipped ASK (or one of
    /// `extra_intermediates`, untrusted) to an ARK, is not a CA, has a P-384 key and the
    /// AMD TCB extensions. The result may be cached by (chip id, TCB) to skip the RSA work.
    pub fn verify_vcek(
        &self,
        vcek_der: &[u8],
        extra_intermediates: &[&[u8]],
        now: SystemTime,
    ) -> Result<VerifiedVcek, VcekError> {
        let mut inter: Vec<&[u8]> = self.asks.iter().map(Vec::as_slice).collect();
        inter.extend_from_slice(extra_intermediates);
        let chain = self.arks.verify_chain(vcek_der, &inter, now)?;
        let cert = chain.certificate();
        if cert.is_ca() {
            return Err(VcekError::IsCa);
        }
        let point = cert.p384_point().ok_or(VcekError::NotP384)?.to_vec();
        let spl = |oid: &'static [u8], name: &'static str| -> Result<u8, VcekError> {
            let v = cert.extension(oid).ok_or(VcekError::Extension(name))?;
            let mut r = crate::wire::Reader::new("VCEK extension", v);
            let n = crate::ekcert::der::small_uint(&mut r, name)
                .map_err(|_| VcekError::Extension(name))?;
            r.finish().map_err(|_| VcekError::Extension(name))?;
            u8::try_from(n).map_err(|_| VcekError::Extension(name))
        };
        let tcb = TcbVersion {
            bootloader: spl(OID_BL_SPL, "1.3.6.1.4.1.3704.1.3.1 (blSPL)")?,
            tee: spl(OID_TEE_SPL, "1.3.6.1.4.1.3704.1.3.2 (teeSPL)")?,
            snp: spl(OID_SNP_SPL, "1.3.6.1.4.1.3704.1.3.3 (snpSPL)")?,
            microcode: spl(OID_UCODE_SPL, "1.3.6.1.4.1.3704.1.3.8 (ucodeSPL)")?,
        };
        // Required: it is what ties the VCEK to one chip (a VLEK has none, and VLEK-signed
        // reports are not accepted).
        let hw_id = match cert.extension(OID_HW_ID) {
            Some(v) if v.len() == 64 => v.to_vec(),
            _ => return Err(VcekError::Extension("1.3.6.1.4.1.3704.1.4 (hwID)")),
        };
        // Present in every AMD VCEK; used only for display, so its absence is not fatal.
        let product_name = cert.extension(OID_PRODUCT_NAME).and_then(|v| {
            let mut r = crate::wire::Reader::new("productName", v);
            let tlv = crate::ekcert::der::any(&mut r, "productName").ok()?;
            std::str::from_utf8(tlv.content.clone().rest())
                .ok()
                .map(str::to_owned)
        });
        let product = self
            .products
            .iter()
            .find(|(subject, _)| subject.as_slice() == chain.anchor_subject())
            .map_or("unknown", |(_, p)| *p);
        Ok(VerifiedVcek {
            point,
            tcb,
            hw_id,
            product,
            product_name,
        })
    }
}

/// A VCEK whose chain to an AMD root verified. Only [`AmdRoots::verify_vcek`] builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedVcek {
    point: Vec<u8>,
    tcb: TcbVersion,
    hw_id: Vec<u8>,
    product: &'static str,
    product_name: Option<String>,
}

impl VerifiedVcek {
    /// The P-384 public key (SEC1 uncompressed).
    pub fn public_key(&self) -> &[u8] {
        &self.point
    }
    /// The TCB the VCEK was derived for.
    pub fn tcb(&self) -> TcbVersion {
        self.tcb
    }
    /// The chip's hwID (64 bytes).
    pub fn hw_id(&self) -> &[u8] {
        &self.hw_id
    }
    /// The product line of the root the chain ends at.
    pub fn product(&self) -> &'static str {
        self.product
    }
    /// The certificate's productName extension (`Milan-B0`), when present.
    pub fn product_name(&self) -> Option<&str> {
        self.product_name.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ekcert::verify::verify_signature;

    /// Each shipped ARK is self-signed, each ASK is signed by its ARK (RSA-PSS SHA-384),
    /// and the files are the ones the README lists (by fingerprint).
    #[test]
    fn shipped_roots_are_self_signed_and_sign_their_asks() {
        let expected = [
            (
                "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
                "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
            ),
            (
                "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
                "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
            ),
        ];
        for ((product, ark_pem, ask_pem), (ark_fp, ask_fp)) in SHIPPED.iter().zip(expected) {
            let ark_der = pem_certificates(ark_pem).unwrap().remove(0);
            let ask_der = pem_certificates(ask_pem).unwrap().remove(0);
            assert_eq!(
                hex::encode(crate::wire::HashAlg::Sha256.hash(&ark_der).as_bytes()),
                ark_fp,
                "{product} ARK"
            );
            assert_eq!(
                hex::encode(crate::wire::HashAlg::Sha256.hash(&ask_der).as_bytes()),
                ask_fp,
                "{product} ASK"
            );
            let ark = Certificate::from_der(&ark_der).unwrap();
            let ask = Certificate::from_der(&ask_der).unwrap();
            assert!(ark.is_self_issued() && ark.is_ca() && ask.is_ca());
            verify_signature(&ark, &ark, 1).unwrap();
            verify_signature(&ask, &ark, 1).unwrap();
            // And the other product's ARK does not verify this ASK.
            let other = SHIPPED.iter().find(|(p, _, _)| p != product).unwrap();
            let other_ark =
                Certificate::from_der(&pem_certificates(other.1).unwrap().remove(0)).unwrap();
            assert!(verify_signature(&ask, &other_ark, 1).is_err());
        }
        let roots = AmdRoots::shipped().unwrap();
        assert_eq!(roots.products().collect::<Vec<_>>(), ["Milan", "Genoa"]);
    }
}
