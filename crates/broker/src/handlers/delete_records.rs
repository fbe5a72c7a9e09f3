//! DeleteRecords: moves partitions' log start offsets forward (Kafka's API 21, what Kafka
//! Streams uses to purge its repartition topics).
//!
//! Authorization as in Kafka: DELETE on the topic, checked before anything changes; each
//! partition of a topic that may not be deleted from answers TOPIC_AUTHORIZATION_FAILED (with
//! low watermark -1), whether or not the topic exists.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::delete_records_request::DeleteRecordsRequest;
use tidewater_kafka::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};

use super::blocking;
use crate::acl::{Access, Operation, ResourceType};
use crate::broker::Broker;

pub(super) async fn handle(
    broker: Arc<Broker>,
    request: DeleteRecordsRequest,
    access: Access,
) -> DeleteRecordsResponse {
    blocking(move || {
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                let allowed = access.check(Operation::Delete, ResourceType::Topic, &topic.name);
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        let result = DeleteRecordsPartitionResult::default()
                            .with_partition_index(partition.partition_index);
                        let deleted = allowed.clone().and_then(|()| {
                            broker.delete_records(&topic.name, partition.partition_index, partition.offset)
                        });
                        match deleted {
                            Ok(low_watermark) => result.with_low_watermark(low_watermark),
                            Err(error) => result.with_low_watermark(-1).with_error_code(error.code.code()),
                        }
                    })
                    .collect();
                DeleteRecordsTopicResult::default().with_name(topic.name.clone()).with_partitions(partitions)
            })
            .collect();
        DeleteRecordsResponse::default().with_topics(topics)
    })
    .await
}

#[cfg(test)]
mod tests {
    use tidewater_kafka::ResponseError;
    use tidewater_log::batch::encode_records;
    use tidewater_log::{LogConfig, ManualClock};

    use crate::test_support::open_broker;
    use crate::topic_config::TopicConfigs;

    #[test]
    fn delete_records_moves_the_low_watermark_up_to_the_high_watermark_and_no_further() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000);
        let broker = open_broker(dir.path(), &clock, LogConfig::default());
        broker.create_topic("purged", 1, TopicConfigs::new(), false).expect("create");
        let partition = broker.partition("purged", 0).expect("partition");
        for _ in 0..10 {
            let mut records = encode_records(1_000, &[(Some(b"k"), Some(b"v"))], None);
            partition.append(&mut records, 1_000).expect("append");
        }
        // Under fsync=always the high watermark is what is on disk.
        partition.log.flush().expect("flush");
        let code = |result: Result<i64, crate::broker::ApiError>| result.map_err(|error| error.code);
        assert_eq!(code(broker.delete_records("purged", 0, 4)), Ok(4));
        assert_eq!(code(broker.delete_records("purged", 0, 2)), Ok(4), "below the start: nothing changes");
        assert_eq!(code(broker.delete_records("purged", 0, 11)), Err(ResponseError::OffsetOutOfRange));
        assert_eq!(code(broker.delete_records("purged", 0, -2)), Err(ResponseError::OffsetOutOfRange));
        assert_eq!(code(broker.delete_records("purged", 1, 0)), Err(ResponseError::UnknownTopicOrPartition));
        assert_eq!(code(broker.delete_records("purged", 0, -1)), Ok(10), "-1 is the high watermark");
        broker.close().expect("close");
        let broker = open_broker(dir.path(), &clock, LogConfig::default());
        assert_eq!(broker.partition("purged", 0).expect("partition").log.log_start_offset(), 10);
    }
}
