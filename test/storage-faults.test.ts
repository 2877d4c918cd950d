// The shell and core under a failing disk (issue 10 item 3), on an in-memory pair: a metadata save
// that fails is retried until it lands (before, hardening stopped for good), and a failed
// fdatasync is retried with backoff, costs the store its trust for a delta resync on disk, and
// holds the hardening notices until an fdatasync succeeds. The simulator injects the same faults
// at random (sim/disk.ts); these pin each rule down with the outcome a user sees.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KiB, inSync, makePair, pattern, waitFor } from './helpers/memory-pair.js';

const RETRY_MS = 20;

test('a metadata save that fails is retried until it lands: a lone primary hardens again', async () => {
  const { a, b, link } = makePair({ storeRetryMs: RETRY_MS });
  link.connect();
  await waitFor('in sync', () => inSync(a, b));
  // The link's loss makes a diverging: it hardens unmirrored writes only once that is on disk.
  a.failMetadataSaves = 3;
  link.cut();
  const data = pattern(64 * KiB, 7);
  await a.volume.write(0, data, false);
  // write-through while degraded: FLUSH hardens, which waits for the diverging mark on disk.
  const flushed = a.volume.flush();
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([flushed.then(() => 'flushed'), new Promise((r) => { timer = setTimeout(() => r('stuck'), 5000); })]);
  clearTimeout(timer);
  assert.equal(outcome, 'flushed', 'FLUSH never completed: hardening stopped after the failed metadata save');
  assert.deepEqual(a.store.synced.subarray(0, data.length), data, 'the write is on disk');
  assert.equal(a.persisted?.diverging, true, 'the retried save landed');
  const health = a.volume.storeHealth;
  assert.equal(health.metadataFailures, 3);
  assert.equal(health.metadataFailuresInRow, 0, 'recovered');
  assert.match(health.lastMetadataError ?? '', /injected metadata write failure/);
  await a.volume.close();
  await b.volume.close();
});

test('a failed fdatasync: retried with backoff, the store untrusted on disk, notices held until one succeeds', async () => {
  const { a, b, link } = makePair({ storeRetryMs: RETRY_MS, maxDirtyAgeMs: 50 });
  link.connect();
  await waitFor('in sync', () => inSync(a, b));
  assert.equal(a.persisted?.storeTrusted, true);
  a.store.failSyncs = 3;
  const syncsBefore = a.store.syncCalls.length;
  await a.volume.write(0, pattern(64 * KiB, 3), false);
  // Hardened by age on a; its notice waits for an fdatasync that succeeds.
  await waitFor('three failed fdatasyncs', () => a.volume.storeHealth.fsyncFailures >= 3);
  assert.ok(b.volume.core.record.unitedCount() > 0, 'b cleared its mark although a\'s fdatasync failed');
  assert.equal(a.persisted?.storeTrusted, false, 'the loss of trust is on disk');
  assert.equal(a.volume.storeHealth.trustedForDelta, false);
  // Not hammered: each retry waits longer than the one before (storeRetryMs, then doubling).
  const calls = a.store.syncCalls.slice(syncsBefore);
  const gaps = calls.slice(1, 3).map((t, i) => t - calls[i]!);
  assert.ok(gaps[0]! >= RETRY_MS - 2 && gaps[1]! >= 2 * RETRY_MS - 2, `fdatasync retried too soon: gaps ${gaps.join(', ')} ms`);
  // The disk recovers: the notice goes out and b's marks drain.
  await waitFor('b\'s marks drained', () => b.volume.core.record.unitedCount() === 0 && a.volume.storeHealth.fsyncFailuresInRow === 0);
  assert.equal(a.volume.storeHealth.trustedForDelta, false, 'trust comes back only with a full resync into the store');
  await a.volume.close();
  await b.volume.close();
});
