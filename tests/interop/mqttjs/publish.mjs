// Connects to the gateway as one device (or, without a password, as an anonymous client) with
// MQTT.js and publishes the messages asked for, for tests/interop/test_mqttjs.py. The request
// (JSON on stdin):
//   {"port": 1883, "clientId": "dev-1", "password": "KEY", "protocolVersion": 4 | 5,
//    "topic": "devices/dev-1/messages/events/", "messages": [{"payload": "text", "qos": 0 | 1 | 2,
//    "retain": false, "userProperties": {"k": "v"}}],
//    optional, for MQTT over secure WebSockets: "protocol": "wss", "path": "/mqtt",
//    "ca": "ca.pem", "cert": "device.pem", "key": "device-key.pem"}
// The result (the last line of stdout): {"connack": {...}, "outcomes": [{"ok": true, "messageId"}
// or {"ok": false, "code", "message"}], "received": [{"cmd", "messageId", "reasonCode"}]}, an outcome per
// message in request order and every packet the gateway sent after the CONNACK, or
// {"refused": {"code", "message"}} when the CONNECT is refused. All messages are handed to the client at once, so they are in flight together.
// Anything else (a bug in the script, a connection lost) exits non-zero.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const mqtt = require('mqtt')

async function readRequest() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

async function main() {
  const request = await readRequest()
  const options = {
    host: '127.0.0.1',
    port: request.port,
    protocolVersion: request.protocolVersion,
    clientId: request.clientId,
    clean: true,
    // One attempt: a refusal is the answer, not something to retry.
    reconnectPeriod: 0,
    connectTimeout: 10000,
  }
  if (request.password !== undefined) {
    options.username = request.clientId
    options.password = request.password
  }
  if (request.protocol !== undefined) {
    options.protocol = request.protocol
    options.path = request.path
  }
  for (const file of ['ca', 'cert', 'key']) {
    if (request[file] !== undefined) options[file] = readFileSync(request[file])
  }
  const client = mqtt.connect(options)
  let connack
  try {
    connack = await new Promise((resolve, reject) => {
      client.once('connect', resolve)
      client.once('error', reject)
      client.once('close', () => reject(new Error('the connection closed before a CONNACK')))
    })
  } catch (error) {
    await client.endAsync(true)
    if (error instanceof mqtt.ErrorWithReasonCode) {
      return { refused: { code: error.code, message: String(error.message) } }
    }
    throw error
  }
  client.on('error', error => {
    console.error(error)
    process.exit(1)
  })
  // What the gateway sends back, in order: PUBACK for QoS 1, PUBREC then PUBCOMP for QoS 2.
  const received = []
  client.on('packetreceive', packet => {
    received.push({ cmd: packet.cmd, messageId: packet.messageId ?? null, reasonCode: packet.reasonCode ?? null })
  })
  const pending = request.messages.map(message => {
    const publishOptions = { qos: message.qos, retain: message.retain ?? false }
    if (message.userProperties) publishOptions.properties = { userProperties: message.userProperties }
    return client.publishAsync(request.topic, message.payload, publishOptions)
  })
  // Settled when QoS 0 is written, QoS 1 acknowledged, QoS 2 completed; refused (an MQTT 5
  // reason code of 0x80 or more) rejects.
  const outcomes = (await Promise.allSettled(pending)).map(outcome =>
    outcome.status === 'fulfilled'
      ? { ok: true, messageId: outcome.value?.messageId ?? null }
      : { ok: false, code: outcome.reason.code ?? null, message: String(outcome.reason.message) },
  )
  await client.endAsync()
  return {
    connack: { returnCode: connack.returnCode ?? null, reasonCode: connack.reasonCode ?? null, sessionPresent: connack.sessionPresent },
    outcomes,
    received,
  }
}

main().then(
  result => process.stdout.write(`${JSON.stringify(result)}\n`),
  error => {
    console.error(error)
    process.exitCode = 1
  },
)
