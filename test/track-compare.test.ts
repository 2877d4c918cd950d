// The plan of one checksum comparison (src/core/track-compare.ts, issue 14 items 4-5): batches,
// the window and rate, and the rule that a track written while its batch is open is never judged
// on those checksums (compared again by a verify, sent by a resync).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TrackBitmap } from '../src/core/bitmap.js';
import { TRACK_SUM_BYTES } from '../src/core/link-codec.js';
import { TrackCompare, type CompareBatch, type ComparePurpose } from '../src/core/track-compare.js';

const TRACK = 4096;

/** Checksums of a batch where track t's sum is `value(t)`. */
function sums(batch: CompareBatch, value: (track: number) => number): Uint8Array {
  const out = new Uint8Array(batch.trackCount * TRACK_SUM_BYTES);
  for (let i = 0; i < batch.trackCount; i++) out.fill(value(batch.firstTrack + i), i * TRACK_SUM_BYTES, (i + 1) * TRACK_SUM_BYTES);
  return out;
}

function compareOf(purpose: ComparePurpose, trackCount: number, opts: { batchTracks?: number; windowBatches?: number; rate?: number; tracks?: number[] } = {}): TrackCompare {
  const set = new TrackBitmap(trackCount);
  if (opts.tracks === undefined) set.setAll();
  else for (const t of opts.tracks) set.set(t);
  const pace = { batchTracks: opts.batchTracks ?? 4, windowBatches: opts.windowBatches ?? 2, rateBytesPerSec: opts.rate ?? 1e12 };
  return new TrackCompare(purpose, set, TRACK, trackCount * TRACK, pace, 0, 3);
}

/** Runs a comparison to its end: `remote(t)` is the peer's sum of track t, ours is t; `during` may write while a batch is open. */
function runAll(c: TrackCompare, remote: (t: number) => number, during: (batch: CompareBatch, round: number) => number[] = () => []): number {
  let id = 1;
  let rounds = 0;
  for (; !c.complete && rounds < 1000; rounds++) {
    const due = c.batchesDue(rounds * 1000, () => id++);
    for (const batch of due) {
      c.written(during(batch, rounds));
      assert.equal(c.localSums(batch.id, sums(batch, (t) => t)), true);
      assert.equal(c.remoteSums(batch.id, sums(batch, remote)), true);
    }
  }
  return rounds;
}

const listed = (bitmap: TrackBitmap): number[] => [...Array(bitmap.trackCount).keys()].filter((t) => bitmap.has(t));

test('equal checksums are skipped, differing ones reported, and a side that could not read makes its batch differ', () => {
  const c = compareOf('verify', 20);
  runAll(c, (t) => (t === 3 || t === 17 ? 255 : t));
  assert.deepEqual(listed(c.differing), [3, 17]);
  assert.deepEqual(c.progress(), { totalBytes: 20 * TRACK, doneBytes: 20 * TRACK, comparedBytes: 20 * TRACK, differingTracks: 2, unverifiedTracks: 0 });

  const failed = compareOf('resync', 8);
  const [first, second] = failed.batchesDue(0, (() => { let n = 1; return () => n++; })());
  failed.localSums(first!.id, sums(first!, (t) => t));
  failed.remoteSums(first!.id, null); // the peer's read failed
  failed.localSums(second!.id, new Uint8Array(3)); // a malformed answer counts as failed
  failed.remoteSums(second!.id, sums(second!, (t) => t));
  assert.ok(failed.complete);
  assert.deepEqual(listed(failed.differing), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.equal(failed.localSums(99, null), false, 'an unknown batch is ignored');
});

test('a track written while its batch is open: a verify compares it again later; a resync sends it', () => {
  // Track 5 is written once, while its first batch is open: its sums then are not judged, even
  // though they differ (the peer read it before the write reached it).
  const verify = compareOf('verify', 16);
  let writes = 0;
  runAll(verify, (t) => (t === 5 && writes === 1 ? 0 : t), (batch) => (batch.firstTrack <= 5 && 5 < batch.firstTrack + batch.trackCount && writes++ === 0 ? [5] : []));
  assert.deepEqual(listed(verify.differing), [], 'the second compare of track 5 found it equal');
  assert.equal(verify.progress().comparedBytes, 17 * TRACK, 'track 5 was compared twice');

  // Written every time it is compared: after maxRechecks (3) more compares it is unverified, not differing.
  const busy = compareOf('verify', 16);
  runAll(busy, (t) => (t === 9 ? 0 : t), (batch) => (batch.firstTrack <= 9 && 9 < batch.firstTrack + batch.trackCount ? [9] : []));
  assert.deepEqual(listed(busy.unverified), [9]);
  assert.deepEqual(listed(busy.differing), []);
  assert.equal(busy.progress().comparedBytes, 19 * TRACK);

  // A resync sends a track written meanwhile, whatever its sums said.
  const resync = compareOf('resync', 16);
  runAll(resync, (t) => t, (batch) => (batch.firstTrack === 0 ? [2, 40] : []));
  assert.deepEqual(listed(resync.differing), [2]);
});

test('batches walk only the given tracks, within the window and the rate', () => {
  const c = compareOf('resync', 64, { batchTracks: 4, windowBatches: 2, rate: 8 * TRACK, tracks: [1, 2, 3, 4, 5, 6, 20, 40, 63] });
  assert.equal(c.totalBytes, 9 * TRACK);
  let id = 1;
  const answer = (batches: CompareBatch[]): void => {
    for (const b of batches) {
      c.localSums(b.id, sums(b, (t) => t));
      c.remoteSums(b.id, sums(b, (t) => t));
    }
  };
  const first = c.batchesDue(0, () => id++);
  assert.deepEqual(first.map((b) => [b.firstTrack, b.trackCount]), [[1, 4], [5, 2]], 'contiguous runs, at most batchTracks, window of 2');
  assert.deepEqual(c.batchesDue(0, () => id++), [], 'the window is full');
  assert.equal(c.nextBatchAtMs(), null, 'it waits for answers, not for time');
  answer(first);
  // The burst allowance is 8 tracks (batchTracks x window): 20 and 40 fit now, 63 only once the rate allows it.
  const second = c.batchesDue(0, () => id++);
  assert.deepEqual(second.map((b) => b.firstTrack), [20, 40]);
  answer(second);
  assert.deepEqual(c.batchesDue(0, () => id++), []);
  const at = c.nextBatchAtMs();
  assert.ok(at !== null && at > 0, `the last batch waits for the rate: ${at}`);
  const last = c.batchesDue(at!, () => id++);
  assert.deepEqual(last.map((b) => b.firstTrack), [63]);
  answer(last);
  assert.ok(c.complete);
  assert.deepEqual(listed(c.differing), []);
});
