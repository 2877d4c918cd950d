// The pure parts of a promotion among three or more nodes (DESIGN.md "Several secondaries",
// steps 4-5): a secondary's position in its primary's write stream (src/core/stream-position.ts)
// and the survey that judges the confirmers' answers (src/core/promotion-survey.ts). The whole
// flow runs in test/several-secondaries.test.ts and its randomized twin; here each verdict and
// each resend set is pinned down on its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../src/core/bitmap.js';
import { PromotionSurvey, type StreamStand } from '../src/core/promotion-survey.js';
import { StreamPosition } from '../src/core/stream-position.js';

const TRACKS = 16;

function bitmap(...tracks: number[]): TrackBitmap {
  const b = new TrackBitmap(TRACKS);
  for (const t of tracks) b.set(t);
  return b;
}

function list(b: TrackBitmap): number[] {
  return Array.from({ length: b.trackCount }, (_, t) => t).filter((t) => b.has(t));
}

function stand(node: string, lastSeq: number, above: number[], valid = true, stream = 7): StreamStand {
  return { node, stream, lastSeq, valid, above: bitmap(...above) };
}

test('stream position: tracks above the held seq are kept, those at or below it go; a resync counts at the seq it reflects', () => {
  const p = new StreamPosition(TRACKS);
  p.resyncStarted(7, 10); // the primary of stream 7 was at seq 10 when it decided
  assert.equal(p.valid, false);
  p.received([1], null, 0); // a resync chunk: reflects writes up to seq 10
  p.received([2], 11, 9);
  p.received([3], 12, 9);
  p.resyncCompleted();
  assert.equal(p.valid, true);
  assert.deepEqual(list(p.aboveTracks()), [1, 2, 3]);
  p.received([4], 13, 11); // every secondary holds seq 11: tracks 1 and 2 are held everywhere
  assert.deepEqual(list(p.aboveTracks()), [3, 4]);
  assert.equal(p.lastSeq, 13);
  p.received([3], 14, 12); // track 3 written again above the held seq: still kept
  assert.deepEqual(list(p.aboveTracks()), [3, 4]);
  p.resyncStarted(7, 13); // the same stream again (a link drop): incomplete until it ends, nothing forgotten
  assert.equal(p.valid, false);
  assert.deepEqual(list(p.aboveTracks()), [3, 4]);
  p.resyncStarted(9, 2); // a new primary's stream starts from nothing
  assert.deepEqual([p.stream, p.lastSeq, list(p.aboveTracks()).length], [9, 2, 0]);
  p.forget();
  assert.deepEqual([p.stream, p.lastSeq, p.valid], [0, 0, false]);
});

test('survey: the proposer is the most current complete copy: it serves; complete copies and the old primary get only what may differ, the rest every track', () => {
  const s = new PromotionSurvey(['c', 'd'], TRACKS);
  assert.equal(s.answered('c', null, stand('c', 40, [5])), false);
  assert.equal(s.answered('d', null, stand('d', 30, [6], false)), true, 'every peer asked answered');
  assert.deepEqual(s.judge(stand('b', 40, [4]), 3), { kind: 'serve' });
  assert.deepEqual(list(s.resendTo('c', 'a')), [4, 5, 6], 'c is a complete copy: the union of the above sets');
  assert.deepEqual(list(s.resendTo('a', 'a')), [4, 5, 6], 'the old primary (a, the stream\'s owner) too: b followed it to the end');
  assert.equal(s.resendTo('d', 'a').count(), TRACKS, 'd was mid-resync: its position vouches for nothing');
  assert.equal(s.resendTo('e', 'a').count(), TRACKS, 'e did not answer');
});

test('survey: another node is more current: fetch from it what may differ (or everything, when the proposer\'s own copy is incomplete)', () => {
  const s = new PromotionSurvey(['c'], TRACKS);
  s.answered('c', null, stand('c', 50, [5, 8]));
  assert.deepEqual(s.judge(stand('b', 40, [4]), 2), { kind: 'fetch', from: 'c', tracks: bitmap(4, 5, 8) });
  assert.equal(s.fetchingFrom, 'c');
  const t = new PromotionSurvey(['c'], TRACKS);
  t.answered('c', null, stand('c', 50, [5]));
  const verdict = t.judge(stand('b', 45, [4], false), 2);
  assert.equal(verdict.kind, 'fetch');
  assert.equal(verdict.kind === 'fetch' ? verdict.tracks.count() : 0, TRACKS, 'b\'s copy is incomplete: it copies every track');
  assert.deepEqual(list(t.resendTo('b', null)), [4, 5], 'after a full fetch b holds what c holds');
  assert.equal(t.resendTo('a', 'a').count(), TRACKS, 'b did not follow a to the end: the old primary gets every track');
});

test('survey: refusals name why: too few confirmed, no complete copy, a mid-resync node holding writes beyond every complete one, or too few that know where they stand', () => {
  const few = new PromotionSurvey(['c', 'd'], TRACKS);
  few.answered('c', 'c still follows primary a: demote it first', null);
  few.answered('d', 'its link went down', null);
  const v1 = few.judge(stand('b', 10, []), 3);
  assert.equal(v1.kind, 'refuse');
  assert.match(v1.kind === 'refuse' ? v1.error : '', /only 1 of the 3 nodes needed confirmed the promotion \(c: c still follows primary a: demote it first; d: its link went down\)/);

  const none = new PromotionSurvey(['c'], TRACKS);
  none.answered('c', null, stand('c', 20, [], false));
  const v2 = none.judge(stand('b', 10, [], false), 2);
  assert.match(v2.kind === 'refuse' ? v2.error : '', /no reachable node is known to hold every write of the last primary/);

  const beyond = new PromotionSurvey(['c'], TRACKS);
  beyond.answered('c', null, stand('c', 60, [3], false));
  const v3 = beyond.judge(stand('b', 50, [2]), 2);
  assert.match(v3.kind === 'refuse' ? v3.error : '', /c was still being resynced when the primary went away and holds writes no complete copy has/);

  // A confirmer that restarted since (stream 0) cannot say what it held; with it the nodes asked
  // may miss every node that held a write (simulator, three nodes, seeds 38 and 944).
  const restarted = new PromotionSurvey(['c'], TRACKS);
  restarted.answered('c', null, stand('c', 0, [], false, 0));
  const v4 = restarted.judge(stand('b', 50, [2]), 2);
  assert.match(v4.kind === 'refuse' ? v4.error : '', /only 1 of the 2 nodes needed know where they stand in the last primary's writes \(c restarted since\)/);
  const resyncing = new PromotionSurvey(['c'], TRACKS);
  resyncing.answered('c', null, stand('c', 40, [], false));
  assert.deepEqual(resyncing.judge(stand('b', 50, [2]), 2), { kind: 'serve' }, 'c is being resynced but knows its place: b is the most current');

  const older = new PromotionSurvey(['c'], TRACKS);
  older.answered('c', null, stand('c', 90, [3], true, 5)); // complete, but of an older stream
  assert.deepEqual(older.judge(stand('b', 10, [2]), 2), { kind: 'serve' }, 'seqs of another stream are not compared');
  assert.equal(older.resendTo('c', null).count(), TRACKS, 'c followed an older primary: every track');
});
