//! The consumer protocol's assignment bytes (Kafka's ConsumerProtocolAssignment), decoded: which
//! partitions a consumer group member was given. `group describe` shows them; DescribeGroups
//! hands them over as the bytes the group leader wrote. Pure: bytes in, partitions out, and
//! nothing allocated for a count the bytes do not back (see [`decode_assignment`]).

/// Why a consumer-protocol assignment could not be decoded; offsets are byte positions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("assignment cut short at byte {offset}: need {need} bytes, have {have}")]
    Truncated { offset: usize, need: usize, have: usize },
    #[error("assignment version {0}")]
    NegativeVersion(i16),
    #[error("assignment array of {count} entries at byte {offset}")]
    NegativeCount { offset: usize, count: i32 },
    #[error("assignment topic name at byte {offset} is not UTF-8")]
    TopicNotUtf8 { offset: usize },
}

/// The partitions of a consumer group member's assignment: Kafka's ConsumerProtocolAssignment,
/// `version: i16, [topic: string (i16 length), [partition: i32]], user_data: bytes`, big-endian.
/// Versions 0 to 3 share that layout and later ones may only append fields, so any version is
/// read this far and the rest (user data, future fields) is ignored, as Kafka's clients do.
/// Empty bytes (a member between generations) assign nothing.
///
/// Nothing is allocated for an announced count: entries are read one at a time, each checked
/// against the bytes left, so a huge count in a short buffer fails at the first missing entry.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<(String, Vec<i32>)>, AssignmentError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = Reader { bytes, offset: 0 };
    let version = i16::from_be_bytes(reader.take()?);
    if version < 0 {
        return Err(AssignmentError::NegativeVersion(version));
    }
    let topic_count = reader.count()?;
    let mut topics = Vec::new();
    for _ in 0..topic_count {
        let name_offset = reader.offset;
        let name_length = i16::from_be_bytes(reader.take()?);
        let name_length = usize::try_from(name_length).map_err(|_| AssignmentError::NegativeCount {
            offset: name_offset,
            count: i32::from(name_length),
        })?;
        let name = std::str::from_utf8(reader.slice(name_length)?)
            .map_err(|_| AssignmentError::TopicNotUtf8 { offset: name_offset })?
            .to_string();
        let partition_count = reader.count()?;
        let mut partitions = Vec::new();
        for _ in 0..partition_count {
            partitions.push(i32::from_be_bytes(reader.take()?));
        }
        topics.push((name, partitions));
    }
    Ok(topics)
}

/// A cursor over the assignment bytes that reports where it ran out.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn slice(&mut self, length: usize) -> Result<&'a [u8], AssignmentError> {
        let have = self.bytes.len() - self.offset;
        if length > have {
            return Err(AssignmentError::Truncated { offset: self.offset, need: length, have });
        }
        let slice = &self.bytes[self.offset..self.offset + length];
        self.offset += length;
        Ok(slice)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], AssignmentError> {
        let mut array = [0; N];
        array.copy_from_slice(self.slice(N)?);
        Ok(array)
    }

    /// An array's i32 element count; a null array (-1) is refused, as the field is not nullable.
    fn count(&mut self) -> Result<u32, AssignmentError> {
        let offset = self.offset;
        let count = i32::from_be_bytes(self.take()?);
        u32::try_from(count).map_err(|_| AssignmentError::NegativeCount { offset, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ConsumerProtocolAssignment as Kafka's clients encode it.
    fn encode_assignment(version: i16, topics: &[(&str, &[i32])], user_data: &[u8]) -> Vec<u8> {
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for partition in *partitions {
                bytes.extend(partition.to_be_bytes());
            }
        }
        bytes.extend((user_data.len() as i32).to_be_bytes());
        bytes.extend(user_data);
        bytes
    }

    #[test]
    fn decode_assignment_reads_every_version_and_ignores_what_follows() {
        let check = |bytes: &[u8], expected: Result<Vec<(&str, Vec<i32>)>, AssignmentError>| {
            let expected = expected.map(|topics| {
                topics.into_iter().map(|(topic, partitions)| (topic.to_string(), partitions)).collect()
            });
            assert_eq!(decode_assignment(bytes), expected, "{bytes:?}");
        };
        check(&[], Ok(vec![]));
        check(&encode_assignment(0, &[], &[]), Ok(vec![]));
        check(
            &encode_assignment(0, &[("events", &[0, 2]), ("audit", &[1])], &[]),
            Ok(vec![("events", vec![0, 2]), ("audit", vec![1])]),
        );
        check(&encode_assignment(3, &[("events", &[5])], b"sticky state"), Ok(vec![("events", vec![5])]));
        // A future version that appends a field after the user data.
        let mut future = encode_assignment(7, &[("t", &[])], &[]);
        future.extend([1, 2, 3]);
        check(&future, Ok(vec![("t", vec![])]));
        // librdkafka's encoding of "no user data" is a null (-1 length); it is never read.
        let mut null_user_data = encode_assignment(1, &[("t", &[0])], &[]);
        let length_at = null_user_data.len() - 4;
        null_user_data[length_at..].copy_from_slice(&(-1i32).to_be_bytes());
        check(&null_user_data, Ok(vec![("t", vec![0])]));
    }

    #[test]
    fn decode_assignment_reports_where_bad_bytes_are() {
        let good = encode_assignment(0, &[("events", &[0, 1])], &[]);
        // Cut inside the second partition id: it starts at byte 2 + 4 + 2 + 6 + 4 + 4 = 22.
        assert_eq!(
            decode_assignment(&good[..24]),
            Err(AssignmentError::Truncated { offset: 22, need: 4, have: 2 })
        );
        assert_eq!(decode_assignment(&[0]), Err(AssignmentError::Truncated { offset: 0, need: 2, have: 1 }));
        assert_eq!(decode_assignment(&(-1i16).to_be_bytes()), Err(AssignmentError::NegativeVersion(-1)));
        let mut negative = 0i16.to_be_bytes().to_vec();
        negative.extend((-1i32).to_be_bytes());
        assert_eq!(
            decode_assignment(&negative),
            Err(AssignmentError::NegativeCount { offset: 2, count: -1 })
        );
        // A huge announced count with no entries behind it fails at the first entry.
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend(i32::MAX.to_be_bytes());
        assert_eq!(decode_assignment(&huge), Err(AssignmentError::Truncated { offset: 6, need: 2, have: 0 }));
        let mut not_utf8 = encode_assignment(0, &[("ab", &[])], &[]);
        not_utf8[8] = 0xff;
        assert_eq!(decode_assignment(&not_utf8), Err(AssignmentError::TopicNotUtf8 { offset: 6 }));
        assert_eq!(
            AssignmentError::Truncated { offset: 22, need: 4, have: 2 }.to_string(),
            "assignment cut short at byte 22: need 4 bytes, have 2"
        );
    }
}
