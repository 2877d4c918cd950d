// The hardening events that wait for an fdatasync (src/core/replica-durable.ts): a range's
// "destaged" event belongs to the link's cycle it was hardened for, and must never end a cycle of a
// later link — not even when the fdatasync covering it failed and is retried after the reset (a
// COMPLETE for the new cycle would let the peer clear an old bitmap whose tracks are still only in
// this node's RAM; seed 570 was the same hole through the destage waits).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DurableNotices } from '../src/core/replica-durable.js';

test('durable notices: one sync at a time covers everything queued before it', () => {
  const durable = new DurableNotices();
  assert.equal(durable.canStart, false);
  durable.add([1, 2], [{ peer: 'b', range: 0 }]);
  durable.start(10);
  durable.add([3], []);
  assert.equal(durable.canStart, false, 'a second sync waits for the first');
  assert.equal(durable.owns(10), true);
  assert.deepEqual(durable.synced(true), { tracks: [1, 2], ranges: [{ peer: 'b', range: 0 }] });
  assert.equal(durable.canStart, true);
  durable.start(11);
  assert.deepEqual(durable.synced(true), { tracks: [3], ranges: [] });
  assert.throws(() => durable.synced(true), /never started/);
});

test('durable notices: a failed sync leaves its events for the next one', () => {
  const durable = new DurableNotices();
  durable.add([1], [{ peer: 'b', range: 2 }]);
  durable.start(1);
  assert.equal(durable.synced(false), null);
  durable.start(2);
  assert.deepEqual(durable.synced(true), { tracks: [1], ranges: [{ peer: 'b', range: 2 }] });
});

test('durable notices: range events of a dead link\'s cycles never reach a later link\'s, even after a failed sync', () => {
  const durable = new DurableNotices();
  durable.add([], [{ peer: 'b', range: 5 }]); // range 5 destaged for link 1's cycle
  durable.start(1);
  durable.resetCycles('b'); // link 1 dropped, link 2 up: range 5 may be in a new cycle of link 2
  durable.add([7], []);
  assert.equal(durable.synced(false), null); // the fdatasync covering range 5 failed
  durable.start(2);
  assert.deepEqual(durable.synced(true), { tracks: [7], ranges: [] }, 'range 5 must not end link 2\'s cycle');
});

test('durable notices: one peer\'s link reset drops only that peer\'s range events', () => {
  // Each peer's cycles are its own (DESIGN.md "Several secondaries"): c's link going down must
  // not cost b's cycle its destage, waiting or in flight.
  const durable = new DurableNotices();
  durable.add([1], [{ peer: 'b', range: 3 }, { peer: 'c', range: 3 }]);
  durable.start(1);
  durable.add([], [{ peer: 'b', range: 4 }, { peer: 'c', range: 4 }]);
  durable.resetCycles('c');
  assert.deepEqual(durable.synced(true), { tracks: [1], ranges: [{ peer: 'b', range: 3 }] });
  durable.start(2);
  assert.deepEqual(durable.synced(true), { tracks: [], ranges: [{ peer: 'b', range: 4 }] });
  durable.add([], [{ peer: 'c', range: 5 }]);
  durable.start(3);
  assert.deepEqual(durable.synced(true), { tracks: [], ranges: [{ peer: 'c', range: 5 }] }, 'c\'s new link\'s cycles count again');
});

test('durable notices: a sync in flight when another fdatasync failed vouches for nothing, even if it succeeds', () => {
  // Linux reports a lost writeback once, to one fdatasync: the other, in flight at the same time,
  // may succeed without covering the dropped sectors (simulator, seed 20023000).
  const durable = new DurableNotices();
  durable.add([4], [{ peer: 'b', range: 1 }]);
  durable.start(1);
  durable.syncFinished(false, 100, 50); // a host FLUSH's fdatasync failed meanwhile
  durable.taintInFlight();
  assert.equal(durable.syncFinished(true, 110, 50), 0);
  assert.equal(durable.synced(true), null, 'its success counts as a failure: no notice');
  assert.equal(durable.retryDue(150), true, 'after the backoff');
  durable.start(2);
  assert.deepEqual(durable.synced(true), { tracks: [4], ranges: [{ peer: 'b', range: 1 }] }, 'the next clean sync covers them');
});
