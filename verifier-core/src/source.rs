//! Who a network client is, for limits: an IPv4 address or an IPv6 /64, and counts of what
//! each holds under a cap. Shared by the server's edge (connections, body bytes, a
//! provider's waiting requests) and the agent's provider listen mode, so "a source" means
//! the same thing wherever a limit is kept. Pure: no I/O, no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The unit limits are kept per: an IPv4 address, or an IPv6 /64 (one host usually has a
/// whole /64, so counting single IPv6 addresses would limit nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey([u8; 8], bool);

impl SourceKey {
    /// The key of `ip` (IPv4-mapped IPv6 addresses count as their IPv4 address).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::v4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::v4(v4.octets()),
                None => {
                    let mut k = [0u8; 8];
                    for (d, s) in k.iter_mut().zip(v6.octets()) {
                        *d = s;
                    }
                    Self(k, true)
                }
            },
        }
    }

    fn v4(o: [u8; 4]) -> Self {
        let [a, b, c, d] = o;
        Self([a, b, c, d, 0, 0, 0, 0], false)
    }
}

/// Units held per source (connections, bytes, requests), each source under a cap. Entries at
/// zero are removed, so the map holds at most one entry per source holding something.
#[derive(Debug, Default)]
pub struct PerSource {
    counts: Mutex<HashMap<SourceKey, usize>>,
}

/// One unit held by a source, given back on drop.
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

    /// Takes `n` units for `key` if it then holds at most `max`; `false` (nothing taken)
    /// otherwise. Give them back with [`Self::give_back`].
    pub fn take(&self, key: SourceKey, n: usize, max: usize) -> bool {
        let mut m = self.lock();
        let held = m.get(&key).copied().unwrap_or(0);
        if held.saturating_add(n) > max {
            return false;
        }
        m.insert(key, held + n);
        true
    }

    /// Gives back `n` units of `key`.
    pub fn give_back(&self, key: SourceKey, n: usize) {
        let mut m = self.lock();
        if let Some(held) = m.get_mut(&key) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                m.remove(&key);
            }
        }
    }

    /// Takes one unit for `ip` if it holds fewer than `max`, given back when the guard drops.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Held> {
        let key = SourceKey::of(ip);
        self.take(key, 1, max).then(|| Held {
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
        self.owner.give_back(self.key, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourceKey::of(a), SourceKey::of(b));
        assert_ne!(SourceKey::of(a), SourceKey::of(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(SourceKey::of(v4), SourceKey::of(mapped));
        assert_ne!(
            SourceKey::of(v4),
            SourceKey::of("192.0.2.8".parse().unwrap())
        );
        // An IPv4 address never collides with an IPv6 prefix that starts with its bytes.
        assert_ne!(
            SourceKey::of(v4),
            SourceKey::of("c000:207::".parse().unwrap())
        );
    }

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
        // Many units at once: all or nothing.
        let k = SourceKey::of(a);
        assert!(p.take(k, 90, 100));
        assert!(!p.take(k, 20, 100));
        assert_eq!(p.held_by(a), 90);
        p.give_back(k, 90);
        assert_eq!(p.sources(), 0);
    }
}
