//! Kafka's default key partitioner, bit for bit.
//!
//! The embedded log and a Kafka broker must agree on where a key lands: a user who moves from
//! `sqlite://` to `kafka://` (or mixes our producers with Java/librdkafka ones using the
//! `murmur2_random` partitioner) must find each key in the same partition, or per-key
//! ordering and partition ownership break. So this is a literal port of the Java client's
//! `Utils.murmur2` and `Utils.toPositive`, not "a" murmur2.

/// Kafka's `Utils.murmur2`: MurmurHash2 (32 bit) with seed `0x9747b28c`.
///
/// Java computes it on signed `int`s; two's-complement wrapping arithmetic on `u32` yields the
/// same 32 bits, except that Java's `>>>` is a logical shift, which is exactly `u32 >>`.
/// Reinterpret the result `as i32` to compare with Java's value.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java mixes the length in as an `int`; keys longer than 2^32 bytes do not exist here.
    let mut h = SEED ^ data.len() as u32;

    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // Java's switch falls through from case 3 to case 1; bytes are sign-agnostic here
    // because Java masks each with `& 0xff`.
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
    h
}

/// The partition of `key` in a topic of `partitions` partitions:
/// `toPositive(murmur2(key)) % partitions`, as Kafka's default partitioner does for keyed
/// records. Java's `toPositive` clears the sign bit (it is not `abs`).
///
/// # Panics
/// When `partitions` is 0; a topic always has at least one partition.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors of Apache Kafka's `UtilsTest.testMurmur2`, as Java's signed ints. Together
    /// they cover every tail length (0..=3 trailing bytes).
    #[test]
    fn murmur2_matches_kafka_utils_test_vectors() {
        let cases: [(&str, i32); 7] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
            ("", 275_646_681),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input.as_bytes()) as i32,
                expected,
                "murmur2({input:?})"
            );
        }
    }

    #[test]
    fn partition_for_clears_the_sign_bit_like_java_to_positive() {
        // murmur2("foobar") is negative in Java: toPositive(-790332482) % 50 == 16,
        // whereas abs() would give 32.
        assert_eq!(partition_for("foobar", 50), 16);
        assert_eq!(partition_for("anything", 1), 0);
    }

    #[test]
    fn partition_for_is_stable_and_in_range() {
        for n in 1..=64 {
            for i in 0..200 {
                let key = format!("wf-{i}");
                let p = partition_for(&key, n);
                assert!(p < n);
                assert_eq!(p, partition_for(&key, n));
            }
        }
    }
}
