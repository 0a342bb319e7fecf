//! Which partition a keyed record goes to: Kafka's default partitioner for keyed records,
//! `toPositive(murmur2(key)) % partitions`, so that a key written by `sluice produce` lands
//! in the same partition as the same key written by a Java client (or by kafka-python, which
//! uses the same function). Pure; runs anywhere.

/// Kafka's 32-bit murmur2 hash (seed 0x9747b28c), as the Java client computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    // The length is mixed in as a 32-bit value, as the Java implementation's int does.
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among `partitions` (> 0).
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    let positive = murmur2(key) & 0x7fff_ffff;
    positive % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors computed with kafka-python's `kafka.partitioner.default.murmur2` (which is the
    /// Java client's function, reported unsigned).
    #[test]
    fn murmur2_matches_the_kafka_clients() {
        let cases: &[(&[u8], u32)] = &[
            (b"", 275_646_681),
            (b"21", 3_321_034_988),
            (b"foobar", 3_504_634_814),
            (b"a-little-bit-long-string", 3_308_985_760),
            (b"a-little-bit-longer-string", 2_808_662_467),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                4_236_069_325,
            ),
            (b"key-1", 193_331_640),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input) as u32, *expected, "{input:?}");
        }
    }

    #[test]
    fn keys_map_into_range() {
        assert_eq!(partition_for_key(b"21", 1), 0);
        // -973932308 & 0x7fffffff = 1173551340; mod 7 = 1173551340 % 7.
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
        for n in 1..50 {
            let p = partition_for_key(b"some key", n);
            assert!((0..n).contains(&p));
        }
    }
}
