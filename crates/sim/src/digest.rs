//! Stable fake identifiers: container IDs, image digests and machine IDs derived from names,
//! so the same pod or image always shows the same ID (no randomness, no real hashing need).

/// 64-bit FNV-1a of `bytes`, starting from a seed-dependent offset basis.
pub(crate) fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// MurmurHash3's finalizer: spreads FNV's weak high bits, so near-equal inputs (a restart
/// count) give unrelated-looking IDs.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// `hex_chars` lowercase hex digits (a multiple of 16) derived from `parts`.
pub(crate) fn hex(parts: &[&str], hex_chars: usize) -> String {
    let mut joined = Vec::new();
    for p in parts {
        joined.extend_from_slice(p.as_bytes());
        joined.push(0);
    }
    (0..hex_chars.div_ceil(16))
        .map(|i| format!("{:016x}", mix(fnv1a(i as u64 + 1, &joined))))
        .collect::<String>()[..hex_chars]
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_stable_and_sized() {
        let a = super::hex(&["uid", "c"], 64);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, super::hex(&["uid", "c"], 64));
        assert_ne!(a, super::hex(&["uidc"], 64));
        assert_eq!(super::hex(&["x"], 32).len(), 32);
    }
}
