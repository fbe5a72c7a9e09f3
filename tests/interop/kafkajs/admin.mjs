// node admin.mjs BOOTSTRAP < {"steps": [{"op": "createTopic", ...}, ...]}
// Runs admin steps in order with one kafkajs admin client and prints one result per step:
// {"ok": value} or {"error": {name, type, code, message}}. A failed step does not stop the rest.
import { describeError, kafka, readRequest, require, run } from './common.mjs'

const { ConfigResourceTypes } = require('kafkajs')
const [bootstrap] = process.argv.slice(2)

const OPERATIONS = {
  createTopic: (admin, { topic, numPartitions, configs = {} }) =>
    admin.createTopics({
      waitForLeaders: true,
      topics: [
        {
          topic,
          numPartitions,
          replicationFactor: 1,
          configEntries: Object.entries(configs).map(([name, value]) => ({ name, value })),
        },
      ],
    }),
  // {name: {value, isDefault, source}} for every config of the topic (source: Kafka config source code).
  describeTopicConfigs: async (admin, { topic }) => {
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
    })
    const [resource] = described.resources
    if (resource.errorCode !== 0) throw Object.assign(new Error(resource.errorMessage), { name: 'KafkaJSDescribeError', code: resource.errorCode })
    return Object.fromEntries(resource.configEntries.map(entry => [entry.configName, { value: entry.configValue, isDefault: entry.isDefault, source: entry.configSource }]))
  },
  // AlterConfigs (kafkajs has no IncrementalAlterConfigs): replaces the topic's overrides.
  alterTopicConfigs: (admin, { topic, configs }) =>
    admin.alterConfigs({
      validateOnly: false,
      resources: [
        {
          type: ConfigResourceTypes.TOPIC,
          name: topic,
          configEntries: Object.entries(configs).map(([name, value]) => ({ name, value })),
        },
      ],
    }),
  createPartitions: (admin, { topic, count }) => admin.createPartitions({ topicPartitions: [{ topic, count }] }),
  partitionCount: async (admin, { topic }) => {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
    return topics[0].partitions.length
  },
  deleteTopic: (admin, { topic }) => admin.deleteTopics({ topics: [topic] }),
  listTopics: admin => admin.listTopics(),
  // ListOffsets by timestamp: [{partition, offset}] (offset is the high watermark when no record
  // is that new, as kafkajs documents).
  offsetsByTimestamp: async (admin, { topic, timestamp }) =>
    (await admin.fetchTopicOffsetsByTimestamp(topic, timestamp)).map(({ partition, offset }) => ({
      partition,
      offset: Number(offset),
    })),
  // Earliest and latest offsets: [{partition, low, high}].
  offsets: async (admin, { topic }) =>
    (await admin.fetchTopicOffsets(topic)).map(({ partition, low, high }) => ({
      partition,
      low: Number(low),
      high: Number(high),
    })),
}

run(async () => {
  const { steps } = await readRequest()
  const admin = kafka(bootstrap).admin({ retry: { retries: 0 } })
  await admin.connect()
  try {
    const results = []
    for (const { op, ...args } of steps) {
      try {
        const value = await OPERATIONS[op](admin, args)
        results.push({ ok: value === undefined ? null : value })
      } catch (error) {
        results.push({ error: describeError(error) })
      }
    }
    return { results }
  } finally {
    await admin.disconnect()
  }
})
