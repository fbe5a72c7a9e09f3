// node transaction.mjs BOOTSTRAP TOPIC TRANSACTIONAL_ID < {"transactions": [{"values": [...],
//     "commit": true, "offsets": {"group": "g", "partition": 0, "offset": 5}}, ...]}
// One transactional producer (idempotent, one request in flight, as kafkajs requires) runs the
// transactions in order: each sends its values (UTF-8) to partition 0, commits offsets of a
// group in the transaction when it has "offsets", then commits or aborts. Prints
// {"transactions": N} or the client error.
import { kafka, readRequest, run } from './common.mjs'

const [bootstrap, topic, transactionalId] = process.argv.slice(2)

run(async () => {
  const request = await readRequest()
  const producer = kafka(bootstrap).producer({
    transactionalId,
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
  })
  await producer.connect()
  try {
    for (const transaction of request.transactions) {
      const txn = await producer.transaction()
      await txn.send({
        topic,
        acks: -1,
        messages: transaction.values.map(value => ({ value, partition: 0 })),
      })
      if (transaction.offsets) {
        const { group, partition, offset } = transaction.offsets
        await txn.sendOffsets({
          consumerGroupId: group,
          topics: [{ topic, partitions: [{ partition, offset: String(offset) }] }],
        })
      }
      if (transaction.commit) await txn.commit()
      else await txn.abort()
    }
    return { transactions: request.transactions.length }
  } finally {
    await producer.disconnect()
  }
})
