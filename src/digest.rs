//! A digest that is the same in every build and on every host (FNV-1a, 64 bits), for names
//! that must outlive an upgrade: the queue `--events-topic` makes, the file of the shared
//! `--max-tps` schedule. `std`'s hashers promise no such thing. Never used on a value.

/// The FNV-1a digest of `bytes`.
pub fn stable(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values() {
        assert_eq!(super::stable(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::stable(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
