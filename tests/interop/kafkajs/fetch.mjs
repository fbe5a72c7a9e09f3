// node fetch.mjs BOOTSTRAP TOPIC PARTITION OFFSET COUNT [< {"security": {...}}]
// Reads COUNT records of one partition from OFFSET with kafkajs's own Fetch request and record
// batch decoder, and prints them ({"records": [...]}) or the partition's error.
//
// kafkajs's consumer API always joins a consumer group; these tests read by explicit offset
// without one, so this goes one level down, to the cluster and broker objects its consumer is
// built on. It sends the Fetch whatever the metadata says, so a partition the broker does not
// have shows the broker's own error code.
import { logCreator, readRequest, require, run, securityOptions, toB64 } from './common.mjs'

const Cluster = require('kafkajs/src/cluster')
const { createLogger, LEVELS } = require('kafkajs/src/loggers')
const socketFactory = require('kafkajs/src/network/socketFactory')
const TimestampTypes = require('kafkajs/src/protocol/timestampTypes')

const [bootstrap, topic, partitionText, offsetText, countText] = process.argv.slice(2)
const partition = Number(partitionText)
const count = Number(countText)
// Each fetch waits at most this long for data; the loop below gives up after FETCHES_MAX.
const MAX_WAIT_MS = 500
const FETCHES_MAX = 120

// kafkajs gives headers as an object, a repeated key as an array of values in order.
function headerPairs(headers) {
  const pairs = []
  for (const [name, value] of Object.entries(headers)) {
    for (const item of Array.isArray(value) ? value : [value]) pairs.push([name, toB64(item)])
  }
  return pairs
}

run(async () => {
  const request = await readRequest()
  const cluster = new Cluster({
    logger: createLogger({ level: LEVELS.WARN, logCreator }),
    socketFactory: socketFactory(),
    brokers: [bootstrap],
    clientId: 'interop-kafkajs',
    connectionTimeout: 10000,
    requestTimeout: 30000,
    enforceRequestTimeout: true,
    retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1000 },
    allowAutoTopicCreation: false,
    ...securityOptions(request.security),
  })
  await cluster.connect()
  try {
    await cluster.refreshMetadata()
    const [nodeId] = cluster.getNodeIds()
    const broker = await cluster.findBroker({ nodeId })
    const records = []
    let nextOffset = BigInt(offsetText)
    for (let fetches = 0; records.length < count && fetches < FETCHES_MAX; fetches++) {
      const response = await broker.fetch({
        maxWaitTime: MAX_WAIT_MS,
        minBytes: 1,
        maxBytes: 10 * 1024 * 1024,
        topics: [{ topic, partitions: [{ partition, fetchOffset: nextOffset.toString(), maxBytes: 1024 * 1024 }] }],
      })
      for (const message of response.responses[0].partitions[0].messages) {
        // A batch comes whole: skip the records before the offset asked for.
        if (message.isControlRecord || BigInt(message.offset) < nextOffset) continue
        records.push({
          offset: Number(message.offset),
          key: toB64(message.key),
          value: toB64(message.value),
          headers: headerPairs(message.headers),
          timestamp: String(message.timestamp),
          createTime: message.batchContext.timestampType === TimestampTypes.CREATE_TIME,
        })
        nextOffset = BigInt(message.offset) + 1n
        if (records.length === count) break
      }
    }
    return { records }
  } finally {
    await cluster.disconnect()
  }
})
