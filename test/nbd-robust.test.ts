// Issue 9, NBD part: bad and slow clients must not pin memory, lose answers, hold connections
// forever or flood the log, and other clients keep working meanwhile. Every case runs against a
// real `twinblock serve` process over raw sockets (test/helpers/nbd-raw.ts), and asserts what the
// node did: its RSS (/proc/PID/status), what reached the socket, its log lines, /status.
import { after, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CMD, FLAG_FUA, MiB, OPT, Raw, connectNegotiated, option, request, u32,
} from './helpers/nbd-raw.js';
import { cleanupAll, makeTempDir, pollNodes, startNode, type ConfigSpec, type NodeProcess } from './helpers/node-process.js';
import { linesWithMsg } from './helpers/pair-process.js';

after(cleanupAll);

function standalone(size: string, extra: Record<string, unknown> = {}, cache = '16MiB'): ConfigSpec {
  return { volume: 'vol', size, ...extra, nodes: { a: { store: path.join(makeTempDir(), 'a.img'), cache } } };
}

/** The node's resident set size, from /proc/PID/status (VmRSS, in kB). */
function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (match === null) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/**
 * The highest RSS seen until it stops rising: sampled every 50 ms until no sample in the last
 * 2 s beat the peak by a MiB. A steady-state wait, not a timing assertion: a slow machine only
 * takes longer to get there.
 */
async function settledPeakRss(node: NodeProcess, maxWaitMs = 30_000): Promise<number> {
  const started = Date.now();
  let peak = rssBytes(node.pid);
  let peakAt = Date.now();
  while (Date.now() - peakAt < 2000 && Date.now() - started < maxWaitMs) {
    await sleep(50);
    const now = rssBytes(node.pid);
    if (now > peak + MiB) peakAt = Date.now();
    peak = Math.max(peak, now);
  }
  return peak;
}

/** A 4 KiB block whose every byte says which 32 MiB region it marks. */
function marker(region: number): Buffer {
  return Buffer.alloc(4096, 0x41 + region);
}

/** Another client does a write and reads it back while the bad one misbehaves. */
async function assertOthersServed(node: NodeProcess, offsetBytes: number, fill: number): Promise<void> {
  const other = await connectNegotiated(node.nbdPort);
  const data = Buffer.alloc(64 * 1024, fill);
  other.send(request(CMD.WRITE, 1, offsetBytes, data.length, 0, data));
  assert.deepEqual(await other.reply(), { error: 0, cookie: 1, data: Buffer.alloc(0) }, 'the other client\'s write');
  other.send(request(CMD.READ, 2, offsetBytes, data.length));
  const back = await other.reply(data.length);
  assert.deepEqual([back.error, back.cookie], [0, 2]);
  assert.ok(back.data.equals(data), 'the other client reads back what it wrote');
  other.close();
}

/** Parse simple replies from a byte stream; READ cookies carry readBytes of data. */
function parseReplies(bytes: Buffer, readCookies: Set<number>, readBytes: number): Array<{ cookie: number; error: number; data: Buffer }> {
  const replies = [];
  let at = 0;
  while (at + 16 <= bytes.length) {
    assert.equal(bytes.readUInt32BE(at), 0x67446698, `simple reply magic at byte ${at}`);
    const error = bytes.readUInt32BE(at + 4);
    const cookie = bytes.readUInt32BE(at + 12);
    const dataBytes = error === 0 && readCookies.has(cookie) ? readBytes : 0;
    replies.push({ cookie, error, data: bytes.subarray(at + 16, at + 16 + dataBytes) });
    at += 16 + dataBytes;
  }
  assert.equal(at, bytes.length, 'the stream ends on a reply boundary');
  return replies;
}

/** Runs a test's body; a failure carries the node's last log lines, where the why usually is. */
async function withLogs(node: NodeProcess, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof Error) err.message += `\n--- node ${node.name} log (tail)\n${node.stderr.slice(-3000)}`;
    throw err;
  }
}

describe('NBD robustness against bad and slow clients (real node process)', () => {
  test('a client that sends 8 READs of 32 MiB and never reads does not pin their memory', async (t: TestContext) => {
    const regions = 8;
    const regionBytes = 32 * MiB;
    const node = await startNode({ config: standalone(`${regions * 32 + 32}MiB`) });
    await withLogs(node, async () => {
      // Known bytes at both ends of every region, so each reply can be checked when it finally arrives.
      const writer = await connectNegotiated(node.nbdPort);
      for (let i = 0; i < regions; i++) {
        writer.send(request(CMD.WRITE, 2 * i, i * regionBytes, 4096, 0, marker(i)),
          request(CMD.WRITE, 2 * i + 1, (i + 1) * regionBytes - 4096, 4096, 0, marker(i)));
      }
      for (let i = 0; i < 2 * regions; i++) assert.equal((await writer.reply()).error, 0);
      writer.close();

      const bad = await connectNegotiated(node.nbdPort);
      bad.pause();
      const before = rssBytes(node.pid);
      const handshakeBytes = bad.socket.bytesWritten;
      bad.send(...Array.from({ length: regions }, (_, i) => request(CMD.READ, i + 1, i * regionBytes, regionBytes)));
      const peak = await settledPeakRss(node);
      await assertOthersServed(node, regions * regionBytes, 0x5a);
      const peakAfterOthers = Math.max(peak, rssBytes(node.pid));
      const growthMiB = (peakAfterOthers - before) / MiB;
      t.diagnostic(`RSS before ${(before / MiB).toFixed(0)} MiB, peak while stuck ${(peakAfterOthers / MiB).toFixed(0)} MiB (+${growthMiB.toFixed(0)} MiB)`);
      assert.equal(bad.socket.bytesWritten - handshakeBytes, regions * 28, 'all 8 READ requests went out');
      assert.ok(growthMiB < 120, `RSS grew by ${growthMiB.toFixed(0)} MiB for ${regions} unread 32 MiB READs (bound 120 MiB)`);

      // The client starts reading: every reply arrives, whole and correct.
      bad.resume();
      const zeros = Buffer.alloc(regionBytes - 8192);
      const seen = new Set<number>();
      for (let i = 0; i < regions; i++) {
        const reply = await bad.reply(regionBytes, 30_000);
        assert.equal(reply.error, 0);
        const region = reply.cookie - 1;
        assert.ok(region >= 0 && region < regions && !seen.has(reply.cookie), `unexpected cookie ${reply.cookie}`);
        seen.add(reply.cookie);
        assert.ok(reply.data.subarray(0, 4096).equals(marker(region)), `region ${region} starts with its marker`);
        assert.ok(reply.data.subarray(regionBytes - 4096).equals(marker(region)), `region ${region} ends with its marker`);
        assert.ok(reply.data.subarray(4096, regionBytes - 4096).equals(zeros), `region ${region} is zero in between`);
      }
      bad.send(request(CMD.READ, 99, 0, 4096));
      assert.ok((await bad.reply(4096)).data.equals(marker(0)), 'the connection still works');
      t.diagnostic(`RSS after all replies were read: ${(rssBytes(node.pid) / MiB).toFixed(0)} MiB`);
      bad.close();
      assert.equal(await node.stop(), 0);
    });
  });

  test('half-close: every request received before the client shut its sending side is answered', async () => {
    const node = await startNode({ config: standalone('64MiB') });
    await withLogs(node, async () => {
      // The case: 4 FUA WRITEs (they harden before answering) and 4 READs from the store.
      const client = await connectNegotiated(node.nbdPort);
      const writes = [0, 1, 2, 3].map((i) => Buffer.alloc(64 * 1024, 0x31 + i));
      client.send(...writes.map((data, i) => request(CMD.WRITE, i + 1, i * MiB, data.length, FLAG_FUA, data)),
        ...[0, 1, 2, 3].map((i) => request(CMD.READ, i + 5, (8 + i) * MiB, MiB)));
      client.socket.end();
      const replies = parseReplies(await client.expectClosed(30_000), new Set([5, 6, 7, 8]), MiB);
      assert.deepEqual(replies.map((r) => r.cookie).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8], 'one reply per request');
      assert.ok(replies.every((r) => r.error === 0), 'every request succeeded');

      // Many requests pipelined, more than are ever in flight at once, then half-close.
      const many = await connectNegotiated(node.nbdPort);
      const count = 600;
      many.send(...Array.from({ length: count }, (_, i) => request(CMD.READ, i, (i % 16) * 4096, 4096)));
      many.socket.end();
      const manyReplies = parseReplies(await many.expectClosed(30_000), new Set(Array.from({ length: count }, (_, i) => i)), 4096);
      assert.equal(new Set(manyReplies.map((r) => r.cookie)).size, count, `${count} distinct replies`);

      // The acknowledged writes are there for the next client.
      const check = await connectNegotiated(node.nbdPort);
      for (let i = 0; i < 4; i++) {
        check.send(request(CMD.READ, i, i * MiB, 64 * 1024));
        assert.ok((await check.reply(64 * 1024)).data.equals(writes[i]!), `write ${i} was applied`);
      }
      check.close();
      assert.equal(await node.stop(), 0);
    });
  });

  test('handshake deadline: silent and trickling clients are dropped with a warning', async () => {
    const handshakeTimeoutMs = 1000;
    const node = await startNode({ config: standalone('16MiB', { nbdHandshakeTimeoutMs: handshakeTimeoutMs }) });
    await withLogs(node, async () => {
      const dropped = (raw: Raw) => linesWithMsg(node, 'nbd: handshake not finished in time, closing')
        .filter((l) => l['remote'] === `127.0.0.1:${raw.localPort}`);

      const silent = await Raw.connect(node.nbdPort);
      await silent.read(18);
      assert.equal((await silent.expectClosed(15_000)).length, 0, 'nothing after the greeting');
      await pollNodes('the silent client\'s warning', [node], async () => ({ ok: dropped(silent).length === 1, detail: node.stderr.slice(-500) }), () => node.stderr, 5000, 50);

      // One byte every 200 ms: each byte is progress, but the deadline counts from accept.
      const trickler = await Raw.connect(node.nbdPort);
      await trickler.read(18);
      const handshake = Buffer.concat([u32(3), option(OPT.EXPORT_NAME, Buffer.from('vol'))]);
      let sentBytes = 0;
      while (!trickler.ended && sentBytes < handshake.length) {
        trickler.socket.write(handshake.subarray(sentBytes, sentBytes + 1));
        sentBytes += 1;
        await sleep(200);
      }
      assert.ok(trickler.ended, 'the trickling client was closed');
      assert.ok(sentBytes < handshake.length, `closed before its ${handshake.length}-byte handshake was complete (sent ${sentBytes})`);
      await pollNodes('the trickler\'s warning', [node], async () => ({ ok: dropped(trickler).length === 1, detail: node.stderr.slice(-500) }), () => node.stderr, 5000, 50);

      // A client that negotiated in time is not dropped when the deadline passes.
      const good = await connectNegotiated(node.nbdPort);
      await sleep(2 * handshakeTimeoutMs);
      good.send(request(CMD.READ, 1, 0, 4096));
      assert.equal((await good.reply(4096)).error, 0);
      assert.equal(good.ended, false);
      good.close();
      assert.equal(await node.stop(), 0);
    });
  });

  test('connection limit: a connection over nbdMaxConnections is refused with a warning', async () => {
    const node = await startNode({ config: standalone('16MiB', { nbdMaxConnections: 3 }) });
    await withLogs(node, async () => {
      const first = await connectNegotiated(node.nbdPort);
      const second = await connectNegotiated(node.nbdPort);
      const negotiating = await Raw.connect(node.nbdPort);
      await negotiating.read(18);

      const over = await Raw.connect(node.nbdPort);
      assert.equal((await over.expectClosed(10_000)).length, 0, 'refused without a greeting');
      await pollNodes('the refusal warning', [node], async () => ({
        ok: linesWithMsg(node, 'nbd: too many connections, refusing').some((l) => l['remote'] === `127.0.0.1:${over.localPort}`),
        detail: node.stderr.slice(-500),
      }), () => node.stderr, 5000, 50);
      assert.equal((await node.status()).nbd.connections, 3);
      first.send(request(CMD.READ, 1, 0, 4096));
      assert.equal((await first.reply(4096)).error, 0, 'connected clients keep working');

      // A slot that frees up is usable again.
      negotiating.close();
      await pollNodes('a free slot', [node], async () => {
        const connections = (await node.status()).nbd.connections;
        return { ok: connections === 2, detail: `${connections} connections` };
      }, () => node.stderr, 10_000, 50);
      const third = await connectNegotiated(node.nbdPort);
      third.send(request(CMD.READ, 1, 4096, 4096));
      assert.equal((await third.reply(4096)).error, 0);
      for (const raw of [first, second, third]) raw.close();
      assert.equal(await node.stop(), 0);
    });
  });

  test('a 64 KiB export name with control characters makes a short, escaped warning', async () => {
    const node = await startNode({ config: standalone('16MiB') });
    await withLogs(node, async () => {
      const raw = await Raw.connect(node.nbdPort);
      await raw.read(18);
      const head = '\u001b[31mfake\nline ';
      const name = head + 'x'.repeat(64 * 1024 - head.length);
      assert.equal(Buffer.byteLength(name), 64 * 1024);
      raw.send(u32(3), option(OPT.EXPORT_NAME, Buffer.from(name)));
      await raw.expectClosed();
      const msg = 'nbd: unknown export requested, closing';
      await pollNodes('the warning', [node], async () => ({ ok: node.stderr.includes(msg), detail: 'not logged yet' }), () => node.stderr.slice(-2000), 5000, 50);
      const line = node.stderr.split('\n').find((l) => l.includes(msg)) ?? '';
      assert.ok(line.length < 1024, `the warning line is ${line.length} characters`);
      const logged = JSON.parse(line) as { export: string };
      assert.ok([...logged.export].every((c) => c >= ' '), `no control characters reach the log: ${JSON.stringify(logged.export.slice(0, 40))}`);
      assert.match(logged.export, /^\\u001b\[31mfake\\u000aline x+\.\.\.\(\d+ more bytes\)$/);
      await assertOthersServed(node, 0, 0x33);
      assert.equal(await node.stop(), 0);
    });
  });
});
