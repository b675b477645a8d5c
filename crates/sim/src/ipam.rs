//! Pod IP addresses of one simulated node, the way `host-local` IPAM hands them out: from the
//! node's pod range, skipping the network address, the gateway (`.1`) and the broadcast
//! address, round-robin after the last one given, each address owned by one pod UID.
//!
//! The range is the node's `spec.podCIDR` when it has one, else a default /24 (see
//! [`crate::nodes`]). State stays small: the range, a cursor and one entry per running pod.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// An IPv4 range `base/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    /// The network address (host bits zero).
    pub(crate) base: u32,
    /// Prefix length, 0..=32.
    pub(crate) prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` (IPv4 only); host bits are cleared.
    pub(crate) fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.trim().split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Cidr {
            base: u32::from(addr) & mask(prefix),
            prefix,
        })
    }

    /// Number of addresses in the range.
    fn size(self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// Whether `ip` lies in the range.
    pub(crate) fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// The pod addresses of one node.
#[derive(Debug)]
pub(crate) struct Ipam {
    range: Cidr,
    /// Offset (from `range.base`) tried first by the next allocation.
    next: u64,
    /// Offset → owner (a hash of the pod UID).
    owners: HashMap<u32, u64>,
}

impl Ipam {
    pub(crate) fn new(range: Cidr) -> Ipam {
        let mut ipam = Ipam {
            range,
            next: 0,
            owners: HashMap::new(),
        };
        ipam.next = ipam.first();
        ipam
    }

    pub(crate) fn range(&self) -> Cidr {
        self.range
    }

    /// Switches to another range (the node got a `spec.podCIDR`); addresses handed out from
    /// the old range are forgotten (their pods keep them, as upstream).
    pub(crate) fn set_range(&mut self, range: Cidr) {
        if range != self.range {
            *self = Ipam::new(range);
        }
    }

    /// Usable offsets: `first()..=last()`.
    fn first(&self) -> u64 {
        if self.range.size() >= 4 { 2 } else { 0 }
    }

    fn last(&self) -> u64 {
        if self.range.size() >= 4 {
            self.range.size() - 2
        } else {
            self.range.size() - 1
        }
    }

    fn addr(&self, offset: u64) -> Ipv4Addr {
        Ipv4Addr::from(self.range.base.wrapping_add(offset as u32))
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        self.range
            .contains(ip)
            .then(|| u32::from(ip).wrapping_sub(self.range.base))
    }

    /// The address of pod `uid`: the one it already owns, or the next free one; `None` when
    /// the range is full.
    pub(crate) fn allocate(&mut self, uid: &str) -> Option<Ipv4Addr> {
        let owner = uid_hash(uid);
        if let Some((&offset, _)) = self.owners.iter().find(|(_, o)| **o == owner) {
            return Some(self.addr(u64::from(offset)));
        }
        let (first, last) = (self.first(), self.last());
        let span = last - first + 1;
        for step in 0..span {
            let offset = first + (self.next - first + step) % span;
            let key = offset as u32;
            if let std::collections::hash_map::Entry::Vacant(e) = self.owners.entry(key) {
                e.insert(owner);
                self.next = if offset == last { first } else { offset + 1 };
                return Some(self.addr(offset));
            }
        }
        None
    }

    /// Records that pod `uid` uses `ip` (seen in its status); ignored outside the range.
    pub(crate) fn claim(&mut self, ip: Ipv4Addr, uid: &str) {
        if let Some(offset) = self.offset(ip) {
            self.owners.insert(offset, uid_hash(uid));
        }
    }

    /// Frees `ip` if pod `uid` owns it (a stale release never frees another pod's address).
    pub(crate) fn release(&mut self, ip: Ipv4Addr, uid: &str) {
        if let Some(offset) = self.offset(ip)
            && self.owners.get(&offset) == Some(&uid_hash(uid))
        {
            self.owners.remove(&offset);
        }
    }

    /// Keeps only the addresses whose owner is in `live` (UIDs): recovers addresses of pods
    /// whose deletion was missed while the watch was down.
    pub(crate) fn retain_owners<'a>(&mut self, live: impl IntoIterator<Item = &'a str>) {
        let live: std::collections::HashSet<u64> = live.into_iter().map(uid_hash).collect();
        self.owners.retain(|_, owner| live.contains(owner));
    }

    /// How many addresses are handed out.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.owners.len()
    }
}

/// FNV-1a of a pod UID: 8 bytes per address instead of the 36-byte UID.
pub(crate) fn uid_hash(uid: &str) -> u64 {
    crate::digest::fnv1a(0, uid.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let c = Cidr::parse("10.88.1.7/24").unwrap();
        assert_eq!(c.to_string(), "10.88.1.0/24");
        assert!(c.contains(ip("10.88.1.255")));
        assert!(!c.contains(ip("10.88.2.1")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("fd00::/64").is_none());
        assert!(Cidr::parse("10.0.0.0").is_none());
    }

    #[test]
    fn allocates_round_robin_skipping_network_gateway_broadcast() {
        let mut ipam = Ipam::new(Cidr::parse("10.201.3.0/24").unwrap());
        assert_eq!(ipam.allocate("a"), Some(ip("10.201.3.2")));
        assert_eq!(ipam.allocate("b"), Some(ip("10.201.3.3")));
        // Idempotent per pod.
        assert_eq!(ipam.allocate("a"), Some(ip("10.201.3.2")));
        ipam.release(ip("10.201.3.2"), "a");
        // Round-robin: a freed address is not reused at once.
        assert_eq!(ipam.allocate("c"), Some(ip("10.201.3.4")));
        for n in 0..251 {
            assert!(ipam.allocate(&format!("p{n}")).is_some(), "p{n}");
        }
        // .2 .. .254 = 253 addresses, all taken now.
        assert_eq!(ipam.in_use(), 253);
        assert_eq!(ipam.allocate("full"), None);
        assert_eq!(ipam.range().to_string(), "10.201.3.0/24");
    }

    #[test]
    fn release_needs_the_owner_and_claims_seed_state() {
        let mut ipam = Ipam::new(Cidr::parse("10.0.0.0/24").unwrap());
        ipam.claim(ip("10.0.0.9"), "old");
        ipam.claim(ip("192.168.0.1"), "elsewhere");
        assert_eq!(ipam.in_use(), 1);
        ipam.release(ip("10.0.0.9"), "someone-else");
        assert_eq!(ipam.in_use(), 1);
        assert_eq!(ipam.allocate("old"), Some(ip("10.0.0.9")));
        ipam.release(ip("10.0.0.9"), "old");
        assert_eq!(ipam.in_use(), 0);
    }

    #[test]
    fn retain_drops_missed_deletions_and_ranges_switch() {
        let mut ipam = Ipam::new(Cidr::parse("10.0.0.0/24").unwrap());
        for uid in ["a", "b", "c"] {
            ipam.allocate(uid);
        }
        ipam.retain_owners(["b"]);
        assert_eq!(ipam.in_use(), 1);
        ipam.set_range(Cidr::parse("10.9.0.0/24").unwrap());
        assert_eq!(ipam.in_use(), 0);
        assert_eq!(ipam.allocate("d"), Some(ip("10.9.0.2")));
        // A tiny range uses every address.
        let mut tiny = Ipam::new(Cidr::parse("10.1.1.1/32").unwrap());
        assert_eq!(tiny.allocate("x"), Some(ip("10.1.1.1")));
        assert_eq!(tiny.allocate("y"), None);
    }
}
