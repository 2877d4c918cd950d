// Seeded fuzzing of a mirrored pair's three ports (issue 9): the NBD port (handshake, options and
// requests, well-formed and not), the replication link port (frames of every type before
// authentication, corrupted frames, garbage) and the admin HTTP port (request lines, paths,
// headers and bodies). Each port gets a bounded run; after each one the nodes must be alive, the
// pair in sync, a write acknowledged by the primary must read back on both nodes, and each node's
// memory must stay within a bound.
//
// Replay a failure with the seed it prints: FUZZ_SEED=1234 node --test dist/test/fuzz.test.js
// (FUZZ_CASES raises the number of cases per port for a longer hunt).
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import { LINK_PROTOCOL_VERSION, encode, type LinkMessage } from '../src/core/link-codec.js';
import { cleanupAll, qemuIo, qemuIoProblem, type NodeProcess } from './helpers/node-process.js';
import { pairLogs, qemuIoReadOnly, startPair, waitInSync, type Pair } from './helpers/pair-process.js';

after(cleanupAll);

const seed = process.env['FUZZ_SEED'] !== undefined ? Number(process.env['FUZZ_SEED']) : cryptoRandomBytes(4).readUInt32LE(0);
const casesPerPort = Number(process.env['FUZZ_CASES'] ?? 1000);
/** No port's run takes longer than this, whatever the case count. */
const runBudgetMs = 15_000;
/** Resident memory a node of the test pair (64 MiB cache) may reach after a run. */
const rssBoundBytes = 400 * 1024 * 1024;

// ---- seeded randomness (mulberry32): the same seed gives the same cases --------------------

class Rng {
  private state: number;
  constructor(seedValue: number) { this.state = seedValue >>> 0; }
  u32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  int(maxExclusive: number): number { return this.u32() % maxExclusive; }
  chance(p: number): boolean { return this.u32() / 0x1_0000_0000 < p; }
  pick<T>(items: readonly T[]): T { return items[this.int(items.length)]!; }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  /** Mostly small, sometimes at a boundary, sometimes huge. */
  length(): number {
    return this.pick([0, 1, 511, 512, 4096, 65536, 32 * 1024 * 1024, 0xffffffff, this.int(8192), this.u32()]);
  }
}

/** Flip a few bytes of a copy (or none), and sometimes cut it short. */
function mutate(rng: Rng, data: Buffer): Buffer {
  const out = Buffer.from(data);
  if (out.length > 0 && rng.chance(0.5)) {
    for (let i = rng.int(4); i >= 0; i--) out[rng.int(out.length)] = rng.int(256);
  }
  return rng.chance(0.2) ? out.subarray(0, rng.int(out.length + 1)) : out;
}

// ---- one case: connect, send some pieces, read whatever comes back, close -----------------

/** Returns the first bytes the server answered. */
async function sendCase(port: number, pieces: Buffer[], lingerMs: number): Promise<Buffer> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => {});
  let answer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => { if (answer.length < 256) answer = Buffer.concat([answer, chunk]).subarray(0, 256); });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await Promise.race([new Promise((resolve) => socket.once('connect', resolve)), closed]);
  for (const piece of pieces) {
    if (socket.destroyed) break;
    socket.write(piece);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, lingerMs))]);
  socket.destroy();
  return answer;
}

/** What a port must never answer, however bad the input (null: anything goes but a crash). */
type AnswerCheck = ((answer: Buffer, request: Buffer[]) => string | null) | null;

async function fuzzPort(name: string, port: number, makeCase: (rng: Rng) => Buffer[], rng: Rng, check: AnswerCheck): Promise<number> {
  const startedMs = performance.now();
  const parallel = 8;
  let done = 0;
  while (done < casesPerPort && performance.now() - startedMs < runBudgetMs) {
    const batch = Array.from({ length: Math.min(parallel, casesPerPort - done) }, () => makeCase(rng));
    const answers = await Promise.all(batch.map((pieces) => sendCase(port, pieces, rng.pick([0, 5, 50]))));
    for (const [i, answer] of answers.entries()) {
      const problem = check?.(answer, batch[i]!) ?? null;
      assert.equal(problem, null, `${name} port ${port}, case ${done + i} (FUZZ_SEED=${seed})`);
    }
    done += batch.length;
  }
  assert.ok(done >= Math.min(casesPerPort, 50), `${name}: only ${done} cases ran`);
  return done;
}

// ---- NBD ----------------------------------------------------------------------------------

const IHAVEOPT = Buffer.from('IHAVEOPT');

function nbdOption(option: number, data: Buffer, declaredBytes = data.length): Buffer {
  const head = Buffer.alloc(16);
  IHAVEOPT.copy(head, 0);
  head.writeUInt32BE(option >>> 0, 8);
  head.writeUInt32BE(declaredBytes >>> 0, 12);
  return Buffer.concat([head, data]);
}

function nbdGo(exportName: string): Buffer {
  const name = Buffer.from(exportName);
  const data = Buffer.alloc(4 + name.length + 2);
  data.writeUInt32BE(name.length, 0);
  name.copy(data, 4);
  return nbdOption(7, data);
}

function nbdRequest(rng: Rng): Buffer {
  const type = rng.chance(0.8) ? rng.int(7) : rng.int(0x10000);
  const length = rng.length();
  const header = Buffer.alloc(28);
  header.writeUInt32BE(rng.chance(0.95) ? 0x25609513 : rng.u32(), 0);
  header.writeUInt16BE(rng.chance(0.7) ? rng.pick([0, 1, 2, 8]) : rng.int(0x10000), 4);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(BigInt(rng.u32()), 8);
  const offset = rng.chance(0.8) ? BigInt(rng.int(64 * 1024 * 1024)) : (BigInt(rng.u32()) << 32n) | BigInt(rng.u32());
  header.writeBigUInt64BE(offset, 16);
  header.writeUInt32BE(length >>> 0, 24);
  // A WRITE carries its payload (up to 64 KiB of it here: a shorter one stalls the stream, which is fine).
  return type === 1 ? Buffer.concat([header, rng.bytes(Math.min(length, 65536))]) : header;
}

function nbdCase(rng: Rng): Buffer[] {
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(rng.chance(0.9) ? 3 : rng.u32(), 0);
  switch (rng.int(4)) {
    case 0: return [rng.bytes(rng.int(2048))];
    case 1: {
      const options = Array.from({ length: 1 + rng.int(6) }, () => {
        const option = rng.chance(0.8) ? rng.int(13) : rng.u32();
        const data = rng.bytes(rng.int(300));
        return mutate(rng, nbdOption(option, data, rng.chance(0.8) ? data.length : rng.length()));
      });
      return [flags, ...options];
    }
    default: {
      const go = rng.chance(0.9) ? nbdGo('vol0') : nbdGo(rng.bytes(rng.int(100)).toString('latin1'));
      return [flags, go, ...Array.from({ length: 1 + rng.int(12) }, () => mutate(rng, nbdRequest(rng)))];
    }
  }
}

/**
 * Clients that send large READs and never read a reply, held open through the rest of the run:
 * the node must bound what each one pins (issue 9 item 2) while everyone else keeps working.
 */
function openSlowReaders(port: number, rng: Rng, count: number): net.Socket[] {
  return Array.from({ length: count }, () => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.on('error', () => {});
    socket.pause();
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(3, 0);
    const reads = Array.from({ length: 4 + rng.int(9) }, () => {
      const header = Buffer.alloc(28);
      header.writeUInt32BE(0x25609513, 0);
      header.writeUInt16BE(0, 6); // NBD_CMD_READ
      header.writeBigUInt64BE(BigInt(rng.u32()), 8);
      header.writeUInt32BE(rng.chance(0.7) ? 32 * 1024 * 1024 : 512 * (1 + rng.int(65536)), 24);
      return header;
    });
    socket.write(Buffer.concat([flags, nbdGo('vol0'), ...reads]));
    return socket;
  });
}

// ---- link -----------------------------------------------------------------------------------

function linkMessage(rng: Rng): LinkMessage {
  const text = (): string => rng.bytes(rng.int(200)).toString('latin1');
  const u32 = (): number => rng.u32();
  const data = (): Buffer => rng.bytes(rng.int(8192));
  const hello = (): LinkMessage => ({
    type: 'hello', protocolVersion: rng.chance(0.7) ? LINK_PROTOCOL_VERSION : rng.int(5), node: rng.pick(['a', 'b', text()]),
    volumeId: rng.pick(['vol0', text()]), sizeBytes: rng.pick([64 * 1024 * 1024, u32()]), trackSizeBytes: 65536,
    rangeTracks: rng.pick([64, rng.int(100)]), nonce: rng.bytes(32), role: rng.pick(['primary', 'secondary'] as const), epoch: u32(),
  });
  return rng.pick<() => LinkMessage>([
    hello,
    () => ({ type: 'auth', mac: rng.bytes(32) }),
    () => ({ type: 'refuse', reason: text() }),
    () => ({ type: 'write', seq: u32(), heldSeq: 0, offsetBytes: rng.int(1 << 26), data: data() }),
    () => ({ type: 'zero', seq: u32(), heldSeq: 0, offsetBytes: u32(), lengthBytes: u32(), trim: rng.chance(0.5) }),
    () => ({ type: 'writeAck', seq: u32() }),
    () => ({ type: 'notice', op: rng.pick(['save', 'save-ack', 'clear'] as const), ranges: [u32(), rng.int(16)] }),
    () => ({ type: 'heartbeat', id: u32(), sentAtMs: u32() }),
    () => ({ type: 'syncData', offsetBytes: rng.int(1 << 26), data: data() }),
    () => ({ type: 'promoteReq', id: u32(), history: [{ epoch: u32(), node: 'a' }] }),
  ])();
}

function linkCase(rng: Rng): Buffer[] {
  if (rng.chance(0.15)) return [rng.bytes(rng.int(4096))];
  const frames = Array.from({ length: 1 + rng.int(4) }, () => Buffer.concat(encode(linkMessage(rng))));
  return frames.map((f) => mutate(rng, f));
}

// ---- admin HTTP -----------------------------------------------------------------------------

// Never the exact path of a role action with POST: the fuzz must not change the pair's roles.
const adminPaths = [
  '/status', '/metrics', '/', '//status', '//%', '/%', '/%zz', 'http://[/', '*', '//x/demote', '/demote/', '/promote%00',
  '/./demote', '/x/../promote', '/status?%', '/metrics?x=%ff', '/status#frag', '/\u0000', '/' + 'a'.repeat(5000),
  '/dashboard/events', '/dashboard/state', '/dashboard.js', '/favicon.ico',
];

function adminCase(rng: Rng): Buffer[] {
  if (rng.chance(0.15)) return [rng.bytes(rng.int(2048))];
  const method = rng.pick(['GET', 'GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'BREW', '']);
  let path = rng.chance(0.8) ? rng.pick(adminPaths) : `/${rng.bytes(rng.int(64)).toString('latin1')}`;
  if (method === 'POST' && /^\/(promote|demote|resolve)(\?.*)?$/.test(path)) path = `/x${path}`;
  const version = rng.pick(['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2', 'HTTP/9.9', '']);
  const body = rng.chance(0.5) ? rng.pick(['{}', '{"discardLocal":true', 'null', '[]', rng.bytes(rng.int(512)).toString('latin1')]) : '';
  const headers = [`Host: x`, `Content-Length: ${rng.chance(0.8) ? Buffer.byteLength(body, 'latin1') : rng.length()}`];
  if (rng.chance(0.2)) headers.push('Transfer-Encoding: chunked');
  if (rng.chance(0.1)) headers.push(`X-Big: ${'b'.repeat(rng.int(20000))}`);
  const text = `${method} ${path} ${version}\r\n${headers.join('\r\n')}\r\n\r\n${body}`;
  return [mutate(rng, Buffer.from(text, 'latin1'))];
}

/** The admin server answers what it cannot parse with 4xx, never 5xx (issue 9 item 3). */
function adminAnswerCheck(answer: Buffer, request: Buffer[]): string | null {
  const statusLine = answer.toString('latin1').split('\r\n', 1)[0] ?? '';
  if (!/^HTTP\/1\.[01] 5\d\d/.test(statusLine)) return null;
  return `answered "${statusLine}" to ${JSON.stringify(Buffer.concat(request).toString('latin1').slice(0, 200))}`;
}

// ---- after each run -------------------------------------------------------------------------

function rssBytes(node: NodeProcess): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${node.pid}/status`, 'utf8'));
  return Number(match?.[1] ?? 0) * 1024;
}

let verifyRound = 0;

async function assertPairHealthy(t: TestContext, pair: Pair, what: string): Promise<void> {
  for (const node of [pair.a, pair.b]) {
    assert.equal(node.hasExited, false, `node ${node.name} died during the ${what} run (FUZZ_SEED=${seed})\n${pairLogs(pair)}`);
  }
  await waitInSync(pair, 30_000);
  const pattern = 0x11 + (verifyRound++ % 200);
  const offset = `${48 + verifyRound % 8}M`;
  const w = await qemuIo(pair.a.uri, [`write -P ${pattern} ${offset} 256k`]);
  assert.equal(qemuIoProblem(w), null, `write after the ${what} run (FUZZ_SEED=${seed}): ${w.stdout}${w.stderr}`);
  for (const [node, r] of [[pair.a, await qemuIoReadOnly(pair.a.uri, [`read -P ${pattern} ${offset} 256k`])],
    [pair.b, await qemuIoReadOnly(pair.b.uri, [`read -P ${pattern} ${offset} 256k`])]] as const) {
    assert.equal(qemuIoProblem(r), null, `read-verify on ${node.name} after the ${what} run (FUZZ_SEED=${seed}): ${r.stdout}${r.stderr}`);
  }
  const rss = { a: rssBytes(pair.a), b: rssBytes(pair.b) };
  t.diagnostic(`${what}: RSS a ${(rss.a / 2 ** 20).toFixed(0)} MiB, b ${(rss.b / 2 ** 20).toFixed(0)} MiB`);
  for (const [name, bytes] of Object.entries(rss)) {
    assert.ok(bytes < rssBoundBytes, `node ${name} RSS ${bytes} bytes after the ${what} run is over ${rssBoundBytes} (FUZZ_SEED=${seed})`);
  }
}

test(`fuzz the NBD, link and admin ports of a mirrored pair (FUZZ_SEED=${seed})`, async (t) => {
  t.diagnostic(`fuzz seed ${seed}; replay with FUZZ_SEED=${seed} node --test dist/test/fuzz.test.js`);
  const pair = await startPair({ heartbeatTimeoutMs: 1000 });
  try {
    await waitInSync(pair);
    const rng = new Rng(seed);
    const runs: Array<[string, number[], (r: Rng) => Buffer[], AnswerCheck]> = [
      ['NBD', [pair.ports.a.nbd, pair.ports.b.nbd], nbdCase, null],
      ['link', [pair.ports.b.link, pair.ports.a.link], linkCase, null],
      ['admin', [pair.ports.a.admin, pair.ports.b.admin], adminCase, adminAnswerCheck],
    ];
    for (const [what, ports, makeCase, check] of runs) {
      const slowReaders = what === 'NBD' ? ports.flatMap((port) => openSlowReaders(port, rng, 2)) : [];
      let cases = 0;
      for (const port of ports) cases += await fuzzPort(what, port, makeCase, rng, check);
      t.diagnostic(`${what}: ${cases} cases${slowReaders.length > 0 ? `, ${slowReaders.length} slow readers held` : ''}`);
      await assertPairHealthy(t, pair, what);
      for (const socket of slowReaders) socket.destroy();
    }
  } finally {
    await pair.kill();
  }
});
