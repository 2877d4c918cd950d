// Interop with real NBD clients we did not write (DESIGN.md "Testing layers", 3): qemu-io,
// qemu-img, nbdinfo, nbdcopy and fio's nbd engine, each against a fresh standalone node on a sparse
// file store. Our own client code would share our misreadings of the protocol; these do not.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import {
  cleanupAll, describeRun, makeTempDir, parseFioJson, qemuIo, qemuIoProblem, run, startNode, type ConfigSpec, type NodeProcess,
} from './helpers/node-process.js';
import { ensureTools } from './helpers/tools.js';
import type { StoreReadStats } from '../src/store/store.js';

ensureTools(['qemu-io', 'qemu-img', 'nbdinfo', 'nbdcopy', 'fio']);

const KiB = 1024;
const MiB = 1024 * KiB;
const VOLUME_BYTES = 64 * MiB;

after(cleanupAll);

/** A fresh node on a sparse file store in its own temp dir. */
async function freshNode(overrides: Partial<ConfigSpec> = {}, cache = '256MiB'): Promise<{ node: NodeProcess; dir: string; storePath: string }> {
  const dir = makeTempDir();
  const storePath = path.join(dir, 'a.img');
  const node = await startNode({ dir, config: { size: '64MiB', ...overrides, nodes: { a: { store: storePath, cache } } } });
  return { node, dir, storePath };
}

async function assertQemuIo(node: NodeProcess, commands: string[], cacheMode?: 'unsafe'): Promise<void> {
  const r = await qemuIo(node.uri, commands, cacheMode === undefined ? {} : { cacheMode });
  const problem = qemuIoProblem(r);
  assert.equal(problem, null, `${problem}\n--- node stderr\n${node.stderr.slice(-4000)}`);
}

async function stopCleanly(node: NodeProcess): Promise<void> {
  const code = await node.stop();
  assert.equal(code, 0, `node exit code ${code}; stderr:\n${node.stderr.slice(-4000)}`);
}

describe('qemu-io', () => {
  it('writes patterns and reads them back, including sub-track and cross-track writes', async () => {
    const { node } = await freshNode();
    await assertQemuIo(node, [
      // A whole track, then a 512-byte write inside it: neighbours keep the old pattern.
      'write -P 0xab 0 64k',
      'read -P 0xab 0 64k',
      'write -P 0x11 4096 512',
      'read -P 0xab 0 4096',
      'read -P 0x11 4096 512',
      'read -P 0xab 4608 60928',
      // 60k..72k crosses the first track boundary; 72k..128k of track 1 was never written.
      'write -P 0x22 61440 12288',
      'read -P 0xab 4608 56832',
      'read -P 0x22 61440 12288',
      'read -P 0 73728 57344',
      // A sub-track write into a never-written track: the rest of the track reads as zeros.
      'write -P 0x33 200704 512',
      'read -P 0 196608 4096',
      'read -P 0x33 200704 512',
      'read -P 0 201216 60928',
      // Unaligned to the track size but 512-aligned, spanning four tracks.
      'write -P 0x44 1048064 132096',
      'read -P 0 1047552 512',
      'read -P 0x44 1048064 132096',
      'read -P 0 1180160 512',
    ]);
    // A second connection sees what the first wrote (the cache is shared, not per connection).
    await assertQemuIo(node, ['read -P 0xab 0 4096', 'read -P 0x11 4096 512', 'read -P 0x22 61440 12288', 'read -P 0x44 1048064 132096']);
    const status = await node.status();
    assert.ok(status.counters.writes >= 5, `status.counters.writes = ${status.counters.writes}`);
    await stopCleanly(node);
  });

  it('write_zeroes and discard read back as zeros, neighbours untouched', async () => {
    const { node } = await freshNode();
    await assertQemuIo(node, [
      'write -P 0x5a 0 256k',
      // write -z inside one track and across a boundary.
      'write -z 8k 16k',
      'write -z 120k 16k',
      'read -P 0x5a 0 8k',
      'read -P 0 8k 16k',
      'read -P 0x5a 24k 96k',
      'read -P 0 120k 16k',
      'read -P 0x5a 136k 120k',
      // discard a whole track and a 512-aligned piece of another.
      'discard 128k 64k',
      'read -P 0 128k 64k',
      'discard 200704 4096',
      'read -P 0x5a 192k 4096',
      'read -P 0 200704 4096',
      'read -P 0x5a 204800 57344',
    ]);
    await stopCleanly(node);
  });

  it('sub-track writes into evicted tracks keep the hardened neighbours (4-track cache)', async () => {
    // 256 KiB of cache holds 4 tracks; writing 1 MiB evicts the first tracks to the store, so the
    // later 512-byte writes land in tracks whose other bytes live only in the store.
    const { node, storePath } = await freshNode({}, '256KiB');
    await assertQemuIo(node, [
      'write -P 0x61 0 1m',
      'write -P 0x62 1024 512',
      'write -P 0x63 131584 1024',
      'read -P 0x61 0 1024',
      'read -P 0x62 1024 512',
      'read -P 0x61 1536 130048',
      'read -P 0x63 131584 1024',
      'read -P 0x61 132608 915968',
    ]);
    await stopCleanly(node);
    const store = readFileSync(storePath);
    assert.equal(store.length, VOLUME_BYTES);
    const expected = Buffer.alloc(1 * MiB, 0x61);
    expected.fill(0x62, 1024, 1536);
    expected.fill(0x63, 131584, 132608);
    assert.ok(store.subarray(0, 1 * MiB).equals(expected), 'store file differs from what was written');
  });
});

describe('reads through the cache (qemu-io)', () => {
  it('a read that missed is served from RAM the next time, and a sequential stream reads ahead', async () => {
    // The data is in the store before the node starts, so only reads can bring it into the cache.
    const dir = makeTempDir();
    const storePath = path.join(dir, 'a.img');
    const image = Buffer.alloc(VOLUME_BYTES);
    image.fill(0x5a, 0, 4 * MiB);
    writeFileSync(storePath, image);
    const node = await startNode({ dir, config: { size: '64MiB', nodes: { a: { store: storePath, cache: '256MiB' } } } });
    const stream = Array.from({ length: 64 }, (_, i) => `read -P 0x5a ${2 * MiB + i * 4 * KiB} 4k`);
    await assertQemuIo(node, ['read -P 0x5a 0 1m', 'read -P 0x5a 0 1m', ...stream]);
    const text = await node.metrics();
    const counter = (re: RegExp): number => Number(re.exec(text)?.[1] ?? Number.NaN);
    const fromStore = counter(/twinblock_read_bytes_total\{source="store"[^}]*\} (\d+)/);
    const fromCache = counter(/twinblock_read_bytes_total\{source="cache"[^}]*\} (\d+)/);
    const ahead = counter(/twinblock_readahead_bytes_total\{[^}]*\} (\d+)/);
    // The second 1 MiB read and all but the first two reads of the stream come from RAM.
    assert.ok(fromStore >= 1 * MiB + 4 * KiB && fromStore <= 1 * MiB + 16 * KiB, `store bytes ${fromStore}`);
    assert.ok(fromCache >= 1 * MiB + 240 * KiB, `cache bytes ${fromCache}`);
    assert.ok(ahead >= 256 * KiB, `readahead bytes ${ahead}`);
    // The stream's first 4 KiB miss was a pread on the event loop (the gate starts open; larger
    // reads go to the pool), and status says so.
    const storeReads = (await node.status()).storeReads as StoreReadStats | null;
    assert.ok(storeReads !== null && storeReads.inlineReads >= 1, `storeReads ${JSON.stringify(storeReads)}`);
    await stopCleanly(node);
  });
});

describe('qemu-img', () => {
  it('compare equals a reference file after convert, and the store equals it after SIGTERM', async () => {
    const { node, dir, storePath } = await freshNode();
    // Random data with zero holes: exercises both data writes and qemu-img's zero detection.
    const ref = randomBytes(VOLUME_BYTES);
    ref.fill(0, 8 * MiB, 12 * MiB);
    ref.fill(0, 40 * MiB + 4096, 40 * MiB + 3 * 64 * KiB);
    const refPath = path.join(dir, 'ref.img');
    writeFileSync(refPath, ref);

    const convert = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', refPath, node.uri], { timeoutMs: 60_000 });
    assert.equal(convert.code, 0, describeRun('qemu-img convert', convert));
    const compare = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', refPath, node.uri], { timeoutMs: 60_000 });
    assert.equal(compare.code, 0, describeRun('qemu-img compare', compare));
    assert.match(compare.stdout, /Images are identical/);

    await stopCleanly(node);
    const store = readFileSync(storePath);
    assert.equal(store.length, ref.length);
    assert.ok(store.equals(ref), 'store file differs from the reference after SIGTERM');
  });
});

describe('nbdinfo', () => {
  it('reports size, capabilities and block sizes', async () => {
    const { node } = await freshNode();
    const r = await run('nbdinfo', ['--json', node.uri], { timeoutMs: 20_000 });
    assert.equal(r.code, 0, describeRun('nbdinfo', r));
    const info = JSON.parse(r.stdout) as { protocol: string; exports: Array<Record<string, unknown>> };
    assert.equal(info.protocol, 'newstyle-fixed');
    assert.equal(info.exports.length, 1);
    const e = info.exports[0]!;
    assert.equal(e['export-name'], 'vol0');
    assert.equal(e['export-size'], VOLUME_BYTES);
    // nbdinfo 1.14 prints these names; each maps to one NBD transmission flag.
    for (const flag of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_multi_conn']) {
      assert.equal(e[flag], true, `${flag} in ${JSON.stringify(e)}`);
    }
    assert.equal(e.is_read_only, false);
    assert.equal(e.block_size_minimum, 512);
    assert.equal(e.block_size_preferred, 4096);
    assert.equal(e.block_size_maximum, 32 * MiB);
    await stopCleanly(node);
  });
});

describe('nbdcopy', () => {
  it('round-trips 32 MiB of random data over 4 connections', async () => {
    const { node, dir } = await freshNode();
    const data = randomBytes(32 * MiB);
    const inPath = path.join(dir, 'in.img');
    const outPath = path.join(dir, 'out.img');
    writeFileSync(inPath, data);

    const copyIn = await run('nbdcopy', ['--connections=4', inPath, node.uri], { timeoutMs: 60_000 });
    assert.equal(copyIn.code, 0, describeRun('nbdcopy in', copyIn));
    const copyOut = await run('nbdcopy', ['--connections=4', node.uri, outPath], { timeoutMs: 60_000 });
    assert.equal(copyOut.code, 0, describeRun('nbdcopy out', copyOut));

    assert.equal(statSync(outPath).size, VOLUME_BYTES);
    const out = readFileSync(outPath);
    assert.ok(out.subarray(0, data.length).equals(data), 'first 32 MiB differ after the round trip');
    assert.ok(out.subarray(data.length).equals(Buffer.alloc(VOLUME_BYTES - data.length)), 'the never-written half is not zeros');
    // The admin metrics saw the bytes come in (a scrape, not just our own counters in /status).
    const metrics = await node.metrics();
    const written = /^twinblock_nbd_bytes_total\{[^}]*command="write"[^}]*\} (\S+)$/im.exec(metrics);
    assert.ok(written !== null, `no write bytes in /metrics:\n${metrics.slice(0, 3000)}`);
    assert.ok(Number(written[1]) >= data.length, `metrics count ${written[1]} written bytes, expected ≥ ${data.length}`);
    await stopCleanly(node);
  });
});

describe('fio', () => {
  it('randwrite with crc32c verify from two jobs on disjoint regions', async () => {
    const { node } = await freshNode();
    const r = await run('fio', [
      '--name=verify', '--ioengine=nbd', `--uri=${node.uri}`, '--rw=randwrite', '--bs=4k', '--size=16m',
      '--numjobs=2', '--offset_increment=16m', '--iodepth=16', '--verify=crc32c', '--do_verify=1',
      '--verify_fatal=1', '--verify_state_save=0', '--output-format=json',
    ], { timeoutMs: 90_000 });
    assert.equal(r.code, 0, describeRun('fio', r));
    const report = parseFioJson(r.stdout);
    assert.equal(report.jobs.length, 2);
    for (const job of report.jobs) {
      assert.equal(job.error, 0, `fio job error ${job.error}`);
      assert.equal(job.write.io_bytes, 16 * MiB, 'each job writes its whole 16 MiB region');
      // The verify pass reads every written block back; nothing read means nothing verified.
      assert.equal(job.read.io_bytes, 16 * MiB, 'each job reads its region back to verify');
    }
    assert.doesNotMatch(r.stdout + r.stderr, /verify: bad|bad magic|crc32c: verify failed/i);
    await stopCleanly(node);
  });
});
