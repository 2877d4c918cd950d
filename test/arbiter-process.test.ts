// Unattended failover with a real etcd (issue 13 item 7): real node processes, a real etcd
// cluster started here on free ports (Debian etcd-server, installed when missing), writes with our
// NBD client counted as acknowledged only when their reply arrived.
//   - kill -9 of the primary under load, with one of three etcd members killed first: the
//     secondary promotes itself, every acknowledged write reads back from it, and the old primary
//     returns as secondary and gets a delta;
//   - the primary frozen (SIGSTOP) past its lease while a client keeps writing to it: the
//     secondary takes over, and not one write is acknowledged by the old primary after that;
//   - etcd killed while both nodes are up: no promotion, writes go on (the failsafe), and the
//     leader key comes back with etcd;
//   - a manual promote while the primary holds the lease is refused with etcd's reason.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { after, describe, it, type TestContext } from 'node:test';
import { NbdClient } from '../src/nbd/client.js';
import { cleanupAll } from './helpers/node-process.js';
import { AckedWriter, BLOCK_BYTES, BlockModel, describeStatus, FailoverPair, sleep, type NodeName, type PairStatus } from './helpers/failover-pair.js';
import { assertVolumeHolds, DELTA_REGION_BYTES, stopBoth, VOLUME_BYTES } from './helpers/failover-assertions.js';
import { EtcdCluster } from './helpers/etcd.js';
import { SIZE_BYTES, Trio } from './helpers/trio.js';
import { verifyVolume } from './helpers/acked-writer.js';

after(cleanupAll);

interface ArbiterView { connected: boolean; leader: string | null; epoch: number | null; state: string; electable: string[]; leaseRemainingMs: number }
const arbiterOf = (s: PairStatus): ArbiterView => (s as unknown as { arbiter: ArbiterView }).arbiter;

/** The per-run config of a node that names this etcd as its arbiter. */
const withEtcd = (etcd: EtcdCluster): { overrides: Record<string, unknown> } => ({ overrides: { arbiter: { etcd: etcd.endpoints, leaseTtlMs: 2000 } } });

/** An etcd of `members` and a pair whose nodes both name it, in sync with a holding the lease. */
async function withArbiterPair(members: number, run: (pair: FailoverPair, etcd: EtcdCluster) => Promise<void>): Promise<void> {
  const etcd = await EtcdCluster.start(members);
  const pair = await FailoverPair.create({ start: false });
  try {
    await pair.start('b', withEtcd(etcd));
    await pair.start('a', withEtcd(etcd));
    await pair.waitInSync();
    await waitLeader(pair, 'a');
    await run(pair, etcd);
  } finally {
    await pair.kill();
    await etcd.stop();
  }
}

/** A writer on a with writes in flight, once `acks` of them were acknowledged. */
async function writingToA(pair: FailoverPair, acks: number, depth = 8): Promise<{ model: BlockModel; writer: AckedWriter }> {
  const model = new BlockModel(VOLUME_BYTES);
  const writer = (await AckedWriter.open(pair.uri('a'), model, { depth, region: [0, DELTA_REGION_BYTES], maxBlocks: depth > 8 ? 4 : 2 })).start();
  await writer.waitAcks(acks);
  return { model, writer };
}

/** Both running nodes see `leader` hold the lease, and a is... whatever it is. */
function waitLeader(pair: FailoverPair, leader: NodeName, among: NodeName[] = ['a', 'b'], timeoutMs = 15_000): Promise<number> {
  return pair.waitFor(`etcd leader ${leader}`, async () => {
    const all = await Promise.all(among.map((n) => pair.status(n)));
    const ok = all.every((s) => arbiterOf(s)?.leader === leader && arbiterOf(s).connected);
    return { ok, detail: all.map((s) => `${describeStatus(s)} arbiter ${JSON.stringify(arbiterOf(s))}`).join(' | ') };
  }, timeoutMs);
}

describe('unattended failover through a real etcd', { concurrency: false }, () => {
  it('kill -9 of the primary, with one of three etcd members down: b promotes itself, holds every acknowledged write, and a returns as secondary with a delta', async (t: TestContext) => {
    await withArbiterPair(3, async (pair, etcd) => {
      await etcd.kill(0); // a three-member cluster keeps working with two
      const region: [number, number] = [0, DELTA_REGION_BYTES];
      const { model, writer } = await writingToA(pair, 1000, 16);
      await pair.kill9('a');
      const killedAt = performance.now();
      const stats = await writer.stop();
      assert.ok(stats.acked >= 1000, `writes acknowledged before the kill: ${stats.acked}`);
      // No operator: b sees the lease lapse and its link gone, wins the transaction, promotes.
      await pair.waitFor('b primary on its own', async () => {
        const s = await pair.status('b');
        return { ok: s.role === 'primary' && arbiterOf(s).leader === 'b', detail: `${describeStatus(s)} ${JSON.stringify(arbiterOf(s))}` };
      }, 15_000, 20);
      const client = await NbdClient.connect(pair.uri('b'));
      const first = randomBytes(BLOCK_BYTES);
      await client.write(region[0], first);
      const firstWriteMs = performance.now() - killedAt;
      await client.disconnect();
      model.acked[0] = first;
      model.uncertain[0] = [];
      t.diagnostic(`kill -9 of a → first write served by b: ${firstWriteMs.toFixed(0)} ms (lease TTL 2000 ms); ${stats.acked} writes acknowledged before the kill`);
      assert.equal(pair.lines('b', 'arbiter: promoting this node (automatic failover)').length, 1, pair.tail());
      const sb = await pair.status('b');
      assert.ok(arbiterOf(sb).epoch !== null && arbiterOf(sb).epoch === (sb as unknown as { epoch: number }).epoch, `etcd's epoch is the node's: ${JSON.stringify(arbiterOf(sb))}`);
      await assertVolumeHolds(pair, 'b', model, 'after the automatic failover to b', true);

      // a comes back with its usual config: as secondary, on its own, with a delta.
      await pair.start('a', withEtcd(etcd));
      await pair.waitInSync(60_000);
      const sa = await pair.status('a');
      assert.equal(sa.role, 'secondary', describeStatus(sa));
      assert.equal(arbiterOf(sa).leader, 'b');
      await stopBoth(pair);
    });
  });

  it('the primary frozen past its lease while a client writes to it: b takes over, a acknowledges nothing after that and rejoins on its own', async (t: TestContext) => {
    await withArbiterPair(1, async (pair) => {
      const { model, writer } = await writingToA(pair, 300);
      pair.node('a').child.kill('SIGSTOP');
      let promotedAt = 0;
      try {
        await pair.waitFor('b promoted while a is frozen', async () => {
          const s = await pair.status('b');
          return { ok: s.role === 'primary' && arbiterOf(s).leader === 'b', detail: describeStatus(s) };
        }, 15_000, 20);
        promotedAt = Date.now();
      } finally {
        pair.node('a').child.kill('SIGCONT');
      }
      // a resumes: its lease is gone by its own clock, so what it answers now it holds; then etcd
      // tells it b is primary and it demotes itself, failing the held writes.
      await pair.waitFor('a demoted itself', async () => {
        const s = await pair.status('a');
        return { ok: s.role === 'secondary', detail: describeStatus(s) };
      }, 15_000);
      const stats = await writer.stop();
      const lateAcks = writer.ackTimes.filter((ms) => writer.startedAt + ms > promotedAt).length;
      t.diagnostic(`acknowledged by a: ${stats.acked}; after b's promotion: ${lateAcks}; errors after the resume: ${stats.errnos.join(',') || 'none'}`);
      assert.equal(lateAcks, 0, 'a write acknowledged by the old primary after its successor was promoted');
      assert.ok(stats.acked >= 300);
      assert.ok(pair.lines('a', /arbiter: demoting this node/).length >= 1, pair.tail());
      await assertVolumeHolds(pair, 'b', model, 'on b after the frozen primary', true);
      // No person involved: a rejoins b. Its link dropped while it was primary, so it took an epoch
      // of its own (a split brain by histories); etcd names b, so a discards what it has beyond b.
      await pair.waitInSync(60_000);
      t.diagnostic(`a's log: ${pair.lines('a', /arbiter: split brain with b/).length} automatic discard(s) of its unacknowledged changes`);
      await assertVolumeHolds(pair, 'a', model, 'on a once back in sync', true);
      await stopBoth(pair);
    });
  });

  it('etcd killed while both nodes are up: no promotion, writes go on, the leader key returns with etcd; a promote against the lease is refused', async (t: TestContext) => {
    await withArbiterPair(1, async (pair, etcd) => {
      const metricsText = await pair.node('a').metrics();
      for (const name of ['twinblock_arbiter_connected', 'twinblock_arbiter_leader', 'twinblock_arbiter_epoch']) {
        assert.match(metricsText, new RegExp(`^${name}\\{[^}]*\\} 1$`, 'm'), `${name} is 1 on the leader`);
      }
      const refused = await pair.admin('b', 'promote');
      assert.equal(refused.status, 409, JSON.stringify(refused.body));
      assert.match(String(refused.body['error']), /node a holds the leader lease/);

      const { model, writer } = await writingToA(pair, 200);
      await etcd.kill(0);
      const killedAt = Date.now();
      await sleep(5000); // more than two lease TTLs
      const acksAfter = writer.ackTimes.filter((ms) => writer.startedAt + ms > killedAt + 3000).length;
      const [sa, sb] = await Promise.all([pair.status('a'), pair.status('b')]);
      assert.equal(sa.role, 'primary', describeStatus(sa));
      assert.equal(sb.role, 'secondary', describeStatus(sb));
      assert.equal(arbiterOf(sa).connected, false);
      t.diagnostic(`writes acknowledged from 3 s to 5 s after etcd died: ${acksAfter}`);
      assert.ok(acksAfter >= 100, `the failsafe keeps a serving while b is connected (acks after 3 s: ${acksAfter})`);
      await etcd.startMember(0);
      await waitLeader(pair, 'a', ['a', 'b'], 20_000);
      const stats = await writer.stop();
      assert.equal(stats.errors.length, 0, stats.errors.join('; '));
      await assertVolumeHolds(pair, 'a', model, 'after etcd came back', true);
      await stopBoth(pair);
    });
  });

  it('a clean stop of the primary hands over: b takes over at once, and a restarted with its usual config comes back as secondary with a delta', async (t: TestContext) => {
    await withArbiterPair(1, async (pair, etcd) => {
      const { model, writer } = await writingToA(pair, 300);
      await writer.close();
      const stoppedAt = performance.now();
      assert.equal(await pair.stop('a'), 0);
      await pair.waitFor('b primary after a stopped', async () => {
        const s = await pair.status('b');
        return { ok: s.role === 'primary' && arbiterOf(s).leader === 'b', detail: describeStatus(s) };
      }, 10_000, 20);
      const tookOverMs = performance.now() - stoppedAt;
      t.diagnostic(`a's clean stop → b primary: ${tookOverMs.toFixed(0)} ms`);
      await pair.start('a', withEtcd(etcd));
      const sa = await pair.status('a');
      assert.equal(sa.role, 'secondary', `${describeStatus(sa)}\n${pair.tail()}`);
      await pair.waitInSync(60_000);
      assert.equal(pair.lines('b', /split brain/).length, 0, pair.tail());
      assert.equal(pair.lines('a', 'full resync of the peer started').length + pair.lines('b', 'full resync of the peer started').length, 0, `a returns by a delta, not a full resync\n${pair.tail()}`);
      const sb = await pair.status('b');
      assert.equal(sb.peers[0]?.state, 'in-sync', 'no split brain');
      await assertVolumeHolds(pair, 'b', model, 'on b after the switchover', true);
      await stopBoth(pair);
    });
  });

  it('kill -9 of the secondary: a takes b out of the electable set and goes on; b returns, resyncs and is electable again', async (t: TestContext) => {
    await withArbiterPair(1, async (pair, etcd) => {
      await pair.waitFor('b electable', async () => {
        const s = await pair.status('a');
        return { ok: arbiterOf(s).electable.includes('b'), detail: JSON.stringify(arbiterOf(s)) };
      });
      const { model, writer } = await writingToA(pair, 300);
      await pair.kill9('b');
      const killedAt = Date.now();
      await sleep(3000);
      const sa = await pair.status('a');
      assert.deepEqual(arbiterOf(sa).electable, ['a'], JSON.stringify(arbiterOf(sa)));
      assert.equal(arbiterOf(sa).epoch, (sa as unknown as { epoch: number }).epoch, 'the epoch a took alone is in etcd');
      const acksAlone = writer.ackTimes.filter((ms) => writer.startedAt + ms > killedAt + 2000).length;
      t.diagnostic(`writes acknowledged by a alone, 2-3 s after b died: ${acksAlone}`);
      assert.ok(acksAlone >= 50, `a goes on without b: ${acksAlone} acknowledgements in the last second`);
      await pair.start('b', withEtcd(etcd));
      await pair.waitInSync(60_000);
      await pair.waitFor('b electable again', async () => {
        const s = await pair.status('a');
        return { ok: arbiterOf(s).electable.includes('b'), detail: JSON.stringify(arbiterOf(s)) };
      });
      const stats = await writer.stop();
      assert.equal(stats.errors.length, 0, stats.errors.join('; '));
      await assertVolumeHolds(pair, 'b', model, 'on b after its return', true);
      await stopBoth(pair);
    });
  });

  it('three nodes with ack: quorum: kill -9 of the primary, a secondary takes over on its own through the survey of a majority, every acknowledged write intact', async (t: TestContext) => {
    const etcd = await EtcdCluster.start(1);
    const trio = await Trio.create({ ack: 'quorum', quorum: 'majority', arbiter: { etcd: etcd.endpoints, leaseTtlMs: 2000 } });
    try {
      await trio.waitMirrored();
      await trio.waitFor('a holds the lease', async () => {
        const s = await trio.status('a') as unknown as { arbiter: ArbiterView };
        return { ok: s.arbiter.leader === 'a', detail: JSON.stringify(s.arbiter) };
      });
      const model = new BlockModel(SIZE_BYTES);
      const writer = (await AckedWriter.open(trio.node('a').uri, model, { depth: 16, maxBlocks: 4 })).start();
      await writer.waitAcks(1000);
      await trio.node('a').kill9();
      const killedAt = performance.now();
      const stats = await writer.stop();
      let winner: 'b' | 'c' | null = null;
      await trio.waitFor('b or c primary on its own', async () => {
        for (const name of ['b', 'c'] as const) {
          const s = await trio.status(name) as unknown as { role: string; arbiter: ArbiterView };
          if (s.role === 'primary' && s.arbiter.leader === name) winner = name;
        }
        return { ok: winner !== null, detail: String(winner) };
      }, 20_000);
      t.diagnostic(`kill -9 of a → ${winner} primary: ${(performance.now() - killedAt).toFixed(0)} ms; ${stats.acked} writes acknowledged before`);
      // The promotion went through the survey of a majority (issue 12 item 4), which fetches what
      // the winner lacks from the most current node, if anything.
      const judged = trio.node(winner!).stderr.split('\n').filter((l) => l.includes('"promotion survey judged"'));
      assert.equal(judged.length, 1, trio.logs());
      t.diagnostic(`${winner}: ${judged[0]!.slice(judged[0]!.indexOf('"verdict"'), judged[0]!.indexOf('"msg"'))}; fetched: ${trio.node(winner!).stderr.includes('fetching what this node lacks') ? 'yes' : 'nothing lacking'}`);
      const check = await verifyVolume(trio.node(winner!).uri, model);
      assert.equal(check.mismatchCount, 0, check.mismatches.join('\n'));
      assert.ok(check.ackedBlocks >= 500, `acknowledged blocks checked: ${check.ackedBlocks}`);
      await trio.start('a');
      await trio.waitFor('a back as secondary, in sync', async () => {
        const s = await trio.status('a');
        return { ok: s.role === 'secondary' && s.peers.find((p) => p.node === winner)?.state === 'in-sync', detail: JSON.stringify(s.peers) };
      }, 60_000);
      await trio.stopAll();
    } finally {
      for (const n of trio.nodes.values()) await n.kill9();
      await etcd.stop();
    }
  });
});
