// Persistence of a standalone node across a clean stop (SIGTERM): writes that were still only in
// the volatile cache must reach the store before the process exits, on a file store and on a remote
// disk over NBD (nbdkit memory), and a restarted node must read back exactly the same bytes.
// Also: a store that does not fit the volume is refused with one line and exit 1.
import assert from 'node:assert/strict';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import {
  cleanupAll, describeRun, freePort, makeTempDir, parseFioJson, qemuIo, qemuIoProblem, run, serveExpectingFailure,
  startBackground, startNode, type ConfigSpec, type NodeProcess,
} from './helpers/node-process.js';
import { logLines } from './helpers/pair-process.js';
import { ensureTools } from './helpers/tools.js';
import { openFileStore } from '../src/store/file-store.js';
import { hardenRun } from '../src/core/harden-runs.js';

ensureTools(['qemu-io', 'fio', 'nbdkit']);

const KiB = 1024;
const MiB = 1024 * KiB;
const VOLUME_BYTES = 64 * MiB;

after(cleanupAll);

/**
 * Hardening on its own schedule is slowed to a crawl (one minute dirty age, rare destage scans), so
 * that what the test writes without FUA or FLUSH is still only in the cache when SIGTERM arrives:
 * then the store can only hold it if the shutdown path hardened it.
 */
const lazyHardening: Partial<ConfigSpec> = { maxDirtyAgeMs: 60_000, destageIntervalMs: 60_000 };

/** Pattern writes: [pattern, offset, length]; sub-track, cross-track and whole-track pieces. */
const pieces: Array<[number, number, number]> = [
  [0xa1, 0, 64 * KiB],
  [0xa2, 4096, 512],
  [0xa3, 61440, 12288],
  [0xa4, 5 * MiB + 512, 3 * 512],
  [0xa5, 63 * MiB, 1 * MiB],
];
/** Written with FUA (qemu-io write -f): hardened before the reply, the other path to the store. */
const fuaPiece: [number, number, number] = [0xb1, 10 * MiB, 128 * KiB];
/** Trimmed after being written and hardened: the store must end up with zeros here (our TRIM zeroes). */
const zeroedPiece: [number, number, number] = [0, 20 * MiB + 4096, 8192];

function expectedImage(): Buffer {
  const image = Buffer.alloc(VOLUME_BYTES);
  for (const [p, off, len] of [...pieces, fuaPiece]) image.fill(p, off, off + len);
  image.fill(0xc1, 20 * MiB, 20 * MiB + 64 * KiB);
  image.fill(0, zeroedPiece[1], zeroedPiece[1] + zeroedPiece[2]);
  return image;
}

/**
 * One fio run that writes (or trims) one piece over NBD. fio's nbd engine never sends FLUSH (we
 * set no fsync option), unlike qemu-io, whose NBD driver flushes when it closes the image even with
 * cache=unsafe: so fio is how we leave bytes in the node's cache and nowhere else.
 */
async function fioPiece(uri: string, rw: 'write' | 'trim', offsetBytes: number, lengthBytes: number, pattern = 0): Promise<void> {
  const r = await run('fio', [
    '--name=piece', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, `--offset=${offsetBytes}`, `--size=${lengthBytes}`,
    `--bs=${Math.min(lengthBytes, 1 * MiB)}`, `--buffer_pattern=0x${pattern.toString(16).padStart(2, '0')}`,
    '--verify_state_save=0', '--output-format=json',
  ], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, describeRun(`fio ${rw} ${offsetBytes}+${lengthBytes}`, r));
  const job = parseFioJson(r.stdout).jobs[0]!;
  assert.equal(job.error, 0, describeRun('fio job error', r));
}

/** read -P for every byte range the writes touched, plus the untouched neighbours as zeros. */
function readCommands(): string[] {
  const image = expectedImage();
  const commands: string[] = [];
  // Walk the first 21 MiB and the last MiB in runs of equal bytes, 4 KiB granules at most coarse.
  const spans: Array<[number, number]> = [[0, 21 * MiB], [62 * MiB, 64 * MiB]];
  for (const [from, to] of spans) {
    let start = from;
    while (start < to) {
      const value = image[start]!;
      let end = start + 512;
      while (end < to && image[end] === value) end += 512;
      commands.push(`read -P ${value} ${start} ${end - start}`);
      start = end;
    }
  }
  return commands;
}

async function assertQemuIo(node: NodeProcess, commands: string[]): Promise<void> {
  const r = await qemuIo(node.uri, commands);
  const problem = qemuIoProblem(r);
  assert.equal(problem, null, `${problem}\n--- node stderr\n${node.stderr.slice(-4000)}`);
}

/**
 * First, through qemu-io (which flushes at close), a FUA write and a 0xc1 track that is then
 * hardened; then, through fio (no FLUSH), the pattern pieces and a TRIM inside the hardened 0xc1
 * track. Prove the fio part sits only in the cache: the shutdown path alone must harden it.
 */
async function writeAndCheckUnhardened(node: NodeProcess): Promise<void> {
  await assertQemuIo(node, [
    `write -f -P ${fuaPiece[0]} ${fuaPiece[1]} ${fuaPiece[2]}`,
    `write -P 0xc1 ${20 * MiB} ${64 * KiB}`,
  ]);
  for (const [p, off, len] of pieces) await fioPiece(node.uri, 'write', off, len, p);
  await fioPiece(node.uri, 'trim', zeroedPiece[1], zeroedPiece[2]);
  const status = await node.status();
  assert.ok(status.cache.dirtyTracks > 0, `expected dirty tracks before SIGTERM, status: ${JSON.stringify(status)}`);
  assert.ok(status.exposure.unhardenedBytes > 0, `expected unhardened bytes before SIGTERM, status: ${JSON.stringify(status.exposure)}`);
}

async function stopCleanly(node: NodeProcess): Promise<void> {
  const code = await node.stop();
  assert.equal(code, 0, `node exit code ${code} after SIGTERM; stderr:\n${node.stderr.slice(-4000)}`);
}

describe('file store', () => {
  it('cached writes survive SIGTERM: store file has them, a restarted node reads them back', async () => {
    const dir = makeTempDir();
    const storePath = path.join(dir, 'a.img');
    const config: ConfigSpec = { size: '64MiB', ...lazyHardening, nodes: { a: { store: storePath, cache: '256MiB' } } };

    const first = await startNode({ dir, config });
    // A missing store is created sparse at the volume size.
    const created = statSync(storePath);
    assert.equal(created.size, VOLUME_BYTES);
    assert.ok(created.blocks * 512 < 4 * MiB, `new store should be sparse, has ${created.blocks} blocks`);

    await writeAndCheckUnhardened(first);
    await stopCleanly(first);

    const store = readFileSync(storePath);
    assert.equal(store.length, VOLUME_BYTES);
    const expected = expectedImage();
    if (!store.equals(expected)) {
      const firstDiff = store.findIndex((b, i) => b !== expected[i]);
      assert.fail(`store differs from what was written, first at byte ${firstDiff}: ${store[firstDiff]} instead of ${expected[firstDiff]}`);
    }

    // startNode picks fresh ports: the store, not the addresses, is what carries over.
    const second = await startNode({ dir, config });
    await assertQemuIo(second, readCommands());
    await stopCleanly(second);
  });

  it('FLUSHed and FUA writes survive kill -9 (standalone FLUSH and FUA harden before replying)', async () => {
    const dir = makeTempDir();
    const storePath = path.join(dir, 'a.img');
    const config: ConfigSpec = { size: '64MiB', ...lazyHardening, nodes: { a: { store: storePath, cache: '256MiB' } } };
    const first = await startNode({ dir, config });
    // qemu-io FLUSHes when it closes the image; the FUA write is durable on its own.
    await assertQemuIo(first, [`write -P 0xe1 0 ${128 * KiB}`, 'write -P 0xe2 4096 512', `write -P 0xe3 ${7 * MiB} ${192 * KiB}`]);
    await assertQemuIo(first, [`write -f -P 0xe4 ${9 * MiB + 512} 1024`]);
    const status = await first.status();
    assert.equal(status.exposure.unhardenedBytes, 0, `nothing may be unhardened after FLUSH: ${JSON.stringify(status.exposure)}`);
    await first.kill9();

    const second = await startNode({ dir, config });
    await assertQemuIo(second, [
      'read -P 0xe1 0 4096', 'read -P 0xe2 4096 512', `read -P 0xe1 4608 ${128 * KiB - 4608}`,
      `read -P 0xe3 ${7 * MiB} ${192 * KiB}`, `read -P 0 ${9 * MiB} 512`, `read -P 0xe4 ${9 * MiB + 512} 1024`,
    ]);
    await stopCleanly(second);
  });

  it('writeRuns lands every run of a harden job (one buffer, several, zeros) and rejects only after all settle', async () => {
    const storePath = path.join(makeTempDir(), 'runs.img');
    writeFileSync(storePath, Buffer.alloc(1 * MiB, 0x55));
    const store = await openFileStore(storePath, 1 * MiB);
    const a = Buffer.alloc(4 * KiB, 0xa1);
    const b1 = Buffer.alloc(512, 0xb1);
    const b2 = Buffer.alloc(1536, 0xb2);
    await store.writeRuns([hardenRun(0, 4 * KiB, [a]), hardenRun(64 * KiB, 2 * KiB, [b1, b2]), hardenRun(128 * KiB, 8 * KiB, null)]);
    const bytes = readFileSync(storePath);
    assert.deepEqual(bytes.subarray(0, 4 * KiB), a);
    assert.deepEqual(bytes.subarray(64 * KiB, 64 * KiB + 2 * KiB), Buffer.concat([b1, b2]));
    assert.ok(bytes.subarray(128 * KiB, 136 * KiB).every((x) => x === 0), 'the zero run landed');
    assert.equal(bytes[4 * KiB], 0x55, 'nothing else was touched');
    await store.writeRuns([]);
    // One run fails (its length exceeds its buffer: fs.write throws): one rejection, once the good run landed.
    const c = Buffer.alloc(4 * KiB, 0xc1);
    await assert.rejects(store.writeRuns([hardenRun(16 * KiB, 8 * KiB, [c]), hardenRun(8 * KiB, 4 * KiB, [c])]), /out of range|length/i);
    assert.deepEqual(readFileSync(storePath).subarray(8 * KiB, 12 * KiB), c);
    await store.close();
  });

  it('refuses a store file of the wrong size with one line and exit 1', async () => {
    const dir = makeTempDir();
    const storePath = path.join(dir, 'small.img');
    writeFileSync(storePath, Buffer.alloc(1 * MiB, 0x77));
    const r = await serveExpectingFailure({ size: '64MiB', nodes: { a: { store: storePath } } });
    assert.equal(r.code, 1, `exit code ${r.code}, stderr:\n${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `expected one stderr line, got:\n${r.stderr}`);
    assert.match(lines[0]!, /^twinblock: /);
    assert.match(lines[0]!, /small\.img/);
    assert.match(lines[0]!, /size|bytes/);
    // Never resized or overwritten: a wrong path must not destroy someone's disk image.
    const afterBytes = readFileSync(storePath);
    assert.equal(afterBytes.length, 1 * MiB);
    assert.ok(afterBytes.every((b) => b === 0x77), 'the refused store was modified');
  });
});

describe('remote store over NBD (nbdkit memory)', () => {
  it('cached writes survive SIGTERM into nbdkit, and a restarted node reads them back', async () => {
    const diskPort = await freePort();
    // --exit-with-parent: if this test process dies, the RAM disk goes with it.
    const disk = await startBackground('nbdkit', ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(diskPort), 'memory', '64M'], diskPort);
    const storeUri = `nbd://127.0.0.1:${diskPort}/disk`;
    const dir = makeTempDir();
    const config: ConfigSpec = { size: '64MiB', ...lazyHardening, nodes: { a: { store: storeUri, cache: '256MiB' } } };

    const first = await startNode({ dir, config });
    await writeAndCheckUnhardened(first);
    await stopCleanly(first);

    // Read the remote disk directly, with nobody in between: the node really hardened into it.
    const direct = await qemuIo(storeUri, readCommands());
    assert.equal(qemuIoProblem(direct), null, `${qemuIoProblem(direct)}\n--- nbdkit stderr\n${disk.stderr()}`);

    const second = await startNode({ dir, config });
    await assertQemuIo(second, readCommands());
    // FLUSH on a standalone node hardens: after it, the disk has the new bytes while the node runs.
    await assertQemuIo(second, [`write -P 0xd1 ${30 * MiB} ${64 * KiB}`, 'flush']);
    const whileRunning = await qemuIo(storeUri, [`read -P 0xd1 ${30 * MiB} ${64 * KiB}`]);
    assert.equal(qemuIoProblem(whileRunning), null, qemuIoProblem(whileRunning) ?? '');
    await stopCleanly(second);
    await disk.stop();
  });

  it('a SIGTERM whose store writes fail keeps the node up and trying; once the store recovers it hardens everything and exits 0', { timeout: 90_000 }, async () => {
    const diskPort = await freePort();
    const dir = makeTempDir();
    // nbdkit's error filter fails every write and zero while the trigger file exists.
    const trigger = path.join(dir, 'store-fails');
    const failWhileTriggered = ['pwrite', 'zero'].flatMap((op) => [`error-${op}=EIO`, `error-${op}-rate=100%`, `error-${op}-file=${trigger}`]);
    const disk = await startBackground('nbdkit', ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(diskPort), '--filter=error', 'memory', '64M', ...failWhileTriggered], diskPort);
    const storeUri = `nbd://127.0.0.1:${diskPort}/disk`;
    const config: ConfigSpec = { size: '64MiB', ...lazyHardening, nodes: { a: { store: storeUri, cache: '256MiB' } } };
    const node = await startNode({ dir, config });
    await writeAndCheckUnhardened(node);
    writeFileSync(trigger, '');
    node.child.kill('SIGTERM');
    // It used to fail the stop and exit 1 with the writes still only in its RAM.
    const retrying = (): boolean => logLines(node).some((l) => l.msg?.startsWith('stopping: store write failed while hardening') === true);
    while (!retrying()) {
      if (node.hasExited) assert.fail(`the node exited (code ${(await node.waitExit()).code}) instead of retrying its store; stderr:\n${node.stderr.slice(-4000)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(!node.hasExited, 'a stop whose store fails keeps the node running');
    rmSync(trigger);
    const { code } = await node.waitExit();
    assert.equal(code, 0, `exit code after the store recovered; stderr:\n${node.stderr.slice(-4000)}`);
    const direct = await qemuIo(storeUri, readCommands());
    assert.equal(qemuIoProblem(direct), null, `${qemuIoProblem(direct)}\n--- nbdkit stderr\n${disk.stderr()}`);
    await disk.stop();
  });
});
