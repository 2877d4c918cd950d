// Unit and property tests of the pure track cache and hardening policy. A reference model (a plain
// byte array of the volume) says what every read must return; a second array plays the store, so
// we can check that hardening moves exactly the right bytes and that a read merges cache and store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TrackCache, type HardenJob, type ReadPlan } from '../src/core/cache.js';
import { Hardener } from '../src/core/hardening.js';

const KiB = 1024;

function applyJob(store: Buffer, job: HardenJob): void {
  for (const run of job.runs) {
    if (run.data === null) store.fill(0, run.offsetBytes, run.offsetBytes + run.lengthBytes);
    else run.data.copy(store, run.offsetBytes);
  }
}

function readThrough(cache: TrackCache, store: Buffer, offsetBytes: number, lengthBytes: number, hostRead = false): Buffer {
  const plan = cache.beginRead(offsetBytes, lengthBytes, hostRead);
  return cache.finishRead(plan, storeBytesOf(plan, store));
}

/** The store runs a read would need now (the plan is cancelled: it leaves no pins behind). */
function storeRunsFor(cache: TrackCache, offsetBytes: number, lengthBytes: number): { offsetBytes: number; lengthBytes: number }[] {
  const plan = cache.beginRead(offsetBytes, lengthBytes);
  cache.cancelRead(plan);
  return plan.storeRuns;
}

/** What the store holds for a plan's runs, now (copies: the store may change before finishRead). */
function storeBytesOf(plan: ReadPlan, store: Buffer): Buffer[] {
  return plan.storeRuns.map((r) => Buffer.from(store.subarray(r.offsetBytes, r.offsetBytes + r.lengthBytes)));
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
  assert.equal(storeRunsFor(cache, 4096, 512).length, 0);
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

test('a store write spans a clean gap of at most 32 KiB, in its line or into the next track of the job, when the cache holds every block of it', () => {
  const cache = new TrackCache({ volumeSizeBytes: 1024 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 1024 * KiB, rangeTracks: 4 });
  const store = Buffer.alloc(1024 * KiB);
  const model = Buffer.alloc(1024 * KiB);
  const write = (offsetBytes: number, data: Buffer): void => {
    assert.equal(cache.write(offsetBytes, data, 0), true);
    data.copy(model, offsetBytes);
  };
  const t = (track: number, kib: number): number => track * 64 * KiB + kib * KiB;
  // Once hardened, the cache holds tracks 0, 1, 4 and 5 whole, track 6 in [4, 8) KiB only, and
  // nothing of tracks 2 and 7.
  for (const track of [0, 1, 4, 5]) write(t(track, 0), pattern(64 * KiB, track));
  write(t(6, 4), pattern(4 * KiB, 6));
  hardenAll(cache, store);
  assert.deepEqual(store, model);

  const dirtied: [number, number][] = [
    [0, 0], [0, 12], // a valid gap of 8 KiB: spanned
    [0, 56], // a gap of 40 KiB: not
    [1, 0], // 4 KiB into the next track, valid: spanned
    [2, 0], [2, 8], // gaps the cache does not hold: not spanned
    [4, 0], [4, 36], // a gap of exactly 32 KiB: spanned
    [5, 28], // 24 KiB of track 4 and 28 of track 5: 52 KiB, not spanned
    [6, 0], // the last 32 KiB of track 5: spanned
    [6, 12], // a gap valid in [4, 8) KiB only: not spanned
    [6, 56], // 40 KiB: not
    [7, 4], // track 6's last 4 KiB and track 7's first 4 are not in the cache: not spanned
  ];
  for (const [i, [track, kib]] of dirtied.entries()) write(t(track, kib), pattern(4 * KiB, 10 + i));
  const job = cache.takeOldestHardenJob(1 << 30)!;
  assert.deepEqual(job.runs.map((r) => [r.offsetBytes / KiB, r.lengthBytes / KiB]), [
    [t(0, 0) / KiB, 16], [t(0, 56) / KiB, 12], [t(2, 0) / KiB, 4], [t(2, 8) / KiB, 4], [t(4, 0) / KiB, 40],
    [t(5, 28) / KiB, 40], [t(6, 12) / KiB, 4], [t(6, 56) / KiB, 4], [t(7, 4) / KiB, 4],
  ]);
  assert.equal(job.bytes, dirtied.length * 4 * KiB, 'the job counts the dirty bytes, not the clean ones it spans');
  for (const run of job.runs) assert.deepEqual(run.data, model.subarray(run.offsetBytes, run.offsetBytes + run.lengthBytes));
  applyJob(store, job);
  cache.completeHarden(job.id);
  assert.deepEqual(store, model);
  assert.equal(cache.stats(0).dirtyTracks, 0);
  cache.checkInvariants();
});

test('a job never spans into a neighbouring track it does not hold', () => {
  const cache = new TrackCache({ volumeSizeBytes: 256 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 256 * KiB, rangeTracks: 4 });
  const store = Buffer.alloc(256 * KiB);
  cache.write(0, pattern(128 * KiB, 1), 0);
  hardenAll(cache, store);
  cache.write(60 * KiB, pattern(4 * KiB, 2), 0);
  cache.write(68 * KiB, pattern(4 * KiB, 3), 0);
  const first = cache.takeHardenJob([0], 1 << 30)!;
  assert.deepEqual(first.runs.map((r) => [r.offsetBytes / KiB, r.lengthBytes / KiB]), [[60, 4]]);
  const second = cache.takeHardenJob([0, 1], 1 << 30)!;
  assert.deepEqual(second.runs.map((r) => [r.offsetBytes / KiB, r.lengthBytes / KiB]), [[68, 4]], 'track 0 is in the first job');
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

test('property: reads (in flight across writes and hardening, filling the cache) always return the last write; hardening everything makes the store equal the truth', () => {
  const volumeBytes = 16 * 8 * KiB; // 16 tracks of 8 KiB
  const op = fc.oneof(
    fc.record({ kind: fc.constant('write' as const), block: fc.nat(255), blocks: fc.integer({ min: 1, max: 40 }), seed: fc.nat(255) }),
    fc.record({ kind: fc.constant('zero' as const), block: fc.nat(255), blocks: fc.integer({ min: 1, max: 64 }) }),
    fc.record({ kind: fc.constant('take' as const), track: fc.nat(15), count: fc.integer({ min: 1, max: 6 }) }),
    fc.record({ kind: fc.constant('complete' as const), which: fc.nat(), fail: fc.boolean() }),
    fc.record({ kind: fc.constant('read' as const), block: fc.nat(255), blocks: fc.integer({ min: 1, max: 64 }) }),
    // A host read split around its store I/O, so writes and hardening run while it is in flight.
    fc.record({ kind: fc.constant('begin' as const), block: fc.nat(255), blocks: fc.integer({ min: 1, max: 64 }), host: fc.boolean() }),
    fc.record({ kind: fc.constant('finish' as const), which: fc.nat() }),
    // The next host read of a stream (where the last host read ended): it reads ahead.
    fc.record({ kind: fc.constant('next' as const), blocks: fc.integer({ min: 1, max: 8 }) }),
  );
  let totalReadAheads = 0;
  fc.assert(fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
    const cache = new TrackCache({ volumeSizeBytes: volumeBytes, trackSizeBytes: 8 * KiB, capacityBytes: 48 * KiB, rangeTracks: 4 });
    const truth = Buffer.alloc(volumeBytes);
    const store = Buffer.alloc(volumeBytes);
    const jobs: HardenJob[] = [];
    // What each job's runs held when it was taken: a harden job's snapshot must not change while
    // it is in flight, whatever is written to its lines meanwhile (copy-on-write).
    const taken = new Map<number, string>();
    const snapshotOf = (job: HardenJob): string => job.runs.map((r) => (r.data === null ? `z${r.lengthBytes}` : r.data.toString('hex'))).join('|');
    const reads: { plan: ReadPlan; parts: Buffer[] }[] = [];
    const finishRead = (i: number): void => {
      const { plan, parts } = reads.splice(i, 1)[0]!;
      const end = plan.offsetBytes + plan.lengthBytes;
      assert.deepEqual(cache.finishRead(plan, parts), truth.subarray(plan.offsetBytes, end), 'a read returned other bytes than the last writes');
    };
    let streamAt = 0;
    let readAheads = 0; // reads whose store runs went past the request
    for (const o of ops) {
      if (o.kind === 'begin' || o.kind === 'next') {
        const off = o.kind === 'begin' ? o.block * 512 : streamAt % volumeBytes;
        const len = Math.min(o.blocks * 512, volumeBytes - off);
        const plan = cache.beginRead(off, len, o.kind === 'next' || o.host);
        if (plan.storeRuns.some((r) => r.offsetBytes + r.lengthBytes > off + len)) readAheads++;
        if (plan.fill) streamAt = off + len;
        reads.push({ plan, parts: storeBytesOf(plan, store) });
      } else if (o.kind === 'finish') {
        if (reads.length > 0) finishRead(o.which % reads.length);
      } else if (o.kind === 'write' || o.kind === 'zero' || o.kind === 'read') {
        const off = o.block * 512;
        const len = Math.min(o.blocks * 512, volumeBytes - off);
        if (o.kind === 'read') {
          assert.deepEqual(readThrough(cache, store, off, len, true), truth.subarray(off, off + len));
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
    while (reads.length > 0) finishRead(0);
    for (const job of jobs) { applyJob(store, job); cache.completeHarden(job.id); }
    hardenAll(cache, store);
    assert.deepEqual(store, truth);
    assert.equal(cache.stats(0).dirtyTracks, 0);
    totalReadAheads += readAheads;
  }), { numRuns: 300 });
  assert.ok(totalReadAheads > 10, `only ${totalReadAheads} reads read ahead in 300 runs`);
});

test('a host read that misses keeps its blocks: the next read of them needs no store I/O', () => {
  const cache = new TrackCache({ volumeSizeBytes: 1024 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 256 * KiB, rangeTracks: 4 });
  const store = pattern(1024 * KiB, 5);
  // Not a host read (a resync's scan): nothing stays.
  readThrough(cache, store, 64 * KiB, 4 * KiB);
  assert.equal(storeRunsFor(cache, 64 * KiB, 4 * KiB).length, 1);
  assert.deepEqual(readThrough(cache, store, 64 * KiB, 4 * KiB, true), store.subarray(64 * KiB, 68 * KiB));
  const hit = cache.beginRead(64 * KiB, 4 * KiB);
  assert.equal(hit.storeRuns.length, 0, 'the second read is served from RAM');
  assert.deepEqual(cache.finishRead(hit, []), store.subarray(64 * KiB, 68 * KiB));
  // Only the blocks read: the rest of the track still comes from the store.
  assert.deepEqual(storeRunsFor(cache, 64 * KiB, 8 * KiB), [{ offsetBytes: 68 * KiB, lengthBytes: 4 * KiB }]);
  const stats = cache.stats(0);
  assert.equal(stats.dirtyTracks, 0, 'read data is clean');
  assert.equal(stats.cachedTracks, 1);
  cache.checkInvariants();
});

test('reads fill only free room; their lines are evicted before lines hosts wrote; a waiting write keeps fills off', () => {
  const cache = new TrackCache({ volumeSizeBytes: 1024 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 256 * KiB, rangeTracks: 4 });
  const store = Buffer.alloc(1024 * KiB);
  // Two written (then hardened, clean) lines, then two lines filled by reads: the cache is full.
  cache.write(0, pattern(64 * KiB, 1), 0);
  cache.write(64 * KiB, pattern(64 * KiB, 2), 0);
  hardenAll(cache, store);
  readThrough(cache, store, 128 * KiB, 64 * KiB, true);
  readThrough(cache, store, 192 * KiB, 64 * KiB, true);
  assert.equal(cache.stats(0).cachedTracks, 4);
  // A new write needs two lines: the read lines go, the written ones stay.
  assert.equal(cache.write(512 * KiB, pattern(128 * KiB, 3), 0), true);
  assert.equal(storeRunsFor(cache, 0, 128 * KiB).length, 0, 'the written lines are still cached');
  assert.equal(storeRunsFor(cache, 128 * KiB, 4 * KiB).length, 1, 'the read line was evicted');
  // The cache is now all dirty: a host read fills nothing, and a refused write keeps fills off.
  cache.write(0, pattern(128 * KiB, 4), 0);
  assert.equal(cache.write(256 * KiB, pattern(4 * KiB, 5), 0), false, 'back-pressure: no room');
  readThrough(cache, store, 320 * KiB, 4 * KiB, true);
  assert.equal(cache.stats(0).cachedTracks, 4, 'a read took no room from the waiting write');
  cache.checkInvariants();
});

test('a read evicts nothing to fill: a full cache of clean lines stays as it is', () => {
  const cache = new TrackCache({ volumeSizeBytes: 1024 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 256 * KiB, rangeTracks: 4 });
  const store = Buffer.alloc(1024 * KiB);
  cache.write(0, pattern(256 * KiB, 1), 0);
  hardenAll(cache, store);
  assert.deepEqual(readThrough(cache, store, 768 * KiB, 4 * KiB, true), store.subarray(768 * KiB, 772 * KiB));
  assert.equal(storeRunsFor(cache, 768 * KiB, 4 * KiB).length, 1, 'no fill without free room');
  assert.equal(storeRunsFor(cache, 0, 256 * KiB).length, 0, 'the written lines stayed');
  cache.checkInvariants();
});

test('a sequential host read reads ahead once per half window; a write during the read wins over its stale store bytes', () => {
  const cache = new TrackCache({ volumeSizeBytes: 4096 * KiB, trackSizeBytes: 64 * KiB, capacityBytes: 2048 * KiB, rangeTracks: 4 });
  const store = pattern(4096 * KiB, 7);
  readThrough(cache, store, 0, 4 * KiB, true);
  const second = cache.beginRead(4 * KiB, 4 * KiB, true);
  assert.deepEqual(second.storeRuns, [{ offsetBytes: 4 * KiB, lengthBytes: 4 * KiB + 256 * KiB }], 'the request and 256 KiB ahead in one store read');
  const parts = storeBytesOf(second, store);
  // A host write lands in the readahead span while the store read runs, is hardened, and the cache
  // is cycled through: the pinned readahead tracks stay, so their stale store bytes fill nothing.
  cache.write(260 * KiB, pattern(4 * KiB, 8), 0);
  for (let t = 16; t < 64; t++) {
    hardenAll(cache, store);
    assert.ok(cache.write(t * 64 * KiB, pattern(64 * KiB, t), 0));
  }
  // Room again (zeroed tracks hold no data), so the read's store bytes do fill.
  hardenAll(cache, store);
  assert.ok(cache.writeZeroes(16 * 64 * KiB, 32 * 64 * KiB, 0));
  assert.deepEqual(cache.finishRead(second, parts), store.subarray(4 * KiB, 8 * KiB));
  assert.deepEqual(readThrough(cache, store, 260 * KiB, 4 * KiB), pattern(4 * KiB, 8), 'the write, not the store bytes read before it');
  // The next requests of the stream are served from RAM until half the window is used.
  let storeReads = 0;
  for (let off = 8 * KiB; off < 512 * KiB; off += 4 * KiB) {
    const plan = cache.beginRead(off, 4 * KiB, true);
    if (plan.storeRuns.length > 0) storeReads++;
    const expected = off === 260 * KiB ? pattern(4 * KiB, 8) : store.subarray(off, off + 4 * KiB);
    assert.deepEqual(cache.finishRead(plan, storeBytesOf(plan, store)), expected);
  }
  assert.ok(storeReads >= 2 && storeReads <= 5, `126 sequential 4 KiB reads took ${storeReads} store reads`);
  cache.checkInvariants();
});
