#!/usr/bin/env node
// Interop check: the nsqjs client (npm "nsqjs") against an nsqd.
//
// Usage (after tests/interop/setup.sh):
//   node tests/interop/nsqjs_check.js --tcp 127.0.0.1:4150 --topic T --count N \
//        [--http 127.0.0.1:4151] [--timeout 60] [--channel nsqjs] [--max-in-flight 200] \
//        [--tls] [--snappy | --deflate]
//
// --tls, --snappy and --deflate ask for those IDENTIFY features on the Reader's and the
// Writer's connection (tls_v1 with tlsVerification off, for self-signed test certificates;
// snappy needs the optional dependency snappystream); each connection must come up upgraded.
// 1. an nsqjs Reader (nsqdTCPAddresses, no lookupd) subscribes to T/<channel> and we wait
//    for its "ready" event (= SUB answered OK), so the channel exists before publishing;
// 2. an nsqjs Writer publishes N distinct bodies: single messages (writer.publish(topic, buf),
//    sent as PUB) mixed with arrays (sent as MPUB, sizes cycling 2, 10, 50, 100), with a
//    bounded number of commands outstanding; every callback must report no error;
// 3. the Reader must receive every body and finish() each; duplicates tolerated but counted;
// 4. with --http, nsqd's /stats must then show the channel with depth 0 and in_flight 0.
// Everything is bounded by --timeout seconds (default 60).
//
// Exit status: 0 = success ("nsqjs_check: OK ..." line); 1 = check failed
// ("nsqjs_check: FAIL: reason" on stderr); 2 = usage/environment error.
'use strict'

const path = require('path')
const tls = require('tls')
const PROG = 'nsqjs_check'
const REPO = path.resolve(__dirname, '..', '..')

function loadNsqjs() {
  const candidates = [
    path.join(REPO, 'target', 'interop', 'node', 'node_modules', 'nsqjs'),
    'nsqjs', // NODE_PATH / normal resolution
  ]
  for (const c of candidates) {
    try {
      const mod = require(c)
      const dir = path.dirname(require.resolve(c))
      let version = '?'
      try {
        version = require(path.join(dir, '..', 'package.json')).version
      } catch (e) {}
      return { nsq: mod, version, dir }
    } catch (e) {
      if (e.code !== 'MODULE_NOT_FOUND') throw e
    }
  }
  console.error(`${PROG}: ERROR: cannot load nsqjs; run tests/interop/setup.sh ` +
    `(expects ${candidates[0]})`)
  process.exit(2)
}

function usage(msg) {
  if (msg) console.error(`${PROG}: error: ${msg}`)
  console.error(`usage: node ${path.basename(__filename)} --tcp HOST:PORT --topic T --count N ` +
    '[--http HOST:PORT] [--timeout SECS] [--channel NAME] [--max-in-flight N] [--window N] ' +
    '[--tls] [--snappy | --deflate]')
  process.exit(2)
}

function parseArgs(argv) {
  const a = { timeout: 60, channel: 'nsqjs', maxInFlight: 200, window: 64, http: null,
    tls: false, snappy: false, deflate: false }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]
    const v = () => {
      if (i + 1 >= argv.length) usage(`${k} needs a value`)
      return argv[++i]
    }
    switch (k) {
      case '--tcp': a.tcp = v(); break
      case '--topic': a.topic = v(); break
      case '--count': a.count = Number(v()); break
      case '--http': a.http = v(); break
      case '--timeout': a.timeout = Number(v()); break
      case '--channel': a.channel = v(); break
      case '--max-in-flight': a.maxInFlight = Number(v()); break
      case '--window': a.window = Number(v()); break
      case '--tls': a.tls = true; break
      case '--snappy': a.snappy = true; break
      case '--deflate': a.deflate = true; break
      case '-h': case '--help': usage()
      default: usage(`unknown argument ${k}`)
    }
  }
  if (!a.tcp || !a.topic || a.count === undefined) usage('--tcp, --topic and --count are required')
  const m = /^(.+):(\d+)$/.exec(a.tcp)
  if (!m) usage(`--tcp must be HOST:PORT, got ${a.tcp}`)
  a.host = m[1]
  a.port = Number(m[2])
  if (!Number.isInteger(a.count) || a.count < 1) usage('--count must be an integer >= 1')
  if (!(a.timeout > 0)) usage('--timeout must be > 0')
  if (a.snappy && a.deflate) usage('--snappy and --deflate are mutually exclusive')
  const nameRe = /^[.a-zA-Z0-9_-]+(#ephemeral)?$/
  if (!nameRe.test(a.topic) || a.topic.length > 64) usage(`invalid topic name ${JSON.stringify(a.topic)}`)
  if (!nameRe.test(a.channel) || a.channel.length > 64) usage(`invalid channel name ${JSON.stringify(a.channel)}`)
  return a
}

class CheckFailed extends Error {}

/** nsqjs Reader/Writer options for the requested IDENTIFY features. */
function featureOptions(args) {
  const o = {}
  if (args.tls) Object.assign(o, { tls: true, tlsVerification: false })
  if (args.snappy) o.snappy = true
  if (args.deflate) o.deflate = true
  return o
}

function wantedFeatures(args) {
  return [['tls_v1', args.tls], ['snappy', args.snappy], ['deflate', args.deflate]]
    .filter(([, on]) => on).map(([f]) => f)
}

/** The upgrades actually in place on a ready nsqjs NSQDConnection. */
function negotiatedFeatures(nsqdConn) {
  const got = []
  if (nsqdConn.conn instanceof tls.TLSSocket) got.push('tls_v1')
  const inflater = nsqdConn.inflater && nsqdConn.inflater.constructor.name
  if (inflater === 'UnsnappyStream') got.push('snappy') // snappystream
  else if (inflater === 'InflateRaw') got.push('deflate') // zlib
  return got
}

function publishPlan(count, pubEvery = 3, arraySizes = [2, 10, 50, 100]) {
  // every pubEvery-th command publishes one message (PUB), the others an array (MPUB)
  const plan = []
  let i = 0
  let cmd = 0
  let m = 0
  while (i < count) {
    let n
    if (cmd % pubEvery === 0) n = 1
    else n = Math.min(arraySizes[m++ % arraySizes.length], count - i)
    plan.push([i, i + n])
    i += n
    cmd++
  }
  return plan
}

async function main() {
  const args = parseArgs(process.argv.slice(2))
  // hard stop, in case something wedges the checks below
  setTimeout(() => {
    console.error(`${PROG}: FAIL: overall timeout (${args.timeout + 5}s) exceeded`)
    process.exit(1)
  }, (args.timeout + 5) * 1000).unref()
  const { nsq, version, dir } = loadNsqjs()
  if (args.snappy) {
    try {
      require(require.resolve('snappystream', { paths: [dir] })) // as nsqjs would find it
    } catch (e) {
      console.error(`${PROG}: ERROR: --snappy needs snappystream (${e.message}); run tests/interop/setup.sh`)
      process.exit(2)
    }
  }
  const t0 = Date.now()
  const deadline = t0 + args.timeout * 1000
  const failures = []
  const fail = (msg) => { failures.push(msg) }
  const features = wantedFeatures(args)
  const checkFeatures = (name, nsqdConn) => {
    const got = negotiatedFeatures(nsqdConn)
    if (got.join() !== features.join()) {
      fail(`${name}: connection negotiated ${got.join() || 'no features'}, asked for ${features.join() || 'none'}`)
    }
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
  const waitUntil = async (pred, what, poll = 5) => {
    while (!pred()) {
      if (failures.length) throw new CheckFailed(failures.join('; '))
      if (Date.now() > deadline) {
        throw new CheckFailed(`timed out waiting for ${typeof what === 'function' ? what() : what}`)
      }
      await sleep(poll)
    }
    if (failures.length) throw new CheckFailed(failures.join('; '))
  }

  const runId = `${Date.now().toString(16)}${process.pid.toString(16)}`
  const prefix = `nsqjs-${runId}-`
  const bodies = []
  for (let i = 0; i < args.count; i++) bodies.push(prefix + String(i).padStart(8, '0'))
  const expected = new Set(bodies)

  const tally = { seen: new Set(), received: 0, dups: 0, redelivered: 0, foreign: 0 }
  const summary = () => `${args.channel}: unique=${tally.seen.size}/${args.count} ` +
    `received=${tally.received} dups=${tally.dups} redelivered=${tally.redelivered} foreign=${tally.foreign}`

  let closing = false
  let readerReady = false
  const reader = new nsq.Reader(args.topic, args.channel, {
    nsqdTCPAddresses: [args.tcp],
    maxInFlight: args.maxInFlight,
    clientId: 'nsqjs_check',
    ...featureOptions(args),
  })
  reader.on('ready', () => { readerReady = true })
  reader.on('error', (err) => { if (!closing) fail(`reader error: ${err && err.message ? err.message : err}`) })
  reader.on('nsqd_closed', (h, p) => { if (!closing) fail(`reader connection to ${h}:${p} closed unexpectedly`) })
  reader.on('discard', (msg) => { fail(`reader discarded message ${msg.id}`) })
  reader.on('message', (msg) => {
    tally.received++
    if (msg.attempts > 1) tally.redelivered++
    const body = msg.body.toString()
    if (!expected.has(body)) tally.foreign++
    else if (tally.seen.has(body)) tally.dups++
    else tally.seen.add(body)
    msg.finish()
  })

  let writer = null
  let writerReady = false
  const stats = { pub: 0, mpub: 0, mpubMsgs: 0, acked: 0 }
  let tSub, tPub, tRecv
  let statsNote = ''
  try {
    reader.connect()
    await waitUntil(() => readerReady, `reader ${args.topic}/${args.channel} to subscribe`)
    tSub = Date.now()

    writer = new nsq.Writer(args.host, args.port, { clientId: 'nsqjs_check', ...featureOptions(args) })
    writer.on('ready', () => { writerReady = true })
    writer.on('error', (err) => { if (!closing) fail(`writer error: ${err && err.message ? err.message : err}`) })
    writer.on('closed', () => { if (!closing) fail('writer connection closed unexpectedly') })
    writer.connect()
    await waitUntil(() => writerReady, 'writer to connect')
    checkFeatures('writer', writer.conn)
    const readerConns = () => reader.readerRdy.connections.map((c) => c.conn)
    await waitUntil(() => readerConns().length === 1, 'the reader connection to be registered')
    checkFeatures('reader', readerConns()[0])

    const plan = publishPlan(args.count)
    let outstanding = 0
    for (const [lo, hi] of plan) {
      await waitUntil(() => outstanding < args.window,
        () => `PUB/MPUB responses (${stats.acked} of ${plan.length} commands answered)`, 1)
      const desc = hi - lo === 1 ? `publish(single) of body ${lo}` : `publish(array) of bodies [${lo},${hi})`
      const cb = (err) => {
        outstanding--
        if (err) fail(`writer: ${desc} failed: ${err.message || err}`)
        else stats.acked++
      }
      outstanding++
      if (hi - lo === 1) {
        stats.pub++
        // alternate between a string and a Buffer body for single publishes
        writer.publish(args.topic, (stats.pub % 2) ? bodies[lo] : Buffer.from(bodies[lo]), cb)
      } else {
        stats.mpub++
        stats.mpubMsgs += hi - lo
        writer.publish(args.topic, bodies.slice(lo, hi).map((b, j) => (j % 2 ? Buffer.from(b) : b)), cb)
      }
    }
    await waitUntil(() => stats.acked === plan.length,
      () => `PUB/MPUB responses (${stats.acked} of ${plan.length} commands answered)`)
    tPub = Date.now()

    await waitUntil(() => tally.seen.size === args.count,
      () => `channel to receive all ${args.count} messages (have ${summary()})`)
    tRecv = Date.now()

    if (args.http) {
      let last = null
      const drained = async () => {
        const r = await fetch(`http://${args.http}/stats?format=json&topic=${encodeURIComponent(args.topic)}`)
        let data = await r.json()
        if (data && data.data && typeof data.data === 'object') data = data.data
        const t = (data.topics || []).find((x) => x.topic_name === args.topic)
        const c = t && (t.channels || []).find((x) => x.channel_name === args.channel)
        last = c ? { depth: c.depth, in_flight_count: c.in_flight_count, message_count: c.message_count,
          requeue_count: c.requeue_count, timeout_count: c.timeout_count } : null
        return !!c && c.depth === 0 && c.in_flight_count === 0
      }
      while (!(await drained())) {
        if (Date.now() > deadline) {
          throw new CheckFailed(`timed out waiting for /stats to show the channel drained; last: ${JSON.stringify(last)}`)
        }
        await sleep(100)
      }
      statsNote = ' stats=drained'
    }
    await sleep(50)
    if (failures.length) throw new CheckFailed(failures.join('; '))
  } finally {
    closing = true
    try { reader.close() } catch (e) {}
    try { if (writer) writer.close() } catch (e) {}
  }
  await sleep(50) // let the CLS / FIN bytes flush
  const s = (a, b) => ((a - b) / 1000).toFixed(2)
  console.log(`${PROG}: OK topic=${args.topic} count=${args.count} ` +
    `features=${features.join() || 'none'} pub_cmds=${stats.pub} ` +
    `mpub_cmds=${stats.mpub} (mpub_msgs=${stats.mpubMsgs}) | ${summary()} |${statsNote} ` +
    `subscribe=${s(tSub, t0)}s publish=${s(tPub, tSub)}s consume_done=${s(tRecv, t0)}s ` +
    `total=${s(Date.now(), t0)}s (nsqjs ${version}, node ${process.version})`)
}

main().then(() => process.exit(0), (err) => {
  if (err instanceof CheckFailed) console.error(`${PROG}: FAIL: ${err.message}`)
  else console.error(`${PROG}: FAIL: unexpected exception: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
})
