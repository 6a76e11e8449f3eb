//! Between our records and Kafka messages.
//!
//! Keys and header values are strings on our side and bytes on Kafka's; anything a foreign
//! producer wrote that is not UTF-8 is decoded lossily rather than dropped, so a reader never
//! stalls on one odd record. A null key, value or header value reads back as empty.

use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::{NewRecord, Record};

/// The headers of `record` in Kafka form, order and duplicates kept.
pub(super) fn headers(record: &NewRecord) -> Option<OwnedHeaders> {
    if record.headers.is_empty() {
        return None;
    }
    let headers = record.headers.iter().fold(
        OwnedHeaders::new_with_capacity(record.headers.len()),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    );
    Some(headers)
}

/// A consumed message as a [`Record`].
pub(super) fn record(message: &impl Message) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), lossy(h.value)))
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: message.topic().to_owned(),
        // librdkafka never hands out a message with a negative partition or offset.
        partition: u32::try_from(message.partition()).unwrap_or_default(),
        offset: u64::try_from(message.offset()).unwrap_or_default(),
        key: lossy(message.key()),
        headers,
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        // We stamp CreateTime on append; a topic set to LogAppendTime has the broker's
        // clock instead, which is still "append time".
        timestamp_ms: message.timestamp().to_millis().unwrap_or_default(),
    }
}

fn lossy(bytes: Option<&[u8]>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}
