// Client tests: URI parsing; round trips against our server; behaviour against scripted fake
// servers (EXPORT_NAME fallback, a server that dies mid-request, a server that breaks the
// protocol); interop with `nbdkit memory`; and openNbdStore on nbdkit.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NbdClient, NbdReplyError, parseNbdUri } from '../src/nbd/client.js';
import {
  NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_HAS_FLAGS, NBD_FLAG_SEND_FLUSH, NBD_OPT_GO, NBD_REP_ERR_UNSUP,
  NbdServerDecoder, encodeExportNameReply, encodeGreeting, encodeOptionReply, encodeSimpleReply,
} from '../src/nbd/codec.js';
import { startNbdServer, type NbdServerHandle } from '../src/nbd/server.js';
import type { NbdExport } from '../src/nbd/export.js';
import { openNbdStore } from '../src/store/nbd-store.js';
import { StoreOpenError } from '../src/store/store.js';
import { ensureTools } from './helpers/tools.js';

const MiB = 1024 * 1024;

function memoryExport(name: string, sizeBytes: number, opts: { readOnly?: boolean; delayMs?: number } = {}): NbdExport & { bytes: Buffer } {
  const bytes = Buffer.alloc(sizeBytes);
  const pause = (): Promise<unknown> => (opts.delayMs ? sleep(opts.delayMs) : Promise.resolve());
  return {
    name, description: '', sizeBytes, readOnly: opts.readOnly ?? false, bytes,
    async read(offsetBytes, lengthBytes) { await pause(); return Buffer.from(bytes.subarray(offsetBytes, offsetBytes + lengthBytes)); },
    async write(offsetBytes, data) { await pause(); data.copy(bytes, offsetBytes); },
    async flush() { await pause(); },
    async trim() { await pause(); },
    async writeZeroes(offsetBytes, lengthBytes) { await pause(); bytes.fill(0, offsetBytes, offsetBytes + lengthBytes); },
  };
}

const quiet = (): void => undefined;

/** Deterministic bytes, distinct per offset. */
function pattern(lengthBytes: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(lengthBytes);
  for (let i = 0; i < lengthBytes; i++) out[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return out;
}

// ---- URIs ----------------------------------------------------------------------------------

test('parseNbdUri: host, port (default 10809), export (may be empty), IPv6, escapes', () => {
  assert.deepEqual(parseNbdUri('nbd://example.com:1234/vol'), { host: 'example.com', port: 1234, exportName: 'vol' });
  assert.deepEqual(parseNbdUri('nbd://10.0.0.1/'), { host: '10.0.0.1', port: 10809, exportName: '' });
  assert.deepEqual(parseNbdUri('nbd://host'), { host: 'host', port: 10809, exportName: '' });
  assert.deepEqual(parseNbdUri('nbd://[::1]:10810/a%20b'), { host: '::1', port: 10810, exportName: 'a b' });
  for (const bad of ['http://host/x', 'nbd+unix:///x?socket=/s', 'not a uri', 'nbd://host:99999/x']) {
    assert.throws(() => parseNbdUri(bad), /NBD URI/, bad);
  }
});

// ---- against our server --------------------------------------------------------------------

describe('NbdClient against the twinblock server', () => {
  const vol = memoryExport('vol', 16 * MiB);
  let server: NbdServerHandle;
  let client: NbdClient;

  before(async () => {
    server = await startNbdServer({ host: '127.0.0.1', port: 0, export: vol, log: quiet });
    client = await NbdClient.connect({ host: '127.0.0.1', port: server.port, exportName: 'vol' });
  });
  after(async () => {
    await client.disconnect();
    await server.close();
  });

  test('negotiates size, flags and block sizes through NBD_OPT_GO', () => {
    assert.equal(client.sizeBytes, 16 * MiB);
    assert.deepEqual([client.canFlush, client.canFua, client.canTrim, client.canWriteZeroes, client.canMultiConn, client.readOnly],
      [true, true, true, true, true, false]);
    assert.deepEqual(client.blockSize, { minimumBytes: 512, preferredBytes: 4096, maximumBytes: 32 * MiB });
  });

  test('write, read back, zero, trim, flush', async () => {
    const data = pattern(1 * MiB, 1);
    await client.write(2 * MiB, data, { fua: true });
    assert.ok(vol.bytes.subarray(2 * MiB, 3 * MiB).equals(data));
    assert.ok((await client.read(2 * MiB, 1 * MiB)).equals(data));
    await client.writeZeroes(2 * MiB, 4096, { noHole: true });
    assert.ok((await client.read(2 * MiB, 4096)).equals(Buffer.alloc(4096)));
    await client.trim(0, 4096);
    await client.flush();
    assert.equal((await client.read(0, 0)).length, 0);
  });

  test('hundreds of pipelined writes and reads resolve with their own data', async () => {
    const count = 400;
    assert.ok(await Promise.all(Array.from({ length: count }, (_, i) => client.write(i * 8192, pattern(8192, i)))));
    const reads = await Promise.all(Array.from({ length: count }, (_, i) => client.read(i * 8192, 8192)));
    reads.forEach((data, i) => assert.ok(data.equals(pattern(8192, i)), `read ${i}`));
    assert.equal(client.inFlight, 0);
  });

  test('server errors reject with NbdReplyError carrying the errno name; the connection stays usable', async () => {
    await assert.rejects(client.read(16 * MiB, 512), (e: unknown) => e instanceof NbdReplyError && e.errno === 'EINVAL' && e.errorValue === 22);
    await assert.rejects(client.write(16 * MiB - 512, Buffer.alloc(1024)), (e: unknown) => e instanceof NbdReplyError && e.errno === 'ENOSPC');
    assert.equal((await client.read(0, 512)).length, 512);
  });

  test('requests breaking the negotiated block sizes are refused locally', async () => {
    await assert.rejects(client.read(100, 512), RangeError);
    await assert.rejects(client.write(0, Buffer.alloc(100)), RangeError);
    await assert.rejects(client.read(0, 33 * MiB), RangeError);
    await assert.rejects(client.read(-512, 512), RangeError);
  });

  test('read-only export answers writes EPERM', async () => {
    const ro = await startNbdServer({ host: '127.0.0.1', port: 0, export: memoryExport('ro', MiB, { readOnly: true }), log: quiet });
    const roClient = await NbdClient.connect(`nbd://127.0.0.1:${ro.port}/ro`);
    assert.equal(roClient.readOnly, true);
    await assert.rejects(roClient.write(0, Buffer.alloc(512)), (e: unknown) => e instanceof NbdReplyError && e.errno === 'EPERM');
    await roClient.disconnect();
    await ro.close();
  });

  test('unknown export and refused connection reject with messages naming them', async () => {
    await assert.rejects(NbdClient.connect(`nbd://127.0.0.1:${server.port}/nope`), /"nope"/);
    const port = await freePort();
    await assert.rejects(NbdClient.connect(`nbd://127.0.0.1:${port}/vol`), new RegExp(`127.0.0.1:${port}.*connection refused`));
  });

  test('disconnect waits for in-flight requests, then sends DISC and the server closes', async () => {
    const slow = memoryExport('vol', MiB, { delayMs: 100 });
    const own = await startNbdServer({ host: '127.0.0.1', port: 0, export: slow, log: quiet });
    const c = await NbdClient.connect(`nbd://127.0.0.1:${own.port}/vol`);
    const write = c.write(0, Buffer.alloc(512, 3));
    await c.disconnect();
    await write;
    assert.equal(slow.bytes[0], 3);
    await assert.rejects(c.read(0, 512));
    await sleep(20);
    assert.equal(own.connections(), 0);
    await own.close();
  });
});

// ---- against scripted fake servers ---------------------------------------------------------

/** A one-connection fake server: script(socket, decoder) drives the conversation. */
async function fakeServer(script: (socket: net.Socket, decoder: NbdServerDecoder) => void): Promise<{ port: number; close(): void }> {
  const server = net.createServer((socket) => {
    const decoder = new NbdServerDecoder();
    socket.on('data', (chunk: Buffer) => decoder.feed(chunk));
    socket.on('error', () => undefined);
    script(socket, decoder);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

/** Poll the decoder until it yields a message. */
async function nextMessage(decoder: NbdServerDecoder): Promise<NonNullable<ReturnType<NbdServerDecoder['next']>>> {
  for (let i = 0; i < 500; i++) {
    const m = decoder.next();
    if (m) return m;
    await sleep(5);
  }
  throw new Error('fake server: no message');
}

test('falls back to NBD_OPT_EXPORT_NAME when the server answers GO with ERR_UNSUP', async () => {
  const fake = await fakeServer(async (socket, decoder) => {
    socket.write(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE));
    assert.deepEqual(await nextMessage(decoder), { kind: 'clientFlags', clientFlags: 1 }, 'no NO_ZEROES when not offered');
    const go = await nextMessage(decoder);
    assert.ok(go.kind === 'option' && go.option === NBD_OPT_GO);
    socket.write(encodeOptionReply(NBD_OPT_GO, NBD_REP_ERR_UNSUP));
    const exportName = await nextMessage(decoder);
    assert.ok(exportName.kind === 'option' && exportName.option === 1 && exportName.data.toString() === 'old');
    socket.write(encodeExportNameReply(8 * MiB, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH, false));
    decoder.startTransmission();
    const read = await nextMessage(decoder);
    assert.ok(read.kind === 'request');
    socket.write(encodeSimpleReply(0, read.cookieHigh, read.cookieLow, Buffer.alloc(read.lengthBytes, 0x42)));
  });
  const c = await NbdClient.connect(`nbd://127.0.0.1:${fake.port}/old`);
  assert.equal(c.sizeBytes, 8 * MiB);
  assert.deepEqual(c.blockSize, { minimumBytes: 1, preferredBytes: 4096, maximumBytes: 32 * MiB }, 'spec defaults without NBD_INFO_BLOCK_SIZE');
  assert.equal(c.canTrim, false);
  await assert.rejects(c.trim(0, 512), /does not support NBD_CMD_TRIM/);
  assert.ok((await c.read(0, 1000)).equals(Buffer.alloc(1000, 0x42)));
  c.disconnect().catch(() => undefined);
  fake.close();
});

async function goFake(onRequests: (socket: net.Socket, decoder: NbdServerDecoder) => Promise<void>): Promise<{ port: number; close(): void }> {
  return fakeServer(async (socket, decoder) => {
    socket.write(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE));
    await nextMessage(decoder);
    await nextMessage(decoder);
    const exportInfo = Buffer.alloc(12);
    exportInfo.writeBigUInt64BE(BigInt(MiB), 2);
    exportInfo.writeUInt16BE(NBD_FLAG_HAS_FLAGS, 10);
    socket.write(Buffer.concat([encodeOptionReply(NBD_OPT_GO, 3, exportInfo), encodeOptionReply(NBD_OPT_GO, 1)]));
    decoder.startTransmission();
    await onRequests(socket, decoder);
  });
}

test('a server that closes mid-request rejects everything in flight and everything after', async () => {
  const fake = await goFake(async (socket, decoder) => {
    await nextMessage(decoder);
    await nextMessage(decoder);
    socket.destroy();
  });
  const c = await NbdClient.connect(`nbd://127.0.0.1:${fake.port}/`);
  const results = await Promise.allSettled([c.read(0, 512), c.read(512, 512)]);
  assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
  assert.match(String((results[0] as PromiseRejectedResult).reason), /closed/);
  await assert.rejects(c.read(0, 512), /closed/);
  fake.close();
});

test('a reply to a cookie that is not in flight is a protocol violation: hard disconnect', async () => {
  const fake = await goFake(async (socket, decoder) => {
    await nextMessage(decoder);
    socket.write(encodeSimpleReply(0, 0, 0xabcdef));
  });
  const c = await NbdClient.connect(`nbd://127.0.0.1:${fake.port}/`);
  await assert.rejects(c.read(0, 512), /broke the protocol.*not in flight/);
  fake.close();
});

// ---- nbdkit interop ------------------------------------------------------------------------

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(port));
    });
  });
}

/** `nbdkit memory SIZE` on a free port; resolves once its pidfile says it accepts connections. */
async function startNbdkit(size: string, filters: string[] = []): Promise<{ uri: string; stop(): Promise<void> }> {
  ensureTools(['nbdkit']);
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbdkit-'));
  const pidfile = path.join(dir, 'pid');
  const child: ChildProcess = spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), '-P', pidfile, '--exit-with-parent',
    ...filters.map((f) => `--filter=${f}`), 'memory', size],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let waitedMs = 0; !fs.existsSync(pidfile) || fs.readFileSync(pidfile, 'utf8') === ''; waitedMs += 20) {
    if (child.exitCode !== null || waitedMs > 10_000) throw new Error('nbdkit did not start');
    await sleep(20);
  }
  return {
    uri: `nbd://127.0.0.1:${port}/`,
    async stop() {
      child.kill('SIGTERM');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('against nbdkit memory 64M', () => {
  let nbdkit: Awaited<ReturnType<typeof startNbdkit>>;
  before(async () => { nbdkit = await startNbdkit('64M'); });
  after(async () => { await nbdkit.stop(); });

  test('NbdClient: negotiate, write, read back, zero, trim, flush, errno from nbdkit', async () => {
    const c = await NbdClient.connect(nbdkit.uri);
    assert.equal(c.sizeBytes, 64 * MiB);
    assert.ok(c.canFlush && c.canWriteZeroes && c.canTrim);
    const data = pattern(3 * MiB, 5);
    await c.write(MiB, data);
    assert.ok((await c.read(MiB, 3 * MiB)).equals(data));
    await c.writeZeroes(MiB, 65536);
    assert.ok((await c.read(MiB, 65536)).equals(Buffer.alloc(65536)));
    await c.trim(2 * MiB, 65536);
    await c.flush();
    await assert.rejects(c.read(64 * MiB - 512, 1024), (e: unknown) => e instanceof NbdReplyError && e.errno === 'EINVAL');
    await c.disconnect();
  });

  test('openNbdStore: write, read back (split into chunks), zeroes, sync, close', async () => {
    const store = await openNbdStore(nbdkit.uri, 64 * MiB);
    assert.equal(store.sizeBytes, 64 * MiB);
    assert.equal(store.description, nbdkit.uri);
    const data = pattern(10 * MiB + 4096, 9);
    await store.write(20 * MiB, data);
    assert.ok((await store.read(20 * MiB, data.length)).equals(data));
    await store.writeZeroes(20 * MiB + 4096, 6 * MiB);
    const after = await store.read(20 * MiB, 7 * MiB);
    assert.ok(after.subarray(0, 4096).equals(data.subarray(0, 4096)));
    assert.ok(after.subarray(4096, 4096 + 6 * MiB).equals(Buffer.alloc(6 * MiB)));
    assert.ok(after.subarray(4096 + 6 * MiB).equals(data.subarray(4096 + 6 * MiB, 7 * MiB)));
    await store.sync();
    await store.close();
    // A new connection sees the data: it lives in nbdkit, not in our client.
    const again = await openNbdStore(nbdkit.uri, 64 * MiB);
    assert.ok((await again.read(20 * MiB, 4096)).equals(data.subarray(0, 4096)));
    await again.close();
  });

  test('openNbdStore: a size mismatch is a one-line StoreOpenError naming both sizes', async () => {
    await assert.rejects(openNbdStore(nbdkit.uri, 32 * MiB), (e: unknown) =>
      e instanceof StoreOpenError && e.message.includes(String(64 * MiB)) && e.message.includes(String(32 * MiB)) && !e.message.includes('\n'));
  });
});

test('openNbdStore: refused connection and bad URI are StoreOpenErrors naming the URI', async () => {
  const port = await freePort();
  const uri = `nbd://127.0.0.1:${port}/vol`;
  await assert.rejects(openNbdStore(uri, MiB), (e: unknown) =>
    e instanceof StoreOpenError && e.message.includes(uri) && /connection refused/.test(e.message) && !e.message.includes('\n'));
  await assert.rejects(openNbdStore('nbd+unix:///x', MiB), StoreOpenError);
});

test('openNbdStore zeroes with NBD_CMD_WRITE_ZEROES when advertised; refuses a read-only export', async () => {
  const vol = memoryExport('vol', 8 * MiB);
  vol.bytes.fill(0xff);
  const zeroCalls: number[] = [];
  const writeZeroes = vol.writeZeroes.bind(vol);
  vol.writeZeroes = (offsetBytes, lengthBytes, fua) => { zeroCalls.push(lengthBytes); return writeZeroes(offsetBytes, lengthBytes, fua); };
  const server = await startNbdServer({ host: '127.0.0.1', port: 0, export: vol, log: quiet });
  const store = await openNbdStore(`nbd://127.0.0.1:${server.port}/vol`, 8 * MiB);
  await store.writeZeroes(0, 5 * MiB);
  assert.deepEqual(zeroCalls, [5 * MiB], 'one WRITE_ZEROES, no payload');
  assert.ok(vol.bytes.subarray(0, 5 * MiB).equals(Buffer.alloc(5 * MiB)));
  assert.equal(vol.bytes[5 * MiB], 0xff);
  await store.close();
  await server.close();

  const ro = await startNbdServer({ host: '127.0.0.1', port: 0, export: memoryExport('ro', MiB, { readOnly: true }), log: quiet });
  await assert.rejects(openNbdStore(`nbd://127.0.0.1:${ro.port}/ro`, MiB), (e: unknown) => e instanceof StoreOpenError && /read-only/.test(e.message));
  await ro.close();
});

test('openNbdStore writes zeros itself when the server lacks WRITE_ZEROES (nbdkit --filter=nozero)', async () => {
  const nbdkit = await startNbdkit('16M', ['nozero']);
  try {
    const probe = await NbdClient.connect(nbdkit.uri);
    assert.equal(probe.canWriteZeroes, false);
    await probe.write(0, Buffer.alloc(9 * MiB, 0xee));
    await probe.disconnect();
    const store = await openNbdStore(nbdkit.uri, 16 * MiB);
    await store.writeZeroes(512, 9 * MiB - 1024);
    const back = await store.read(0, 9 * MiB);
    assert.ok(back.subarray(0, 512).equals(Buffer.alloc(512, 0xee)));
    assert.ok(back.subarray(512, 9 * MiB - 512).equals(Buffer.alloc(9 * MiB - 1024)));
    assert.ok(back.subarray(9 * MiB - 512).equals(Buffer.alloc(512, 0xee)));
    await store.close();
  } finally {
    await nbdkit.stop();
  }
});
