//! Record headers as one blob, for storages that keep them as bytes.

use crate::{LogError, Result};

/// Headers as `(u32 LE length, bytes)` pairs: compact, order preserving, duplicates allowed
/// (Kafka headers are a list, not a map). No headers is stored as NULL.
pub(crate) fn encode(headers: &[(String, String)]) -> Option<Vec<u8>> {
    if headers.is_empty() {
        return None;
    }
    let len = headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(len);
    for (k, v) in headers {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    Some(out)
}

pub(crate) fn decode(blob: Option<&[u8]>) -> Result<Vec<(String, String)>> {
    fn corrupt() -> LogError {
        LogError::Storage("corrupt record headers".to_owned())
    }
    fn next(rest: &mut &[u8]) -> Result<String> {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(corrupt());
        }
        let (s, tail) = tail.split_at(len);
        *rest = tail;
        String::from_utf8(s.to_vec()).map_err(|_| corrupt())
    }

    let mut rest = blob.unwrap_or_default();
    let mut headers = Vec::new();
    while !rest.is_empty() {
        let k = next(&mut rest)?;
        let v = next(&mut rest)?;
        headers.push((k, v));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_keeps_order_duplicates_and_empty_strings() {
        let headers = vec![
            ("b".to_owned(), "1".to_owned()),
            ("a".to_owned(), String::new()),
            ("b".to_owned(), "ü→2".to_owned()),
        ];
        let blob = encode(&headers);
        assert_eq!(decode(blob.as_deref()).unwrap(), headers);
        assert_eq!(encode(&[]), None);
        assert!(decode(None).unwrap().is_empty());
    }

    #[test]
    fn truncated_headers_are_a_storage_error_not_a_panic() {
        let blob = encode(&[("key".to_owned(), "value".to_owned())]).unwrap();
        for cut in 1..blob.len() {
            assert!(matches!(
                decode(Some(&blob[..cut])),
                Err(LogError::Storage(_))
            ));
        }
    }
}
