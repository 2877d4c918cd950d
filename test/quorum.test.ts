// Issue 12 item 3 on a pair (two Volumes over the in-memory link): with `quorum: majority` a
// primary that cannot reach its peer answers no write — it holds them (suspend-io) or fails them
// (io-error) — and a write the link lost before the peer acknowledged it is answered only once the
// peer holds it. A secondary promotes alone only with --force.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { QuorumSettings } from '../src/core/replica-types.js';
import { inSync, KiB, makePair, pattern, waitFor, type MemoryNode } from './helpers/memory-pair.js';

function quorumPair(onNoQuorum: QuorumSettings['onNoQuorum']) {
  return makePair({ quorum: { ack: 'quorum', policy: 'majority', onNoQuorum }, maxDirtyAgeMs: 60_000 });
}

/** Settles to 'ok', or to the errno the write failed with; 'pending' while it has no answer. */
function track(p: Promise<void>): { state: string } {
  const t = { state: 'pending' };
  p.then(() => { t.state = 'ok'; }, (err: Error & { errno?: string }) => { t.state = err.errno ?? err.message; });
  return t;
}

async function settleABit(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  await new Promise((r) => setTimeout(r, 30));
}

async function readBoth(a: MemoryNode, b: MemoryNode, offsetBytes: number, lengthBytes: number): Promise<[Buffer, Buffer]> {
  return [await a.volume.read(offsetBytes, lengthBytes), await b.volume.read(offsetBytes, lengthBytes)];
}

test('quorum majority, suspend-io: writes wait while the peer is away and are answered, mirrored, once it is back', { timeout: 20_000 }, async () => {
  const { a, b, link } = quorumPair('suspend-io');
  assert.deepEqual(a.volume.quorum, { policy: 'majority', have: 1, need: 2, ok: false }, 'a primary alone has no quorum');
  const early = track(a.volume.write(0, pattern(4 * KiB, 1), false));
  await settleABit();
  assert.equal(early.state, 'pending', 'no write is answered before the peer is reached');
  link.connect();
  await waitFor('the held write answered', () => early.state === 'ok');
  await waitFor('in-sync', () => inSync(a, b));
  assert.deepEqual(a.volume.quorum, { policy: 'majority', have: 2, need: 2, ok: true });

  link.cut();
  const held = track(a.volume.write(64 * KiB, pattern(8 * KiB, 2), false));
  await settleABit();
  assert.equal(held.state, 'pending', 'suspended while the link is down');
  assert.equal(a.volume.peerState, 'degraded');
  link.connect();
  await waitFor('the suspended write answered', () => held.state === 'ok');
  const [onA, onB] = await readBoth(a, b, 64 * KiB, 8 * KiB);
  assert.deepEqual(onA, pattern(8 * KiB, 2));
  assert.deepEqual(onB, pattern(8 * KiB, 2), 'the secondary holds the write the primary answered');
});

test('quorum majority, suspend-io: a write the link lost before its ack is answered only after it reaches the peer again', { timeout: 20_000 }, async () => {
  const { a, b, link } = quorumPair('suspend-io');
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  // The write goes out on the link, which is cut before the peer's ack can come back.
  const lost = track(a.volume.write(128 * KiB, pattern(4 * KiB, 3), false));
  link.cut();
  await settleABit();
  assert.equal(lost.state, 'pending', 'a write the peer never acknowledged is not answered without quorum');
  const [, onBBefore] = await readBoth(a, b, 128 * KiB, 4 * KiB);
  assert.notDeepEqual(onBBefore, pattern(4 * KiB, 3), 'the peer really lacks it (the situation under test)');
  link.connect();
  await waitFor('answered once the peer holds it', () => lost.state === 'ok');
  const [, onB] = await readBoth(a, b, 128 * KiB, 4 * KiB);
  assert.deepEqual(onB, pattern(4 * KiB, 3));
  await waitFor('in-sync', () => inSync(a, b));
});

test('quorum majority, io-error: writes without quorum fail with EIO at once; with the peer back they succeed', { timeout: 20_000 }, async () => {
  const { a, b, link } = quorumPair('io-error');
  await assert.rejects(a.volume.write(0, pattern(4 * KiB, 4), false), (err: Error & { errno?: string }) => err.errno === 'EIO' && /no quorum: this node reaches 1 of 2 nodes and needs 2/.test(err.message));
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  const inFlight = track(a.volume.write(192 * KiB, pattern(4 * KiB, 5), false));
  link.cut();
  await waitFor('the unacknowledged write failed', () => inFlight.state !== 'pending');
  assert.equal(inFlight.state, 'EIO');
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  await a.volume.write(0, pattern(4 * KiB, 6), false);
  assert.deepEqual((await readBoth(a, b, 0, 4 * KiB))[1], pattern(4 * KiB, 6));
});

test('quorum majority: a secondary without its peer refuses to promote unless forced; a stop ends writes held for quorum with ESHUTDOWN', { timeout: 20_000 }, async () => {
  const { a, b, link } = quorumPair('suspend-io');
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  link.cut();
  await assert.rejects(b.volume.promote(false), /no quorum: this node reaches 1 of 2 nodes and needs 2.*--force/);
  const held = track(a.volume.write(0, pattern(4 * KiB, 7), false));
  await settleABit();
  assert.equal(held.state, 'pending');
  await a.volume.close();
  await waitFor('the held write answered', () => held.state !== 'pending');
  assert.equal(held.state, 'ESHUTDOWN');
  await b.volume.promote(true);
  assert.equal(b.volume.core.role, 'primary');
});
