//! Auto-approval: the one way a machine's own request can change its policy without an
//! operator (issue 13). The policy names certificates it trusts to sign boot applications
//! (`auto_approve.boot_applications_signed_by`); a pending change is approved as submitted
//! when it only adds `measured_boot.boot_applications` digests and every added digest is
//! vouched for by an Authenticode signature from one of them ([`crate::image_signature`]).
//! Anything else (an initrd, a PCR 9 value, a command line, an unsigned or untrusted
//! image, a digest in a bank the signature does not sign) waits for an operator.
//!
//! What this proves: the new boot application was signed by someone the operator trusts to
//! sign boot code, the same judgement Secure Boot makes. What it does not: that the signed
//! image is a good one (a signed but vulnerable old kernel passes; pair it with a
//! `measured_boot.dbx` rule and SBAT), or anything about the initrd or command line.

use super::document::AutoApproveDocument;
use super::PolicyError;

/// Most certificates one policy may trust for auto-approval.
pub const MAX_TRUSTED_SIGNERS: usize = 16;

/// Largest certificate accepted, bytes of DER.
const MAX_CERTIFICATE: usize = 16 * 1024;

/// The DER of each trusted certificate, checked: base64, at most
/// [`MAX_TRUSTED_SIGNERS`], each a certificate (parsed when the build verifies them).
pub fn signer_certificates(doc: &AutoApproveDocument) -> Result<Vec<Vec<u8>>, PolicyError> {
    use base64::Engine as _;
    let field = "auto_approve.boot_applications_signed_by";
    let list = &doc.boot_applications_signed_by;
    if list.len() > MAX_TRUSTED_SIGNERS {
        return Err(PolicyError::Invalid {
            field: field.into(),
            reason: format!("more than {MAX_TRUSTED_SIGNERS} certificates"),
        });
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, b64) in list.iter().enumerate() {
        let bad = |reason: String| PolicyError::Invalid {
            field: format!("{field}[{i}]"),
            reason,
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| bad(format!("not base64 of a DER certificate: {e}")))?;
        if der.len() > MAX_CERTIFICATE {
            return Err(bad(format!("larger than {MAX_CERTIFICATE} bytes")));
        }
        #[cfg(feature = "ekcert")]
        crate::ekcert::Certificate::from_der(&der)
            .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
        out.push(der);
    }
    Ok(out)
}

#[cfg(feature = "ekcert")]
pub use verify::{auto_approval, AutoApproval};

#[cfg(feature = "ekcert")]
mod verify {
    use std::time::SystemTime;

    use super::super::diff::{diff, Effect};
    use super::super::document::PolicyDocument;
    use super::signer_certificates;
    use crate::image_signature::{verify, ImageSignatureError, TrustedSigners};
    use crate::wire::{Digest, HashAlg};

    /// The decision on one change.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum AutoApproval {
        /// Every addition is a boot application a trusted signer signed: approve. The
        /// signers' subjects, one per distinct signer.
        Approved {
            /// Who vouched (certificate subjects).
            signers: Vec<String>,
        },
        /// An operator must decide, and why.
        Pending(String),
    }

    /// Whether moving a machine from `current` to `new` (the latest version widened by the
    /// machine's request) may happen without an operator, given the Authenticode signatures
    /// the machine sent, at time `now`. The trusted signers are `new`'s.
    pub fn auto_approval(
        current: &PolicyDocument,
        new: &PolicyDocument,
        signatures: &[Vec<u8>],
        now: SystemTime,
    ) -> AutoApproval {
        match decide(current, new, signatures, now) {
            Ok(signers) => AutoApproval::Approved { signers },
            Err(why) => AutoApproval::Pending(why),
        }
    }

    fn decide(
        current: &PolicyDocument,
        new: &PolicyDocument,
        signatures: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<Vec<String>, String> {
        let rule = new
            .auto_approve
            .as_ref()
            .ok_or("the policy has no auto_approve rule")?;
        let certs = signer_certificates(rule).map_err(|e| e.to_string())?;
        if certs.is_empty() {
            return Err("auto_approve trusts no signer".into());
        }
        let trusted = TrustedSigners::from_der(&certs).map_err(|e| e.to_string())?;
        for c in &diff(current, new).changes {
            if c.path != "measured_boot.boot_applications" || c.effect != Effect::Widens {
                return Err(format!(
                    "{}: {} is not a signed boot application",
                    c.path, c.detail
                ));
            }
        }
        let added = added_boot_applications(current, new)?;
        if added.is_empty() {
            return Err("the change adds no boot application".into());
        }
        let mut signers: Vec<String> = Vec::new();
        for digest in &added {
            let signer = vouch(digest, signatures, &trusted, now)?;
            if !signers.contains(&signer) {
                signers.push(signer);
            }
        }
        Ok(signers)
    }

    /// The boot-application digests in `new` that `current` does not allow.
    fn added_boot_applications(
        current: &PolicyDocument,
        new: &PolicyDocument,
    ) -> Result<Vec<Digest>, String> {
        let mb = new
            .measured_boot
            .as_ref()
            .ok_or("the policy has no measured_boot section")?;
        let bank = mb.bank.as_deref().unwrap_or("sha256");
        let alg = HashAlg::from_name(bank).ok_or(format!("bank {bank} is not a bank"))?;
        let before = current
            .measured_boot
            .as_ref()
            .and_then(|m| m.boot_applications.clone())
            .unwrap_or_default();
        mb.boot_applications
            .iter()
            .flatten()
            .filter(|d| !before.contains(d))
            .map(|d| Digest::from_hex(alg, d).ok_or(format!("{d} is not a {bank} digest")))
            .collect()
    }

    /// The subject of a trusted signer whose signature covers `digest`, or why none does
    /// (the reason of the first signature tried, or that none was sent).
    fn vouch(
        digest: &Digest,
        signatures: &[Vec<u8>],
        trusted: &TrustedSigners,
        now: SystemTime,
    ) -> Result<String, String> {
        // Signatures of the other images in the request sign other digests: a reason from a
        // signature of this digest says more.
        let mut reason = None;
        for s in signatures {
            match verify(s, digest, trusted, now) {
                Ok(v) => return Ok(v.signer),
                Err(ImageSignatureError::DigestMismatch { .. }) => {}
                Err(e) => {
                    reason.get_or_insert(e.to_string());
                }
            }
        }
        let reason = reason.unwrap_or_else(|| "no signature sent signs it".into());
        Err(format!(
            "boot application {} is not vouched for by a trusted signer: {reason}",
            digest.to_hex()
        ))
    }
}

#[cfg(test)]
#[cfg(feature = "ekcert")]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use base64::Engine as _;

    use super::*;
    use crate::policy::{diff, Effect, PolicyDocument};
    use crate::predict::{authenticode, image_signatures};
    use crate::wire::HashAlg;

    const DEBIAN_CA: &[u8] =
        include_bytes!("../image_signature/testdata/debian-secure-boot-ca.der");
    const FBX64: &[u8] = include_bytes!("../image_signature/testdata/fbx64.efi.signed");
    const FORGED: &[u8] = include_bytes!("../image_signature/testdata/fbx64.forged-chain.p7");
    const KERNEL_SIG: &[u8] = include_bytes!("../image_signature/testdata/linux-6.1.0-57-amd64.p7");

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_811_808_000)
    }

    fn docs(trust: bool, extra: &str) -> (PolicyDocument, PolicyDocument, Vec<u8>) {
        let digest = authenticode(FBX64, HashAlg::Sha256).unwrap().to_hex();
        let auto = if trust {
            format!(
                r#","auto_approve":{{"boot_applications_signed_by":["{}"]}}"#,
                base64::engine::general_purpose::STANDARD.encode(DEBIAN_CA)
            )
        } else {
            String::new()
        };
        let old = format!(
            r#"{{"version":1,"measured_boot":{{"boot_applications":["{}"],"initrds":["{}"]}}{auto}}}"#,
            "aa".repeat(32),
            "bb".repeat(32)
        );
        let new = format!(
            r#"{{"version":1,"measured_boot":{{"boot_applications":["{}","{digest}"],"initrds":["{}"{extra}]}}{auto}}}"#,
            "aa".repeat(32),
            "bb".repeat(32)
        );
        let sig = image_signatures(FBX64).unwrap().remove(0);
        (
            serde_json::from_str(&old).unwrap(),
            serde_json::from_str(&new).unwrap(),
            sig,
        )
    }

    #[test]
    fn a_signed_boot_application_alone_is_approved() {
        let (old, new, sig) = docs(true, "");
        assert_eq!(
            auto_approval(&old, &new, &[KERNEL_SIG.to_vec(), sig], now()),
            AutoApproval::Approved {
                signers: vec!["CN=Debian Secure Boot Signer 2022 - shim".into()]
            }
        );
    }

    #[test]
    fn anything_else_stays_pending() {
        let (old, new, sig) = docs(true, &format!(r#","{}""#, "cc".repeat(32)));
        let AutoApproval::Pending(why) =
            auto_approval(&old, &new, std::slice::from_ref(&sig), now())
        else {
            panic!("an initrd was auto-approved");
        };
        assert!(why.contains("measured_boot.initrds"), "{why}");
        // No rule: pending.
        let (old, new, _) = docs(false, "");
        assert!(matches!(
            auto_approval(&old, &new, std::slice::from_ref(&sig), now()),
            AutoApproval::Pending(_)
        ));
        // No signature, another image's signature, a forged chain: pending, each saying why.
        let (old, new, _) = docs(true, "");
        for (sigs, want) in [
            (vec![], "no signature sent signs it"),
            (vec![KERNEL_SIG.to_vec()], "no signature sent signs it"),
            (vec![FORGED.to_vec()], "does not chain"),
        ] {
            let AutoApproval::Pending(why) = auto_approval(&old, &new, &sigs, now()) else {
                panic!("approved with {want}");
            };
            assert!(why.contains(want), "{why}");
        }
    }

    #[test]
    fn adding_a_trusted_signer_widens_and_removing_narrows() {
        let (plain, _, _) = docs(false, "");
        let (trusting, _, _) = docs(true, "");
        let d = diff(&plain, &trusting);
        assert_eq!(d.changes.len(), 1, "{d}");
        assert_eq!(d.changes[0].effect, Effect::Widens, "{d}");
        assert_eq!(diff(&trusting, &plain).changes[0].effect, Effect::Narrows);
        let mut more = trusting.clone();
        more.auto_approve
            .as_mut()
            .unwrap()
            .boot_applications_signed_by
            .push(
                base64::engine::general_purpose::STANDARD
                    .encode(DEBIAN_CA)
                    .replace('A', "B"),
            );
        // Not a certificate any more: refused by the compiler.
        assert!(crate::policy::Policy::from_document(more).is_err());
    }
}
