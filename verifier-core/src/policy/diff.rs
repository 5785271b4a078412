//! What changes between two versions of a policy, and whether each change widens what a
//! machine may boot. Shown before an operator moves enrollments to a new version, so that a
//! change never widens acceptance silently.
//!
//! The comparison is structural over the JSON documents. Lists are sets: for an allowlist
//! (`allowed`, `db`, `boot_applications`, `kernel_cmdline`, an IMA path's digests...) an
//! added item widens and a removed one narrows; for a requirement list (`dbx.required`) the
//! opposite. A removed rule or section widens, an added one narrows. `require_*` turned off
//! widens, `allow_*` turned on widens, a `max_*` or `min_*` moved the loose way widens.
//! `auto_approve` (and a signer added to it) widens: machines may then add to the policy
//! without an operator.
//! Anything else is reported as a change of unknown direction, which callers must treat as
//! possibly widening.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PolicyDocument;

/// The direction of one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Accepts boots the old version refused.
    Widens,
    /// Refuses boots the old version accepted.
    Narrows,
    /// Direction unknown: treat as possibly widening.
    Changes,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// JSON path (`measured_boot.db`, `pcrs[sha256:7].allowed`).
    pub path: String,
    /// Direction.
    pub effect: Effect,
    /// What changed, for a person.
    pub detail: String,
}

/// Every change from one document to another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDiff {
    /// In document order.
    pub changes: Vec<Change>,
}

impl PolicyDiff {
    /// True when some change widens (or may widen) acceptance.
    pub fn may_widen(&self) -> bool {
        self.changes.iter().any(|c| c.effect != Effect::Narrows)
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl std::fmt::Display for PolicyDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.changes.is_empty() {
            return f.write_str("no change\n");
        }
        for c in &self.changes {
            let mark = match c.effect {
                Effect::Widens => "WIDENS ",
                Effect::Narrows => "narrows",
                Effect::Changes => "CHANGES",
            };
            writeln!(f, "{mark}  {}: {}", c.path, c.detail)?;
        }
        Ok(())
    }
}

/// The changes from `old` to `new`.
pub fn diff(old: &PolicyDocument, new: &PolicyDocument) -> PolicyDiff {
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return PolicyDiff {
            changes: vec![Change {
                path: ".".into(),
                effect: Effect::Changes,
                detail: "the documents could not be compared".into(),
            }],
        };
    };
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    // The `snp` rules hold at their defaults even without the section, so a section that
    // appears or goes is compared against the defaults (an added section with
    // `allow_debug: true` widens), besides the section itself (present: evidence without an
    // SNP report is refused).
    let default = || serde_json::to_value(super::SnpDocument::default()).unwrap_or(Value::Null);
    match (&old.snp, &new.snp) {
        (None, Some(n)) => {
            out.retain(|c| c.path != "snp");
            out.push(Change {
                path: "snp".into(),
                effect: Effect::Narrows,
                detail: "section added: evidence without an SNP report is refused".into(),
            });
            if let Ok(n) = serde_json::to_value(n) {
                walk("snp", &default(), &n, &mut out);
            }
        }
        (Some(o), None) => {
            out.retain(|c| c.path != "snp");
            out.push(Change {
                path: "snp".into(),
                effect: Effect::Widens,
                detail: "section removed: evidence without an SNP report is no longer refused"
                    .into(),
            });
            if let Ok(o) = serde_json::to_value(o) {
                walk("snp", &o, &default(), &mut out);
            }
        }
        _ => {}
    }
    PolicyDiff { changes: out }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn last(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// A list whose items each allow something (added widens) rather than require it.
/// `auto_approve` lets machines add to the policy themselves: more of it widens.
fn is_auto_approval(path: &str) -> bool {
    path == "auto_approve" || path.starts_with("auto_approve.")
}

fn is_requirement_list(path: &str) -> bool {
    path.ends_with("dbx.required")
}

/// A trusted signer (base64 DER) as a person compares it: its SHA-256 fingerprint, the
/// notation `openssl x509 -fingerprint -sha256` prints without colons.
fn certificate(v: &Value) -> String {
    use base64::Engine as _;
    let der = v.as_str().and_then(|b| {
        base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
    });
    match der {
        Some(d) => format!(
            "certificate sha256 fingerprint {}",
            crate::wire::HashAlg::Sha256.hash(&d).to_hex()
        ),
        None => short(v),
    }
}

/// The first 16 hex digits of a module's SHA-256, to tell versions apart.
fn module_digest(text: &str) -> String {
    let d = crate::wire::HashAlg::Sha256
        .hash(text.as_bytes())
        .to_string();
    d.chars().take(16).collect()
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 100 {
        let mut t: String = s.chars().take(100).collect();
        t.push('…');
        t
    } else {
        s
    }
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<Change>) {
    if a == b {
        return;
    }
    match (a, b) {
        // A Rego module is code: whether an edit widens cannot be told from its text.
        (Value::String(x), Value::String(y)) if path == "rego.module" => out.push(Change {
            path: path.to_owned(),
            effect: Effect::Changes,
            detail: format!(
                "module edited ({} -> {} bytes, sha256 {} -> {}): review it",
                x.len(),
                y.len(),
                module_digest(x),
                module_digest(y)
            ),
        }),
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = join(path, k);
                match y.get(k) {
                    Some(vb) => walk(&p, va, vb, out),
                    None => removed(&p, va, out),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    added(&join(path, k), vb, out);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if path == "pcrs" || path == "host.pcrs" => {
            let key = |v: &Value| format!("{}:{}", v["bank"].as_str().unwrap_or("?"), v["index"]);
            for va in x {
                let p = format!("{path}[{}]", key(va));
                match y.iter().find(|vb| key(vb) == key(va)) {
                    Some(vb) => walk(&p, va, vb, out),
                    None => removed(&p, va, out),
                }
            }
            for vb in y {
                if !x.iter().any(|va| key(va) == key(vb)) {
                    added(&format!("{path}[{}]", key(vb)), vb, out);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let widen_on_add = !is_requirement_list(path) && last(path) != "pcrs";
            let (on_add, on_remove) = if widen_on_add {
                (Effect::Widens, Effect::Narrows)
            } else {
                (Effect::Narrows, Effect::Widens)
            };
            let show = |v: &Value| {
                if path == "auto_approve.boot_applications_signed_by" {
                    certificate(v)
                } else {
                    short(v)
                }
            };
            for v in y.iter().filter(|v| !x.contains(v)) {
                out.push(Change {
                    path: path.to_owned(),
                    effect: on_add,
                    detail: format!("added {}", show(v)),
                });
            }
            for v in x.iter().filter(|v| !y.contains(v)) {
                out.push(Change {
                    path: path.to_owned(),
                    effect: on_remove,
                    detail: format!("removed {}", show(v)),
                });
            }
        }
        (Value::Bool(x), Value::Bool(y)) => {
            let name = last(path);
            let loosened = if name.starts_with("allow") || name == "initial" {
                *y
            } else {
                !*y
            };
            let effect =
                if name.starts_with("require") || name.starts_with("allow") || name == "initial" {
                    if loosened {
                        Effect::Widens
                    } else {
                        Effect::Narrows
                    }
                } else {
                    Effect::Changes
                };
            out.push(Change {
                path: path.to_owned(),
                effect,
                detail: format!("{x} -> {y}"),
            });
        }
        (Value::Number(x), Value::Number(y)) => {
            // A component of a minimum (`snp.min_tcb.microcode`) is a minimum itself.
            let name = match path.rsplit_once('.') {
                Some((parent, _)) if last(parent).starts_with("min_") => last(parent),
                _ => last(path),
            };
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            let effect = if name.starts_with("max_") {
                if y > x {
                    Effect::Widens
                } else {
                    Effect::Narrows
                }
            } else if name.starts_with("min_") {
                if y < x {
                    Effect::Widens
                } else {
                    Effect::Narrows
                }
            } else {
                Effect::Changes
            };
            out.push(Change {
                path: path.to_owned(),
                effect,
                detail: format!("{x} -> {y}"),
            });
        }
        (Value::Null, v) => added(path, v, out),
        (v, Value::Null) => removed(path, v, out),
        _ => out.push(Change {
            path: path.to_owned(),
            effect: Effect::Changes,
            detail: format!("{} -> {}", short(a), short(b)),
        }),
    }
}

/// A rule or section appeared: it can only refuse more (unless it is an `allow_*` switch or
/// a bound, which `walk` compares against its absent default).
fn added(path: &str, v: &Value, out: &mut Vec<Change>) {
    let name = last(path);
    let effect = if is_auto_approval(path) || name.starts_with("allow") && v == &Value::Bool(true) {
        Effect::Widens
    } else if name.starts_with("max_") || name.starts_with("min_") || name == "excludes" {
        if name == "excludes" {
            Effect::Widens
        } else {
            Effect::Narrows
        }
    } else {
        Effect::Narrows
    };
    out.push(Change {
        path: path.to_owned(),
        effect,
        detail: format!("added {}", short(v)),
    });
}

/// A rule or section disappeared: whatever it refused is now accepted.
fn removed(path: &str, v: &Value, out: &mut Vec<Change>) {
    let name = last(path);
    let effect = if name.starts_with("allow") || name == "excludes" || is_auto_approval(path) {
        Effect::Narrows
    } else {
        Effect::Widens
    };
    out.push(Change {
        path: path.to_owned(),
        effect,
        detail: format!("removed {}", short(v)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> PolicyDocument {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn allowlist_growth_widens_and_requirement_growth_narrows() {
        let a = doc(r#"{"version":1,"measured_boot":{"db":["x"],"dbx":{"required":["a"]}}}"#);
        let b =
            doc(r#"{"version":1,"measured_boot":{"db":["x","y"],"dbx":{"required":["a","b"]}}}"#);
        let d = diff(&a, &b);
        assert_eq!(d.changes.len(), 2, "{d}");
        assert_eq!(d.changes[0].effect, Effect::Widens);
        assert_eq!(d.changes[0].path, "measured_boot.db");
        assert_eq!(d.changes[1].effect, Effect::Narrows);
        assert!(d.may_widen());
        let back = diff(&b, &a);
        assert_eq!(back.changes[0].effect, Effect::Narrows);
        assert_eq!(back.changes[1].effect, Effect::Widens);
    }

    #[test]
    fn removed_rules_and_switches_widen() {
        let a = doc(
            r#"{"version":1,"require_event_log":true,"pcrs":[{"bank":"sha256","index":7,"allowed":["00"]}],"clock":{"max_reboots":3,"reset_count_at_enrollment":1}}"#,
        );
        let b = doc(
            r#"{"version":1,"allow_event_digest_mismatch":true,"clock":{"max_reboots":5,"reset_count_at_enrollment":1}}"#,
        );
        let d = diff(&a, &b);
        assert!(d.changes.iter().all(|c| c.effect == Effect::Widens), "{d}");
        assert_eq!(d.changes.len(), 4, "{d}");
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn added_section_narrows() {
        let a = doc(r#"{"version":1}"#);
        let b = doc(r#"{"version":1,"measured_boot":{"require_secure_boot":true}}"#);
        let d = diff(&a, &b);
        assert!(!d.may_widen(), "{d}");
    }

    #[test]
    fn snp_changes_have_a_direction() {
        let base = doc(r#"{"version":1}"#);
        let with = doc(
            r#"{"version":1,"snp":{"allow_debug":true,"min_tcb":{"microcode":200},"measurements":["a"]}}"#,
        );
        let d = diff(&base, &with);
        let effect = |p: &str| d.changes.iter().find(|c| c.path == p).map(|c| c.effect);
        assert_eq!(effect("snp"), Some(Effect::Narrows));
        assert_eq!(effect("snp.allow_debug"), Some(Effect::Widens));
        assert!(d.may_widen());
        let raised = doc(
            r#"{"version":1,"snp":{"allow_debug":true,"min_tcb":{"microcode":210},"measurements":["a","b"]}}"#,
        );
        let d = diff(&with, &raised);
        let effect = |p: &str| d.changes.iter().find(|c| c.path == p).map(|c| c.effect);
        assert_eq!(effect("snp.min_tcb.microcode"), Some(Effect::Narrows));
        assert_eq!(effect("snp.measurements"), Some(Effect::Widens));
        let removed = diff(&with, &base);
        assert!(removed
            .changes
            .iter()
            .any(|c| c.path == "snp" && c.effect == Effect::Widens));
        assert!(removed
            .changes
            .iter()
            .any(|c| c.path == "snp.allow_debug" && c.effect == Effect::Narrows));
    }

    #[test]
    fn a_rego_edit_changes_in_an_unknown_direction() {
        let base = doc(r#"{"version":1}"#);
        let a = doc(r#"{"version":1,"rego":{"module":"package unlock\nallow := true\n"}}"#);
        let b = doc(r#"{"version":1,"rego":{"module":"package unlock\nallow if input.ima\n"}}"#);
        let d = diff(&a, &b);
        assert_eq!(d.changes.len(), 1, "{d}");
        assert_eq!(d.changes[0].path, "rego.module");
        assert_eq!(d.changes[0].effect, Effect::Changes);
        assert!(d.may_widen());
        assert!(
            d.to_string()
                .starts_with("CHANGES  rego.module: module edited"),
            "{d}"
        );
        // Both must pass: adding a module only refuses more, removing one widens.
        assert!(!diff(&base, &a).may_widen());
        assert!(diff(&a, &base)
            .changes
            .iter()
            .all(|c| c.effect == Effect::Widens));
    }
}
