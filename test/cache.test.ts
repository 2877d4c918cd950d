// Unit and property tests of the pure track cache and hardening policy. A reference model (a plain
// byte array of the volume) says what every read must return; a second array plays the store, so
// we can check that hardening moves exactly the right bytes and that a read merges cache and store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TrackCache, type HardenJob } from '../src/core/cache.js';
import { Hardener } from '../src/core/hardening.js';

const KiB = 1024;

function applyJob(store: Buffer, job: HardenJob): void {
  for (const run of job.runs) {
    if (run.data === null) store.fill(0, run.offsetBytes, run.offsetBytes + run.lengthBytes);
    else run.data.copy(store, run.offsetBytes);
  }
}

function readThrough(cache: TrackCache, store: Buffer, offsetBytes: number, lengthBytes: number): Buffer {
  const plan = cache.beginRead(offsetBytes, lengthBytes);
  const parts = plan.storeRuns.map((r) => Buffer.from(store.subarray(r.offsetBytes, r.offsetBytes + r.lengthBytes)));
  return cache.finishRead(plan, parts);
}

function hardenAll(cache: TrackCache, store: Buffer): void {
  for (;;) {
    const job = cache.takeOldestHardenJob(1 << 30);
    if (job === null) return;
    applyJob(store, job);
    cache.completeHarden(job.id);
  }
}

function pattern(lengthBytes: number, seed: number): Buffer {
  const b = Buffer.alloc(lengthBytes);
  for (let i = 0; i < lengthBytes; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b;
}

test('a sub-track write never reads the store, and a read merges cache and store', () => {
  const cache = new TrackCache({ volumeSizeBytes: 1024 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 256 * KiB, rangeTracks: 4 });
  const store = pattern(1024 * KiB, 1);
  cache.write(4096, pattern(512, 2), 0);
  // The read of the written block needs nothing from the store.
  assert.equal(cache.beginRead(4096, 512).storeRuns.length, 0);
  const plan = cache.beginRead(0, 64 * KiB);
  assert.deepEqual(plan.storeRuns, [{ offsetBytes: 0, lengthBytes: 4096 }, { offsetBytes: 4608, lengthBytes: 64 * KiB - 4608 }]);
  cache.cancelRead(plan);
  const merged = readThrough(cache, store, 0, 64 * KiB);
  const expected = Buffer.from(store.subarray(0, 64 * KiB));
  pattern(512, 2).copy(expected, 4096);
  assert.deepEqual(merged, expected);
  cache.checkInvariants();
});

test('hardening coalesces adjacent dirty runs across tracks into one store write', () => {
  const cache = new TrackCache({ volumeSizeBytes: 1024 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 512 * KiB, rangeTracks: 4 });
  // Tail of track 0 + head of track 1, plus a separate run in track 3.
  cache.write(60 * KiB, pattern(8 * KiB, 3), 0);
  cache.write(200 * KiB, pattern(4 * KiB, 4), 0);
  const job = cache.takeOldestHardenJob(1 << 30);
  assert.ok(job);
  assert.deepEqual(job.runs.map((r) => [r.offsetBytes, r.lengthBytes]), [[60 * KiB, 8 * KiB], [200 * KiB, 4 * KiB]]);
  assert.deepEqual(job.runs[0]!.data, pattern(8 * KiB, 3));
  cache.completeHarden(job.id);
  assert.equal(cache.stats(0).dirtyTracks, 0);
  cache.checkInvariants();
});

test('a write during hardening keeps its blocks dirty and restarts the age from the rewrite', () => {
  const cache = new TrackCache({ volumeSizeBytes: 256 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 256 * KiB, rangeTracks: 4 });
  const store = Buffer.alloc(256 * KiB);
  cache.write(0, pattern(4 * KiB, 5), 100);
  const job = cache.takeHardenJob([0], 1 << 30)!;
  cache.write(8 * KiB, pattern(512, 6), 900); // lands while the job is in flight
  applyJob(store, job);
  cache.completeHarden(job.id);
  const stats = cache.stats(1000);
  assert.equal(stats.dirtyTracks, 1);
  assert.equal(stats.dirtyBytes, 512);
  assert.equal(stats.oldestDirtyAgeMs, 100);
  assert.deepEqual(store.subarray(0, 4 * KiB), pattern(4 * KiB, 5));
  cache.checkInvariants();
});

test('writes to a line being hardened copy it once; the job keeps its snapshot; the store ends right', () => {
  const cache = new TrackCache({ volumeSizeBytes: 256 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 256 * KiB, rangeTracks: 4 });
  const store = Buffer.alloc(256 * KiB);
  cache.write(0, pattern(8 * KiB, 1), 0);
  const job = cache.takeHardenJob([0], 1 << 30)!;
  cache.write(0, pattern(4 * KiB, 2), 1); // copies the line: the job's bytes stay pattern 1
  cache.write(4 * KiB, pattern(4 * KiB, 3), 2); // goes to the copy
  assert.deepEqual(job.runs[0]!.data, pattern(8 * KiB, 1));
  applyJob(store, job);
  cache.completeHarden(job.id);
  // The job's buffer went back to the pool; a new line may take it, and the line's bytes stay right.
  cache.write(64 * KiB, pattern(64 * KiB, 4), 3);
  const expected = Buffer.concat([pattern(4 * KiB, 2), pattern(4 * KiB, 3)]);
  assert.deepEqual(readThrough(cache, store, 0, 8 * KiB), expected);
  hardenAll(cache, store);
  assert.deepEqual(store.subarray(0, 8 * KiB), expected);
  assert.deepEqual(store.subarray(64 * KiB, 128 * KiB), pattern(64 * KiB, 4));
  cache.checkInvariants();
});

test('a full cache refuses writes (back-pressure) until hardening frees lines, and never loses data', () => {
  const cache = new TrackCache({ volumeSizeBytes: 1024 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 128 * KiB, rangeTracks: 4 });
  const store = Buffer.alloc(1024 * KiB);
  assert.equal(cache.write(0, pattern(64 * KiB, 1), 0), true);
  assert.equal(cache.write(64 * KiB, pattern(64 * KiB, 2), 0), true);
  assert.equal(cache.write(128 * KiB, pattern(64 * KiB, 3), 0), false, 'no room: must wait');
  assert.equal(cache.stats(0).dirtyTracks, 2, 'a refused write changes nothing');
  hardenAll(cache, store);
  assert.equal(cache.write(128 * KiB, pattern(64 * KiB, 3), 0), true, 'clean lines are evicted for room');
  assert.deepEqual(readThrough(cache, store, 0, 192 * KiB), Buffer.concat([pattern(64 * KiB, 1), pattern(64 * KiB, 2), pattern(64 * KiB, 3)]));
  cache.checkInvariants();
});

test('TRIM/WRITE_ZEROES of whole tracks cost no data memory and harden as zero runs', () => {
  const cache = new TrackCache({ volumeSizeBytes: 64 * 64 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 256 * KiB, rangeTracks: 8 });
  const store = pattern(64 * 64 * KiB, 9);
  assert.equal(cache.writeZeroes(0, 64 * 64 * KiB, 0), true, '4 MiB of zeros fits a 256 KiB cache');
  assert.ok(cache.stats(0).chargedBytes <= 256 * KiB);
  assert.deepEqual(readThrough(cache, store, 100 * KiB, 8 * KiB), Buffer.alloc(8 * KiB));
  const job = cache.takeOldestHardenJob(1 << 30)!;
  assert.deepEqual(job.runs.map((r) => [r.offsetBytes, r.lengthBytes, r.data]), [[0, 64 * 64 * KiB, null]]);
  applyJob(store, job);
  cache.completeHarden(job.id);
  assert.deepEqual(store, Buffer.alloc(64 * 64 * KiB));
});

test('a read in flight pins its tracks: a line hardened and evicted meanwhile still overlays', () => {
  const cache = new TrackCache({ volumeSizeBytes: 512 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 128 * KiB, rangeTracks: 4 });
  const store = Buffer.alloc(512 * KiB);
  cache.write(0, pattern(4 * KiB, 1), 0);
  const plan = cache.beginRead(0, 64 * KiB);
  const staleStoreBytes = plan.storeRuns.map((r) => Buffer.from(store.subarray(r.offsetBytes, r.offsetBytes + r.lengthBytes)));
  hardenAll(cache, store);
  // Fill the cache so eviction is wanted; track 0 is pinned and must survive.
  cache.write(64 * KiB, pattern(64 * KiB, 2), 0);
  hardenAll(cache, store);
  cache.write(128 * KiB, pattern(64 * KiB, 3), 0);
  const out = cache.finishRead(plan, staleStoreBytes);
  assert.deepEqual(out.subarray(0, 4 * KiB), pattern(4 * KiB, 1));
  cache.checkInvariants();
});

test('hardener: FLUSH waits for every earlier write, FUA only for its tracks, age and threshold trigger', () => {
  const cache = new TrackCache({ volumeSizeBytes: 1024 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 1024 * KiB, rangeTracks: 4 });
  const store = Buffer.alloc(1024 * KiB);
  const hardener = new Hardener(cache, { maxDirtyAgeMs: 1000, destageIntervalMs: 60_000, rangeDirtyThresholdTracks: 3, maxJobBytes: 64 * KiB, pressureFraction: 0.9 }, 0);
  cache.write(0, pattern(4 * KiB, 1), 0);
  cache.write(512 * KiB, pattern(4 * KiB, 2), 0);
  assert.equal(hardener.nextJob(10), null, 'nothing is due yet');
  hardener.addWaiter(1, cache.sequence, [8]); // FUA of the second write (track 8)
  const fuaJob = hardener.nextJob(10)!;
  assert.equal(fuaJob.reason, 'flush');
  assert.deepEqual(fuaJob.job.tracks, [8]);
  applyJob(store, fuaJob.job);
  cache.completeHarden(fuaJob.job.id);
  assert.deepEqual(hardener.takeSatisfiedWaiters(), [1]);
  // Age: at half of maxDirtyAgeMs the remaining dirty track is hardened.
  hardener.tick(600);
  const aged = hardener.nextJob(600)!;
  assert.equal(aged.reason, 'age');
  assert.deepEqual(aged.job.tracks, [0]);
  cache.completeHarden(aged.job.id);
  // Threshold: three dirty tracks in range 1 (tracks 4..7).
  for (const t of [4, 5, 6]) cache.write(t * 64 * KiB, pattern(512, t), 700);
  hardener.noteWrite([4, 5, 6]);
  const thresholdJob = hardener.nextJob(700)!;
  assert.equal(thresholdJob.reason, 'threshold');
  assert.deepEqual(thresholdJob.job.tracks, [4, 5, 6], 'the whole range is destaged as one job');
});

test('property: reads always return the last write; hardening everything makes the store equal the truth', () => {
  const volumeBytes = 16 * 8 * KiB; // 16 tracks of 8 KiB
  const op = fc.oneof(
    fc.record({ kind: fc.constant('write' as const), block: fc.nat(255), blocks: fc.integer({ min: 1, max: 40 }), seed: fc.nat(255) }),
    fc.record({ kind: fc.constant('zero' as const), block: fc.nat(255), blocks: fc.integer({ min: 1, max: 64 }) }),
    fc.record({ kind: fc.constant('take' as const), track: fc.nat(15), count: fc.integer({ min: 1, max: 6 }) }),
    fc.record({ kind: fc.constant('complete' as const), which: fc.nat(), fail: fc.boolean() }),
    fc.record({ kind: fc.constant('read' as const), block: fc.nat(255), blocks: fc.integer({ min: 1, max: 64 }) }),
  );
  fc.assert(fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
    const cache = new TrackCache({ volumeSizeBytes: volumeBytes, trackSizeBytes: 8 * KiB, capacityBytes: 48 * KiB, rangeTracks: 4 });
    const truth = Buffer.alloc(volumeBytes);
    const store = Buffer.alloc(volumeBytes);
    const jobs: HardenJob[] = [];
    // What each job's runs held when it was taken: a harden job's snapshot must not change while
    // it is in flight, whatever is written to its lines meanwhile (copy-on-write).
    const taken = new Map<number, string>();
    const snapshotOf = (job: HardenJob): string => job.runs.map((r) => (r.data === null ? `z${r.lengthBytes}` : r.data.toString('hex'))).join('|');
    for (const o of ops) {
      if (o.kind === 'write' || o.kind === 'zero' || o.kind === 'read') {
        const off = o.block * 512;
        const len = Math.min(o.blocks * 512, volumeBytes - off);
        if (o.kind === 'read') {
          assert.deepEqual(readThrough(cache, store, off, len), truth.subarray(off, off + len));
        } else if (o.kind === 'write') {
          const data = pattern(len, o.seed);
          if (cache.write(off, data, 0)) data.copy(truth, off);
        } else if (cache.writeZeroes(off, len, 0)) {
          truth.fill(0, off, off + len);
        }
      } else if (o.kind === 'take') {
        const tracks = Array.from({ length: o.count }, (_, i) => (o.track + i) % 16);
        const job = cache.takeHardenJob(tracks, 1 << 30);
        if (job) { jobs.push(job); taken.set(job.id, snapshotOf(job)); }
      } else if (jobs.length > 0) {
        const job = jobs.splice(o.which % jobs.length, 1)[0]!;
        assert.equal(snapshotOf(job), taken.get(job.id), `harden job ${job.id}'s snapshot changed in flight`);
        if (o.fail) cache.abandonHarden(job.id);
        else { applyJob(store, job); cache.completeHarden(job.id); }
      }
      cache.checkInvariants();
    }
    for (const job of jobs) { applyJob(store, job); cache.completeHarden(job.id); }
    hardenAll(cache, store);
    assert.deepEqual(store, truth);
    assert.equal(cache.stats(0).dirtyTracks, 0);
  }), { numRuns: 300 });
});
