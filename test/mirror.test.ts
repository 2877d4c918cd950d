// Two Volumes (the replica core in its shell) joined by an in-memory ordered link: the mirrored
// write path (Fig. 4), reads on the secondary, the three trackers draining both records, FLUSH/FUA
// policies, initial sync under concurrent writes, and back-pressure on a small secondary cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Volume } from '../src/node/volume.js';
import type { LinkMessage } from '../src/core/replica-types.js';
import type { TrackerKind } from '../src/core/notifier.js';
import type { FlushPolicy } from '../src/core/replica-types.js';
import type { Store } from '../src/store/store.js';

const KiB = 1024;
const MiB = 1024 * KiB;

class MemoryStore implements Store {
  readonly description = 'memory';
  readonly bytes: Buffer;
  synced: Buffer;
  writes = 0;
  constructor(readonly sizeBytes: number, private readonly writeDelayMs: number) {
    this.bytes = Buffer.alloc(sizeBytes);
    this.synced = Buffer.alloc(sizeBytes);
  }
  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return Buffer.from(this.bytes.subarray(offsetBytes, offsetBytes + lengthBytes));
  }
  /** While set, store writes wait for it: proves an ack did not wait for any disk. */
  gate: Promise<void> | null = null;
  async write(offsetBytes: number, data: Uint8Array): Promise<void> {
    await sleep(this.writeDelayMs);
    if (this.gate) await this.gate;
    this.bytes.set(data, offsetBytes);
    this.writes++;
  }
  async writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    await this.write(offsetBytes, Buffer.alloc(lengthBytes));
  }
  async sync(): Promise<void> {
    this.synced = Buffer.from(this.bytes);
  }
  async close(): Promise<void> {}
}

interface Pair { primary: Volume; secondary: Volume; pStore: MemoryStore; sStore: MemoryStore; linkBytes: { data: number; notice: number }; connect(): void }

/** An ordered in-memory link: each direction delivers in send order, asynchronously. */
function makePair(opts: { tracker?: TrackerKind; flush?: FlushPolicy; sizeBytes?: number; secondaryCacheBytes?: number; storeDelayMs?: number; maxDirtyAgeMs?: number } = {}): Pair {
  const sizeBytes = opts.sizeBytes ?? 4 * MiB;
  const pStore = new MemoryStore(sizeBytes, opts.storeDelayMs ?? 1);
  const sStore = new MemoryStore(sizeBytes, opts.storeDelayMs ?? 1);
  const linkBytes = { data: 0, notice: 0 };
  let connected = false;
  const queues: [LinkMessage[], LinkMessage[]] = [[], []];
  const volumes: Volume[] = [];
  const deliver = (to: number) => {
    const msg = queues[to]!.shift();
    if (msg && connected) volumes[to]!.linkMessage(msg);
  };
  const sender = (to: number) => (msg: LinkMessage) => {
    if (!connected) return true;
    if (msg.type === 'notice') linkBytes.notice += 16 + msg.ranges.length * 4;
    else if (msg.type === 'write' || msg.type === 'syncData') linkBytes.data += 32 + msg.data.length;
    queues[to]!.push(msg);
    setImmediate(() => deliver(to));
    return true;
  };
  const common = {
    sizeBytes, trackSizeBytes: 64 * KiB, rangeTracks: 4,
    hardening: { maxDirtyAgeMs: opts.maxDirtyAgeMs ?? 200, destageIntervalMs: 50, rangeDirtyThresholdTracks: 2 },
  };
  const mirror = (role: 'primary' | 'secondary', to: number) => ({
    peer: role === 'primary' ? 's' : 'p', role, tracker: opts.tracker ?? 'destage-scan', flush: opts.flush ?? 'memory', degraded: 'write-through' as const,
    syncRateBytesPerSec: 1024 * MiB, send: sender(to), setReceiving: () => undefined,
  });
  const primary = new Volume({ ...common, node: 'p', name: 'v', description: 'p', cacheBytes: 1 * MiB, store: pStore, mirror: mirror('primary', 1) });
  const secondary = new Volume({ ...common, node: 's', name: 'v', description: 's', cacheBytes: opts.secondaryCacheBytes ?? 1 * MiB, store: sStore, mirror: mirror('secondary', 0) });
  volumes.push(primary, secondary);
  return {
    primary, secondary, pStore, sStore, linkBytes,
    connect() {
      connected = true;
      secondary.linkEstablished();
      primary.linkEstablished();
    },
  };
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function pattern(lengthBytes: number, seed: number): Buffer {
  const b = Buffer.alloc(lengthBytes);
  for (let i = 0; i < lengthBytes; i++) b[i] = (seed * 131 + i) % 251;
  return b;
}

async function connectAndSync(pair: Pair): Promise<void> {
  pair.connect();
  await waitFor('in-sync', () => pair.primary.peerState === 'in-sync' && pair.secondary.peerState === 'in-sync');
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
  const writes: Promise<void>[] = [];
  for (let i = 0; i < 48; i++) writes.push(pair.primary.write(i * 64 * KiB, pattern(64 * KiB, i + 7), false));
  writes.push(pair.primary.write(3 * MiB, pattern(1 * MiB, 99), false)); // bigger than the whole secondary cache
  await Promise.all(writes);
  await pair.primary.close();
  await pair.secondary.close();
  assert.ok(pair.pStore.synced.equals(pair.sStore.synced), 'stores are byte-identical');
});
