// Issue 12 steps 1 and 3 in the pure core (DESIGN.md "Several secondaries"): a primary with a peer
// channel per secondary mirrors each write to all of them under one seq, and answers it per the
// ack policy — `all` once every connected secondary holds it, `quorum` once a majority of the
// configured nodes does — while no track is hardened before every peer holds its writes. Driven
// through test/helpers/core-cluster.ts: the test delivers each link's messages by hand, so "slow"
// is a queue it does not deliver.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CoreCluster, KiB, pattern } from './helpers/core-cluster.js';
import type { QuorumSettings } from '../src/core/replica-types.js';

const ALL: QuorumSettings = { ack: 'all', policy: 'off', onNoQuorum: 'suspend-io' };
const QUORUM: QuorumSettings = { ack: 'quorum', policy: 'majority', onNoQuorum: 'suspend-io' };
const TRACK = 64 * KiB;

/** a primary, b and c secondaries, full mesh, initial resyncs done and every cache hardened. */
function threeNodes(quorum: QuorumSettings): CoreCluster {
  const cluster = new CoreCluster(['a', 'b', 'c'], quorum);
  cluster.connect('a', 'b');
  cluster.connect('a', 'c');
  cluster.connect('b', 'c');
  cluster.run(50);
  for (const name of ['a', 'b', 'c']) assert.equal(cluster.hardenAll(name).state, 'ok');
  cluster.run(100, 5); // destage cycles (every 20 ms) drain the records of what each holds only in RAM
  const a = cluster.node('a').core;
  assert.deepEqual(a.peers.map((p) => [p.name, p.state]), [['b', 'in-sync'], ['c', 'in-sync']], 'the primary mirrors both');
  for (const name of ['a', 'b', 'c']) {
    for (const p of cluster.node(name).core.peers) assert.equal(p.record.unitedCount(), 0, `${name}'s record of ${p.name} drained`);
  }
  return cluster;
}

const peer = (cluster: CoreCluster, node: string, name: string) => {
  const ch = cluster.node(node).core.peers.find((p) => p.name === name);
  assert.ok(ch !== undefined);
  return ch;
};

test('ack all: a write is answered only once every connected secondary holds it, and goes to both under one seq', () => {
  const cl = threeNodes(ALL);
  const data = pattern(8 * KiB, 1);
  const w = cl.write('a', 3 * TRACK, data);
  const toB = cl.inFlight('a', 'b').filter((m) => m.type === 'write');
  const toC = cl.inFlight('a', 'c').filter((m) => m.type === 'write');
  assert.equal(toB.length, 1);
  assert.equal(toC.length, 1);
  assert.equal(toB[0]!.type === 'write' && toC[0]!.type === 'write' && toB[0]!.seq === toC[0]!.seq, true, 'one seq for every peer');
  cl.settle(['c']);
  assert.equal(w.state, 'pending', 'b holds it, c does not yet: not answered');
  assert.ok(peer(cl, 'a', 'b').record.isUnited(3) && peer(cl, 'a', 'c').record.isUnited(3), 'both records mark the track (step 62)');
  cl.settle();
  assert.equal(w.state, 'ok');
  assert.equal(w.replies, 1);
  assert.deepEqual(cl.read('b', 3 * TRACK, data.length), data);
  assert.deepEqual(cl.read('c', 3 * TRACK, data.length), data);
});

test('ack quorum: a majority answers (the slow secondary does not stall the host), and nothing is hardened before the slow one holds it', () => {
  const cl = threeNodes(QUORUM);
  const data = pattern(4 * KiB, 2);
  const w = cl.write('a', 5 * TRACK, data);
  cl.settle(['c']);
  assert.equal(w.state, 'ok', 'a and b are a majority of three');
  // The primary may not harden the track while c has not acknowledged it (checkHardenJob): a
  // crash of a would leave its store with a write no bitmap of c's resync covers.
  const flush = cl.hardenAll('a', ['c']);
  assert.equal(flush.state, 'pending', 'the hardening waits for c');
  assert.deepEqual(Buffer.from(cl.node('a').store.subarray(5 * TRACK, 5 * TRACK + data.length)), Buffer.alloc(data.length), 'not on a\'s disk yet');
  cl.settle();
  assert.equal(flush.state, 'ok', 'c acknowledged: the track hardens');
  assert.deepEqual(Buffer.from(cl.node('a').store.subarray(5 * TRACK, 5 * TRACK + data.length)), data);
  assert.equal(w.replies, 1, 'c\'s late ack answers nothing twice');
  assert.deepEqual(cl.read('c', 5 * TRACK, data.length), data);
});

test('ack all: a secondary that drops owes no ack; it comes back through a delta resync of only what it lacks', () => {
  const cl = threeNodes(ALL);
  const data = pattern(16 * KiB, 3);
  const w = cl.write('a', 7 * TRACK, data);
  cl.deliver('a', 'b');
  cl.deliver('b', 'a');
  assert.equal(w.state, 'pending');
  cl.cut('a', 'c');
  cl.settle();
  assert.equal(w.state, 'ok', 'b holds it and c is gone');
  assert.equal(peer(cl, 'a', 'c').state, 'degraded');
  assert.equal(peer(cl, 'a', 'b').state, 'in-sync', 'b mirrors on');
  assert.ok(peer(cl, 'a', 'c').outOfSync.has(7), 'c lacks the track');
  const later = cl.write('a', 9 * TRACK, pattern(4 * KiB, 4));
  cl.settle();
  assert.equal(later.state, 'ok', 'answered with b alone while c is away');
  assert.ok(peer(cl, 'a', 'c').outOfSync.has(9));
  const sentBefore = cl.node('a').core.counters.syncBytesSent;
  cl.connect('a', 'c');
  cl.run(20);
  assert.equal(peer(cl, 'a', 'c').state, 'in-sync');
  const resent = cl.node('a').core.counters.syncBytesSent - sentBefore;
  assert.ok(resent >= 2 * TRACK && resent < 16 * TRACK, `a delta, not the whole volume: ${resent} bytes`);
  assert.ok(cl.node('a').logs.includes('info resync of the out-of-sync tracks started'));
  assert.deepEqual(cl.read('c', 7 * TRACK, data.length), data);
  assert.deepEqual(cl.read('c', 9 * TRACK, 4 * KiB), pattern(4 * KiB, 4));
});

test('quorum majority: a primary cut off from both secondaries answers nothing; one secondary back is a majority again', () => {
  const cl = threeNodes(QUORUM);
  cl.cut('a', 'b');
  cl.cut('a', 'c');
  assert.deepEqual(cl.node('a').core.quorum, { policy: 'majority', have: 1, need: 2, ok: false });
  const data = pattern(4 * KiB, 5);
  const w = cl.write('a', 2 * TRACK, data);
  cl.run(5);
  assert.equal(w.state, 'pending', 'suspended without quorum');
  cl.connect('a', 'b');
  cl.run(20);
  assert.equal(w.state, 'ok', 'b is back: two of three');
  assert.deepEqual(cl.read('b', 2 * TRACK, data.length), data, 'b holds the write a answered');
  assert.deepEqual(cl.node('a').core.quorum, { policy: 'majority', have: 2, need: 2, ok: true });
});

test('ack quorum: a secondary still being resynced does not count toward the majority that answers a write (it could not take over)', () => {
  const cl = threeNodes(QUORUM);
  cl.cut('a', 'c');
  assert.equal(cl.write('a', 2 * TRACK, pattern(4 * KiB, 2)).state, 'pending', 'a and b: the write goes to b');
  cl.settle();
  // c comes back: the state exchange makes a its resync source, but no chunk has been read yet.
  cl.connect('a', 'c');
  cl.deliver('a', 'c');
  cl.deliver('c', 'a');
  cl.deliver('a', 'c');
  assert.equal(peer(cl, 'a', 'c').state, 'resyncing');
  const w = cl.write('a', 5 * TRACK, pattern(4 * KiB, 5));
  cl.deliver('a', 'c');
  cl.deliver('c', 'a');
  assert.ok(cl.node('c').core.counters.writes > 0, 'c received and acknowledged the write');
  assert.equal(w.state, 'pending', 'a and a resyncing c are not a majority of complete copies');
  cl.deliver('a', 'b');
  cl.deliver('b', 'a');
  assert.equal(w.state, 'ok', 'a and b are');
});

test('kill -9 of the primary, ack quorum: a plain promote of the secondary that lacks an acknowledged write fetches it from the other first, then serves; everyone gets only what it lacks', () => {
  const cl = threeNodes(QUORUM);
  const VOLUME = 1024 * KiB;
  // c acknowledges the write, b never gets it (its frame is still queued when a dies).
  const w = cl.write('a', 4 * TRACK + 8 * KiB, pattern(8 * KiB, 6));
  cl.deliver('a', 'c');
  cl.deliver('c', 'a');
  assert.equal(w.state, 'ok', 'a and c are a majority of three');
  assert.equal(cl.inFlight('a', 'b').filter((m) => m.type === 'write').length, 1, 'b has not received it');
  cl.restart('a'); // kill -9: its RAM is gone, it comes back secondary with its links down
  const fetchedBefore = cl.node('c').core.counters.syncBytesSent;
  const r = cl.promote('b', false);
  assert.deepEqual(r, { ok: true, pending: true });
  cl.run(30);
  const b = cl.node('b');
  assert.equal(b.core.role, 'primary');
  assert.ok(b.logs.includes('warn fetching what this node lacks from the most current node before serving writes'), b.logs.join('\n'));
  assert.ok(b.logs.includes('promote-done ok'));
  // Only what c received above the stream's held seq came over: one track, not the volume.
  assert.equal(cl.node('c').core.counters.syncBytesSent - fetchedBefore, TRACK, 'the fetch is one track');
  assert.deepEqual(cl.read('b', 4 * TRACK + 8 * KiB, 8 * KiB), pattern(8 * KiB, 6), 'b holds the acknowledged write');
  assert.equal(peer(cl, 'b', 'c').state, 'in-sync', 'c follows the new primary');
  assert.ok(peer(cl, 'b', 'c').resyncBytesSent <= TRACK, `c gets only what may differ (${peer(cl, 'b', 'c').resyncBytesSent} bytes)`);
  const after = cl.write('b', 6 * TRACK, pattern(4 * KiB, 7));
  cl.settle();
  assert.equal(after.state, 'ok');
  // The old primary returns as a secondary and gets a delta: what it may have held only in RAM.
  cl.connect('a', 'b');
  cl.connect('a', 'c');
  cl.run(40);
  assert.equal(peer(cl, 'b', 'a').state, 'in-sync', 'the old primary returns as a secondary of b');
  const toA = peer(cl, 'b', 'a').resyncBytesSent;
  assert.ok(toA > 0 && toA <= 3 * TRACK, `a gets a delta, not the volume (${toA} of ${VOLUME} bytes)`);
  for (const name of ['a', 'b', 'c']) {
    assert.deepEqual(cl.read(name, 4 * TRACK + 8 * KiB, 8 * KiB), pattern(8 * KiB, 6), `${name} holds the write a acknowledged`);
    assert.deepEqual(cl.read(name, 6 * TRACK, 4 * KiB), pattern(4 * KiB, 7), `${name} holds b's write`);
  }
  assert.ok(cl.read('a', 0, VOLUME).equals(cl.read('b', 0, VOLUME)) && cl.read('c', 0, VOLUME).equals(cl.read('b', 0, VOLUME)), 'the three volumes are identical');
});

test('kill -9 of the primary, ack all: the promoted secondary is the most current, fetches nothing, and --force still takes over at once', () => {
  const cl = threeNodes(ALL);
  const w = cl.write('a', 4 * TRACK, pattern(32 * KiB, 6));
  cl.settle();
  assert.equal(w.state, 'ok');
  cl.restart('a');
  assert.deepEqual(cl.promote('b', false), { ok: true, pending: true });
  cl.run(20);
  assert.equal(cl.node('b').core.role, 'primary');
  assert.ok(!cl.node('b').logs.some((l) => l.includes('fetching')), 'both held every write: nothing to fetch');
  // The last write's tracks are above the held seq its own frame carried (no later write told
  // them it was held everywhere): they are what may differ, and all that is resent.
  assert.equal(peer(cl, 'b', 'c').resyncBytesSent, TRACK, 'c gets the one track that may differ, not the volume');
  cl.restart('b');
  assert.deepEqual(cl.promote('c', true), { ok: true, pending: false }, 'the operator may still force');
  cl.connect('a', 'c');
  cl.connect('b', 'c');
  cl.run(40);
  for (const name of ['a', 'b', 'c']) assert.deepEqual(cl.read(name, 4 * TRACK, 32 * KiB), pattern(32 * KiB, 6), `${name} holds the acknowledged write`);
});

test('a plain promote needs a majority, and a secondary that still follows a live primary refuses to confirm it', () => {
  const cl = threeNodes(QUORUM);
  cl.cut('a', 'b'); // b is cut off from a primary that still runs with c
  const r = cl.promote('b', false);
  assert.deepEqual(r, { ok: true, pending: true });
  cl.run(5);
  assert.equal(cl.node('b').core.role, 'secondary');
  assert.ok(cl.node('b').logs.some((l) => /promote-done only 1 of the 2 nodes needed confirmed the promotion \(c: c still follows primary a/.test(l)), cl.node('b').logs.join('\n'));
  assert.equal(cl.node('a').core.role, 'primary');
  const w = cl.write('a', 0, pattern(4 * KiB, 3));
  cl.settle();
  assert.equal(w.state, 'ok', 'the primary and c go on');
  cl.cut('b', 'c');
  const alone = cl.promote('b', false);
  assert.equal(alone.ok, false);
  assert.match(alone.ok ? '' : alone.error, /this node reaches 1 of 3 nodes; a promotion needs a majority \(2\) to confirm it/);
});

test('quorum majority, four nodes: a write whose other peers dropped is never acknowledged on two copies of four; it fails, and newer writes are not overwritten by it', () => {
  const cl = new CoreCluster(['a', 'b', 'c', 'd'], { ack: 'all', policy: 'majority', onNoQuorum: 'suspend-io' });
  for (const [x, y] of [['a', 'b'], ['a', 'c'], ['a', 'd'], ['b', 'c'], ['b', 'd'], ['c', 'd']] as const) cl.connect(x, y);
  cl.run(50);
  assert.deepEqual(cl.node('a').core.peers.map((p) => p.state), ['in-sync', 'in-sync', 'in-sync']);
  const old = pattern(4 * KiB, 8);
  const w = cl.write('a', 2 * TRACK, old);
  cl.cut('a', 'c');
  cl.cut('a', 'd');
  assert.deepEqual(cl.node('a').core.quorum, { policy: 'majority', have: 2, need: 3, ok: false });
  cl.deliver('a', 'b');
  cl.deliver('b', 'a');
  assert.equal(w.state, 'EIO', 'b acknowledged it, but a and b are two of four: not acknowledged to the host');
  assert.equal(w.replies, 1);
  // Quorum back: a newer write to the same block is answered, and nothing sends the failed one
  // again over it (seed 2208 of the randomized test lost an acknowledged write that way).
  cl.connect('a', 'c');
  cl.run(30);
  const newer = cl.write('a', 2 * TRACK, pattern(4 * KiB, 9));
  cl.connect('a', 'd');
  cl.run(40);
  assert.equal(newer.state, 'ok');
  for (const name of ['a', 'b', 'c', 'd']) assert.deepEqual(cl.read(name, 2 * TRACK, 4 * KiB), pattern(4 * KiB, 9), `${name} holds the newer write`);
});

test('split brain among three nodes: b, forced primary alone while a went on with c, is resolved with --discard-local and rejoins as a secondary of a', () => {
  const cl = threeNodes({ ack: 'all', policy: 'off', onNoQuorum: 'suspend-io' });
  cl.cut('a', 'b');
  cl.cut('b', 'c');
  assert.deepEqual(cl.promote('b', true), { ok: true, pending: false });
  const onB = cl.write('b', 3 * TRACK, pattern(4 * KiB, 0xb));
  const onA = cl.write('a', 7 * TRACK, pattern(4 * KiB, 0xa));
  cl.settle();
  assert.deepEqual([onA.state, onB.state], ['ok', 'ok'], 'both sides acknowledged a write');
  cl.connect('a', 'b');
  cl.connect('b', 'c');
  cl.run(10);
  assert.equal(peer(cl, 'a', 'b').state, 'split-brain');
  assert.equal(peer(cl, 'b', 'c').state, 'split-brain', 'b and c diverged too');
  assert.equal(peer(cl, 'a', 'c').state, 'in-sync', 'a goes on with c');
  let resolved: { ok: boolean } | null = null;
  cl.event('b', (core) => { resolved = core.resolveDiscardLocal(cl.nowMs); });
  assert.deepEqual(resolved, { ok: true });
  cl.run(40);
  assert.equal(cl.node('b').core.role, 'secondary');
  assert.equal(peer(cl, 'a', 'b').state, 'in-sync', 'b resynced from a');
  for (const name of ['a', 'b', 'c']) {
    assert.deepEqual(cl.read(name, 7 * TRACK, 4 * KiB), pattern(4 * KiB, 0xa), `${name} holds a's write`);
    assert.deepEqual(cl.read(name, 3 * TRACK, 4 * KiB), Buffer.alloc(4 * KiB), `${name} does not hold b's discarded write`);
  }
  const after = cl.write('a', 9 * TRACK, pattern(4 * KiB, 0x9));
  cl.settle();
  assert.equal(after.state, 'ok');
  assert.deepEqual(cl.read('b', 9 * TRACK, 4 * KiB), pattern(4 * KiB, 0x9), 'b mirrors a again');
  assert.equal(peer(cl, 'c', 'b').state, 'connecting', 'c sees b\'s split brain over: they hold the same history');
  assert.equal(peer(cl, 'b', 'c').state, 'connecting');
});

test('five nodes: a secondary away (not crashed) during a failover comes back to the new primary and gets only what may differ, not the volume, including a write only it got', () => {
  const quorum: QuorumSettings = { ack: 'quorum', policy: 'majority', onNoQuorum: 'suspend-io' };
  const names = ['a', 'b', 'c', 'd', 'e'];
  const cl = new CoreCluster(names, quorum, 1024 * KiB);
  const pairs = names.flatMap((x, i) => names.slice(i + 1).map((y) => [x, y] as const));
  for (const [x, y] of pairs) cl.connect(x, y);
  cl.run(50);
  for (const name of names) assert.equal(cl.hardenAll(name).state, 'ok');
  cl.run(100, 5);
  const before = cl.write('a', 2 * TRACK, pattern(4 * KiB, 2));
  cl.settle();
  assert.equal(before.state, 'ok');
  // A last write reaches d only (two of five hold it: not acknowledged); a dies before the others
  // get it, and then d is cut off from them, alive with its RAM.
  const onlyD = cl.write('a', 11 * TRACK, pattern(4 * KiB, 11));
  cl.deliver('a', 'd');
  cl.deliver('d', 'a');
  assert.equal(onlyD.state, 'pending');
  cl.restart('a');
  for (const other of ['b', 'c', 'e']) cl.cut('d', other);
  assert.deepEqual(cl.promote('b', false), { ok: true, pending: true });
  cl.run(30);
  assert.equal(cl.node('b').core.role, 'primary', 'c and e confirmed: with b, three of five');
  const afterFailover = cl.write('b', 9 * TRACK, pattern(4 * KiB, 9));
  cl.settle();
  assert.equal(afterFailover.state, 'ok');
  const sentBefore = peer(cl, 'b', 'd').resyncBytesSent;
  for (const [x, y] of pairs) if (!cl.isUp(x, y)) cl.connect(x, y);
  cl.run(60);
  assert.equal(peer(cl, 'b', 'd').state, 'in-sync');
  const toD = peer(cl, 'b', 'd').resyncBytesSent - sentBefore;
  assert.ok(toD > 0 && toD <= 4 * TRACK, `d gets what it lacks and what may differ (${toD} bytes), not the ${1024 * KiB}-byte volume`);
  for (const name of names) {
    assert.deepEqual(cl.read(name, 2 * TRACK, 4 * KiB), pattern(4 * KiB, 2), `${name} holds the write every node acknowledged`);
    assert.deepEqual(cl.read(name, 9 * TRACK, 4 * KiB), pattern(4 * KiB, 9), `${name} holds b's write, which d missed`);
    assert.deepEqual(cl.read(name, 11 * TRACK, 4 * KiB), Buffer.alloc(4 * KiB), `${name} does not hold the write only d got (never acknowledged)`);
  }
  assert.ok(cl.read('d', 0, 1024 * KiB).equals(cl.read('b', 0, 1024 * KiB)), 'd and b are identical');
});
