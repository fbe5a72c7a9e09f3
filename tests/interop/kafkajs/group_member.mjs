// node group_member.mjs BOOTSTRAP TOPIC GROUP [SESSION_TIMEOUT_MS] [HEARTBEAT_INTERVAL_MS] [REBALANCE_TIMEOUT_MS] [PROCESS_MS]
// One kafkajs consumer group member as a program of its own, so a test can SIGKILL it: the twin
// of ../group_member.py (see there for the JSON lines it prints and what they promise).
//
// For every batch it reports the records, works PROCESS_MS (default 0), then commits the offset
// after them and reports the commit once the broker confirmed it. Lines go out with a synchronous write, so a line written
// before a SIGKILL still reaches the test. SIGTERM disconnects cleanly (leaves the group).
import fs from 'node:fs'
import { performance } from 'node:perf_hooks'

import { kafka } from './common.mjs'

const [bootstrap, topic, groupId, sessionText, heartbeatText, rebalanceText, processText] = process.argv.slice(2)
const processMs = Number(processText ?? 0)

// Wall-clock seconds with sub-millisecond precision: the same clock as Python's time.time().
const now = () => (performance.timeOrigin + performance.now()) / 1000

function emit(ev, fields = {}) {
  fs.writeSync(1, `${JSON.stringify({ ev, t: now(), ...fields })}\n`)
}

const consumer = kafka(bootstrap).consumer({
  groupId,
  sessionTimeout: Number(sessionText ?? 6000),
  heartbeatInterval: Number(heartbeatText ?? 1000),
  rebalanceTimeout: Number(rebalanceText ?? 10000),
  maxWaitTimeInMs: 100,
  allowAutoTopicCreation: false,
  // Keep rejoining after errors for as long as the test lets this process live.
  retry: { retries: 1000, initialRetryTime: 100, maxRetryTime: 1000 },
})

consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
  emit('assigned', { member_id: payload.memberId, partitions: [...(payload.memberAssignment[topic] ?? [])].sort((a, b) => a - b) })
})
consumer.on(consumer.events.CRASH, ({ payload }) => {
  emit('consumer_error', { error: String(payload.error), restart: payload.restart })
})

let stopping = false
process.on('SIGTERM', async () => {
  if (stopping) return
  stopping = true
  try {
    await consumer.disconnect()
  } finally {
    emit('closed')
    process.exit(0)
  }
})

emit('started', { pid: process.pid, client: 'kafkajs' })
await consumer.connect()
await consumer.subscribe({ topic, fromBeginning: true })
await consumer.run({
  autoCommit: false,
  eachBatch: async ({ batch, heartbeat }) => {
    const messages = batch.messages.filter(message => !message.isControlRecord)
    if (messages.length === 0) return
    emit('records', {
      partition: batch.partition,
      offsets: messages.map(message => Number(message.offset)),
      values: messages.map(message => message.value.toString('utf8')),
    })
    if (processMs > 0) await new Promise(resolve => setTimeout(resolve, processMs))
    const next = String(Number(messages[messages.length - 1].offset) + 1)
    try {
      await consumer.commitOffsets([{ topic, partition: batch.partition, offset: next }])
    } catch (error) {
      // kafkajs rejoins and fetches from the committed offset again.
      emit('commit_failed', { error: String(error) })
      throw error
    }
    emit('committed', { offsets: { [batch.partition]: Number(next) } })
    await heartbeat()
  },
})
