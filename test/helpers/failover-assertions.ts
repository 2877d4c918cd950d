// Assertions shared by the failover tests with real processes (test/failover-process.test.ts):
// what "every acknowledged write reads back", "a delta, not a full resync" and "a clean stop"
// mean there, each with a message that carries both nodes' log tails.
import assert from 'node:assert/strict';
import {
  BlockModel, compareStores, FailoverPair, KiB, MiB, verifyStoreFile, verifyVolume, type LogLine, type NodeName,
} from './failover-pair.js';

export const VOLUME_BYTES = 64 * MiB;
export const TRACK_BYTES = 64 * KiB;
export const HEARTBEAT_MS = 500;
export const FULL_RESYNC = 'full resync of the peer started';
export const DELTA_RESYNC = 'resync of the out-of-sync tracks started';
export const CRASH_RESTART = 'restarted after a crash: coming up secondary';
/**
 * Fewest distinct blocks (1 MiB) a read-back must find holding their acknowledged write: every
 * workload below acknowledges 300+ writes of 1-4 blocks. A check of a model nothing was
 * acknowledged into passes trivially (all zeros), so it must be shown to have checked something.
 */
export const MIN_ACKED_BLOCKS = 256;
/** Workloads whose resync is claimed to be a delta stay below a quarter of the volume. */
export const DELTA_REGION_BYTES = 12 * MiB;

/** Runs body with a fresh pair; kills whatever still runs afterwards, pass or fail. */
export async function withPair(opts: Parameters<typeof FailoverPair.create>[0], body: (pair: FailoverPair) => Promise<void>): Promise<void> {
  const pair = await FailoverPair.create(opts);
  try {
    await body(pair);
  } finally {
    await pair.kill();
  }
}

export function fields(line: LogLine | undefined): string {
  if (line === undefined) return '(none)';
  const { time: _t, pid: _p, hostname: _h, ...rest } = line;
  return JSON.stringify(rest);
}

/** SIGTERM both (in parallel): both must exit 0. */
export async function stopBoth(pair: FailoverPair): Promise<void> {
  const [ca, cb] = await Promise.all([pair.stop('a'), pair.stop('b')]);
  assert.deepEqual({ a: ca, b: cb }, { a: 0, b: 0 }, `exit codes after SIGTERM\n${pair.tail()}`);
}

/** After a clean stop of both: the store files are identical and hold exactly the model. */
export function assertStoresMatch(pair: FailoverPair, model: BlockModel, minAckedBlocks = MIN_ACKED_BLOCKS): void {
  const diff = compareStores(pair.stores.a, pair.stores.b);
  assert.equal(diff, null, `stores differ after a clean stop: ${diff}\n${pair.tail()}`);
  const a = verifyStoreFile(pair.stores.a, model);
  assert.equal(a.mismatchCount, 0, `a.img does not hold the acknowledged writes: ${a.mismatchCount} blocks, e.g.\n${a.mismatches.join('\n')}`);
  assert.ok(a.ackedBlocks >= minAckedBlocks, `a.img: only ${a.ackedBlocks} blocks hold an acknowledged write, expected at least ${minAckedBlocks} (did the writes fail?)`);
}

/** Every acknowledged write reads back from `name` (uncertain ones may or may not have landed). */
export async function assertVolumeHolds(pair: FailoverPair, name: NodeName, model: BlockModel, what: string, settle = false, minAckedBlocks = MIN_ACKED_BLOCKS): Promise<{ landedUncertain: number }> {
  const r = await verifyVolume(pair.uri(name), model, { settle });
  assert.equal(r.mismatchCount, 0, `${what}: ${r.mismatchCount} blocks on ${name} do not hold their last acknowledged write, e.g.\n${r.mismatches.join('\n')}\n${pair.tail()}`);
  assert.ok(r.ackedBlocks >= minAckedBlocks, `${what}: only ${r.ackedBlocks} blocks on ${name} read back an acknowledged write, expected at least ${minAckedBlocks} (did the writes fail?)`);
  return { landedUncertain: r.landedUncertain };
}

/** A delta resync of `tracks` tracks: at most `limitTracks` (what the workload touched), bytes = whole tracks, well below the volume. */
export function assertDeltaSize(tracks: number, bytes: number, limitTracks: number, what: string): void {
  assert.ok(tracks > 0 && tracks <= limitTracks, `${what}: ${tracks} tracks resynced, expected 1..${limitTracks} (the tracks the workload touched)`);
  assert.ok(bytes <= tracks * TRACK_BYTES, `${what}: ${bytes} bytes for ${tracks} tracks`);
  assert.ok(bytes < VOLUME_BYTES / 4, `${what}: ${bytes} bytes is no delta of a ${VOLUME_BYTES}-byte volume`);
}

export function assertNoWriteErrors(stats: { errors: string[] }, what: string, pair: FailoverPair): void {
  assert.deepEqual(stats.errors.slice(0, 5), [], `${what}: writes failed on a live connection\n${pair.tail()}`);
}

/** The single resync-start line node `name` logged since `since` (delta or full). */
export function resyncStart(pair: FailoverPair, name: NodeName, since: number): { line: LogLine; full: boolean } {
  const delta = pair.lines(name, DELTA_RESYNC, since);
  const full = pair.lines(name, FULL_RESYNC, since);
  assert.equal(delta.length + full.length, 1, `expected one resync start on ${name}, got ${delta.length} delta and ${full.length} full: ${[...delta, ...full].map(fields).join(' | ')}\n${pair.tail()}`);
  return delta.length === 1 ? { line: delta[0]!, full: false } : { line: full[0]!, full: true };
}

export function assertNoFullResync(pair: FailoverPair, marks: { a: number; b: number }, what: string): void {
  for (const n of ['a', 'b'] as const) {
    const full = pair.lines(n, FULL_RESYNC, marks[n]);
    assert.equal(full.length, 0, `${what}: ${n} ran a full resync: ${full.map(fields).join(' | ')}\n${pair.tail()}`);
  }
}

export const num = (v: unknown): number => (typeof v === 'number' ? v : Number.NaN);
