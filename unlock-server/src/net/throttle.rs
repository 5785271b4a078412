//! The budget of unauthenticated failures: token buckets per source and for all sources.
//!
//! An unauthenticated failure is a refusal of forged input that anyone could have sent and
//! that cost the server work: a body that does not decode, an EK certificate or AK that does
//! not check, a wrong activation proof, an attestation whose quote is not signed by the
//! agent's AK or not bound to the challenge (which refusals these are is decided once, in
//! `ApiError::new`). Such failures say nothing about a machine,
//! so they are never counted against one (that let a stranger who knew a machine's public
//! EK keep it locked out). They are counted against the source address that sent them, and
//! against all sources together, so that a loop of them costs the server little.
//!
//! A source whose bucket is empty is refused (`rate_limited`, before any work) on the agent
//! routes until its bucket refills; other sources are not affected unless the global bucket
//! is empty too. Only failures take tokens: a source that succeeds is never slowed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use verifier_core::proto::v1::ErrorCode;

use super::{Limits, SourceKey};
use crate::error::ApiError;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, burst: u32, per_sec: u32, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * f64::from(per_sec)).min(f64::from(burst));
        self.at = now;
    }
}

/// Per-source and global token buckets of unauthenticated failures.
#[derive(Debug)]
pub struct Throttle {
    source_burst: u32,
    source_refill: u32,
    global_burst: u32,
    global_refill: u32,
    max_sources: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    global: Bucket,
    sources: HashMap<SourceKey, Bucket>,
    last_sweep: Option<Instant>,
}

/// How deep a source's debt may go, in bursts: a burst of concurrent forged requests costs
/// the source up to this many refill periods of silence.
const DEBT_FLOOR: f64 = 30.0;

/// Which budget refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// This source's.
    Source,
    /// All sources' together.
    Global,
}

impl Throttle {
    /// Buckets as `limits` say.
    pub fn new(limits: &Limits) -> Self {
        let now = Instant::now();
        Self {
            source_burst: limits.source_failure_burst,
            source_refill: limits.source_failure_refill_per_sec,
            global_burst: limits.global_failure_burst,
            global_refill: limits.global_failure_refill_per_sec,
            max_sources: limits.max_tracked_sources,
            state: Mutex::new(State {
                global: Bucket::full(limits.global_failure_burst, now),
                sources: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `peer` may be served now. A source that owes nothing is always served: the
    /// global bucket limits only sources that have failed recently (and, when the table of
    /// sources is full, the ones it cannot remember), so that strangers spending the
    /// global budget never refuse an honest machine that sent nothing forged.
    pub fn check(&self, peer: IpAddr) -> Result<(), Spent> {
        self.check_at(peer, Instant::now())
    }

    fn check_at(&self, peer: IpAddr, now: Instant) -> Result<(), Spent> {
        let mut s = self.lock();
        let full = s.sources.len() >= self.max_sources;
        let owes = match s.sources.get_mut(&SourceKey::of(peer)) {
            Some(b) => {
                b.refill(self.source_burst, self.source_refill, now);
                if b.tokens < 1.0 {
                    return Err(Spent::Source);
                }
                b.tokens < f64::from(self.source_burst)
            }
            None => full,
        };
        s.global.refill(self.global_burst, self.global_refill, now);
        if owes && s.global.tokens < 1.0 {
            return Err(Spent::Global);
        }
        Ok(())
    }

    /// Takes one unauthenticated failure from `peer`'s and the global bucket. Buckets may
    /// go into debt (to a floor): requests that passed [`Self::check`] together and then
    /// all failed are paid back before the source is served again.
    pub fn failed(&self, peer: IpAddr) {
        self.failed_at(peer, Instant::now());
    }

    fn failed_at(&self, peer: IpAddr, now: Instant) {
        let (burst, refill) = (self.source_burst, self.source_refill);
        let mut s = self.lock();
        s.global.refill(self.global_burst, self.global_refill, now);
        s.global.tokens = (s.global.tokens - 1.0).max(-f64::from(self.global_burst));
        let key = SourceKey::of(peer);
        if !s.sources.contains_key(&key) && s.sources.len() >= self.max_sources {
            // Forget the sources whose buckets have refilled: they owe nothing. At most once
            // a second (the sweep is linear in the table). If every tracked source still
            // owes, this one is limited by the global bucket only.
            if s.last_sweep
                .is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 1)
            {
                s.last_sweep = Some(now);
                s.sources.retain(|_, b| {
                    b.refill(burst, refill, now);
                    b.tokens < f64::from(burst)
                });
            }
            if s.sources.len() >= self.max_sources {
                return;
            }
        }
        let b = s
            .sources
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now));
        b.refill(burst, refill, now);
        b.tokens = (b.tokens - 1.0).max(-f64::from(burst) * DEBT_FLOOR);
    }

    /// Sources remembered now.
    pub fn tracked_sources(&self) -> usize {
        self.lock().sources.len()
    }

    /// Sources refused now: their own budget is spent (the dashboard's "throttled
    /// sources"; addresses are not handed out, only the count).
    pub fn spent_sources(&self) -> usize {
        let now = Instant::now();
        let (burst, refill) = (self.source_burst, self.source_refill);
        let mut s = self.lock();
        s.sources
            .values_mut()
            .filter_map(|b| {
                b.refill(burst, refill, now);
                (b.tokens < 1.0).then_some(())
            })
            .count()
    }
}

/// The refusal for a spent budget.
pub fn refusal(spent: Spent) -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        match spent {
            Spent::Source => {
                "too many failed requests from this address (not authenticated by an enrolled AK); retry later"
            }
            Spent::Global => {
                "too many failed unauthenticated requests from all addresses; retry later"
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn throttle(burst: u32, refill: u32, global: u32, max_sources: usize) -> Throttle {
        Throttle::new(&Limits {
            source_failure_burst: burst,
            source_failure_refill_per_sec: refill,
            global_failure_burst: global,
            global_failure_refill_per_sec: 1,
            max_tracked_sources: max_sources,
            ..Limits::default()
        })
    }

    #[test]
    fn a_failing_source_is_stopped_and_others_are_not() {
        let t = throttle(5, 1, 1000, 100);
        let now = Instant::now();
        let bad: IpAddr = "192.0.2.66".parse().unwrap();
        let good: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(t.check_at(bad, now), Ok(()));
            t.failed_at(bad, now);
        }
        assert_eq!(t.check_at(bad, now), Err(Spent::Source));
        assert_eq!(t.check_at(good, now), Ok(()));
        // One token per second comes back.
        assert_eq!(t.check_at(bad, now + Duration::from_millis(1100)), Ok(()));
    }

    #[test]
    fn the_global_bucket_limits_failing_sources_never_clean_ones() {
        let t = throttle(5, 1, 10, 100);
        let now = Instant::now();
        for i in 0..10u8 {
            t.failed_at(IpAddr::from([198, 51, 100, i]), now);
        }
        // A source that failed (and still owes) is refused while the global budget is spent.
        assert_eq!(
            t.check_at(IpAddr::from([198, 51, 100, 3]), now),
            Err(Spent::Global)
        );
        // A source that never sent anything forged is served.
        let clean: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(t.check_at(clean, now), Ok(()));
    }

    #[test]
    fn concurrent_failures_put_the_source_in_debt() {
        let t = throttle(5, 1, 1000, 100);
        let now = Instant::now();
        let bad: IpAddr = "192.0.2.66".parse().unwrap();
        // 50 requests passed the check together, then all failed.
        for _ in 0..50 {
            t.failed_at(bad, now);
        }
        // 5 of burst, 45 of debt: 46 s at one token a second before it is served again.
        assert_eq!(
            t.check_at(bad, now + Duration::from_secs(40)),
            Err(Spent::Source)
        );
        assert_eq!(t.check_at(bad, now + Duration::from_secs(47)), Ok(()));
    }

    #[test]
    fn when_the_table_is_full_unknown_sources_meet_the_global_bucket() {
        let t = throttle(2, 1, 3, 4);
        let now = Instant::now();
        for i in 0..4u8 {
            t.failed_at(IpAddr::from([198, 51, 100, i]), now);
        }
        assert_eq!(t.tracked_sources(), 4);
        let unknown: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(t.check_at(unknown, now), Err(Spent::Global));
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let t = throttle(2, 1, 1_000_000, 64);
        let now = Instant::now();
        for i in 0..10_000u32 {
            t.failed_at(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.tracked_sources() <= 64);
        // Once they refilled, old sources are forgotten to make room.
        let later = now + Duration::from_secs(10);
        t.failed_at("192.0.2.200".parse().unwrap(), later);
        assert_eq!(t.tracked_sources(), 1);
    }
}
