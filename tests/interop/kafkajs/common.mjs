// Shared by the kafkajs scripts the interop tests run: the client setup, the JSON request on
// stdin and the JSON result on the last line of stdout. Bytes travel as base64, null as null.
// kafkajs logs go to stderr, so stdout carries only the result. A request's "security" holds
// TLS and SASL settings (see `securityOptions`).
import { readFileSync } from 'node:fs'
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

export function kafka(bootstrap, security = {}) {
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
    ...securityOptions(security),
  })
}

// kafkajs's `ssl` and `sasl` options from a request's "security":
//   {"ssl": {"ca": PATH, "cert": PATH, "key": PATH}, "sasl": {"mechanism": "SCRAM-SHA-256",
//    "username": ..., "password": ...}}
// Either part may be left out (a plaintext or a TLS-only connection). The CA is the only one
// trusted, and the server's name is checked against its certificate, as Node does by default.
export function securityOptions(security = {}) {
  const options = {}
  if (security.ssl) {
    const { ca, cert, key } = security.ssl
    options.ssl = {
      rejectUnauthorized: true,
      ...(ca ? { ca: [readFileSync(ca, 'utf8')] } : {}),
      ...(cert ? { cert: readFileSync(cert, 'utf8') } : {}),
      ...(key ? { key: readFileSync(key, 'utf8') } : {}),
    }
  }
  if (security.sasl) {
    const { mechanism, username, password } = security.sasl
    // kafkajs names mechanisms in lower case.
    options.sasl = { mechanism: mechanism.toLowerCase(), username, password }
  }
  return options
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
