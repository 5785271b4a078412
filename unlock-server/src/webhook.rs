//! Failure actions: a webhook told of refused attestations, lockouts, TERMINATED boot
//! sessions and revocations.
//!
//! The outbox is the audit trail itself (`store/audit.rs`): every event is already a
//! record there, appended in the transaction that decided it, so nothing is written on the
//! unlock path for the webhook and nothing can be lost between a decision and its event.
//! A deliverer per process walks each role's records after a durable cursor
//! (`webhook_cursor`), POSTs the ones the configuration selects in chain order, and moves
//! the cursor after each answer 2xx. One deliverer at a time per database holds a lease
//! (taken and renewed by a short write, never held across an HTTP call), so replicas do not
//! send twice. While the receiver fails, the deliverer retries the same event with a
//! back-off (1 s doubling to 5 min): events are delayed, never dropped or reordered.
//!
//! Delivery is at least once: a crash after the receiver's 2xx and before the cursor moved
//! sends that event again. Each request carries `X-Unlock-Delivery: <role>:<seq>`, unique
//! per event, for the receiver to drop repeats, and `X-Unlock-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the body under the shared secret.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use verifier_core::audit::AuditRecord;

use crate::role::{unix_now, RoleService};

/// The `[webhook]` section of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed: `https://...`, or `http://` to a loopback address.
    pub url: String,
    /// File holding the HMAC key (64 hex characters; created with a random key, mode 0600,
    /// if absent: give the same file to the receiver).
    pub secret_file: PathBuf,
    /// Events sent [default: all four].
    #[serde(default)]
    pub events: Option<Vec<Event>>,
    /// CA certificates (PEM) for the receiver [default: the web PKI roots].
    pub ca_file: Option<PathBuf>,
    /// Seconds one delivery attempt may take [default: 10].
    pub timeout_secs: Option<u64>,
}

/// What a webhook is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An attestation refused for the machine's own evidence (or the host check).
    Refusal,
    /// The machine reached its failed-attempt limit: refused until the window passes.
    Lockout,
    /// A boot session reached its release bound (TERMINATED).
    Terminated,
    /// An operator revoked the enrollment.
    Revoked,
}

impl Event {
    /// The event an audit record stands for, if any.
    pub fn of(record: &AuditRecord) -> Option<Self> {
        let detail: serde_json::Value = serde_json::from_str(&record.detail).ok()?;
        match record.kind.as_str() {
            "refusal" => Some(Self::Refusal),
            "lockout" => Some(Self::Lockout),
            "release" if detail.get("session_terminated") == Some(&true.into()) => {
                Some(Self::Terminated)
            }
            "state" if detail.get("state") == Some(&"revoked".into()) => Some(Self::Revoked),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Refusal => "refusal",
            Self::Lockout => "lockout",
            Self::Terminated => "terminated",
            Self::Revoked => "revoked",
        }
    }
}

impl WebhookConfig {
    /// Checks what can be checked before start.
    pub fn validate(&self) -> Result<(), &'static str> {
        let url = self.url.as_str();
        let loopback = ["http://127.", "http://[::1]", "http://localhost"]
            .iter()
            .any(|p| url.starts_with(p));
        if !url.starts_with("https://") && !loopback {
            return Err("webhook.url must be https:// (plain http only to a loopback address)");
        }
        if self.timeout_secs.is_some_and(|t| t == 0 || t > 120) {
            return Err("webhook.timeout_secs must be between 1 and 120");
        }
        if self.events.as_ref().is_some_and(Vec::is_empty) {
            return Err("webhook.events is empty: remove the [webhook] section instead");
        }
        Ok(())
    }

    fn selects(&self, e: Event) -> bool {
        self.events.as_ref().is_none_or(|list| list.contains(&e))
    }
}

/// Records read per page.
const PAGE: u32 = 200;
/// Pause between looks at the trail when everything is delivered.
const IDLE: Duration = Duration::from_secs(1);
/// Longest back-off while the receiver fails.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts delivery for `roles`; runs until the runtime shuts down.
pub fn spawn(
    roles: Vec<Arc<RoleService>>,
    config: WebhookConfig,
    secret: zeroize::Zeroizing<Vec<u8>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let agent =
        crate::tls::client_agent(config.ca_file.as_deref(), config.timeout_secs.unwrap_or(10))?;
    let mut id = [0u8; 8];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| anyhow::anyhow!("RNG failed"))?;
    let holder = hex::encode(id);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
    let timeout = i64::try_from(config.timeout_secs.unwrap_or(10)).unwrap_or(120);
    let deliverer = Arc::new(Deliverer {
        lease_secs: 2 * timeout + 5,
        config,
        agent,
        key,
        holder,
    });
    Ok(tokio::spawn(async move {
        let mut backoff = Duration::ZERO;
        loop {
            tokio::time::sleep(if backoff.is_zero() { IDLE } else { backoff }).await;
            let mut failed = false;
            for role in &roles {
                let (d, role) = (deliverer.clone(), role.clone());
                match tokio::task::spawn_blocking(move || d.round(&role)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        failed = true;
                        tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "webhook delivery failed; retrying the same event later");
                    }
                    Err(e) => tracing::error!(error = %e, "webhook task ended abnormally"),
                }
            }
            backoff = if failed {
                (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF)
            } else {
                Duration::ZERO
            };
        }
    }))
}

struct Deliverer {
    /// Lease length: twice a delivery's timeout and some, renewed before each delivery, so
    /// a holder never loses it mid-request; a crashed holder's lease lapses after it.
    lease_secs: i64,
    config: WebhookConfig,
    agent: ureq::Agent,
    key: aws_lc_rs::hmac::Key,
    holder: String,
}

impl Deliverer {
    /// One round on `role`: with the lease, every selected record after the cursor, in
    /// order, until one fails or none are left.
    fn round(&self, role: &RoleService) -> anyhow::Result<()> {
        let store = role.store();
        let now = unix_now();
        let Some(mut cursor) =
            store.take_webhook_lease(&self.holder, now, now + self.lease_secs)?
        else {
            return Ok(()); // another replica delivers
        };
        loop {
            let (records, _, _) = store.audit_page(cursor, PAGE, None)?;
            if records.is_empty() {
                return Ok(());
            }
            // Skipped records (no event, or one not selected) move the cursor with the next
            // delivered event or at the end of the page: one write per event, not per record.
            let mut skipped = None;
            for r in &records {
                cursor = r.seq;
                let Some(event) = Event::of(r).filter(|e| self.config.selects(*e)) else {
                    skipped = Some(r.seq);
                    continue;
                };
                let now = unix_now();
                if store
                    .take_webhook_lease(&self.holder, now, now + self.lease_secs)?
                    .is_none()
                {
                    anyhow::bail!("lost the webhook lease (another replica took it over)");
                }
                if let Err(e) = self.send(role.role().as_str(), event, r) {
                    if let Some(seq) = skipped {
                        store.advance_webhook_cursor(&self.holder, seq)?;
                    }
                    return Err(e);
                }
                skipped = None;
                if !store.advance_webhook_cursor(&self.holder, r.seq)? {
                    anyhow::bail!("lost the webhook lease (another replica took it over)");
                }
            }
            if let Some(seq) = skipped {
                store.advance_webhook_cursor(&self.holder, seq)?;
            }
            let now = unix_now();
            if store
                .take_webhook_lease(&self.holder, now, now + self.lease_secs)?
                .is_none()
            {
                return Ok(());
            }
        }
    }

    fn send(&self, role: &str, event: Event, record: &AuditRecord) -> anyhow::Result<()> {
        let delivery = format!("{role}:{}", record.seq);
        let body = serde_json::to_vec(&serde_json::json!({
            "event": event.name(),
            "delivery": delivery,
            "role": role,
            "record": record,
        }))?;
        let tag = aws_lc_rs::hmac::sign(&self.key, &body);
        let resp = self
            .agent
            .post(&self.config.url)
            .header("Content-Type", "application/json")
            .header("X-Unlock-Event", event.name())
            .header("X-Unlock-Delivery", &delivery)
            .header(
                "X-Unlock-Signature",
                &format!("sha256={}", hex::encode(tag.as_ref())),
            )
            .send(&body[..])?;
        if !resp.status().is_success() {
            anyhow::bail!("receiver answered {} to delivery {delivery}", resp.status());
        }
        tracing::info!(event = event.name(), delivery, "webhook delivered");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, detail: &str) -> AuditRecord {
        AuditRecord {
            seq: 1,
            at: 0,
            kind: kind.into(),
            agent_id: None,
            actor: "agent".into(),
            detail: detail.into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn records_map_to_the_events_they_stand_for() {
        assert_eq!(Event::of(&record("refusal", "{}")), Some(Event::Refusal));
        assert_eq!(Event::of(&record("lockout", "{}")), Some(Event::Lockout));
        assert_eq!(
            Event::of(&record("release", r#"{"session_terminated":true}"#)),
            Some(Event::Terminated)
        );
        assert_eq!(
            Event::of(&record("release", r#"{"session_terminated":false}"#)),
            None
        );
        assert_eq!(
            Event::of(&record("state", r#"{"state":"revoked"}"#)),
            Some(Event::Revoked)
        );
        assert_eq!(Event::of(&record("state", r#"{"state":"armed"}"#)), None);
        assert_eq!(Event::of(&record("enroll", "{}")), None);
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let mut c = WebhookConfig {
            url: "http://hooks.example/x".into(),
            secret_file: "s".into(),
            events: None,
            ca_file: None,
            timeout_secs: None,
        };
        assert!(c.validate().is_err());
        c.url = "http://127.0.0.1:9/x".into();
        assert!(c.validate().is_ok());
        c.url = "https://hooks.example/x".into();
        c.events = Some(vec![]);
        assert!(c.validate().is_err());
    }
}
