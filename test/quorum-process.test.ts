// Issue 12 item 3 with real processes and a real client (qemu-io): a pair with `quorum: majority`
// answers writes while both nodes are up; with its secondary killed (-9) the primary answers no
// write — EIO at once with `onNoQuorum: io-error` — and status says quorum is lost; once the
// secondary is back and resynced, writes succeed again and the secondary serves them.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { cleanupAll, qemuIo, qemuIoProblem } from './helpers/node-process.js';
import { FailoverPair } from './helpers/failover-pair.js';
import { ensureTools } from './helpers/tools.js';

ensureTools(['qemu-io']);
after(cleanupAll);

const QUORUM = { quorum: 'majority', onNoQuorum: 'io-error', ack: 'quorum' };

async function metricsOf(adminUrl: string): Promise<string> {
  const res = await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  return res.text();
}

interface QuorumStatus { ack: string; quorum: { policy: string; have: number; need: number; ok: boolean; onNoQuorum: string } }

describe('quorum majority with real processes', { concurrency: false }, () => {
  it('io-error: the primary fails writes with EIO while its secondary is dead, and serves them again once it is back', async () => {
    const pair = await FailoverPair.create({ start: false });
    try {
      await pair.start('b', { overrides: QUORUM });
      await pair.start('a', { overrides: QUORUM });
      await pair.waitInSync();
      const ok = await qemuIo(pair.uri('a'), ['write -P 0x5a 0 64k']);
      assert.equal(qemuIoProblem(ok), null);
      const before = (await pair.status('a')) as unknown as QuorumStatus;
      assert.deepEqual(before.quorum, { policy: 'majority', have: 2, need: 2, ok: true, onNoQuorum: 'io-error' });
      assert.equal(before.ack, 'quorum');
      const metricsBefore = await metricsOf(pair.adminUrl('a'));
      assert.match(metricsBefore, /^twinblock_quorum_ok\{[^}]*\} 1$/m);
      assert.match(metricsBefore, /^twinblock_quorum_reachable_nodes\{[^}]*\} 2$/m);
      assert.match(metricsBefore, /^twinblock_link_connected\{[^}]*peer="b"[^}]*\} 1$/m, 'link metrics carry the peer label');

      await pair.kill9('b');
      await pair.waitFor('a has lost quorum', async () => {
        const s = (await pair.status('a')) as unknown as QuorumStatus;
        return { ok: !s.quorum.ok, detail: JSON.stringify(s.quorum) };
      });
      // Scrapes within a second share one exposition (METRICS_REUSE_MS): poll until it is fresh.
      await pair.waitFor('twinblock_quorum_ok 0 in /metrics', async () => {
        const text = await metricsOf(pair.adminUrl('a'));
        return { ok: /^twinblock_quorum_ok\{[^}]*\} 0$/m.test(text), detail: text.match(/^twinblock_quorum_ok.*$/m)?.[0] ?? 'no twinblock_quorum_ok' };
      });
      const refused = await qemuIo(pair.uri('a'), ['write -P 0x66 0 64k']);
      assert.match(`${refused.stdout}\n${refused.stderr}`, /Input\/output error/, 'qemu-io sees EIO for a write without quorum');
      assert.ok(pair.logs.a.lines.some((l) => /no quorum: this node reaches 1 of 2 nodes and needs 2.*fail with EIO/.test(String(l['msg']))), 'the primary logs that it lost quorum');

      await pair.start('b', { overrides: QUORUM });
      await pair.waitInSync();
      const again = await qemuIo(pair.uri('a'), ['write -P 0x77 64k 64k', 'read -P 0x5a 0 64k']);
      assert.equal(qemuIoProblem(again), null, 'the refused write never landed; new writes succeed');
      const onB = await qemuIo(pair.uri('b'), ['read -P 0x77 64k 64k', 'read -P 0x5a 0 64k'], { readOnly: true });
      assert.equal(qemuIoProblem(onB), null, 'the secondary serves what the primary answered');
      const after = (await pair.status('a')) as unknown as { peers: { resyncBytesSent: number }[]; counters: { resyncBytesSent: number } };
      assert.ok(after.peers[0]!.resyncBytesSent > 0, 'the returning secondary was resent what it lacked');
      assert.equal(after.peers[0]!.resyncBytesSent, after.counters.resyncBytesSent, 'one peer: its resync bytes are the node\'s total');
    } finally {
      await pair.kill();
    }
  });
});
