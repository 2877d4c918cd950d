// Server tests over raw TCP sockets. Messages are built by hand here (not with our codec), so the
// wire layout is checked independently of the code under test. Every bad-input case asserts its
// exact outcome (error value or closed socket) and that another connection is still served.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startNbdServer, type NbdServerHandle } from '../src/nbd/server.js';
import { RateLimitedLog } from '../src/nbd/rate-limited-log.js';
import { NbdRequestError, type NbdErrno, type NbdExport, type NbdRequestObserver } from '../src/nbd/export.js';
import {
  CMD, ERR_INVALID, ERR_UNKNOWN, ERR_UNSUP, IHAVEOPT, MiB, OPT, REP_ACK, REP_INFO, REP_SERVER, REPLY_MAGIC, Raw,
  infoData, negotiate, option, request, u16, u32,
} from './helpers/nbd-raw.js';

// ---- an in-memory export -------------------------------------------------------------------

class MemoryExport implements NbdExport {
  readonly bytes: Buffer;
  readonly description = 'in-memory test export';
  delayMs = 0;
  /** Per-call override: throw this from the next operations. */
  failWith: Error | null = null;
  readonly calls: string[] = [];

  constructor(readonly name: string, readonly sizeBytes: number, readonly readOnly = false) {
    this.bytes = Buffer.alloc(sizeBytes);
  }

  private async settle(call: string): Promise<void> {
    this.calls.push(call);
    if (this.delayMs > 0) await sleep(this.delayMs);
    if (this.failWith) throw this.failWith;
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    await this.settle(`read ${offsetBytes} ${lengthBytes}`);
    return Buffer.from(this.bytes.subarray(offsetBytes, offsetBytes + lengthBytes));
  }

  async write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    await this.settle(`write ${offsetBytes} ${data.length}${fua ? ' fua' : ''}`);
    data.copy(this.bytes, offsetBytes);
  }

  async flush(): Promise<void> {
    await this.settle('flush');
  }

  async trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    await this.settle(`trim ${offsetBytes} ${lengthBytes}${fua ? ' fua' : ''}`);
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    await this.settle(`zero ${offsetBytes} ${lengthBytes}${fua ? ' fua' : ''}`);
    this.bytes.fill(0, offsetBytes, offsetBytes + lengthBytes);
  }
}

// ---- wire helpers, written independently of src/nbd/codec (test/helpers/nbd-raw.ts) -------

const ERRNO: Record<NbdErrno, number> = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 };

// ---- fixture -------------------------------------------------------------------------------

const sizeBytes = 4 * MiB;

describe('NBD server over raw sockets', () => {
  const vol = new MemoryExport('vol', sizeBytes);
  const readOnlyVol = new MemoryExport('ro', sizeBytes, true);
  const done: { command: string; bytes: number; errno: NbdErrno | null }[] = [];
  const observer: NbdRequestObserver = {
    requestDone: (command, bytes, _latency, errno) => { done.push({ command, bytes, errno }); },
    connectionOpened: () => undefined,
    connectionClosed: () => undefined,
  };
  const warnings: string[] = [];
  const log = (level: string, msg: string): void => { if (level === 'warn') warnings.push(msg); };
  let server: NbdServerHandle;
  let readOnlyServer: NbdServerHandle;
  let witness: Raw;
  let witnessCookie = 1000;

  /** The long-lived second connection: after every bad case it must still read correct bytes. */
  async function assertWitnessServed(): Promise<void> {
    const cookie = witnessCookie++;
    vol.bytes.write('witness', 3 * MiB);
    witness.send(request(CMD.READ, cookie, 3 * MiB, 512));
    const reply = await witness.reply(512);
    assert.deepEqual([reply.error, reply.cookie], [0, cookie]);
    assert.equal(reply.data.toString('latin1', 0, 7), 'witness');
  }

  async function connected(exportName = 'vol', port = server.port): Promise<Raw> {
    const raw = await Raw.connect(port);
    await negotiate(raw, exportName);
    return raw;
  }

  before(async () => {
    server = await startNbdServer({ host: '127.0.0.1', port: 0, export: vol, observer, log });
    readOnlyServer = await startNbdServer({ host: '127.0.0.1', port: 0, export: readOnlyVol, log });
    witness = await connected();
  });

  after(async () => {
    witness.close();
    await server.close();
    await readOnlyServer.close();
  });

  test('greeting, GO with exact info replies, then write and read back', async () => {
    const raw = await Raw.connect(server.port);
    const greeting = await raw.read(18);
    assert.ok(greeting.equals(Buffer.concat([Buffer.from('NBDMAGIC'), IHAVEOPT, u16(3)])));
    raw.send(u32(1), option(OPT.GO, infoData('vol', [1, 2, 3])));
    const replies = [await raw.optionReply(), await raw.optionReply(), await raw.optionReply(), await raw.optionReply(), await raw.optionReply()];
    assert.deepEqual(replies.map((r) => [r.option, r.type]), [[7, REP_INFO], [7, REP_INFO], [7, REP_INFO], [7, REP_INFO], [7, REP_ACK]]);
    const byInfo = new Map(replies.slice(0, 4).map((r) => [r.data.readUInt16BE(0), r.data]));
    const exportInfo = byInfo.get(0)!;
    assert.equal(exportInfo.length, 12);
    assert.equal(Number(exportInfo.readBigUInt64BE(2)), sizeBytes);
    // HAS_FLAGS | SEND_FLUSH | SEND_FUA | SEND_TRIM | SEND_WRITE_ZEROES | CAN_MULTI_CONN; no FAST_ZERO, no READ_ONLY.
    assert.equal(exportInfo.readUInt16BE(10), 0x1 | 0x4 | 0x8 | 0x20 | 0x40 | 0x100);
    assert.ok(byInfo.get(3)!.equals(Buffer.concat([u16(3), u32(512), u32(4096), u32(32 * MiB)])));
    assert.equal(byInfo.get(1)!.toString('utf8', 2), 'vol');
    assert.equal(byInfo.get(2)!.toString('utf8', 2), 'in-memory test export');
    assert.equal(replies[4]!.data.length, 0);

    const data = Buffer.alloc(8192, 0x5a);
    // Overlapping requests in flight together have no defined order (proto.md "Ordering of
    // messages and writes"), so the read goes out once the write is answered.
    raw.send(request(CMD.WRITE, 1, 4096, data.length, 1, data));
    assert.deepEqual(await raw.reply(), { error: 0, cookie: 1, data: Buffer.alloc(0) });
    raw.send(request(CMD.READ, 2, 4096, 8192));
    const readBack = await raw.reply(8192);
    assert.deepEqual([readBack.cookie, readBack.error], [2, 0]);
    assert.ok(readBack.data.equals(data));
    raw.send(request(CMD.FLUSH, 3, 0, 0));
    assert.deepEqual(await raw.reply(), { error: 0, cookie: 3, data: Buffer.alloc(0) });
    assert.ok(vol.calls.includes('write 4096 8192 fua'));
    raw.close();
  });

  test('INFO does not enter transmission; LIST answers one SERVER then ACK', async () => {
    const raw = await Raw.connect(server.port);
    await raw.read(18);
    raw.send(u32(3), option(OPT.INFO, infoData('vol')), option(OPT.LIST));
    const info = [await raw.optionReply(), await raw.optionReply(), await raw.optionReply()];
    assert.deepEqual(info.map((r) => [r.option, r.type]), [[6, REP_INFO], [6, REP_INFO], [6, REP_ACK]]);
    const server1 = await raw.optionReply();
    assert.deepEqual([server1.option, server1.type], [OPT.LIST, REP_SERVER]);
    assert.equal(server1.data.readUInt32BE(0), 3);
    assert.equal(server1.data.toString('utf8', 4, 7), 'vol');
    assert.deepEqual(await raw.optionReply(), { option: OPT.LIST, type: REP_ACK, data: Buffer.alloc(0) });
    raw.send(option(OPT.LIST, Buffer.from('x')));
    assert.equal((await raw.optionReply()).type, ERR_INVALID);
    raw.close();
  });

  test('EXPORT_NAME replies 134 bytes, or 10 with NO_ZEROES, then serves requests', async () => {
    for (const clientFlags of [1, 3]) {
      const raw = await Raw.connect(server.port);
      await raw.read(18);
      raw.send(u32(clientFlags), option(OPT.EXPORT_NAME, Buffer.from('vol')), request(CMD.READ, 9, 0, 512));
      const reply = await raw.read(clientFlags === 3 ? 10 : 134);
      assert.equal(Number(reply.readBigUInt64BE(0)), sizeBytes);
      if (clientFlags === 1) assert.ok(reply.subarray(10).equals(Buffer.alloc(124)));
      assert.deepEqual((await raw.reply(512)).cookie, 9);
      raw.close();
    }
  });

  test('the empty export name selects the default (only) export', async () => {
    const raw = await connected('');
    raw.send(request(CMD.READ, 1, 0, 512));
    assert.equal((await raw.reply(512)).error, 0);
    raw.close();
  });

  test('unknown export: GO answers ERR_UNKNOWN and the next option is read; EXPORT_NAME closes', async () => {
    const raw = await Raw.connect(server.port);
    await raw.read(18);
    raw.send(u32(3), option(OPT.GO, infoData('nope')));
    const reply = await raw.optionReply();
    assert.equal(reply.type, ERR_UNKNOWN);
    assert.match(reply.data.toString(), /nope/);
    raw.send(option(OPT.GO, infoData('vol')));
    const types: number[] = [];
    for (let r = await raw.optionReply(); ; r = await raw.optionReply()) { types.push(r.type); if (r.type === REP_ACK) break; }
    assert.deepEqual(types, [REP_INFO, REP_INFO, REP_ACK]);
    raw.close();

    const closing = await Raw.connect(server.port);
    await closing.read(18);
    closing.send(u32(3), option(OPT.EXPORT_NAME, Buffer.from('nope')));
    assert.equal((await closing.expectClosed()).length, 0);
    await assertWitnessServed();
  });

  test('unknown options, STARTTLS, STRUCTURED_REPLY, EXTENDED_HEADERS answer ERR_UNSUP and negotiation continues', async () => {
    const raw = await Raw.connect(server.port);
    await raw.read(18);
    raw.send(u32(3), option(0x1234, Buffer.from('some option data')), option(OPT.STARTTLS),
      option(OPT.STRUCTURED_REPLY), option(OPT.EXTENDED_HEADERS), option(OPT.GO, infoData('nope')));
    for (const code of [0x1234, OPT.STARTTLS, OPT.STRUCTURED_REPLY, OPT.EXTENDED_HEADERS]) {
      const reply = await raw.optionReply();
      assert.deepEqual([reply.option, reply.type], [code, ERR_UNSUP]);
    }
    assert.equal((await raw.optionReply()).type, ERR_UNKNOWN);
    raw.send(option(OPT.GO, Buffer.from([0, 0])));
    assert.equal((await raw.optionReply()).type, ERR_INVALID, 'malformed GO data');
    raw.send(option(OPT.GO, infoData('vol')));
    await raw.optionReply();
    await raw.optionReply();
    assert.equal((await raw.optionReply()).type, REP_ACK);
    raw.send(request(CMD.READ, 5, 0, 512));
    assert.equal((await raw.reply(512)).cookie, 5);
    raw.close();
  });

  test('an oversized unknown option is skipped and answered ERR_UNSUP', async () => {
    const raw = await Raw.connect(server.port);
    await raw.read(18);
    raw.send(u32(3), option(0x4321, Buffer.alloc(200_000, 1)), option(OPT.LIST));
    assert.equal((await raw.optionReply()).type, ERR_UNSUP);
    assert.equal((await raw.optionReply()).type, REP_SERVER);
    raw.close();
  });

  test('ABORT is answered with ACK, then the server closes', async () => {
    const raw = await Raw.connect(server.port);
    await raw.read(18);
    raw.send(u32(3), option(OPT.ABORT));
    const rest = await raw.expectClosed();
    assert.ok(rest.equals(Buffer.concat([REPLY_MAGIC, u32(OPT.ABORT), u32(REP_ACK), u32(0)])));
  });

  test('malformed handshakes close that socket only', async () => {
    const cases: [string, Buffer][] = [
      ['unknown client flag', u32(4)],
      ['bad option magic', Buffer.concat([u32(3), Buffer.from('IHAVEOPX'), u32(OPT.LIST), u32(0)])],
      ['garbage', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
    ];
    for (const [label, bytes] of cases) {
      const raw = await Raw.connect(server.port);
      await raw.read(18);
      raw.send(bytes);
      assert.equal((await raw.expectClosed()).length, 0, `${label}: closed without a reply`);
      await assertWitnessServed();
    }
  });

  test('a truncated packet followed by the client closing leaves the server serving others', async () => {
    for (const partial of [u32(3).subarray(0, 2), Buffer.concat([u32(3), IHAVEOPT.subarray(0, 5)]), Buffer.concat([u32(3), option(OPT.GO, infoData('vol')).subarray(0, 25)])]) {
      const raw = await Raw.connect(server.port);
      await raw.read(18);
      raw.send(partial);
      await sleep(20);
      raw.socket.end();
      await raw.closed;
      await assertWitnessServed();
    }
    const mid = await connected();
    mid.send(request(CMD.WRITE, 1, 0, 4096, 0, Buffer.alloc(1000)));
    await sleep(20);
    mid.close();
    await assertWitnessServed();
  });

  test('each request error gets its exact error value and the connection stays usable', async () => {
    const raw = await connected();
    const cases: [string, Buffer, NbdErrno][] = [
      ['write past the end', request(CMD.WRITE, 1, sizeBytes - 512, 1024, 0, Buffer.alloc(1024)), 'ENOSPC'],
      ['write starting past the end', request(CMD.WRITE, 2, sizeBytes + 512, 512, 0, Buffer.alloc(512)), 'ENOSPC'],
      ['write zeroes past the end', request(CMD.WRITE_ZEROES, 3, sizeBytes, 512), 'ENOSPC'],
      ['read past the end', request(CMD.READ, 4, sizeBytes - 512, 1024), 'EINVAL'],
      ['read at 2^63', request(CMD.READ, 5, 2 ** 63, 512), 'EINVAL'],
      ['trim past the end', request(CMD.TRIM, 6, sizeBytes - 512, 4096), 'EINVAL'],
      ['unknown command', request(42, 7, 0, 512), 'EINVAL'],
      ['CACHE (not advertised)', request(CMD.CACHE, 8, 0, 512), 'EINVAL'],
      ['unknown flag on READ', request(CMD.READ, 9, 0, 512, 1 << 9), 'EINVAL'],
      ['DF without structured replies', request(CMD.READ, 10, 0, 512, 1 << 2), 'EINVAL'],
      ['NO_HOLE on WRITE', request(CMD.WRITE, 11, 0, 512, 1 << 1, Buffer.alloc(512)), 'EINVAL'],
      ['FAST_ZERO not advertised', request(CMD.WRITE_ZEROES, 12, 0, 512, 1 << 4), 'EINVAL'],
      ['read over 32 MiB', request(CMD.READ, 13, 0, 32 * MiB + 512), 'EINVAL'],
      ['unaligned read', request(CMD.READ, 14, 100, 512), 'EINVAL'],
      ['unaligned write length', request(CMD.WRITE, 15, 0, 100, 0, Buffer.alloc(100)), 'EINVAL'],
      ['flush with a length', request(CMD.FLUSH, 16, 0, 512), 'EINVAL'],
    ];
    const callsBefore = vol.calls.length;
    for (const [label, bytes, errno] of cases) {
      const cookie = bytes.readUInt32BE(12);
      raw.send(bytes);
      const reply = await raw.reply();
      assert.deepEqual([reply.cookie, reply.error], [cookie, ERRNO[errno]], label);
    }
    assert.equal(vol.calls.length, callsBefore, 'refused requests never reach the export');
    raw.send(request(CMD.WRITE, 50, 0, 512, 0, Buffer.alloc(512, 7)));
    assert.equal((await raw.reply()).error, 0);
    raw.send(request(CMD.READ, 51, 0, 512));
    assert.ok((await raw.reply(512)).data.equals(Buffer.alloc(512, 7)));
    raw.close();
  });

  test('zero-length requests succeed without reaching the export', async () => {
    const raw = await connected();
    const callsBefore = vol.calls.length;
    raw.send(request(CMD.READ, 1, 0, 0), request(CMD.WRITE, 2, 0, 0), request(CMD.TRIM, 3, 512, 0), request(CMD.WRITE_ZEROES, 4, sizeBytes, 0));
    for (const cookie of [1, 2, 3, 4]) assert.deepEqual(await raw.reply(), { error: 0, cookie, data: Buffer.alloc(0) });
    assert.equal(vol.calls.length, callsBefore);
    raw.close();
  });

  test('export failures: NbdRequestError gives its errno, anything else EIO (and a log line)', async () => {
    const raw = await connected();
    vol.failWith = new NbdRequestError('ENOSPC', 'cache full');
    raw.send(request(CMD.WRITE, 1, 0, 512, 0, Buffer.alloc(512)));
    assert.equal((await raw.reply()).error, ERRNO.ENOSPC);
    vol.failWith = new Error('disk on fire');
    raw.send(request(CMD.READ, 2, 0, 512), request(CMD.FLUSH, 3, 0, 0));
    assert.deepEqual([(await raw.reply()).error, (await raw.reply()).error], [ERRNO.EIO, ERRNO.EIO]);
    vol.failWith = null;
    assert.ok(warnings.some((w) => w.includes('export failed')));
    raw.send(request(CMD.READ, 4, 0, 512));
    assert.equal((await raw.reply(512)).error, 0);
    raw.close();
  });

  test('read-only export: READ_ONLY flag, writes/trim/zeroes EPERM, reads served', async () => {
    const raw = await Raw.connect(readOnlyServer.port);
    const { flags } = await negotiate(raw, 'ro');
    assert.equal(flags & 0x2, 0x2);
    raw.send(request(CMD.WRITE, 1, 0, 512, 0, Buffer.alloc(512)), request(CMD.TRIM, 2, 0, 512), request(CMD.WRITE_ZEROES, 3, 0, 512));
    for (const cookie of [1, 2, 3]) assert.deepEqual(await raw.reply(), { error: ERRNO.EPERM, cookie, data: Buffer.alloc(0) });
    raw.send(request(CMD.READ, 4, 0, 512));
    assert.equal((await raw.reply(512)).error, 0);
    assert.deepEqual(readOnlyVol.calls, ['read 0 512']);
    raw.close();
  });

  test('a bad request magic closes that connection only', async () => {
    const raw = await connected();
    const bad = request(CMD.READ, 1, 0, 512);
    bad.writeUInt32BE(0x12560953, 0);
    raw.send(bad);
    assert.equal((await raw.expectClosed()).length, 0);
    await assertWitnessServed();
  });

  test('a WRITE longer than 32 MiB closes that connection only', async () => {
    const raw = await connected();
    raw.send(request(CMD.WRITE, 1, 0, 32 * MiB + 512), Buffer.alloc(4096));
    assert.equal((await raw.expectClosed()).length, 0);
    await assertWitnessServed();
  });

  test('requests are answered as they complete, not in order', async () => {
    const slowFirst = new MemoryExport('vol', sizeBytes);
    const origRead = slowFirst.read.bind(slowFirst);
    slowFirst.read = async (offsetBytes, lengthBytes) => {
      if (offsetBytes === 0) await sleep(100);
      return origRead(offsetBytes, lengthBytes);
    };
    const own = await startNbdServer({ host: '127.0.0.1', port: 0, export: slowFirst, log: () => undefined });
    const raw = await connected('vol', own.port);
    raw.send(request(CMD.READ, 1, 0, 512), request(CMD.READ, 2, 512, 512));
    assert.deepEqual([(await raw.reply(512)).cookie, (await raw.reply(512)).cookie], [2, 1]);
    raw.close();
    await own.close();
  });

  test('hundreds of pipelined requests are all answered with their cookies and data', async () => {
    const raw = await connected();
    for (let i = 0; i < 300; i++) vol.bytes.writeUInt32BE(i, i * 4096);
    raw.send(...Array.from({ length: 300 }, (_, i) => request(CMD.READ, i, i * 4096, 4096)));
    const seen = new Set<number>();
    for (let i = 0; i < 300; i++) {
      const reply = await raw.reply(4096);
      assert.equal(reply.error, 0);
      assert.equal(reply.data.readUInt32BE(0), reply.cookie, 'data matches its cookie');
      seen.add(reply.cookie);
    }
    assert.equal(seen.size, 300);
    raw.close();
  });

  test('pipelined replies of every size stay whole and in their places when packed into batches', async () => {
    // Small replies share batch buffers (128 to one), 4 KiB reads each fill one, and reads over the
    // copy limit are written after the batch before them: every reply must still arrive whole.
    const raw = await connected();
    for (let i = 0; i < sizeBytes / 4; i++) vol.bytes.writeUInt32BE(i, i * 4);
    const dataBytesOf = new Map<number, number>();
    const requests: Buffer[] = [];
    for (let cookie = 0; cookie < 600; cookie++) {
      const offsetBytes = (cookie * 4096) % (sizeBytes - 64 * 1024);
      const kind = cookie % 5;
      if (kind <= 1) requests.push(request(CMD.WRITE, cookie, sizeBytes - 512, 512, 0, Buffer.alloc(512, cookie & 0xff)));
      else if (kind === 2) requests.push(request(CMD.FLUSH, cookie, 0, 0));
      else requests.push(request(CMD.READ, cookie, offsetBytes, kind === 3 ? 4096 : 64 * 1024));
      dataBytesOf.set(cookie, kind === 3 ? 4096 : kind === 4 ? 64 * 1024 : 0);
    }
    raw.send(...requests);
    for (let n = 0; n < 600; n++) {
      const header = await raw.read(16);
      assert.equal(header.readUInt32BE(0), 0x67446698, `reply ${n}: simple reply magic`);
      assert.equal(header.readUInt32BE(4), 0, `reply ${n}: no error`);
      const cookie = header.readUInt32BE(12);
      const dataBytes = dataBytesOf.get(cookie);
      assert.ok(dataBytes !== undefined, `reply ${n}: cookie ${cookie} was asked and not answered before`);
      dataBytesOf.delete(cookie);
      if (dataBytes === 0) continue;
      const data = await raw.read(dataBytes);
      const firstWord = ((cookie * 4096) % (sizeBytes - 64 * 1024)) / 4;
      assert.equal(data.readUInt32BE(0), firstWord, `reply ${n} (cookie ${cookie}): its own data`);
      assert.equal(data.readUInt32BE(dataBytes - 4), firstWord + dataBytes / 4 - 1, `reply ${n} (cookie ${cookie}): all of it`);
    }
    assert.equal(dataBytesOf.size, 0);
    raw.close();
  });

  test('DISC finishes in-flight requests, then closes without a reply', async () => {
    const slow = new MemoryExport('vol', sizeBytes);
    slow.delayMs = 150;
    const own = await startNbdServer({ host: '127.0.0.1', port: 0, export: slow, log: () => undefined });
    const raw = await connected('vol', own.port);
    raw.send(request(CMD.WRITE, 1, 0, 512, 0, Buffer.alloc(512, 1)), request(CMD.WRITE, 2, 512, 512, 0, Buffer.alloc(512, 2)),
      request(CMD.DISC, 3, 0, 0), request(CMD.READ, 4, 0, 512));
    const rest = await raw.expectClosed();
    assert.equal(rest.length, 32, 'two 16-byte replies, none for DISC or for what followed it');
    assert.deepEqual([rest.readUInt32BE(12), rest.readUInt32BE(28)].sort(), [1, 2]);
    assert.deepEqual([rest.readUInt32BE(4), rest.readUInt32BE(20)], [0, 0]);
    assert.equal(slow.bytes[0], 1);
    assert.equal(slow.bytes[512], 2);
    assert.ok(!slow.calls.some((c) => c.startsWith('read')), 'nothing after DISC was executed');
    assert.equal(own.connections(), 0);
    await own.close();
  });

  test('close() lets in-flight requests finish, then closes every connection', async () => {
    const slow = new MemoryExport('vol', sizeBytes);
    slow.delayMs = 100;
    const own = await startNbdServer({ host: '127.0.0.1', port: 0, export: slow, log: () => undefined });
    const raw = await connected('vol', own.port);
    const negotiating = await Raw.connect(own.port);
    await negotiating.read(18);
    assert.equal(own.connections(), 2);
    raw.send(request(CMD.WRITE, 1, 0, 512, 0, Buffer.alloc(512, 9)));
    await sleep(20);
    await own.close();
    assert.deepEqual(await raw.reply(), { error: 0, cookie: 1, data: Buffer.alloc(0) });
    await raw.expectClosed();
    await negotiating.expectClosed();
    assert.equal(own.connections(), 0);
  });

  test('the observer sees every answered request with its errno', async () => {
    done.length = 0;
    const raw = await connected();
    raw.send(request(CMD.WRITE, 1, 0, 1024, 0, Buffer.alloc(1024)), request(CMD.READ, 2, sizeBytes, 512));
    await raw.reply();
    await raw.reply();
    assert.equal(done.length, 2);
    assert.ok(done.some((d) => d.command === 'write' && d.bytes === 1024 && d.errno === null));
    assert.ok(done.some((d) => d.command === 'read' && d.errno === 'EINVAL'));
    raw.close();
  });

  test('a second server on a used port fails with an address-in-use message', async () => {
    await assert.rejects(startNbdServer({ host: '127.0.0.1', port: server.port, export: vol, log: () => undefined }),
      /already in use/);
  });
});

describe('RateLimitedLog', () => {
  test('at most N lines per message per second; the next line printed counts those left out', () => {
    let nowMs = 0;
    const lines: Array<{ msg: string; fields: object | undefined }> = [];
    const limited = new RateLimitedLog((_level, msg, fields) => lines.push({ msg, fields }), 2, () => nowMs);
    for (let i = 0; i < 5; i++) limited.warn('refused', { i });
    limited.warn('other message', { i: 9 });
    assert.deepEqual(lines.map((l) => l.fields), [{ i: 0 }, { i: 1 }, { i: 9 }], 'two of "refused", the other message apart');
    nowMs = 1000;
    limited.warn('refused', { i: 5 });
    assert.deepEqual(lines.at(-1), { msg: 'refused', fields: { i: 5, suppressedSinceLastLine: 3 } });
    limited.warn('refused', { i: 6 });
    assert.deepEqual(lines.at(-1)!.fields, { i: 6 }, 'the count is reported once');
  });
});
