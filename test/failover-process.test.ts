// Failures with real processes and real clients (issue 5 item 9, and items 2, 4, 5, 6, 7 as seen
// from outside): kill -9 the primary under load and promote the secondary; kill -9 the primary and
// restart it with no promotion; kill -9 the secondary under load; cut and stall the link with a TCP
// proxy; fail back and forth under load; the out-of-sync set across a clean restart (and the full
// resync after a crash); split brain and its resolution; promotion of a half-resynced node.
//
// Every test writes with our NBD client, many writes in flight, each with a unique payload, and
// counts a write as acknowledged only when its reply arrived. After each failure every
// acknowledged write must read back byte for byte (a write in flight at a crash may or may not
// have landed; a write refused with EPERM must never land), and after a clean stop of both nodes
// the two store files must be identical and hold exactly the model.
//
// Volumes are 64 MiB with 64 KiB tracks (1024 tracks), heartbeat timeout 500 ms. The helpers are
// test/helpers/failover-pair.ts (pair, writer, block model), test/helpers/failover-assertions.ts and
// test/helpers/fault-proxy.ts.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { after, describe, it, type TestContext } from 'node:test';
import { NbdClient } from '../src/nbd/client.js';
import { cleanupAll, describeRun } from './helpers/node-process.js';
import {
  AckedWriter, BLOCK_BYTES, BlockModel, deadPort, describeStatus, KiB, MiB, readMetadata, sleep, verifyVolume, type NodeName,
} from './helpers/failover-pair.js';
import {
  assertDeltaSize, assertNoFullResync, assertNoWriteErrors, assertStoresMatch, assertVolumeHolds, CRASH_RESTART,
  DELTA_REGION_BYTES, DELTA_RESYNC, fields, FULL_RESYNC, HEARTBEAT_MS, MIN_ACKED_BLOCKS, num, resyncStart, stopBoth,
  TRACK_BYTES, VOLUME_BYTES, withPair,
} from './helpers/failover-assertions.js';

after(cleanupAll);


describe('failover with real processes', { concurrency: false }, () => {
  // ------------------------------------------------------------------------------ 1
  it('kill -9 the primary under load: the promoted secondary holds every acknowledged write; the old primary returns as secondary and gets a delta', async (t: TestContext) => {
    await withPair({}, async (pair) => {
      await pair.waitInSync();
      const model = new BlockModel(VOLUME_BYTES);
      // Writes stay in the first 12 MiB (192 of 1024 tracks), so a delta resync is visibly not a full one.
      const region: [number, number] = [0, DELTA_REGION_BYTES];
      const writer = (await AckedWriter.open(pair.uri('a'), model, { depth: 32, region, maxBlocks: 4 })).start();
      await writer.waitAcks(1500);
      await pair.kill9('a');
      const killedAt = Date.now();
      const stats = await writer.stop();
      assertNoWriteErrors(stats, 'writes to a before the kill', pair);
      assert.ok(stats.connectionDied, 'the writer must see its connection die with a');
      t.diagnostic(`writes acknowledged by a before kill -9: ${stats.acked} (${(stats.ackedBytes / MiB).toFixed(1)} MiB); in flight at the kill: ${stats.lost}`);

      // An operator (or monitor) sees b lose its peer, then promotes it.
      await pair.waitFor('b sees its peer gone', async () => {
        const s = await pair.status('b');
        return { ok: s.peers[0]?.connected === false, detail: describeStatus(s) };
      }, 5000);
      const noticedMs = Date.now() - killedAt;
      const t0 = performance.now();
      const promoted = await pair.admin('b', 'promote');
      const tPromoted = performance.now();
      assert.equal(promoted.status, 200, `POST b/promote: ${JSON.stringify(promoted.body)}\n${pair.tail()}`);
      const client = await NbdClient.connect(pair.uri('b'));
      assert.equal(client.readOnly, false, 'the promoted node must export read-write');
      const first = randomBytes(BLOCK_BYTES);
      await client.write(region[0], first);
      const tFirstWrite = performance.now();
      model.acked[region[0] / BLOCK_BYTES] = first;
      model.uncertain[region[0] / BLOCK_BYTES] = [];
      const promoteMs = tPromoted - t0;
      const firstWriteMs = tFirstWrite - t0;
      t.diagnostic(`b noticed the dead link ${noticedMs} ms after kill -9; POST /promote took ${promoteMs.toFixed(1)} ms; promote call → first write served on b: ${firstWriteMs.toFixed(1)} ms`);
      assert.ok(firstWriteMs < 1000, `promote → first write took ${firstWriteMs.toFixed(0)} ms (issue 5 item 2: within 1 s)`);
      const sb = await pair.status('b');
      assert.equal(sb.role, 'primary');
      assert.equal(sb.peers[0]?.state, 'degraded', describeStatus(sb));
      assert.equal(pair.lines('b', 'promoted to primary').length, 1, pair.tail());
      const outOfSyncAtPromote = sb.peers[0]!.outOfSyncTracks;

      // Every acknowledged write is on the new primary, byte for byte.
      const checked = await assertVolumeHolds(pair, 'b', model, 'after failover to b', true);
      t.diagnostic(`every acknowledged write reads back from b; ${checked.landedUncertain} blocks hold a write that was in flight at the kill`);

      // The new primary serves a while; then the old one comes back.
      const writerB = new AckedWriter(client, model, { depth: 16, region, maxBlocks: 4 }).start();
      await writerB.waitAcks(500);
      const statsB = await writerB.close();
      assertNoWriteErrors(statsB, 'writes to the promoted b', pair);
      const oosBeforeRestart = (await pair.status('b')).peers[0]!.outOfSyncTracks;
      const marks = { a: pair.mark('a'), b: pair.mark('b') };
      const sentBefore = (await pair.status('b')).counters.resyncBytesSent;
      await pair.start('a');
      assert.equal(pair.lines('a', CRASH_RESTART, marks.a).length, 1, `a must say it restarted after a crash\n${pair.tail()}`);
      const syncMs = await pair.waitInSync(30_000);
      const [sa2, sb2] = await Promise.all([pair.status('a'), pair.status('b')]);
      assert.equal(sa2.role, 'secondary', `the old primary must come back secondary: ${describeStatus(sa2)}`);
      assert.equal(sb2.role, 'primary', describeStatus(sb2));
      const start = resyncStart(pair, 'b', marks.b);
      assert.equal(start.full, false, `the returning primary must get a delta resync, got: ${fields(start.line)}`);
      assertNoFullResync(pair, marks, 'after the old primary returned');
      const sent = sb2.counters.resyncBytesSent - sentBefore;
      t.diagnostic(`out-of-sync tracks: ${outOfSyncAtPromote} at promote, ${oosBeforeRestart} before a returned; delta resync ${num(start.line['tracks'])} tracks, ${sent} bytes sent (${(sent / MiB).toFixed(2)} MiB) in ${syncMs} ms`);
      assert.equal(num(start.line['tracks']), oosBeforeRestart, `resync tracks vs b's out-of-sync set: ${fields(start.line)}`);
      assertDeltaSize(num(start.line['tracks']), sent, DELTA_REGION_BYTES / TRACK_BYTES, 'resync of the returned old primary');

      // The returned secondary serves the same bytes (read-only), then both stop cleanly.
      await assertVolumeHolds(pair, 'a', model, 'a after its resync');
      await stopBoth(pair);
      assertStoresMatch(pair, model);
    });
  });

  // ------------------------------------------------------------------------------ 1b
  it('kill -9 the primary and restart it with no promotion (a quick reboot): the peer that stayed up holds the newest data and must not be overwritten', async (t: TestContext) => {
    await withPair({}, async (pair) => {
      await pair.waitInSync();
      const model = new BlockModel(VOLUME_BYTES);
      const writer = (await AckedWriter.open(pair.uri('a'), model, { depth: 32, region: [0, 16 * MiB], maxBlocks: 4 })).start();
      await writer.waitAcks(1500);
      const before = await pair.status('a');
      await pair.kill9('a');
      const stats = await writer.stop();
      assertNoWriteErrors(stats, 'writes to a before the kill', pair);
      // Acknowledged writes a held only in RAM (mirrored to b, not yet hardened on a) are now only on b.
      assert.ok(before.cache.dirtyTracks > 0, `the test needs a to die with unhardened writes: ${describeStatus(before)}`);
      await assertVolumeHolds(pair, 'b', model, 'b right after the kill of a', true);
      const marks = { a: pair.mark('a'), b: pair.mark('b') };
      await pair.start('a');
      assert.equal(pair.lines('a', CRASH_RESTART, marks.a).length, 1, pair.tail());
      await pair.waitInSync(30_000);
      const resyncs = [...pair.lines('a', /resync/, marks.a), ...pair.lines('b', /resync/, marks.b)].map(fields);
      t.diagnostic(`a died with ${before.cache.dirtyTracks} dirty tracks (${stats.acked} writes acknowledged); resyncs after it returned: ${resyncs.join(' | ')}`);
      // Every acknowledged write must still be on b, and now on a too.
      const onB = await verifyVolume(pair.uri('b'), model);
      const onA = await verifyVolume(pair.uri('a'), model);
      assert.ok(onB.ackedBlocks >= MIN_ACKED_BLOCKS && onA.ackedBlocks >= MIN_ACKED_BLOCKS, `acknowledged blocks read back: ${onB.ackedBlocks} on b, ${onA.ackedBlocks} on a`);
      assert.equal(onB.mismatchCount + onA.mismatchCount, 0,
        `acknowledged writes lost after the crashed primary came back (no promotion): ${onB.mismatchCount} blocks on b, ${onA.mismatchCount} on a, e.g.\n${[...onB.mismatches, ...onA.mismatches].slice(0, 4).join('\n')}\n` +
        `resyncs: ${resyncs.join(' | ')}`);
      assert.equal(pair.lines('a', FULL_RESYNC, marks.a).length, 0, 'the crashed node must not be the source of a full resync over its surviving peer');
      const promoted = await pair.admin('a', 'promote');
      assert.equal(promoted.status, 200, JSON.stringify(promoted.body));
      await pair.waitInSync(20_000);
      await stopBoth(pair);
      assertStoresMatch(pair, model);
    });
  });

  // ------------------------------------------------------------------------------ 2
  it('kill -9 the secondary under load: the primary keeps writing (degraded, write-through); the resync sends exactly the out-of-sync tracks', async (t: TestContext) => {
    // 24 MiB/s: the initial 64 MiB sync takes ~3 s, the resync below long enough to write during it.
    await withPair({ syncRate: '24MiB' }, async (pair) => {
      await pair.waitInSync();
      await pair.waitDrained();
      const model = new BlockModel(VOLUME_BYTES);
      const writer = (await AckedWriter.open(pair.uri('a'), model, { depth: 32, region: [0, 8 * MiB], maxBlocks: 4 })).start();
      await writer.waitAcks(1000);
      await pair.kill9('b');
      const killedAt = Date.now();
      // Writes in flight at the kill complete under the degraded policy; more keep coming.
      await writer.waitAcks(300, 10_000);
      const s1 = await writer.close();
      assertNoWriteErrors(s1, 'writes to a across the kill of b', pair);
      assert.equal(s1.connectionDied, false);
      const degradedAfter = Date.now() - killedAt;
      const sa = await pair.status('a');
      assert.equal(sa.peers[0]?.state, 'degraded', describeStatus(sa));
      // A second writer in another region: its tracks must all be in the out-of-sync set.
      const degradedWriter = (await AckedWriter.open(pair.uri('a'), model, { depth: 16, region: [16 * MiB, 20 * MiB], maxBlocks: 2 })).start();
      await degradedWriter.waitAcks(500);
      const s2 = await degradedWriter.close();
      assertNoWriteErrors(s2, 'degraded writes to a', pair);
      t.diagnostic(`a kept acknowledging writes while degraded: ${s1.acked} in the first writer (300+ after the kill, within ${degradedAfter} ms), ${s2.acked} in the second`);

      const before = await pair.status('a');
      const oos = before.peers[0]!.outOfSyncTracks;
      assert.ok(oos >= degradedWriter.ackedTracks.size, `out-of-sync ${oos} < ${degradedWriter.ackedTracks.size} tracks written while degraded`);
      // Both writers' regions: 8 MiB + 4 MiB = 192 tracks, the most a drained pair can have out of sync.
      const writtenTracks = (8 * MiB + 4 * MiB) / TRACK_BYTES;
      assert.ok(oos <= writtenTracks, `out-of-sync set ${oos} tracks: more than the ${writtenTracks} tracks written`);
      const marks = { a: pair.mark('a'), b: pair.mark('b') };
      const sentBefore = before.counters.resyncBytesSent;

      await pair.start('b');
      assert.equal(pair.lines('b', CRASH_RESTART, marks.b).length, 1, `b must say it restarted after a crash\n${pair.tail()}`);
      // Host writes while the resync runs: on tracks not sent yet and sent already; they must end right on both.
      await pair.waitFor('a starts resyncing b', async () => ({ ok: pair.lines('a', /resync/, marks.a).length > 0, detail: 'no resync line yet' }), 20_000, 20);
      const duringResync = (await AckedWriter.open(pair.uri('a'), model, { depth: 16, region: [0, 8 * MiB], maxBlocks: 4 })).start();
      const syncMs = await pair.waitInSync(30_000);
      await duringResync.waitAcks(100);
      const s3 = await duringResync.close();
      assertNoWriteErrors(s3, 'writes to a during the resync', pair);

      const after = await pair.status('a');
      const sent = after.counters.resyncBytesSent - sentBefore;
      const start = resyncStart(pair, 'a', marks.a);
      t.diagnostic(`out-of-sync tracks before the restart: ${oos} (${(oos * TRACK_BYTES / MiB).toFixed(2)} MiB); resync: ${fields(start.line)}; bytes sent ${sent}; in-sync ${syncMs} ms after b came up; ${s3.acked} writes during the resync`);
      assert.equal(start.full, false, `a returning secondary must get a delta: ${fields(start.line)}`);
      assert.equal(num(start.line['tracks']), oos, 'resync tracks = the out-of-sync set just before the restart');
      assertDeltaSize(num(start.line['tracks']), sent, writtenTracks, 'resync of the returned secondary');
      assert.equal(num(start.line['bytes']), sent, 'the log line and counters.resyncBytesSent agree');
      assert.equal(after.peers[0]!.outOfSyncTracks, 0);

      await assertVolumeHolds(pair, 'b', model, 'b after its resync');
      await stopBoth(pair);
      assertStoresMatch(pair, model);
    });
  });

  // ------------------------------------------------------------------------------ 3
  for (const fault of ['drop', 'stall'] as const) {
    it(`link ${fault === 'drop' ? 'dropped (both sides reset)' : 'stalled (silent, nothing closed)'} by a proxy, then healed: degraded within the heartbeat timeout, writes keep being served, in-sync again`, async (t: TestContext) => {
      await withPair({ proxy: true }, async (pair) => {
        const proxy = pair.proxy!;
        await pair.waitInSync();
        await pair.waitDrained();
        assert.ok(proxy.forwardedBytes.toTarget > 0, 'the link must run through the proxy');
        const model = new BlockModel(VOLUME_BYTES);
        const writer = (await AckedWriter.open(pair.uri('a'), model, { depth: 16, region: [0, DELTA_REGION_BYTES], maxBlocks: 4 })).start();
        await writer.waitAcks(500);
        const marks = { a: pair.mark('a'), b: pair.mark('b') };

        for (let round = 1; round <= 2; round++) {
          const cutAt = Date.now();
          if (fault === 'drop') proxy.drop();
          else proxy.stall();
          const degradedMs = await pair.waitPeerState('a', 'degraded', 10_000);
          const bMs = await pair.waitFor('b sees the link down', async () => {
            const s = await pair.status('b');
            return { ok: s.peers[0]?.connected === false, detail: describeStatus(s) };
          }, 10_000);
          const limit = HEARTBEAT_MS + 1000;
          assert.ok(degradedMs <= limit, `a went degraded ${degradedMs} ms after the ${fault} (limit ${limit})`);
          // Writes keep being served while the peer is gone.
          const degradedAt = Date.now();
          await writer.waitAcks(200, 10_000);
          const acksDegraded = writer.acksBetween(degradedAt, Date.now());
          await sleep(300);
          const oos = (await pair.status('a')).peers[0]!.outOfSyncTracks;
          proxy.heal();
          const healedAt = Date.now();
          const syncMs = await pair.waitInSync(20_000);
          await writer.waitAcks(200, 10_000);
          t.diagnostic(`round ${round}: a degraded ${degradedMs} ms after the ${fault} (b noticed within ${bMs + degradedMs} ms); ${acksDegraded}+ writes acknowledged while degraded; ${oos} tracks out of sync at heal; in-sync ${syncMs} ms after heal (cut lasted ${healedAt - cutAt} ms)`);
          assertNoWriteErrors(writer.stats, `writes across ${fault} round ${round}`, pair);
        }
        const stats = await writer.close();
        assert.equal(stats.connectionDied, false);
        assertNoFullResync(pair, marks, `after the ${fault}s`);
        const deltas = pair.lines('a', DELTA_RESYNC, marks.a);
        assert.ok(deltas.length >= 2, `a must resync b by delta after each heal\n${pair.tail()}`);
        for (const d of deltas) assertDeltaSize(num(d['tracks']), num(d['bytes']), DELTA_REGION_BYTES / TRACK_BYTES, `delta after a heal: ${fields(d)}`);
        await pair.waitInSync(10_000);
        await assertVolumeHolds(pair, 'b', model, 'b after the heals');
        await stopBoth(pair);
        await proxy.close();
        assertStoresMatch(pair, model);
      });
    });
  }

  // ------------------------------------------------------------------------------ 4
  it('failback under load: demote a / promote b, demote b / promote a, writers running across each demote: nothing lost, refused writes never land, no full resync', async (t: TestContext) => {
    await withPair({}, async (pair) => {
      await pair.waitInSync();
      const model = new BlockModel(VOLUME_BYTES);
      const marks = { a: pair.mark('a'), b: pair.mark('b') };

      // Refused while a is a connected primary (no --force): one line, exit 1.
      const refused = await pair.cli('b', ['promote']);
      assert.equal(refused.code, 1, describeRun('twinblock promote on b while a is primary', refused));
      assert.equal(refused.stderr.trim().split('\n').length, 1, `one line: ${refused.stderr}`);
      assert.match(refused.stderr, /primary/);
      const notSplit = await pair.cli('a', ['resolve', '--discard-local']);
      assert.equal(notSplit.code, 1, describeRun('twinblock resolve outside a split brain', notSplit));
      assert.match(notSplit.stderr, /split brain/);

      // a → b as an operator does it (the CLI); b → a over HTTP, timed without CLI start-up. A
      // writer keeps writing to the primary until the demote refuses it (EPERM): every write
      // acknowledged before must be on the new primary, and no refused write may ever land.
      const regions: Record<NodeName, [number, number]> = { a: [0, 16 * MiB], b: [16 * MiB, 32 * MiB] };
      for (const [from, to] of [['a', 'b'], ['b', 'a']] as const) {
        const writer = (await AckedWriter.open(pair.uri(from), model, { depth: 16, region: regions[from], maxBlocks: 4 })).start();
        await writer.waitAcks(400);
        const t0 = performance.now();
        if (from === 'a') {
          const demoted = await pair.cli(from, ['demote']);
          assert.equal(demoted.code, 0, describeRun(`twinblock demote on ${from}`, demoted));
        } else {
          const demoted = await pair.admin(from, 'demote');
          assert.equal(demoted.status, 200, `POST ${from}/demote: ${JSON.stringify(demoted.body)}`);
        }
        const tDemoted = performance.now();
        const ws = await writer.close();
        assert.ok(ws.errnos.length > 0 && ws.errnos.every((e) => e === 'EPERM'), `writes to the demoted ${from} must be refused with EPERM: ${ws.errors.slice(0, 3).join('; ')}`);
        assert.equal(ws.connectionDied, false);
        if (from === 'a') {
          const promoted = await pair.cli(to, ['promote']);
          assert.equal(promoted.code, 0, describeRun(`twinblock promote on ${to}`, promoted));
        } else {
          const promoted = await pair.admin(to, 'promote');
          assert.equal(promoted.status, 200, `POST ${to}/promote: ${JSON.stringify(promoted.body)}`);
        }
        const switchMs = performance.now() - t0;
        const syncMs = await pair.waitInSync(20_000);
        const [sf, st] = await Promise.all([pair.status(from), pair.status(to)]);
        assert.equal(sf.role, 'secondary', describeStatus(sf));
        assert.equal(st.role, 'primary', describeStatus(st));
        t.diagnostic(`${from} → ${to}: demote under load ${(tDemoted - t0).toFixed(0)} ms, demote + promote ${switchMs.toFixed(0)} ms (${from === 'a' ? 'two CLI processes' : 'HTTP'}), in-sync ${syncMs} ms later; ${ws.acked} writes acknowledged, ${ws.errnos.length} refused (EPERM); resyncs on ${to}: ${pair.lines(to, /resync/, marks[to]).map(fields).join(' | ') || 'none'}`);
        // The old primary's export turned read-only; the new one's serves writes.
        const c = await NbdClient.connect(pair.uri(from));
        assert.equal(c.readOnly, true, `${from}'s export must be read-only after demote`);
        await c.disconnect();
        await assertVolumeHolds(pair, to, model, `${to} after failing over to it (refused writes must not land)`);
        await assertVolumeHolds(pair, from, model, `${from} (secondary) after failing over to ${to}`);
      }
      const last = (await AckedWriter.open(pair.uri('a'), model, { depth: 16, region: [32 * MiB, 40 * MiB], maxBlocks: 4 })).start();
      await last.waitAcks(300);
      assertNoWriteErrors(await last.close(), 'writes on a after failing back', pair);
      assertNoFullResync(pair, marks, 'failback');
      await stopBoth(pair);
      assertStoresMatch(pair, model);
    });
  });

  // ------------------------------------------------------------------------------ 5
  it('the out-of-sync set survives a clean restart of the survivor (delta); after a crash of the survivor the resync is full and says why', async (t: TestContext) => {
    await withPair({}, async (pair) => {
      await pair.waitInSync();
      await pair.waitDrained();
      const model = new BlockModel(VOLUME_BYTES);
      const w0 = (await AckedWriter.open(pair.uri('a'), model, { depth: 16, region: [0, 4 * MiB] })).start();
      await w0.waitAcks(300);
      await w0.close();
      await pair.kill9('b');
      await pair.waitPeerState('a', 'degraded', 5000);
      const w1 = (await AckedWriter.open(pair.uri('a'), model, { depth: 16, region: [8 * MiB, 12 * MiB], maxBlocks: 2 })).start();
      await w1.waitAcks(400);
      const s1 = await w1.close();
      assertNoWriteErrors(s1, 'degraded writes on a', pair);
      const sa = await pair.status('a');
      const oos = sa.peers[0]!.outOfSyncTracks;
      const epochBefore = sa.epoch;

      // Clean stop of the survivor: the out-of-sync set is on disk.
      assert.equal(await pair.stop('a'), 0, `a's SIGTERM exit\n${pair.tail()}`);
      const meta = readMetadata(pair.stores.a);
      assert.equal(meta.cleanShutdown, true);
      assert.equal(meta.role, 'primary');
      for (const track of w1.ackedTracks) assert.ok(meta.outOfSync?.has(track), `track ${track} written while degraded is missing from a's persisted out-of-sync set`);
      assert.ok((meta.outOfSyncTracks ?? 0) >= oos, `persisted out-of-sync ${meta.outOfSyncTracks} < ${oos} tracks in status before the stop`);
      const marks = { a: pair.mark('a'), b: pair.mark('b') };
      await pair.start('a');
      const sa2 = await pair.status('a');
      assert.equal(sa2.role, 'primary', `a stopped cleanly as primary must come back primary: ${describeStatus(sa2)}`);
      assert.ok(sa2.epoch > epochBefore, `a new epoch after the restart: ${epochBefore} → ${sa2.epoch}`);
      assert.equal(sa2.peers[0]?.outOfSyncTracks, meta.outOfSyncTracks, 'the restarted node loads its out-of-sync set');
      await pair.start('b');
      await pair.waitInSync(20_000);
      const start = resyncStart(pair, 'a', marks.a);
      t.diagnostic(`degraded writes touched ${w1.ackedTracks.size} tracks; ${oos} out of sync before the stop, ${meta.outOfSyncTracks} persisted; after the restart: ${fields(start.line)}`);
      assert.equal(start.full, false, `a clean restart keeps the delta: ${fields(start.line)}`);
      assert.equal(num(start.line['tracks']), meta.outOfSyncTracks);
      // w0's 4 MiB (the peer may have held it only in RAM) and w1's: 128 tracks at most.
      assertDeltaSize(num(start.line['tracks']), num(start.line['bytes']), (8 * MiB) / TRACK_BYTES, 'delta after a clean restart');
      await assertVolumeHolds(pair, 'b', model, 'b after the delta');

      // Now the survivor crashes: its out-of-sync set is gone, so the resync must be full and say so.
      await pair.kill9('b');
      await pair.waitPeerState('a', 'degraded', 5000);
      const w2 = (await AckedWriter.open(pair.uri('a'), model, { depth: 16, region: [16 * MiB, 20 * MiB], maxBlocks: 2 })).start();
      await w2.waitAcks(400);
      await pair.kill9('a');
      const s2 = await w2.stop();
      assertNoWriteErrors(s2, 'degraded writes on a before its crash', pair);
      const marks2 = { a: pair.mark('a'), b: pair.mark('b') };
      // 12 MiB/s: the 64 MiB full resync takes ~5 s, so its progress shows in status.
      await pair.start('a', { overrides: { syncRate: '12MiB' } });
      assert.equal(pair.lines('a', CRASH_RESTART, marks2.a).length, 1, pair.tail());
      await pair.start('b');
      let progress: { full?: boolean; totalBytes: number; doneBytes: number; etaSeconds: number | null } | null = null;
      await pair.waitFor('a reports its resync progress', async () => {
        const s = await pair.status('a');
        const sync = s.peers[0]?.sync ?? null;
        if (sync !== null && sync.doneBytes > 0 && sync.doneBytes < sync.totalBytes) progress = sync;
        return { ok: progress !== null || s.peers[0]?.state === 'in-sync', detail: describeStatus(s) };
      }, 20_000, 20);
      const statusCli = await pair.cli('a', ['status']);
      await pair.waitInSync(30_000);
      const full = resyncStart(pair, 'a', marks2.a);
      assert.equal(statusCli.code, 0, describeRun('twinblock status during the resync', statusCli));
      assert.match(statusCli.stdout, /resync: .* of .*full/, `twinblock status shows the full resync's progress:\n${statusCli.stdout}`);
      const done = pair.lines('a', 'resync complete: in-sync', marks2.a)[0];
      t.diagnostic(`after the survivor's crash: ${fields(full.line)}; progress seen in status: ${JSON.stringify(progress)}; ${fields(done)}`);
      assert.equal(full.full, true, `a survivor that crashed must fall back to a full resync: ${fields(full.line)}`);
      assert.match(String(full.line['reason']), /clean shutdown|crash/i, 'the log names the crash');
      assert.equal(num(full.line['bytes']), VOLUME_BYTES);
      assert.notEqual(progress, null, 'status must show the resync in progress');
      assert.equal(progress!.full, true, `status sync.full during a full resync: ${JSON.stringify(progress)}`);
      assert.equal(progress!.totalBytes, VOLUME_BYTES);
      // Write-through: every degraded write acknowledged before a's crash was on a's disk.
      const promoted = await pair.admin('a', 'promote');
      assert.equal(promoted.status, 200, JSON.stringify(promoted.body));
      await pair.waitInSync(20_000);
      await assertVolumeHolds(pair, 'a', model, 'a after its crash and full resync', true);
      await stopBoth(pair);
      assertStoresMatch(pair, model);
    });
  });

  // ------------------------------------------------------------------------------ 6
  it('split brain: both were primary apart; both refuse to mirror and keep their bytes; resolve --discard-local on b makes b a copy of a', async (t: TestContext) => {
    await withPair({}, async (pair) => {
      await pair.waitInSync();
      const model = new BlockModel(VOLUME_BYTES);
      const put = async (on: NodeName, offset: number, data: Buffer): Promise<void> => {
        const c = await NbdClient.connect(pair.uri(on));
        await c.write(offset, data);
        await c.disconnect();
      };
      const common = randomBytes(256 * KiB);
      await put('a', 0, common);
      for (let i = 0; i < common.length / BLOCK_BYTES; i++) model.acked[i] = common.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES);
      await pair.waitFor('a and b drained', async () => {
        const [sa, sb] = await Promise.all([pair.status('a'), pair.status('b')]);
        return { ok: sa.peers[0]?.unitedTracks === 0 && sb.peers[0]?.unitedTracks === 0, detail: `${describeStatus(sa)} | ${describeStatus(sb)}` };
      }, 15_000);

      // b leaves cleanly; a writes alone (a new epoch); a stops cleanly.
      assert.equal(await pair.stop('b'), 0);
      await pair.waitPeerState('a', 'degraded', 5000);
      const onlyA = randomBytes(128 * KiB);
      const bothA = randomBytes(64 * KiB);
      await put('a', 1 * MiB, onlyA);
      await put('a', 5 * MiB, bothA);
      assert.equal(await pair.stop('a'), 0);

      // b alone, its peer pointed at a dead port: promoted, writes, stops.
      await pair.start('b', { peerLinkPort: await deadPort() });
      const promoted = await pair.cli('b', ['promote']);
      assert.equal(promoted.code, 0, describeRun('promote b alone', promoted));
      const onlyB = randomBytes(128 * KiB);
      const bothB = randomBytes(64 * KiB);
      await put('b', 3 * MiB, onlyB);
      await put('b', 5 * MiB, bothB);
      assert.equal(await pair.stop('b'), 0);
      const ha = readMetadata(pair.stores.a).history;
      const hb = readMetadata(pair.stores.b).history;

      // Both together again: split brain on both sides, nothing exchanged.
      const marks = { a: pair.mark('a'), b: pair.mark('b') };
      await pair.start('a');
      await pair.start('b');
      for (const n of ['a', 'b'] as const) await pair.waitPeerState(n, 'split-brain', 10_000);
      await sleep(1000);
      const [sa, sb] = await Promise.all([pair.status('a'), pair.status('b')]);
      t.diagnostic(`histories before the meeting: a ${JSON.stringify(ha)}, b ${JSON.stringify(hb)}; now ${describeStatus(sa)} | ${describeStatus(sb)}`);
      for (const [n, s] of [['a', sa], ['b', sb]] as const) {
        assert.equal(s.peers[0]?.state, 'split-brain', `${n} after 1 s: ${describeStatus(s)}`);
        assert.equal(s.counters.syncBytesSent, 0, `${n} sent resync data in split brain`);
        assert.equal(s.counters.syncBytesReceived, 0, `${n} received resync data in split brain`);
        const line = pair.lines(n, /^split brain/, marks[n]);
        assert.ok(line.length >= 1, `${n} must log the split brain\n${pair.tail()}`);
        t.diagnostic(`${n}: ${fields(line[0])}`);
      }
      const statusCli = await pair.cli('b', ['status']);
      assert.equal(statusCli.code, 0, describeRun('twinblock status in split brain', statusCli));
      assert.match(statusCli.stdout, /SPLIT BRAIN/, statusCli.stdout);
      const readOn = async (n: NodeName, offset: number, length: number): Promise<Buffer> => {
        const c = await NbdClient.connect(pair.uri(n));
        try {
          return await c.read(offset, length);
        } finally {
          await c.disconnect();
        }
      };
      assert.ok((await readOn('a', 1 * MiB, onlyA.length)).equals(onlyA), 'a keeps its own writes');
      assert.ok((await readOn('a', 3 * MiB, onlyB.length)).equals(Buffer.alloc(onlyB.length)), "b's writes must not reach a");
      assert.ok((await readOn('a', 5 * MiB, bothA.length)).equals(bothA), 'a keeps its version of the block both wrote');
      assert.ok((await readOn('b', 3 * MiB, onlyB.length)).equals(onlyB), 'b keeps its own writes');
      assert.ok((await readOn('b', 1 * MiB, onlyA.length)).equals(Buffer.alloc(onlyA.length)), "a's writes must not reach b");
      assert.ok((await readOn('b', 5 * MiB, bothB.length)).equals(bothB), 'b keeps its version of the block both wrote');

      // The operator discards b's side.
      const resolved = await pair.cli('b', ['resolve', '--discard-local']);
      assert.equal(resolved.code, 0, describeRun('twinblock resolve --discard-local on b', resolved));
      await pair.waitInSync(20_000);
      const [sa2, sb2] = await Promise.all([pair.status('a'), pair.status('b')]);
      assert.equal(sa2.role, 'primary', describeStatus(sa2));
      assert.equal(sb2.role, 'secondary', describeStatus(sb2));
      const start = resyncStart(pair, 'a', marks.a);
      t.diagnostic(`after resolve: ${fields(start.line)}; b's log: ${pair.lines('b', /split brain resolved/).map(fields).join(' | ')}`);
      for (let i = 0; i < onlyA.length / BLOCK_BYTES; i++) model.acked[(1 * MiB) / BLOCK_BYTES + i] = onlyA.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES);
      for (let i = 0; i < bothA.length / BLOCK_BYTES; i++) model.acked[(5 * MiB) / BLOCK_BYTES + i] = bothA.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES);
      const ackedBlocks = (common.length + onlyA.length + bothA.length) / BLOCK_BYTES; // every block of a's writes
      await assertVolumeHolds(pair, 'b', model, "b after resolving (a's writes win, b's are gone)", false, ackedBlocks);
      await assertVolumeHolds(pair, 'a', model, 'a after resolving (unchanged)', false, ackedBlocks);
      await stopBoth(pair);
      assertStoresMatch(pair, model, ackedBlocks);
    });
  });

  // ------------------------------------------------------------------------------ 7
  it('a secondary whose resync was cut off by the death of its source is incomplete: promote refuses it without --force', async (t: TestContext) => {
    await withPair({}, async (pair) => {
      await pair.waitInSync();
      const model = new BlockModel(VOLUME_BYTES);
      // b misses a lot: it is killed, a writes ~16 MiB alone, a restarts cleanly with a slow resync.
      await pair.kill9('b');
      await pair.waitPeerState('a', 'degraded', 5000);
      const w = (await AckedWriter.open(pair.uri('a'), model, { depth: 16, region: [0, 16 * MiB], maxBlocks: 16 })).start();
      await w.waitAcks(600);
      assertNoWriteErrors(await w.close(), 'degraded writes on a', pair);
      assert.equal(await pair.stop('a'), 0);
      await pair.start('a', { overrides: { syncRate: '2MiB' } });
      await pair.start('b');
      await pair.waitFor('b half resynced', async () => {
        const s = await pair.status('b');
        const sync = s.peers[0]?.sync ?? null;
        return { ok: s.peers[0]?.state === 'resyncing' && sync !== null && sync.doneBytes > 0 && sync.doneBytes < sync.totalBytes, detail: describeStatus(s) };
      }, 15_000, 20);
      const sb = await pair.status('b');
      // The source dies mid-resync: b holds a mix of old and new tracks, and misses acknowledged writes.
      await pair.kill9('a');
      await pair.waitFor('b sees its peer gone', async () => {
        const s = await pair.status('b');
        return { ok: s.peers[0]?.connected === false, detail: describeStatus(s) };
      }, 5000);
      const missing = (await verifyVolume(pair.uri('b'), model)).mismatchCount;
      t.diagnostic(`b at the kill of a: ${describeStatus(sb)}; ${missing} acknowledged blocks missing on b`);
      assert.ok(missing > 0, 'the test needs b to be incomplete');
      const plain = await pair.cli('b', ['promote']);
      t.diagnostic(`twinblock promote on the half-resynced b (no --force): exit ${plain.code}: ${(plain.stderr + plain.stdout).trim()}`);
      assert.equal(plain.code, 1,
        `promote without --force must refuse a node whose resync never finished (it misses ${missing} acknowledged blocks), as it does while the resync runs; ` +
        `got exit ${plain.code}: ${(plain.stdout + plain.stderr).trim()}\n${pair.tail(8)}`);
      assert.match(plain.stderr, /resync|incomplete/);
      const forced = await pair.cli('b', ['promote', '--force']);
      assert.equal(forced.code, 0, describeRun('promote --force', forced));
    });
  });
});
