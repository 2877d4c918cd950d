// The volume shell over an in-memory store with a write latency we control: back-pressure, FLUSH
// and FUA durability, the maxDirtyAgeMs bound and shutdown hardening, observed on the store bytes.
// Also: the shell's time comes only from the clock port it is given (what lets the simulator run it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Clock, TimerHandle } from '../src/node/ports.js';
import { Volume } from '../src/node/volume.js';
import { KiB, MemoryStore } from './helpers/memory-pair.js';

function makeVolume(store: MemoryStore, overrides: { cacheBytes?: number; maxDirtyAgeMs?: number; clock?: Clock; onFatal?: (err: unknown) => void } = {}): Volume {
  return new Volume({
    name: 'v', description: 'test', sizeBytes: store.sizeBytes, trackSizeBytes: 64 * KiB,
    cacheBytes: overrides.cacheBytes ?? 1024 * KiB, rangeTracks: 4,
    hardening: { maxDirtyAgeMs: overrides.maxDirtyAgeMs ?? 60_000, destageIntervalMs: 60_000, rangeDirtyThresholdTracks: 1000 },
    store,
    ...(overrides.clock === undefined ? {} : { clock: overrides.clock }),
    ...(overrides.onFatal === undefined ? {} : { onFatal: overrides.onFatal }),
  });
}

/** A clock the test moves by hand: the shell's timers fire only when it advances. */
class ManualClock implements Clock {
  private now = 0;
  private timers: { atMs: number; fn: () => void; live: boolean }[] = [];

  nowMs(): number {
    return this.now;
  }

  setTimer(delayMs: number, fn: () => void): TimerHandle {
    const timer = { atMs: this.now + delayMs, fn, live: true };
    this.timers.push(timer);
    return { cancel: () => { timer.live = false; } };
  }

  /** When the live timers fire, in time order. */
  pendingAtMs(): number[] {
    return this.timers.filter((t) => t.live).map((t) => t.atMs).sort((x, y) => x - y);
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in time order. */
  advance(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.live && t.atMs <= end).sort((x, y) => x.atMs - y.atMs)[0];
      if (due === undefined) break;
      due.live = false;
      this.now = due.atMs;
      due.fn();
    }
    this.now = end;
    this.timers = this.timers.filter((t) => t.live);
  }
}

/** Lets the store's real I/O finish, firing the shell's zero-delay timers meanwhile, until `done`. */
async function settle(clock: ManualClock, done: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !done(); i++) {
    clock.advance(0);
    await sleep(1);
  }
}

function fill(lengthBytes: number, byte: number): Buffer {
  return Buffer.alloc(lengthBytes, byte);
}

test('writes are answered from RAM: the store is untouched until FLUSH, which hardens and syncs', async () => {
  const store = new MemoryStore(1024 * KiB, 5);
  const volume = makeVolume(store);
  await volume.write(0, fill(4 * KiB, 0xaa), false);
  assert.equal(store.writes, 0, 'no disk on the write path');
  assert.deepEqual(await volume.read(0, 4 * KiB), fill(4 * KiB, 0xaa));
  await volume.flush();
  assert.deepEqual(store.synced.subarray(0, 4 * KiB), fill(4 * KiB, 0xaa));
  await volume.close();
});

test('FUA hardens the written tracks before it answers', async () => {
  const store = new MemoryStore(1024 * KiB, 5);
  const volume = makeVolume(store);
  await volume.write(128 * KiB, fill(8 * KiB, 0x5c), true);
  assert.deepEqual(store.synced.subarray(128 * KiB, 136 * KiB), fill(8 * KiB, 0x5c));
  await volume.close();
});

test('a full cache makes writes wait for hardening, in order, and loses nothing', async () => {
  const store = new MemoryStore(4096 * KiB, 3);
  const volume = makeVolume(store, { cacheBytes: 256 * KiB }); // four tracks
  const writes: Promise<void>[] = [];
  for (let i = 0; i < 64; i++) writes.push(volume.write(i * 64 * KiB, fill(64 * KiB, i + 1), false));
  await sleep(1);
  assert.ok(volume.stats().waitingWrites > 0, 'writers are held back, not failed');
  assert.ok(volume.stats().chargedBytes <= 256 * KiB, 'memory stays within the cache size');
  await Promise.all(writes);
  for (let i = 0; i < 64; i++) assert.deepEqual(await volume.read(i * 64 * KiB, 64 * KiB), fill(64 * KiB, i + 1));
  await volume.close();
  for (let i = 0; i < 64; i++) assert.equal(store.synced[i * 64 * KiB + 100], i + 1);
});

test('no track stays dirty longer than maxDirtyAgeMs', async () => {
  const store = new MemoryStore(1024 * KiB, 1);
  const volume = makeVolume(store, { maxDirtyAgeMs: 200 });
  await volume.write(0, fill(4 * KiB, 7), false);
  await sleep(400);
  assert.equal(volume.stats().dirtyTracks, 0);
  assert.deepEqual(store.bytes.subarray(0, 4 * KiB), fill(4 * KiB, 7));
  await volume.close();
});

test('the age bound runs on the clock the shell is given, not on wall time', async () => {
  const store = new MemoryStore(1024 * KiB, 1);
  const clock = new ManualClock();
  const volume = makeVolume(store, { maxDirtyAgeMs: 60_000, clock });
  await volume.write(0, fill(4 * KiB, 7), false);
  clock.advance(25_000);
  await settle(clock, () => store.writes > 0);
  assert.equal(store.writes, 0, 'dirty for less than half the age bound (clock time): not hardened yet');
  assert.equal(volume.stats().oldestDirtyAgeMs, 25_000, 'the age is measured on the given clock');
  clock.advance(10_000); // 35 s of clock time, past half the bound: the age sweep hardens it
  await settle(clock, () => volume.stats().dirtyTracks === 0);
  assert.equal(volume.stats().dirtyTracks, 0);
  assert.deepEqual(store.bytes.subarray(0, 4 * KiB), fill(4 * KiB, 7));
  let closed = false;
  void volume.close().then(() => { closed = true; });
  await settle(clock, () => closed);
  assert.ok(closed, 'close finishes on the given clock too');
});

test('the shell wakes when the core next needs it, not on a poll: never while idle', async () => {
  const store = new MemoryStore(1024 * KiB, 1);
  const clock = new ManualClock();
  const volume = makeVolume(store, { maxDirtyAgeMs: 10_000, clock });
  await settle(clock, () => false);
  assert.deepEqual(clock.pendingAtMs(), [], 'an idle node arms no timer');
  clock.advance(60_000);
  await volume.write(0, fill(4 * KiB, 7), false);
  // Dirty at t=60 s: the age sweep is due at half the bound (t=65 s), or the destage scan before it.
  const [next] = clock.pendingAtMs();
  assert.ok(next !== undefined && next > 60_000 && next <= 65_000, `next wake-up at ${next} ms`);
  clock.advance(5_000);
  await settle(clock, () => volume.stats().dirtyTracks === 0);
  assert.equal(volume.stats().dirtyTracks, 0, 'hardened by its deadline');
  await settle(clock, () => false);
  assert.deepEqual(clock.pendingAtMs(), [], 'idle again: no timer');
  let closed = false;
  void volume.close().then(() => { closed = true; });
  await settle(clock, () => closed);
});

test('unaligned writes and zeroes go through read-modify-write and read back exactly', async () => {
  const store = new MemoryStore(1024 * KiB, 1);
  store.bytes.fill(0x33);
  const volume = makeVolume(store);
  await volume.write(100, fill(1000, 0x44), false);
  await volume.writeZeroes(300, 10, false);
  const expected = fill(2048, 0x33);
  expected.fill(0x44, 100, 1100);
  expected.fill(0, 300, 310);
  assert.deepEqual(await volume.read(0, 2048), expected);
  await volume.close();
  assert.deepEqual(store.synced.subarray(0, 2048), expected);
});

test('a failing store makes FLUSH answer EIO, keeps the data cached, and recovers', async () => {
  const store = new MemoryStore(1024 * KiB, 1);
  const volume = makeVolume(store);
  await volume.write(0, fill(4 * KiB, 9), false);
  store.failWrites = true;
  await assert.rejects(volume.flush(), (err: Error & { errno?: string }) => err.errno === 'EIO');
  assert.deepEqual(await volume.read(0, 4 * KiB), fill(4 * KiB, 9), 'data is still served from cache');
  store.failWrites = false;
  await sleep(1100); // the retry pause after a failure
  await volume.flush();
  assert.deepEqual(store.synced.subarray(0, 4 * KiB), fill(4 * KiB, 9));
  await volume.close();
});

test('a write larger than the whole cache goes in pieces and completes', async () => {
  const store = new MemoryStore(4096 * KiB, 1);
  const volume = makeVolume(store, { cacheBytes: 256 * KiB });
  const big = Buffer.alloc(1024 * KiB);
  for (let i = 0; i < big.length; i++) big[i] = i % 251;
  await volume.write(0, big, false);
  await volume.writeZeroes(1024 * KiB, 2048 * KiB, false);
  assert.deepEqual(await volume.read(0, 1024 * KiB), big);
  await volume.close();
  assert.deepEqual(store.synced.subarray(0, 1024 * KiB), big);
});

test('a core that throws stops the volume and is reported as fatal, not swallowed by the caller', async () => {
  // An assertion in the core means its state can no longer be trusted: the shell must not take
  // another event (an admin request or a socket handler catching the error would serve on).
  const store = new MemoryStore(1024 * KiB);
  const fatal: unknown[] = [];
  const volume = makeVolume(store, { onFatal: (err) => fatal.push(err) });
  await volume.write(0, Buffer.alloc(4 * KiB, 1), false);
  const core = (volume as unknown as { core: { hostFlush: () => void } }).core;
  core.hostFlush = () => { throw new Error('assertion failed: test'); };
  await assert.rejects(async () => volume.flush(), /assertion failed: test/);
  assert.equal(fatal.length, 1, 'reported once');
  assert.match(String(fatal[0]), /assertion failed: test/);
  const writesBefore = store.writes;
  const late = volume.write(64 * KiB, Buffer.alloc(4 * KiB, 2), true);
  const outcome = await Promise.race([late.then(() => 'answered', () => 'answered'), sleep(50).then(() => 'no event taken')]);
  assert.equal(outcome, 'no event taken');
  assert.equal(store.writes, writesBefore, 'nothing reaches the store after the failure');
});

test('a store read error in the readahead does not fail the host read; one in the request does', async () => {
  const store = new MemoryStore(1024 * KiB, 1);
  for (let i = 0; i < store.bytes.length; i++) store.bytes[i] = (i * 13) & 0xff;
  const volume = makeVolume(store);
  assert.deepEqual(await volume.read(0, 4 * KiB), store.bytes.subarray(0, 4 * KiB));
  // The next read continues the stream: it reads ahead, and that store read fails once.
  store.failReads = 1;
  assert.deepEqual(await volume.read(4 * KiB, 4 * KiB), store.bytes.subarray(4 * KiB, 8 * KiB));
  assert.equal(store.failReads, 0, 'the failure was injected');
  assert.ok(volume.readCounters.readaheadBytes > 0, 'the failed read was one that read ahead');
  // A read that does not read ahead (not sequential) gets the error.
  store.failReads = 1;
  await assert.rejects(volume.read(512 * KiB, 4 * KiB), /injected read failure/);
  await volume.close();
});
