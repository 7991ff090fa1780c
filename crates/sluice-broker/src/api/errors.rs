//! Kafka error codes: taken from `kafka_protocol::ResponseError` (the
//! protocol's own table), and the mapping from log errors to them.

use kafka_protocol::ResponseError as E;
use sluice_log::producer::SequenceError;
use sluice_log::{AppendError, TopicError, batch::BatchError};

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = E::OffsetOutOfRange.code();
pub const CORRUPT_MESSAGE: i16 = E::CorruptMessage.code();
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = E::UnknownTopicOrPartition.code();
pub const MESSAGE_TOO_LARGE: i16 = E::MessageTooLarge.code();
pub const OFFSET_METADATA_TOO_LARGE: i16 = E::OffsetMetadataTooLarge.code();
pub const INVALID_TOPIC_EXCEPTION: i16 = E::InvalidTopicException.code();
pub const RECORD_LIST_TOO_LARGE: i16 = E::RecordListTooLarge.code();
pub const INVALID_GROUP_ID: i16 = E::InvalidGroupId.code();
pub const UNSUPPORTED_VERSION: i16 = E::UnsupportedVersion.code();
pub const TOPIC_ALREADY_EXISTS: i16 = E::TopicAlreadyExists.code();
pub const INVALID_PARTITIONS: i16 = E::InvalidPartitions.code();
pub const INVALID_REPLICATION_FACTOR: i16 = E::InvalidReplicationFactor.code();
pub const INVALID_REQUEST: i16 = E::InvalidRequest.code();
pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = E::UnsupportedForMessageFormat.code();
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = E::OutOfOrderSequenceNumber.code();
pub const INVALID_PRODUCER_EPOCH: i16 = E::InvalidProducerEpoch.code();
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = E::TransactionalIdAuthorizationFailed.code();
pub const TOPIC_AUTHORIZATION_FAILED: i16 = E::TopicAuthorizationFailed.code();
pub const GROUP_AUTHORIZATION_FAILED: i16 = E::GroupAuthorizationFailed.code();
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = E::ClusterAuthorizationFailed.code();
pub const KAFKA_STORAGE_ERROR: i16 = E::KafkaStorageError.code();
pub const INVALID_RECORD: i16 = E::InvalidRecord.code();
pub const INVALID_CONFIG: i16 = E::InvalidConfig.code();
pub const INVALID_TIMESTAMP: i16 = E::InvalidTimestamp.code();

/// A topic operation's failure as a Kafka error code.
pub fn topic_error_code(e: &TopicError) -> i16 {
    match e {
        TopicError::InvalidName(..) => INVALID_TOPIC_EXCEPTION,
        TopicError::Exists(_) => TOPIC_ALREADY_EXISTS,
        TopicError::NotFound(_) => UNKNOWN_TOPIC_OR_PARTITION,
        TopicError::InvalidPartitions => INVALID_PARTITIONS,
        TopicError::Io { .. } => KAFKA_STORAGE_ERROR,
        TopicError::InvalidConfig(_) => INVALID_CONFIG,
    }
}

/// A refused append as a Kafka error code.
pub fn append_error_code(e: &AppendError) -> i16 {
    match e {
        AppendError::InvalidBatch(BatchError::CrcMismatch { .. }) => CORRUPT_MESSAGE,
        AppendError::InvalidBatch(BatchError::UnsupportedMagic(_)) => {
            UNSUPPORTED_FOR_MESSAGE_FORMAT
        }
        // A plain batch from a producer with a transaction open (Kafka:
        // INVALID_TXN_STATE).
        AppendError::InvalidBatch(BatchError::NotTransactional { .. }) => E::InvalidTxnState.code(),
        AppendError::InvalidBatch(_) | AppendError::Empty => INVALID_RECORD,
        AppendError::Sequence(SequenceError::OutOfOrder { .. }) => OUT_OF_ORDER_SEQUENCE_NUMBER,
        AppendError::Sequence(SequenceError::FencedEpoch { .. }) => INVALID_PRODUCER_EPOCH,
        AppendError::Sequence(SequenceError::CoordinatorFenced { .. }) => {
            E::TransactionCoordinatorFenced.code()
        }
        AppendError::BatchTooLarge { .. } => MESSAGE_TOO_LARGE,
        AppendError::InvalidTimestamp { .. } => INVALID_TIMESTAMP,
        AppendError::TooLarge { .. } => RECORD_LIST_TOO_LARGE,
        AppendError::Offline(_) | AppendError::Io { .. } | AppendError::NoSpace { .. } => {
            KAFKA_STORAGE_ERROR
        }
        // Only a follower's append of fetched batches meets it.
        AppendError::OffsetMismatch { .. } => E::UnknownServerError.code(),
        // The leadership moved between the role check and the append.
        AppendError::StaleLeaderEpoch { .. } => E::NotLeaderOrFollower.code(),
    }
}
