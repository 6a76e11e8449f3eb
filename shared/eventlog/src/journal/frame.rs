//! The journal's on-disk format.
//!
//! The file starts with [`MAGIC`], then holds frames back to back:
//!
//! ```text
//! frame  = body length (u32 LE) | CRC-32 of body (u32 LE) | body
//! body   = kind (u8) | fields
//! topic  = 1 | topic id (u32) | partitions (u32) | name (rest, UTF-8)
//! record = 2 | topic id (u32) | partition (u32) | offset (u64) | timestamp ms (i64)
//!            | key length (u32) | key (UTF-8) | headers length (u32) | headers | payload (rest)
//! commit = 3 | topic id (u32) | partition (u32) | next offset (u64) | group (rest, UTF-8)
//! end    = 4 | frames of the group before it (u32)
//! ```
//! All integers are little-endian; headers use [`crate::local::headers`]'s encoding. Every
//! group commit ends with an `end` frame, and only whole groups count: a frame whose length
//! runs past the end of the file or whose checksum does not match, and every frame of a
//! group whose `end` is missing, is where a crash interrupted a write (one that was never
//! acknowledged): recovery cuts the file after the last `end`. So a group is atomic: a
//! command's events are all in the log or none are. Files of the first version
//! ([`MAGIC_V1`]) have no `end` frames, each frame stood alone; recovery reads them so and
//! marks them as the current version.

use crate::local::headers;
use crate::{LogError, NewRecord, Record, Result};

/// First bytes of every journal file: format name and version.
pub(crate) const MAGIC: &[u8; 8] = b"DTJRNL02";
/// The first version, without `end` frames.
pub(crate) const MAGIC_V1: &[u8; 8] = b"DTJRNL01";
/// Length and checksum in front of every body.
pub(crate) const HEADER: usize = 8;

const TOPIC: u8 = 1;
const RECORD: u8 = 2;
const COMMIT: u8 = 3;
const END: u8 = 4;

/// A decoded body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Topic {
        id: u32,
        partitions: u32,
        name: String,
    },
    Record {
        topic_id: u32,
        partition: u32,
        offset: u64,
        timestamp_ms: i64,
        key: String,
        headers: Vec<(String, String)>,
        payload: Vec<u8>,
    },
    Commit {
        topic_id: u32,
        partition: u32,
        next: u64,
        group: String,
    },
    /// The end of a group of `frames` frames.
    End { frames: u32 },
}

/// Appends one frame (header and body) to `out`.
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    body(out);
    let len = u32::try_from(out.len() - start - HEADER).expect("a body fits in u32");
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).expect("fits in u32").to_le_bytes());
    out.extend_from_slice(s);
}

pub(crate) fn encode_topic(out: &mut Vec<u8>, id: u32, partitions: u32, name: &str) {
    frame(out, |b| {
        b.push(TOPIC);
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&partitions.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
    });
}

pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    topic_id: u32,
    partition: u32,
    offset: u64,
    record: &NewRecord,
    timestamp_ms: i64,
) {
    frame(out, |b| {
        b.push(RECORD);
        b.extend_from_slice(&topic_id.to_le_bytes());
        b.extend_from_slice(&partition.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&timestamp_ms.to_le_bytes());
        put_str(b, record.key.as_bytes());
        put_str(b, &headers::encode(&record.headers).unwrap_or_default());
        b.extend_from_slice(&record.payload);
    });
}

pub(crate) fn encode_commit(
    out: &mut Vec<u8>,
    topic_id: u32,
    partition: u32,
    next: u64,
    group: &str,
) {
    frame(out, |b| {
        b.push(COMMIT);
        b.extend_from_slice(&topic_id.to_le_bytes());
        b.extend_from_slice(&partition.to_le_bytes());
        b.extend_from_slice(&next.to_le_bytes());
        b.extend_from_slice(group.as_bytes());
    });
}

/// Ends a group of `frames` frames.
pub(crate) fn encode_end(out: &mut Vec<u8>, frames: u32) {
    frame(out, |b| {
        b.push(END);
        b.extend_from_slice(&frames.to_le_bytes());
    });
}

/// Splits a frame header into (body length, checksum).
pub(crate) fn header(bytes: &[u8; HEADER]) -> (usize, u32) {
    let (len, crc) = bytes.split_at(4);
    (
        u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize,
        u32::from_le_bytes(crc.try_into().expect("4 bytes")),
    )
}

pub(crate) fn checksum_ok(body: &[u8], crc: u32) -> bool {
    crc32fast::hash(body) == crc
}

/// Decodes a body whose checksum matched. An error here is not a torn write but a journal
/// this code did not write (or a bug): it names the position so an operator can look.
pub(crate) fn decode(body: &[u8], at: u64) -> Result<Frame> {
    let corrupt = |what: &str| {
        LogError::Storage(format!(
            "the journal's frame at byte {at} is corrupt: {what}"
        ))
    };
    let mut r = Cursor(body);
    let kind = r.u8().ok_or_else(|| corrupt("empty body"))?;
    let frame = match kind {
        TOPIC => Frame::Topic {
            id: r.u32().ok_or_else(|| corrupt("short topic"))?,
            partitions: r.u32().ok_or_else(|| corrupt("short topic"))?,
            name: r
                .rest_str()
                .ok_or_else(|| corrupt("topic name is not UTF-8"))?,
        },
        RECORD => {
            let topic_id = r.u32().ok_or_else(|| corrupt("short record"))?;
            let partition = r.u32().ok_or_else(|| corrupt("short record"))?;
            let offset = r.u64().ok_or_else(|| corrupt("short record"))?;
            let timestamp_ms = r.u64().ok_or_else(|| corrupt("short record"))? as i64;
            let key = r.str().ok_or_else(|| corrupt("bad record key"))?;
            let blob = r.bytes().ok_or_else(|| corrupt("bad record headers"))?;
            let headers = headers::decode((!blob.is_empty()).then_some(blob))?;
            Frame::Record {
                topic_id,
                partition,
                offset,
                timestamp_ms,
                key,
                headers,
                payload: r.0.to_vec(),
            }
        }
        COMMIT => Frame::Commit {
            topic_id: r.u32().ok_or_else(|| corrupt("short commit"))?,
            partition: r.u32().ok_or_else(|| corrupt("short commit"))?,
            next: r.u64().ok_or_else(|| corrupt("short commit"))?,
            group: r.rest_str().ok_or_else(|| corrupt("group is not UTF-8"))?,
        },
        END => Frame::End {
            frames: r.u32().ok_or_else(|| corrupt("short end"))?,
        },
        other => return Err(corrupt(&format!("unknown frame kind {other}"))),
    };
    Ok(frame)
}

/// The (topic id, partition, offset) of a record frame's body; `None` for other frames.
pub(crate) fn record_slot(body: &[u8]) -> Option<(u32, u32, u64)> {
    let mut r = Cursor(body);
    if r.u8()? != RECORD {
        return None;
    }
    Some((r.u32()?, r.u32()?, r.u64()?))
}

/// Decodes a record frame's body into a [`Record`] of `topic`.
pub(crate) fn decode_record(body: &[u8], at: u64, topic: &str) -> Result<Record> {
    match decode(body, at)? {
        Frame::Record {
            partition,
            offset,
            timestamp_ms,
            key,
            headers,
            payload,
            ..
        } => Ok(Record {
            topic: topic.to_owned(),
            partition,
            offset,
            key,
            headers,
            payload,
            timestamp_ms,
        }),
        other => Err(LogError::Storage(format!(
            "the journal's index points at byte {at}, which holds {other:?}, not a record"
        ))),
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&[u8]> {
        let len = self.u32()? as usize;
        if self.0.len() < len {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }
    fn str(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn rest_str(&mut self) -> Option<String> {
        let s = String::from_utf8(self.0.to_vec()).ok();
        self.0 = &[];
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(buf: &[u8]) -> (&[u8], u32) {
        let (len, crc) = header(buf[..HEADER].try_into().unwrap());
        assert_eq!(buf.len(), HEADER + len, "one frame");
        (&buf[HEADER..], crc)
    }

    #[test]
    fn every_kind_round_trips() {
        let mut record = NewRecord::new("t", "kéy", b"\x00payload".to_vec());
        record.headers = vec![("a".into(), "1".into()), ("a".into(), String::new())];
        let cases = [
            (
                Frame::Topic {
                    id: 7,
                    partitions: 3,
                    name: "orders".into(),
                },
                {
                    let mut b = Vec::new();
                    encode_topic(&mut b, 7, 3, "orders");
                    b
                },
            ),
            (
                Frame::Record {
                    topic_id: 7,
                    partition: 2,
                    offset: 41,
                    timestamp_ms: -5,
                    key: "kéy".into(),
                    headers: record.headers.clone(),
                    payload: b"\x00payload".to_vec(),
                },
                {
                    let mut b = Vec::new();
                    encode_record(&mut b, 7, 2, 41, &record, -5);
                    b
                },
            ),
            (
                Frame::Commit {
                    topic_id: 7,
                    partition: 1,
                    next: 99,
                    group: "engine".into(),
                },
                {
                    let mut b = Vec::new();
                    encode_commit(&mut b, 7, 1, 99, "engine");
                    b
                },
            ),
            (Frame::End { frames: 3 }, {
                let mut b = Vec::new();
                encode_end(&mut b, 3);
                b
            }),
        ];
        for (expected, bytes) in cases {
            let (body, crc) = body(&bytes);
            assert!(checksum_ok(body, crc));
            assert_eq!(decode(body, 0).unwrap(), expected);
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut b = Vec::new();
        encode_record(&mut b, 1, 0, 0, &NewRecord::new("t", "k", b"v".to_vec()), 0);
        let last = b.len() - 1;
        b[last] ^= 1;
        let (body, crc) = body(&b);
        assert!(!checksum_ok(body, crc));
    }

    #[test]
    fn a_short_or_unknown_body_is_a_clear_error() {
        for body in [&[][..], &[9, 0, 0][..], &[RECORD, 1, 0][..]] {
            let err = decode(body, 123).unwrap_err().to_string();
            assert!(err.contains("byte 123"), "{err}");
        }
    }
}
