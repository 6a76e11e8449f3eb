//! From librdkafka's errors to [`LogError`], with what failed and where.
//!
//! Retryable is the default: librdkafka reports most broker trouble (a leader moving, a
//! coordinator loading, a connection dropping, a timeout) as errors that go away by
//! themselves. Only what no retry can fix is [`LogError::Fatal`]: refused credentials or
//! permissions, a broker too old for a request, a producer the broker fenced, a record the
//! broker will never accept.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::LogError;

/// `what` failed with `err`: "append to topic \"t\" partition 2: Broker: Not leader ...".
pub(super) fn log_error(what: impl std::fmt::Display, err: &KafkaError) -> LogError {
    let message = format!("{what}: {err}");
    if is_fatal(err) {
        LogError::Fatal(message)
    } else {
        LogError::Storage(message)
    }
}

/// Whether no retry can fix `err` (see the module docs).
pub(super) fn is_fatal(err: &KafkaError) -> bool {
    matches!(err, KafkaError::MessageConsumptionFatal(_)) || code(err).is_some_and(is_fatal_code)
}

/// The librdkafka or broker error code of `err`, if it has one.
pub(super) fn code(err: &KafkaError) -> Option<RDKafkaErrorCode> {
    match err {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    }
}

/// Whether `err` says the topic (or one of its partitions) does not exist.
pub(super) fn is_unknown_topic(err: &KafkaError) -> bool {
    matches!(
        code(err),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

/// Whether `err` is the broker telling a member that its group moved on without it (a
/// rebalance started or finished while the member was busy).
pub(super) fn is_rebalance(err: &KafkaError) -> bool {
    matches!(
        code(err),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost
                | RDKafkaErrorCode::StaleMemberEpoch
        )
    )
}

fn is_fatal_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::Fatal
            | C::Authentication
            | C::SaslAuthenticationFailed
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::UnsupportedVersion
            | C::UnsupportedFeature
            | C::InvalidArgument
            | C::InvalidConfig
            | C::InvalidTopic
            | C::InvalidRecord
            | C::MessageSizeTooLarge
            | C::InvalidProducerEpoch
            | C::FencedInstanceId
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_trouble_is_retryable_and_names_the_call() {
        let err = KafkaError::MessageProduction(RDKafkaErrorCode::NotLeaderForPartition);
        let mapped = log_error("append to topic \"t\" partition 2", &err);
        assert!(mapped.is_retryable(), "{mapped:?}");
        assert!(
            mapped
                .to_string()
                .contains("append to topic \"t\" partition 2"),
            "{mapped}"
        );
    }

    #[test]
    fn refused_permissions_are_not_retryable() {
        let err = KafkaError::MetadataFetch(RDKafkaErrorCode::TopicAuthorizationFailed);
        let mapped = log_error("partitions of \"t\"", &err);
        assert!(matches!(mapped, LogError::Fatal(_)), "{mapped:?}");
        assert!(!mapped.is_retryable());
    }

    #[test]
    fn unknown_topics_are_recognised_from_every_call() {
        for err in [
            KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic),
            KafkaError::AdminOp(RDKafkaErrorCode::UnknownTopicOrPartition),
        ] {
            assert!(is_unknown_topic(&err), "{err:?}");
        }
        assert!(!is_unknown_topic(&KafkaError::Canceled));
    }
}
