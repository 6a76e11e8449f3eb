pub fn murmur2(_d: &[u8]) -> u32 { 0 } pub fn partition_for(_k: &str, _n: u32) -> u32 { 0 }
