// Failures, in process (issue 5): the sync decision table, failover after a primary crash with
// writes in flight, a secondary crash, failback, the out-of-sync set across a clean restart,
// a crashed survivor's full resync, and split brain — each checked on the bytes of both stores.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideSync, type SideState } from '../src/core/resync.js';
import { inSync, KiB, makePair, MiB, pattern, waitFor, type MemoryLink, type MemoryNode } from './helpers/memory-pair.js';

const TRACK = 64 * KiB;

function side(node: string, history: [number, string][], over: Partial<SideState> = {}): SideState {
  return { node, history: history.map(([epoch, n]) => ({ epoch, node: n })), storeTrusted: true, outOfSyncValid: true, discardLocal: false, ...over };
}

test('decideSync: newer history is the source; divergence is split brain; what cannot be vouched for is resent in full', () => {
  assert.deepEqual(decideSync(side('b', [[1, 'a'], [2, 'b']]), side('a', [[1, 'a']])).kind, 'source');
  assert.deepEqual(decideSync(side('a', [[1, 'a']]), side('b', [[1, 'a'], [2, 'b']])), { kind: 'target' });
  assert.equal(decideSync(side('a', [[1, 'a']]), side('b', [[1, 'a']])).kind, 'source', 'equal: the last primary is the source');
  assert.deepEqual(decideSync(side('a', [[1, 'a']], { outOfSyncValid: false }), side('b', [[1, 'a']])), { kind: 'target' },
    'equal, but the last primary crashed: the survivor is the source, never the stale crashed store');
  assert.equal(decideSync(side('a', [[1, 'a'], [2, 'a']]), side('b', [[1, 'a'], [2, 'b']])).kind, 'split-brain');
  const full = decideSync(side('b', [[1, 'a'], [2, 'b']], { outOfSyncValid: false }), side('a', [[1, 'a']]));
  assert.ok(full.kind === 'source' && full.full && /clean shutdown/.test(full.reason));
  const fresh = decideSync(side('a', [[1, 'a']], { outOfSyncValid: false }), side('b', [], { storeTrusted: false }));
  assert.ok(fresh.kind === 'source' && fresh.full && fresh.initial === true && /joins with a new store/.test(fresh.reason), 'a new peer is an initial sync, not a crash');
  // Issue 14 item 8: two stores created empty, neither written: nothing to send. One blank store
  // beside data gets everything, blank or not on this side.
  const blank = decideSync(side('a', [[1, 'a']], { outOfSyncValid: false, storeBlank: true }), side('b', [], { storeTrusted: false, storeBlank: true }));
  assert.ok(blank.kind === 'source' && !blank.full && blank.initial === true, 'two blank stores: nothing to send');
  const blankBesideData = decideSync(side('a', [[1, 'a']], { outOfSyncValid: false, storeBlank: false }), side('b', [], { storeTrusted: false, storeBlank: true }));
  assert.ok(blankBesideData.kind === 'source' && blankBesideData.full, 'a blank store beside data gets all of it');
  const untrusted = decideSync(side('a', [[1, 'a']]), side('b', [], { storeTrusted: false }));
  assert.ok(untrusted.kind === 'source' && untrusted.full);
  const resolved = decideSync(side('a', [[1, 'a'], [2, 'a']]), side('b', [[1, 'a'], [2, 'b']], { discardLocal: true, storeTrusted: false }));
  assert.ok(resolved.kind === 'source' && !resolved.full, 'discard-local: delta of what either side changed');
  // b adopted a's proposal a3 whose confirmation was lost with the link; a retried alone as a4.
  // b was secondary throughout: no split brain, a is newer (simulator, seed 576).
  const adopted = side('b', [[1, 'a'], [2, 'b'], [3, 'a']]);
  assert.equal(decideSync(side('a', [[1, 'a'], [2, 'b'], [4, 'a']]), adopted).kind, 'source');
  assert.deepEqual(decideSync(adopted, side('a', [[1, 'a'], [2, 'b'], [4, 'a']])), { kind: 'target' });
  assert.equal(decideSync(side('a', [[1, 'a'], [2, 'b'], [3, 'a']]), side('b', [[1, 'a'], [2, 'b'], [4, 'b']])).kind, 'split-brain',
    'an entry of the peer\'s own is a real divergence');
});

async function syncedPair(opts: Parameters<typeof makePair>[0] = {}) {
  const pair = makePair(opts);
  pair.link.connect();
  await waitFor('in-sync', () => inSync(pair.a, pair.b));
  return pair;
}

/**
 * In sync, and the initial sync's data hardened on both sides with both records empty: until then
 * the secondary holds the whole volume only in RAM, and its crash puts every track out of sync.
 */
async function drainedPair(opts: Parameters<typeof makePair>[0] = {}) {
  const pair = await syncedPair(opts);
  const drained = (n: MemoryNode): boolean => n.volume.stats().dirtyTracks === 0 && n.volume.core.record.unitedCount() === 0;
  await waitFor('initial sync hardened on both', () => drained(pair.a) && drained(pair.b));
  return pair;
}

async function closeAndCompare(x: MemoryNode, y: MemoryNode): Promise<void> {
  await x.volume.close();
  await y.volume.close();
  assert.ok(x.store.bytes.equals(y.store.bytes), 'the two stores are byte-identical');
}

/**
 * What a read of each 4 KiB block may return: its last acknowledged payload, or one still in
 * flight (issued, never acknowledged) when a node died — a concurrent write may or may not land.
 */
class Ledger {
  readonly acked = new Map<number, Buffer>();
  private readonly inFlight = new Map<number, Set<Buffer>>();

  issue(offset: number, data: Buffer): void {
    if (!this.inFlight.has(offset)) this.inFlight.set(offset, new Set());
    this.inFlight.get(offset)!.add(data);
  }

  /** No two writes to a block overlap here: an acknowledged one supersedes any issued before it. */
  ack(offset: number, data: Buffer): void {
    this.acked.set(offset, data);
    this.inFlight.delete(offset);
  }

  /**
   * Every acknowledged block reads back (or one in flight). A check of nothing proves nothing: if
   * every write had failed the loop below would pass, so at least minAckedBlocks must be checked.
   */
  async check(node: MemoryNode, what: string, minAckedBlocks: number): Promise<void> {
    assert.ok(this.acked.size >= minAckedBlocks, `${what}: only ${this.acked.size} acknowledged blocks to check, expected at least ${minAckedBlocks} (did the writes fail?)`);
    let verified = 0;
    for (const [offset, data] of this.acked) {
      const got = await node.volume.read(offset, 4 * KiB);
      const ok = got.equals(data) || [...(this.inFlight.get(offset) ?? [])].some((d) => got.equals(d));
      assert.ok(ok, `${what}: block at ${offset} holds neither its last acknowledged write nor one in flight`);
      verified++;
    }
    assert.ok(verified >= minAckedBlocks, `${what}: ${verified} blocks verified`);
  }
}

/**
 * The workload stays in 12 of the volume's 64 tracks (tracks 20..31, 19% of it): a delta resync of
 * what it touched then sends at most 12 tracks, never to be confused with the full 4 MiB. (Spread
 * over the whole volume, nearly every track is written, and a delta costs as much as a full one.)
 */
const WORKLOAD_FIRST_TRACK = 20;
const WORKLOAD_TRACKS = 12;
const WORKLOAD_BLOCKS = (WORKLOAD_TRACKS * TRACK) / (4 * KiB);
const FULL_RESYNC_BYTES = 4 * MiB;

/**
 * Writes 4 KiB blocks with unique payloads to distinct blocks of the workload tracks,
 * concurrently, recording them in the ledger. Returns how many were acknowledged.
 */
async function writeMany(node: MemoryNode, count: number, seed: number, ledger: Ledger): Promise<number> {
  assert.ok(count <= WORKLOAD_BLOCKS, `${count} writes do not fit ${WORKLOAD_BLOCKS} distinct blocks`);
  const writes: Promise<number>[] = [];
  for (let i = 0; i < count; i++) {
    // 47 is prime to 192 blocks: i → block is one-to-one, so no two concurrent writes overlap.
    const block = (i * 47 + seed * 31) % WORKLOAD_BLOCKS;
    const offset = WORKLOAD_FIRST_TRACK * TRACK + block * 4 * KiB;
    const data = pattern(4 * KiB, seed * 10_000 + i);
    ledger.issue(offset, data);
    writes.push(node.volume.write(offset, data, false).then(() => { ledger.ack(offset, data); return 1; }, () => 0));
  }
  return (await Promise.all(writes)).reduce((n, x) => n + x, 0);
}

/**
 * A delta resync: it sent whole tracks, no more than the workload touched, so strictly less than
 * the full volume; and when the source's out-of-sync set is known, exactly those tracks.
 */
function assertDelta(sentBytes: number, what: string, outOfSyncTracks?: number): void {
  const detail = `${what}: ${sentBytes} bytes sent${outOfSyncTracks === undefined ? '' : ` for ${outOfSyncTracks} out-of-sync tracks`}`;
  assert.ok(sentBytes > 0 && sentBytes % TRACK === 0, `${detail}: whole tracks, at least one`);
  assert.ok(sentBytes <= WORKLOAD_TRACKS * TRACK, `${detail}: more than the ${WORKLOAD_TRACKS} tracks the workload touched`);
  assert.ok(sentBytes < FULL_RESYNC_BYTES, `${detail}: as much as a full resync`);
  if (outOfSyncTracks !== undefined) assert.equal(sentBytes, outOfSyncTracks * TRACK, detail);
}

/** writeMany on a node that must acknowledge every one of the writes. */
async function writeAll(node: MemoryNode, count: number, seed: number, ledger: Ledger): Promise<void> {
  assert.equal(await writeMany(node, count, seed, ledger), count, `every write to ${node.name} is acknowledged (seed ${seed})`);
}

test('kill the primary with writes in flight: promote, every acknowledged write survives, the old primary returns by delta', async () => {
  const { a, b, link } = await drainedPair();
  const acked = new Ledger();
  await writeAll(a, 180, 1, acked);
  // A burst left in flight: some acknowledged, some not, when a dies.
  void writeMany(a, 150, 2, acked);
  await new Promise((resolve) => setImmediate(resolve));
  a.crash();
  link.cut();
  await b.volume.promote(false);
  await acked.check(b, 'after failover', 180);
  await writeAll(b, 100, 3, acked);
  const outOfSync = b.volume.core.outOfSync.count();
  a.restart();
  assert.equal(a.volume.core.role, 'secondary', 'a crashed primary comes back secondary');
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  assertDelta(b.volume.counters.syncBytesSent, 'the old primary returned', outOfSync);
  await acked.check(a, 'on the returned old primary', 180);
  await closeAndCompare(a, b);
});

test('kill the primary and restart it without a promotion: the secondary is the source, no acknowledged write is lost', async () => {
  const { a, b, link } = await drainedPair({ maxDirtyAgeMs: 60_000 });
  const acked = new Ledger();
  await writeAll(a, 180, 11, acked);
  a.crash();
  link.cut();
  a.restart();
  assert.equal(a.volume.core.role, 'secondary');
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  assert.equal(a.volume.counters.syncBytesSent, 0, 'the crashed primary sent nothing');
  const sent = b.volume.counters.syncBytesSent;
  assertDelta(sent, 'the survivor to the restarted primary');
  await acked.check(a, 'on the restarted node', 180);
  await acked.check(b, 'on the survivor', 180);
  await closeAndCompare(a, b);
});

/** Counts the store writes that fail (MemoryStore.failWrites) from now on. */
function countFailedWrites(node: MemoryNode): { readonly count: number } {
  const counter = { count: 0 };
  const write = node.store.write.bind(node.store);
  node.store.write = (offsetBytes, data) => write(offsetBytes, data).catch((err: unknown) => { counter.count++; throw err; });
  return counter;
}

/** node.ts's stop of a node of the memory pair: Volume.stop, leaving the link when it is told to. */
function stopNode(node: MemoryNode, link: MemoryLink): { promise: Promise<void>; outcome: () => 'running' | 'stopped' | 'failed' } {
  let outcome: 'running' | 'stopped' | 'failed' = 'running';
  const promise = node.volume.stop(async () => link.cut()).then(() => { outcome = 'stopped'; }, () => { outcome = 'failed'; });
  return { promise, outcome: () => outcome };
}

test('a SIGTERM stop whose hardening fails keeps trying, mirrored; killed then, the primary returns under its peer and no acknowledged write is lost', async () => {
  // Simulator seeds 551, 782, 875, 1286, 1702: the stop left the link first (a new epoch alone),
  // failed, and the restarted primary resynced its stale store over the peer's copy.
  const { a, b, link } = await drainedPair({ maxDirtyAgeMs: 60_000 });
  a.store.failWrites = true;
  const acked = new Ledger();
  await writeAll(a, 180, 21, acked); // in both caches, never on a's store
  const failed = countFailedWrites(a);
  const stop = stopNode(a, link);
  await waitFor('two failed attempts, or the stop over', () => failed.count >= 2 || stop.outcome() !== 'running');
  const outcome = stop.outcome();
  const linkUp = link.connected;
  // A second signal (or systemd's SIGKILL): the process dies with what it holds.
  a.crash();
  link.cut();
  a.store.failWrites = false;
  a.restart();
  assert.equal(a.volume.core.role, 'secondary', 'a primary killed in its stop comes back secondary');
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  await acked.check(a, 'on the primary killed in its stop', 180);
  await acked.check(b, 'on its peer', 180);
  assert.equal(outcome, 'running', 'a failing store does not end the stop: it retries');
  assert.ok(linkUp, 'a primary hardens while its peer still mirrors it, and only then leaves the link');
  await closeAndCompare(a, b);
});

test('a SIGTERM stop whose store fails completes once the store recovers; the primary comes back primary with every write', async () => {
  const { a, b, link } = await drainedPair({ maxDirtyAgeMs: 60_000 });
  a.store.failWrites = true;
  const acked = new Ledger();
  await writeAll(a, 100, 22, acked);
  const failed = countFailedWrites(a);
  const stop = stopNode(a, link);
  await waitFor('a failed attempt', () => failed.count >= 1 || stop.outcome() !== 'running');
  assert.equal(stop.outcome(), 'running');
  a.store.failWrites = false;
  await stop.promise;
  assert.equal(stop.outcome(), 'stopped');
  assert.equal(a.persisted?.cleanShutdown, true, 'the stop ended clean');
  a.restart();
  assert.equal(a.volume.core.role, 'primary', 'a primary stopped cleanly comes back primary');
  await acked.check(a, 'on the restarted primary', 100);
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  await acked.check(b, 'on its peer', 100);
  await closeAndCompare(a, b);
});

test('a node whose resync was cut off refuses promotion without --force', async () => {
  // b's cache (512 KiB) is smaller than what it misses (180 writes over 12 tracks, 768 KiB).
  const { a, b, link } = await syncedPair({ secondaryCacheBytes: 512 * KiB });
  b.crash();
  link.cut();
  await writeAll(a, 180, 12, new Ledger());
  // b's disk hangs: its cache fills and the resync cannot finish before a dies, however fast.
  let open!: () => void;
  b.store.gate = new Promise<void>((resolve) => { open = resolve; });
  b.restart();
  link.connect();
  try {
    await waitFor('resync started', () => b.volume.core.incompleteResync);
    a.crash();
    link.cut();
    assert.notEqual(b.volume.peerState, 'in-sync');
    await assert.rejects(b.volume.promote(false), /has not finished/);
    await b.volume.promote(true);
  } finally {
    open(); // a failure above must not leave b's store hanging (the test file would time out)
  }
  await b.volume.close();
});

test('kill the secondary under load; it returns and gets only the out-of-sync tracks', async () => {
  const { a, b, link } = await drainedPair();
  const acked = new Ledger();
  await writeAll(a, 180, 4, acked);
  const sentBefore = a.volume.counters.syncBytesSent;
  b.crash();
  link.cut();
  await writeAll(a, 100, 5, acked);
  assert.equal(a.volume.peerState, 'degraded');
  const outOfSync = a.volume.core.outOfSync.count();
  b.restart();
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  assertDelta(a.volume.counters.syncBytesSent - sentBefore, 'the secondary returned', outOfSync);
  await acked.check(b, 'on the returned secondary', 180);
  await closeAndCompare(a, b);
});

test('failback: demote one side, promote the other, while connected; nothing lost, no full resync', async () => {
  const { a, b } = await syncedPair();
  const acked = new Ledger();
  await writeAll(a, 100, 6, acked);
  const sentBefore = a.volume.counters.syncBytesSent + b.volume.counters.syncBytesSent;
  await a.volume.demote();
  await waitFor('b sees a secondary', () => b.volume.core.peerRole === 'secondary');
  await b.volume.promote(false);
  await waitFor('in-sync after the swap', () => inSync(a, b));
  await writeAll(b, 100, 7, acked);
  await b.volume.demote();
  await waitFor('a sees b secondary', () => a.volume.core.peerRole === 'secondary');
  await a.volume.promote(false);
  await waitFor('in-sync after failback', () => inSync(a, b));
  await writeAll(a, 50, 8, acked);
  await acked.check(a, 'on a', 100);
  await acked.check(b, 'on b', 100);
  const resent = a.volume.counters.syncBytesSent + b.volume.counters.syncBytesSent - sentBefore;
  assert.ok(resent < 1 * MiB, `role swaps resend only what the old primary may hold in RAM (${resent} bytes)`);
  await closeAndCompare(a, b);
});

test('promote refuses while a connected peer is primary, unless forced', async () => {
  const { a, b } = await syncedPair();
  await assert.rejects(b.volume.promote(false), /primary and connected/);
  await assert.rejects(a.volume.promote(false), /already primary/);
  await closeAndCompare(a, b);
});

test('a switchover is confirmed by the peer: the new primary dies at once, the survivor knows its epoch and no acknowledged write is lost', async () => {
  // Seed 1101's shape: b is promoted, then crashes holding a's acknowledged writes only in RAM.
  // Had a not learned of b's epoch, b would return with the newer history as the resync source
  // and overwrite a with a store that lacks those writes.
  const { a, b, link } = await syncedPair({ maxDirtyAgeMs: 60_000, destageIntervalMs: 60_000, rangeDirtyThresholdTracks: 1000 });
  const acked = new Ledger();
  await Promise.all(Array.from({ length: 64 }, (_, i) => {
    const data = pattern(4 * KiB, 2100 + i);
    acked.issue(i * 8 * KiB, data);
    return a.volume.write(i * 8 * KiB, data, false).then(() => acked.ack(i * 8 * KiB, data));
  }));
  await a.volume.demote();
  await waitFor('b sees a secondary', () => b.volume.core.peerRole === 'secondary');
  await b.volume.promote(false);
  assert.deepEqual(a.volume.core.epochHistory, b.volume.core.epochHistory, "a adopted b's new epoch before b served a write");
  assert.ok(b.volume.core.cache.stats(0).dirtyTracks > 0, "b holds some of a's acknowledged writes only in RAM (else this test shows nothing)");
  b.crash();
  link.cut();
  b.restart();
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  await acked.check(a, 'on the survivor', 64);
  await acked.check(b, 'on the restarted new primary', 64);
  await closeAndCompare(a, b);
});

test('two secondaries promoted at once while connected: both wait for the other, neither becomes primary, a retry does', async () => {
  const { a, b } = await syncedPair();
  await a.volume.demote();
  await waitFor('b sees a secondary', () => b.volume.core.peerRole === 'secondary');
  const results = await Promise.allSettled([a.volume.promote(false), b.volume.promote(false)]);
  for (const r of results) assert.ok(r.status === 'rejected' && /being promoted too/.test(String(r.reason)), `refused: ${String(r.status === 'rejected' ? r.reason : 'ok')}`);
  assert.equal(a.volume.core.role, 'secondary');
  assert.equal(b.volume.core.role, 'secondary');
  await b.volume.promote(false);
  await waitFor('in-sync', () => inSync(a, b));
  assert.deepEqual(a.volume.core.epochHistory, b.volume.core.epochHistory);
  const epochs = b.volume.core.epochHistory.map((e) => e.epoch);
  assert.equal(new Set(epochs).size, epochs.length, `no epoch taken twice: ${JSON.stringify(b.volume.core.epochHistory)}`);
  await b.volume.write(0, pattern(4 * KiB, 5), false);
  await closeAndCompare(a, b);
});

test('a promote waiting for the peer fails when the link drops; a retry without the link promotes alone', async () => {
  const { a, b, link } = await syncedPair();
  await a.volume.demote();
  await waitFor('b sees a secondary', () => b.volume.core.peerRole === 'secondary');
  const waiting = b.volume.promote(false);
  link.cut();
  await assert.rejects(waiting, /went down before it confirmed/);
  assert.equal(b.volume.core.role, 'secondary');
  await b.volume.promote(false);
  assert.equal(b.volume.core.role, 'primary');
  await b.volume.write(0, pattern(4 * KiB, 6), false);
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  assert.deepEqual(await a.volume.read(0, 4 * KiB), pattern(4 * KiB, 6));
  await closeAndCompare(a, b);
});

test('a FUA a demoted node still waits on from its peer fails with EIO when the link drops', async () => {
  // Simulator, seed 2610: the demoted node answered such a FUA ok on its own disk's word, then the
  // new primary (which had held the write only in RAM) crashed and resynced over it.
  const { a, b, link } = await syncedPair({ flush: 'disk' });
  let open!: () => void;
  b.store.gate = new Promise<void>((resolve) => { open = resolve; });
  const fua = a.volume.write(0, pattern(4 * KiB, 31), true);
  const outcome = fua.then(() => 'ok', (err: Error & { errno?: string }) => err.errno ?? err.message);
  await waitFor("a's FUA waiting for b's disk", () => b.volume.core.cache.stats(0).dirtyTracks > 0 && !a.volume.core.writesDrained);
  const demoted = a.volume.demote();
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(a.volume.core.writesDrained, false, 'demote waits for the FUA, not only for the ack');
  link.cut();
  assert.equal(await outcome, 'EIO');
  await demoted;
  open();
  await a.volume.close();
  await b.volume.close();
});

test('a resync read that fails is retried after a pause; the resync completes', async () => {
  const { a, b, link } = makePair();
  a.store.bytes.set(pattern(64 * KiB, 77), 128 * KiB); // data the initial sync must read from a's store
  a.store.failReads = 2;
  link.connect();
  await waitFor('in-sync despite two failed reads', () => inSync(a, b), 10_000);
  assert.equal(a.store.failReads, 0, 'both injected failures were hit');
  assert.deepEqual(await b.volume.read(128 * KiB, 64 * KiB), pattern(64 * KiB, 77));
  await closeAndCompare(a, b);
});

test('the out-of-sync set survives a clean restart of the survivor; a crashed survivor falls back to a full (checksum) resync', async () => {
  const { a, b, link } = await drainedPair();
  b.crash();
  link.cut();
  const acked = new Ledger();
  await writeAll(a, 50, 9, acked);
  const outOfSync = a.volume.core.outOfSync.count();
  await a.volume.close(); // clean: the set is persisted
  a.restart();
  assert.equal(a.volume.core.role, 'primary', 'a clean primary comes back primary');
  b.restart();
  link.connect();
  await waitFor('in-sync', () => inSync(a, b));
  assertDelta(a.volume.counters.syncBytesSent, 'after a clean restart of the survivor', outOfSync);
  await acked.check(b, 'after the delta', 50);
  // Now the survivor crashes while alone: its set is lost, so the next resync is full.
  b.crash();
  link.cut();
  await writeAll(a, 20, 10, acked);
  a.crash();
  a.restart();
  b.restart();
  await a.volume.promote(false);
  link.connect();
  const comparedBefore = a.volume.core.peers[0]!.resyncBytesCompared;
  await waitFor('in-sync', () => inSync(a, b));
  // A full resync, and a checksum one (issue 14 item 5): every track compared, only those that
  // differ (at most the 12 tracks the writes touch) sent.
  assert.equal(a.volume.core.peers[0]!.resyncBytesCompared - comparedBefore, 4 * MiB, 'full resync after the survivor crashed: every track compared');
  const sent = a.volume.counters.syncBytesSent;
  assert.ok(sent > 0 && sent <= 12 * TRACK, `only the tracks that differ were sent: ${sent} bytes`);
  await acked.check(b, 'after the full resync', 50);
  await closeAndCompare(a, b);
});

test('split brain: both sides wrote as primary; no silent merge; resolve --discard-local makes one side the target', async () => {
  const { a, b, link } = await syncedPair();
  link.cut();
  await b.volume.promote(false);
  await a.volume.write(0, pattern(4 * KiB, 100), false);
  await b.volume.write(8 * KiB, pattern(4 * KiB, 200), false);
  link.connect();
  await waitFor('split brain on both', () => a.volume.peerState === 'split-brain' && b.volume.peerState === 'split-brain');
  assert.deepEqual(await a.volume.read(8 * KiB, 4 * KiB), Buffer.alloc(4 * KiB), 'nothing of b reached a');
  await b.volume.resolveDiscardLocal();
  await waitFor('in-sync after resolve', () => inSync(a, b));
  assert.equal(b.volume.core.role, 'secondary');
  assert.deepEqual(await b.volume.read(0, 4 * KiB), pattern(4 * KiB, 100), "a's write is on b");
  assert.deepEqual(await b.volume.read(8 * KiB, 4 * KiB), Buffer.alloc(4 * KiB), "b's write is discarded");
  await closeAndCompare(a, b);
});
