// Shared by the kafkajs scripts the interop tests run: the client setup, the JSON request on
// stdin and the JSON result on the last line of stdout. Bytes travel as base64, null as null.
// kafkajs logs go to stderr, so stdout carries only the result.
import { createRequire } from 'node:module'

export const require = createRequire(import.meta.url)
const { Kafka, logLevel, CompressionTypes, CompressionCodecs } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')

// kafkajs ships gzip only; snappy comes from the kafkajs-snappy package.
CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec

export const COMPRESSION = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
}

export function logCreator() {
  return ({ namespace, label, log }) => {
    process.stderr.write(`${label} [${namespace}] ${JSON.stringify(log)}\n`)
  }
}

export function kafka(bootstrap) {
  return new Kafka({
    clientId: 'interop-kafkajs',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    logCreator,
    connectionTimeout: 10000,
    requestTimeout: 30000,
    // A few quick retries: enough for a broker that is just starting, and a failing test
    // still ends well inside the Python side's timeout.
    retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1000 },
  })
}

export async function readRequest() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const text = Buffer.concat(chunks).toString('utf8')
  return text.trim() ? JSON.parse(text) : {}
}

export function print(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

export const fromB64 = text => (text === null || text === undefined ? null : Buffer.from(text, 'base64'))
export const toB64 = buffer => (buffer === null || buffer === undefined ? null : Buffer.from(buffer).toString('base64'))

// A kafkajs error as JSON: its class name, Kafka error type and code where it has them.
export function describeError(error) {
  return { name: error.name, type: error.type ?? null, code: error.code ?? null, message: String(error.message) }
}

// Runs `main` and prints its result; a client error becomes {"error": ...} so the Python side
// can assert on it, anything else (a bug in the script) exits non-zero.
export async function run(main) {
  try {
    print(await main())
  } catch (error) {
    if (error && typeof error.name === 'string' && error.name.startsWith('KafkaJS')) {
      print({ error: describeError(error) })
    } else {
      console.error(error)
      process.exitCode = 1
    }
  }
}
