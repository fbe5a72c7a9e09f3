// node produce.mjs BOOTSTRAP TOPIC < {"records": [...], "acks": -1, "compression": "gzip",
//                                     "partition": null, "each": false, "security": {...}}
// Produces the records in order with the Java-compatible default partitioner. With "each" every
// record is sent on its own and gets its own delivery report ({partition, offset}); otherwise
// all go in one send and the result is kafkajs's per-partition answer ({partition, baseOffset}).
import { fromB64, kafka, readRequest, require, run, COMPRESSION } from './common.mjs'

const { Partitioners } = require('kafkajs')
const [bootstrap, topic] = process.argv.slice(2)

// kafkajs takes headers as an object; a repeated key carries an array of values in order.
function headersObject(pairs) {
  const headers = {}
  for (const [name, value] of pairs) {
    const buffer = fromB64(value)
    if (headers[name] === undefined) headers[name] = buffer
    else headers[name] = [].concat(headers[name], [buffer])
  }
  return headers
}

run(async () => {
  const request = await readRequest()
  const producer = kafka(bootstrap, request.security).producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
    idempotent: false,
  })
  await producer.connect()
  try {
    const messages = request.records.map(record => ({
      key: fromB64(record.key),
      value: fromB64(record.value),
      headers: headersObject(record.headers),
      timestamp: record.timestamp,
      ...(request.partition === null || request.partition === undefined ? {} : { partition: request.partition }),
    }))
    const options = {
      topic,
      acks: request.acks ?? -1,
      compression: COMPRESSION[request.compression ?? 'none'],
    }
    if (request.each) {
      const reports = []
      for (const message of messages) {
        const [result] = await producer.send({ ...options, messages: [message] })
        reports.push({ partition: result.partition, offset: Number(result.baseOffset) })
      }
      return { reports }
    }
    const results = await producer.send({ ...options, messages })
    return {
      partitions: results.map(result => ({ partition: result.partition, baseOffset: Number(result.baseOffset) })),
    }
  } finally {
    await producer.disconnect()
  }
})
