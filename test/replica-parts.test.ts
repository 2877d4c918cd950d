// Parts the replica core owns (issue 10 item 4), each with its own state and no calls back into
// the core: the two-phase promotion's bookkeeping (src/core/replica-promotion.ts) and a resync
// source's plan (src/core/resync.ts ResyncPlan).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../src/core/bitmap.js';
import { PromotionHandshake } from '../src/core/replica-promotion.js';
import { ResyncPlan } from '../src/core/resync.js';
import { ReplicaCore } from '../src/core/replica.js';
import { PAIR_QUORUM_DEFAULTS } from '../src/core/replica-types.js';

const history = [{ epoch: 1, node: 'a' }, { epoch: 2, node: 'b' }];

test('promotion: the promoteReq goes out only once the proposal is durable, and the ack ends it', () => {
  const promotion = new PromotionHandshake();
  promotion.propose({ id: 7, requestId: 3, history }, 40);
  assert.equal(promotion.pending, true);
  assert.throws(() => promotion.propose({ id: 8, requestId: 4, history }, 41), /one promotion at a time/);
  assert.deepEqual(promotion.persisted(39), { promoteReq: null, promoteAck: null });
  assert.deepEqual(promotion.persisted(40), { promoteReq: { id: 7, history }, promoteAck: null });
  assert.deepEqual(promotion.persisted(40), { promoteReq: null, promoteAck: null }, 'sent once');
  assert.equal(promotion.answer(6), null, 'an ack for another proposal is ignored');
  assert.equal(promotion.answer(7)?.requestId, 3);
  assert.equal(promotion.pending, false);
  assert.equal(promotion.end(), null);
});

test('promotion: a confirmation goes out once the adopted history is durable, unless its link dropped', () => {
  const promotion = new PromotionHandshake();
  promotion.confirmWhenDurable(5, 99, 3, 'b');
  assert.deepEqual(promotion.persisted(5), { promoteReq: null, promoteAck: { id: 99, epoch: 3, peer: 'b' } });
  promotion.confirmWhenDurable(6, 100, 4, 'b');
  promotion.confirmWhenDurable(8, 101, 4, 'c');
  promotion.dropConfirmations('b');
  assert.deepEqual(promotion.persisted(6), { promoteReq: null, promoteAck: null });
  assert.deepEqual(promotion.persisted(8), { promoteReq: null, promoteAck: { id: 101, epoch: 4, peer: 'c' } }, 'another peer\'s link did not drop');
  promotion.propose({ id: 1, requestId: 2, history }, 7);
  assert.equal(promotion.end(), 2, 'a cancelled proposal names its request');
  assert.deepEqual(promotion.persisted(7), { promoteReq: null, promoteAck: null }, 'nothing sent for a cancelled proposal');
});

function plan(tracks: number[], pace = { chunkBytes: 128, windowChunks: 2, rateBytesPerSec: 1e9 }): ResyncPlan {
  const set = new TrackBitmap(8);
  for (const t of tracks) set.set(t);
  return new ResyncPlan(set, 64, 8 * 64, pace, 0, 1, false);
}

test('resync plan: coalesced chunks within the window of reads in flight', () => {
  const p = plan([0, 1, 2, 5]);
  assert.equal(p.totalBytes, 4 * 64);
  assert.deepEqual(p.readsDue(0), [{ offsetBytes: 0, lengthBytes: 128 }, { offsetBytes: 128, lengthBytes: 64 }]);
  assert.deepEqual(p.readsDue(0), [], 'the window is full');
  p.chunkSent(128);
  assert.deepEqual(p.readsDue(0), [{ offsetBytes: 320, lengthBytes: 64 }]);
  p.chunkSent(64);
  p.chunkSent(64);
  assert.equal(p.complete, true);
  assert.throws(() => p.chunkSent(64), /never read/);
});

test('resync plan: a failed read is issued again after the pause, counted once', () => {
  const p = plan([0, 1]);
  const [chunk] = p.readsDue(0);
  p.chunkFailed(chunk!, 50);
  assert.deepEqual(p.readsDue(49), [], 'paused');
  assert.deepEqual(p.readsDue(50), [chunk]);
  p.chunkSent(chunk!.lengthBytes);
  assert.equal(p.complete, true);
  assert.equal(p.progress(1000).doneBytes, 128);
});

test('resync plan: the rate caps what is issued beyond the first window', () => {
  const p = plan([0, 1, 2, 3, 4, 5, 6, 7], { chunkBytes: 64, windowChunks: 1, rateBytesPerSec: 64 });
  assert.equal(p.readsDue(0).length, 1);
  p.chunkSent(64);
  assert.deepEqual(p.readsDue(0), [], 'the first window is spent and no time has passed');
  assert.equal(p.readsDue(1000).length, 1, 'a second at 64 B/s allows one more chunk');
  p.chunkSent(64);
  assert.deepEqual(p.readsDue(1000), []);
});

const KiB = 1024;

/**
 * A fresh pair node (a primary, b secondary) with a 1 MiB volume, a 4-track cache of 64 KiB
 * tracks, and by default no hardening at all: whatever enters the cache stays there.
 */
/** The one peer of a pair's core. */
const peerOf = (core: ReplicaCore): string => core.settings.peers[0] ?? 'no peer';

function smallCore(role: 'primary' | 'secondary', maxHardensInFlight = 0): ReplicaCore {
  return new ReplicaCore({
    node: role === 'primary' ? 'a' : 'b', peers: [role === 'primary' ? 'b' : 'a'], role, mirrored: true, tracker: 'destage-scan', flush: 'memory', degraded: 'write-back', quorum: PAIR_QUORUM_DEFAULTS,
    geometry: { volumeSizeBytes: 1024 * KiB, trackSizeBytes: 64 * KiB, rangeTracks: 4, capacityBytes: 256 * KiB },
    hardening: { maxDirtyAgeMs: 1e9, destageIntervalMs: 1e9, rangeDirtyThresholdTracks: 100, maxJobBytes: 1024 * KiB, pressureFraction: 1 },
    maxHardensInFlight, syncChunkBytes: 64 * KiB, syncWindowChunks: 1, syncRateBytesPerSec: 1e9, storeRetryMs: 100,
  }, 0, null);
}

test('inbound stream: a held-back peer write dropped whole (this node was promoted) leaves no applied bytes behind for the next one', () => {
  // A secondary with a 4-track cache gets a 2-track write, then a 4-track write that goes in half
  // (the rest waits for room). A forced promotion makes it ignore the rest of that write; demoted
  // again, the next peer write must land from its first byte, not from where the dropped one
  // stopped (its bytes were acked: skipping them would lose an acknowledged write).
  const core = smallCore('secondary');
  core.linkEstablished(peerOf(core), 0);
  core.linkMessage(peerOf(core), { type: 'write', seq: 1, heldSeq: 0, offsetBytes: 0, data: new Uint8Array(128 * KiB).fill(1) }, 0);
  core.linkMessage(peerOf(core), { type: 'write', seq: 2, heldSeq: 0, offsetBytes: 256 * KiB, data: new Uint8Array(256 * KiB).fill(2) }, 0);
  assert.deepEqual(core.heldInbound, { queued: 1, headAppliedBytes: 128 * KiB });
  assert.deepEqual(core.promote(true, 0), { ok: true, pending: false });
  core.tick(1);
  assert.equal(core.heldInbound.queued, 0, 'a primary ignores the rest of the peer\'s write');
  assert.equal(core.demote().ok, true);
  core.linkMessage(peerOf(core), { type: 'write', seq: 3, heldSeq: 0, offsetBytes: 0, data: new Uint8Array(64 * KiB).fill(3) }, 2);
  const acks = core.takeActions().filter((a) => a.kind === 'send' && a.msg.type === 'writeAck');
  assert.equal(acks.length, 2, 'writes 1 and 3 acked');
  const plan = core.cache.beginRead(0, 64 * KiB);
  assert.equal(plan.storeRuns.length, 0);
  const bytes = core.cache.finishRead(plan, []);
  assert.equal(bytes[0], 3, 'the acknowledged write 3 is in the cache from its first byte');
  assert.equal(bytes[64 * KiB - 1], 3);
});

test('a primary demoted with host writes waiting for cache room fails them unapplied', () => {
  // A pair primary alone (write-back) with a 4-track cache and no hardening:
  // the first write fills the cache, the second waits for room. Demoted, the waiting write must
  // fail with EIO and its bytes must never reach the cache (hardened later, they would sit in a
  // store the new primary never sent them to: simulator, seed 10015049).
  const core = smallCore('primary');
  core.hostWrite(1, 0, 256 * KiB, new Uint8Array(256 * KiB).fill(1), false, false, 0);
  core.hostWrite(2, 512 * KiB, 64 * KiB, new Uint8Array(64 * KiB).fill(2), false, false, 0);
  assert.equal(core.queuedHostPieces.length, 1, 'the second write waits for room');
  assert.equal(core.demote().ok, true);
  const replies = core.takeActions().filter((a) => a.kind === 'reply');
  assert.deepEqual(replies.map((r) => r.kind === 'reply' && [r.reqId, r.errno]), [[1, null], [2, 'EIO']]);
  assert.equal(core.queuedHostPieces.length, 0);
  assert.equal(core.cache.isTrackDirty(8), false, 'the failed write never entered the cache');
});

test('a node still receiving a resync refuses to confirm its peer\'s promotion', () => {
  // Confirming would give an incomplete store the newer history: if the link dropped before the
  // proposer heard the confirmation, this node would look newest and resync its stale store over
  // the proposer's (simulator, seed 20022525).
  const core = smallCore('secondary'); // b, fresh: its peer a is newer and resyncs it
  core.linkEstablished(peerOf(core), 0);
  const none = new TrackBitmap(16).toBytes();
  core.linkMessage(peerOf(core), { type: 'state', role: 'secondary', history: [{ epoch: 1, node: 'a' }], storeTrusted: true, storeBlank: false, outOfSyncValid: true, discardLocal: false, outOfSync: none, dirty: none, streamEpoch: 1, positionValid: false, lastSeq: 0, above: none }, 1);
  assert.equal(core.incompleteResync, true, 'b is the target of a resync from a');
  core.takeActions();
  core.linkMessage(peerOf(core), { type: 'promoteReq', id: 9, history: [{ epoch: 1, node: 'a' }, { epoch: 2, node: 'a' }] }, 2);
  const answers = core.takeActions().flatMap((a) => (a.kind === 'send' && a.msg.type === 'promoteAck' ? [a.msg] : []));
  assert.equal(answers.length, 1);
  assert.equal(answers[0]!.ok, false);
  assert.match(answers[0]!.reason, /still receiving a resync from a/);
  assert.deepEqual(core.epochHistory, [], 'the proposal was not adopted');
});

test('a FLUSH request of a dead link is never answered on the next one', () => {
  // The peer, restarted, numbers its FLUSHes from 1 again: an ack for the old request would
  // answer its new one before this store held what that covers (simulator, seed 30103572).
  const core = smallCore('secondary', 1);
  core.linkEstablished(peerOf(core), 0);
  core.linkMessage(peerOf(core), { type: 'write', seq: 1, heldSeq: 0, offsetBytes: 0, data: new Uint8Array(4 * KiB).fill(1) }, 0);
  core.linkMessage(peerOf(core), { type: 'flushReq', id: 7, offsetBytes: 0, lengthBytes: 0 }, 0);
  const harden = core.takeActions().find((a) => a.kind === 'harden');
  assert.ok(harden !== undefined && harden.kind === 'harden', 'the FLUSH started a harden job');
  core.linkDown(peerOf(core), 1);
  core.linkEstablished(peerOf(core), 2);
  core.hardenDone(harden.job.id, 4 * KiB, 1, 'flush', 3);
  for (let i = 0; i < 3; i++) {
    for (const a of core.takeActions()) {
      assert.ok(!(a.kind === 'send' && a.msg.type === 'flushAck'), 'no flushAck on the new link');
      if (a.kind === 'sync-store') core.storeSynced(a.syncId, null, 4);
    }
  }
});
