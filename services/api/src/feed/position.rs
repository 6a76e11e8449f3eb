//! A position in the whole events topic: the next offset to deliver in every partition.
//! It is the `id:` of an unfiltered SSE event, so `Last-Event-ID` resumes each partition
//! exactly where the client stopped. Written as the offsets in partition order, joined by
//! dots (`12.0.7.3`); clients treat it as opaque.

use crate::error::ApiError;
use std::fmt;

/// The next offset to deliver of each partition, indexed by partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position(pub Vec<u64>);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, offset) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{offset}")?;
        }
        Ok(())
    }
}

impl Position {
    /// Parses a position of a topic with `partitions` partitions.
    pub fn parse(raw: &str, partitions: u32) -> Result<Position, ApiError> {
        let bad = || {
            ApiError::BadRequest(format!(
                "{raw:?} is not a stream position: expected {partitions} dot-separated offsets, \
                 as in the `id` of an event of this stream"
            ))
        };
        let offsets = raw
            .trim()
            .split('.')
            .map(|o| o.parse::<u64>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        if offsets.len() != partitions as usize {
            return Err(bad());
        }
        Ok(Position(offsets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reads_back_what_it_writes() {
        let p = Position(vec![12, 0, 7]);
        assert_eq!(p.to_string(), "12.0.7");
        assert_eq!(Position::parse("12.0.7", 3).unwrap(), p);
    }

    #[test]
    fn a_position_of_another_shape_is_refused() {
        for raw in ["", "1.2", "1.2.3.4", "a.b.c", "1..3", "-1.0.0"] {
            let err = Position::parse(raw, 3).unwrap_err();
            assert!(
                err.to_string().contains("3 dot-separated offsets"),
                "{raw}: {err}"
            );
        }
    }
}
