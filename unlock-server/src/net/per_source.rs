//! Counts of things held per source (IPv4 address or IPv6 /64), with a cap: open
//! connections, a provider's pending requests. Entries at zero are removed, so the map holds
//! at most one entry per thing held.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::SourceKey;

/// Per-source counts under a cap.
#[derive(Debug, Default)]
pub struct PerSource {
    counts: Mutex<HashMap<SourceKey, usize>>,
}

/// One held unit, given back on drop.
#[derive(Debug)]
pub struct Held {
    key: SourceKey,
    owner: Arc<PerSource>,
}

impl PerSource {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SourceKey, usize>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one unit for `ip` if it holds fewer than `max`.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Held> {
        let key = SourceKey::of(ip);
        let mut m = self.lock();
        let n = m.entry(key).or_insert(0);
        if *n >= max {
            if *n == 0 {
                m.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Held {
            key,
            owner: self.clone(),
        })
    }

    /// Units `ip` holds now.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.lock().get(&SourceKey::of(ip)).copied().unwrap_or(0)
    }

    /// Sources holding anything now.
    pub fn sources(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = self.owner.lock();
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_capped_and_gets_its_units_back() {
        let p = Arc::new(PerSource::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| p.try_take(a, 3).unwrap()).collect();
        assert!(p.try_take(a, 3).is_none());
        assert!(p.try_take(b, 3).is_some());
        assert_eq!(p.held_by(a), 3);
        drop(held);
        assert_eq!((p.held_by(a), p.sources()), (0, 0));
        // A cap of 0 holds nothing and leaves no entry behind.
        assert!(p.try_take(a, 0).is_none());
        assert_eq!(p.sources(), 0);
    }
}
