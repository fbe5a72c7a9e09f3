// Connects to the gateway with MQTT.js, subscribes and prints what arrives, for
// tests/interop/test_mqttjs.py. The request (JSON on stdin):
//   {"port": 1883, "clientId": "sub-1", "password": "KEY" (a device's key; absent: anonymous),
//    "protocolVersion": 4 | 5, "clean": true, "sessionExpiryInterval": 300 (MQTT 5 only),
//    "filters": [{"topic": "a/+", "qos": 0 | 1 | 2}] (none: rely on the session's),
//    "count": 3, "timeoutMs": 15000}
// Output, one JSON line each, flushed as it happens:
//   {"subscribed": {"connack": {...}, "granted": [QoS or failure code, ...]}} once the SUBACK is in
//     (right after the CONNACK when there are no filters), so the caller knows when to publish;
//   {"message": {"topic", "payload", "qos", "retain", "dup", "userProperties"}} per message, in
//     the order they arrived (a message resumed from a session may come before "subscribed");
//   {"done": {"received": N, "timedOut": bool}} after `count` messages (each acknowledged, then
//     a normal DISCONNECT) or when `timeoutMs` has passed, whichever is first.
// A refused CONNECT or a lost connection exits non-zero.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const mqtt = require('mqtt')

async function readRequest() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

function print(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`)
}

async function main() {
  const request = await readRequest()
  const options = {
    host: '127.0.0.1',
    port: request.port,
    protocolVersion: request.protocolVersion,
    clientId: request.clientId,
    clean: request.clean,
    // One connection: a session resumed by a reconnect of MQTT.js's own would hide what the
    // gateway kept.
    reconnectPeriod: 0,
    connectTimeout: 10000,
    // MQTT.js would subscribe again on its own after a reconnect; there is none here.
    resubscribe: false,
  }
  if (request.password !== undefined) {
    options.username = request.clientId
    options.password = request.password
  }
  if (request.protocolVersion === 5 && request.sessionExpiryInterval !== undefined) {
    options.properties = { sessionExpiryInterval: request.sessionExpiryInterval }
  }
  const client = mqtt.connect(options)
  let received = 0
  let finished = false
  const finish = async timedOut => {
    if (finished) return
    finished = true
    clearTimeout(timer)
    // Waits for the acknowledgement of the last message to be written before DISCONNECT.
    await client.endAsync()
    print({ done: { received, timedOut } })
  }
  const timer = setTimeout(() => finish(true), request.timeoutMs)
  client.on('message', (topic, payload, packet) => {
    if (finished) return
    received += 1
    print({
      message: {
        topic,
        payload: payload.toString('utf8'),
        qos: packet.qos,
        retain: packet.retain,
        dup: packet.dup,
        userProperties: packet.properties?.userProperties ?? null,
      },
    })
    // MQTT.js sends the PUBACK or PUBREC once this handler has returned; end() lets it out.
    if (received === request.count) setImmediate(() => finish(false))
  })
  const connack = await new Promise((resolve, reject) => {
    client.once('connect', resolve)
    client.once('error', reject)
    client.once('close', () => reject(new Error('the connection closed before a CONNACK')))
  })
  client.on('error', error => {
    console.error(error)
    process.exit(1)
  })
  client.on('close', () => {
    if (!finished) {
      console.error('the connection was lost')
      process.exit(1)
    }
  })
  let granted = []
  if (request.filters.length > 0) {
    const subscriptions = Object.fromEntries(request.filters.map(filter => [filter.topic, { qos: filter.qos }]))
    try {
      granted = (await client.subscribeAsync(subscriptions)).map(grant => grant.qos)
    } catch (error) {
      // A refused filter (reason code 0x80 or more) fails the whole call; the SUBACK is attached.
      if (!(error instanceof mqtt.ErrorWithSubackPacket)) throw error
      granted = error.packet.granted
    }
  }
  print({
    subscribed: {
      connack: { returnCode: connack.returnCode ?? null, reasonCode: connack.reasonCode ?? null, sessionPresent: connack.sessionPresent },
      granted,
    },
  })
  if (request.count === 0) await finish(false)
}

main().catch(error => {
  console.error(error)
  process.exit(1)
})
