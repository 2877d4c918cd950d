// Two Volumes (the replica core in its shell) joined by an in-memory ordered link: the mirrored
// write path (Fig. 4), reads on the secondary, the three trackers draining both records, FLUSH/FUA
// policies, initial sync under concurrent writes, and back-pressure on a small secondary cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Volume } from '../src/node/volume.js';
import type { TrackerKind } from '../src/core/notifier.js';
import type { FlushPolicy } from '../src/core/replica-types.js';

import { inSync, KiB, makePair as makeNodes, MiB, pattern, waitFor, type MemoryNode, type MemoryStore } from './helpers/memory-pair.js';

interface Pair { primary: Volume; secondary: Volume; pStore: MemoryStore; sStore: MemoryStore; linkBytes: { data: number; notice: number }; connect(): void; a: MemoryNode; b: MemoryNode }

function makePair(opts: { tracker?: TrackerKind; flush?: FlushPolicy; sizeBytes?: number; secondaryCacheBytes?: number; storeDelayMs?: number; maxDirtyAgeMs?: number } = {}): Pair {
  const { a, b, link } = makeNodes(opts);
  return {
    get primary() { return a.volume; }, get secondary() { return b.volume; }, pStore: a.store, sStore: b.store, linkBytes: link.bytes,
    connect: () => link.connect(), a, b,
  };
}

async function connectAndSync(pair: Pair): Promise<void> {
  pair.connect();
  await waitFor('in-sync', () => inSync(pair.a, pair.b));
}

test('a write acknowledged by the primary is in the secondary cache, with no disk on the path', { timeout: 20_000 }, async () => {
  const pair = makePair({ maxDirtyAgeMs: 60_000 });
  await connectAndSync(pair);
  await waitFor('sync data hardened', () => pair.primary.stats().dirtyTracks + pair.secondary.stats().dirtyTracks === 0);
  let open = (): void => undefined;
  const gate = new Promise<void>((resolve) => { open = resolve; });
  pair.pStore.gate = gate;
  pair.sStore.gate = gate;
  const writesBefore = pair.pStore.writes + pair.sStore.writes;
  await pair.primary.write(128 * KiB, pattern(4 * KiB, 1), false); // would hang if it waited for a disk
  assert.equal(pair.pStore.writes + pair.sStore.writes, writesBefore, 'no store write on the write path');
  open();
  assert.deepEqual(await pair.secondary.read(128 * KiB, 4 * KiB), pattern(4 * KiB, 1), 'the secondary serves the new data');
  await assert.rejects(pair.secondary.write(0, pattern(512, 2), false), (err: Error & { errno?: string }) => err.errno === 'EPERM');
  await pair.primary.close();
  await pair.secondary.close();
});

for (const tracker of ['destage-scan', 'toggle-counter', 'selective'] as TrackerKind[]) {
  test(`${tracker}: overlapping concurrent writes end byte-identical; both records drain`, async () => {
    const pair = makePair({ tracker });
    await connectAndSync(pair);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      const offset = ((i * 7919) % 60) * 64 * KiB + (i % 5) * 4 * KiB;
      writes.push(pair.primary.write(offset, pattern(12 * KiB, i), false));
      if (i % 17 === 0) writes.push(pair.primary.writeZeroes(offset + 2 * KiB, 8 * KiB, false));
    }
    await Promise.all(writes);
    assert.ok(pair.primary.core.record.unitedCount() > 0, 'the primary marked what the secondary holds in RAM');
    await waitFor('records drained', () => pair.primary.stats().dirtyTracks === 0 && pair.secondary.stats().dirtyTracks === 0
      && pair.primary.core.record.unitedCount() === 0 && pair.secondary.core.record.unitedCount() === 0);
    assert.ok(pair.primary.core.counters.noticesSent > 0 && pair.secondary.core.counters.noticesSent > 0, 'both directions sent notices');
    assert.ok(pair.linkBytes.notice < 0.01 * pair.linkBytes.data, `notice bytes ${pair.linkBytes.notice} under 1% of data bytes ${pair.linkBytes.data}`);
    await pair.primary.close();
    await pair.secondary.close();
    assert.ok(pair.pStore.synced.equals(pair.sStore.synced), 'stores are byte-identical');
  });
}

test('flush: disk hardens on both nodes before FLUSH and FUA answer', async () => {
  const pair = makePair({ flush: 'disk', maxDirtyAgeMs: 60_000 });
  await connectAndSync(pair);
  await pair.primary.write(0, pattern(8 * KiB, 3), false);
  await pair.primary.flush();
  assert.deepEqual(pair.pStore.synced.subarray(0, 8 * KiB), pattern(8 * KiB, 3));
  assert.deepEqual(pair.sStore.synced.subarray(0, 8 * KiB), pattern(8 * KiB, 3));
  await pair.primary.write(1 * MiB, pattern(4 * KiB, 4), true);
  assert.deepEqual(pair.sStore.synced.subarray(1 * MiB, 1 * MiB + 4 * KiB), pattern(4 * KiB, 4));
  await pair.primary.close();
  await pair.secondary.close();
});

test('flush: memory answers FLUSH without touching either disk', async () => {
  const pair = makePair({ flush: 'memory', maxDirtyAgeMs: 60_000 });
  await connectAndSync(pair);
  await pair.primary.write(0, pattern(8 * KiB, 3), false);
  await pair.primary.flush();
  assert.equal(pair.pStore.synced.subarray(0, 8 * KiB).equals(pattern(8 * KiB, 3)), false, 'not hardened: it is in both caches');
  await pair.primary.close();
  await pair.secondary.close();
});

test('initial sync: a new secondary gets every byte while the primary keeps taking writes', async () => {
  const pair = makePair();
  for (let i = 0; i < 64; i++) await pair.primary.write(i * 64 * KiB, pattern(64 * KiB, i), false); // degraded: write-through
  pair.connect();
  const during: Promise<void>[] = [];
  for (let i = 0; i < 40; i++) during.push(pair.primary.write(((i * 13) % 64) * 64 * KiB + 512, pattern(1024, 100 + i), false));
  await Promise.all(during);
  await waitFor('in-sync', () => pair.primary.peerState === 'in-sync' && pair.secondary.peerState === 'in-sync');
  assert.equal(pair.primary.counters.syncBytesSent, 4 * MiB);
  await pair.primary.close();
  await pair.secondary.close();
  assert.ok(pair.pStore.synced.equals(pair.sStore.synced), 'stores are byte-identical after the sync');
});

test('a small secondary cache holds the stream back (back-pressure) and loses nothing', async () => {
  const pair = makePair({ secondaryCacheBytes: 256 * KiB, storeDelayMs: 3 });
  await connectAndSync(pair);
  const pausesBefore = pair.b.receivingPauses;
  // The secondary's shell, sampled as each peer message is handed to it: how many peer writes wait
  // for room in its cache (the waitingWrites its status and metrics report).
  const secondary = pair.secondary;
  const deliver = secondary.linkMessage.bind(secondary);
  let peakWaiting = 0;
  secondary.linkMessage = (peer, msg) => {
    deliver(peer, msg);
    peakWaiting = Math.max(peakWaiting, secondary.stats().waitingWrites);
  };
  const writes: Promise<void>[] = [];
  for (let i = 0; i < 48; i++) writes.push(pair.primary.write(i * 64 * KiB, pattern(64 * KiB, i + 7), false));
  writes.push(pair.primary.write(3 * MiB, pattern(1 * MiB, 99), false)); // bigger than the whole secondary cache
  await Promise.all(writes);
  // 4 MiB through a 256 KiB cache: peer writes queued, and the shell stopped reading the link.
  assert.ok(peakWaiting > 0, 'peer writes waited for room in the secondary cache');
  assert.ok(pair.b.receivingPauses > pausesBefore, `the secondary paused its link (setReceiving(false)) ${pair.b.receivingPauses - pausesBefore} times`);
  assert.equal(secondary.core.inboundBlocked, false, 'and resumed once the stream drained');
  for (let i = 0; i < 48; i++) assert.deepEqual(await secondary.read(i * 64 * KiB, 64 * KiB), pattern(64 * KiB, i + 7), `track ${i} on the secondary`);
  assert.deepEqual(await secondary.read(3 * MiB, 1 * MiB), pattern(1 * MiB, 99), 'the 1 MiB write on the secondary');
  await pair.primary.close();
  await pair.secondary.close();
  assert.ok(pair.pStore.synced.equals(pair.sStore.synced), 'stores are byte-identical');
  assert.ok(pair.sStore.synced.subarray(3 * MiB).equals(pattern(1 * MiB, 99)), 'and hold the writes');
});
