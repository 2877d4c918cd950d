// Runs a range of seeds with one configuration, in this thread or in a worker thread, so the test
// suite can use every core (test/sim.test.ts) and the CLI can stay single-threaded (sim/main.ts).
import { Worker } from 'node:worker_threads';
import type { ReplicaCore } from '../src/core/replica.js';
import type { Volume } from '../src/node/volume.js';
import { runSeed, type RunHooks } from './cluster.js';
import { coreFixes, type AssumedFix } from './fixes.js';
import { mutants, type MutantName } from './mutants.js';
import type { OptionOverrides } from './options.js';

export interface BatchSpec {
  from: number;
  count: number;
  fixes: readonly AssumedFix[];
  mutant?: MutantName;
  /** Stop at the first failing seed (mutant hunts). */
  stopAtFailure?: boolean;
  /** Options every seed takes as given (`nodes: 3` for a volume of three nodes). */
  overrides?: OptionOverrides;
}

export interface BatchFailure {
  seed: number;
  failure: string;
}

export interface BatchResult {
  seeds: number;
  steps: number;
  failures: BatchFailure[];
  /** The faults injected, by the kinds issue 10 names (faultCounts). */
  faults: Record<string, number>;
}

/** The faults a run injected, by the kinds issue 10 names (a kind never injected counts 0, not absent). */
export function faultCounts(stats: Record<string, number>): Record<string, number> {
  const n = (key: string): number => stats[key] ?? 0;
  return {
    storeWrite: n('storeWriteFails'), storeRead: n('storeReadFails'), fsync: n('fsyncFails'), metadata: n('metadataFails'),
    powerLoss: n('powerLosses'), stall: n('stalls'), crash: n('crashes'), partition: n('partitions'), corrupt: n('corrupts'),
    drop: n('drops'), cleanRestart: n('cleanRestarts'), switchover: n('switchovers'), nodeStall: n('nodeStalls'),
  };
}

export function addCounts(total: Record<string, number>, more: Record<string, number>): void {
  for (const [key, value] of Object.entries(more)) total[key] = (total[key] ?? 0) + value;
}

export function hooksFor(fixes: readonly AssumedFix[], mutant?: MutantName): RunHooks {
  const wrappers: ((core: ReplicaCore, volume: Volume) => void)[] = coreFixes(fixes);
  if (mutant !== undefined) wrappers.push(mutants[mutant]);
  return {
    shellFixes: new Set(fixes),
    ...(wrappers.length > 0 ? { wrapCore: (core, node) => { for (const w of wrappers) w(core, node.volume!); } } : {}),
  };
}

export async function runBatch(spec: BatchSpec): Promise<BatchResult> {
  const hooks = { ...hooksFor(spec.fixes, spec.mutant), ...(spec.overrides !== undefined ? { overrides: spec.overrides } : {}) };
  const result: BatchResult = { seeds: 0, steps: 0, failures: [], faults: {} };
  for (let i = 0; i < spec.count; i++) {
    const r = await runSeed((spec.from + i) >>> 0, hooks);
    result.seeds++;
    result.steps += r.steps;
    addCounts(result.faults, faultCounts(r.stats));
    if (!r.ok) {
      result.failures.push({ seed: r.seed, failure: r.failure ?? 'unknown' });
      if (spec.stopAtFailure) break;
    }
  }
  return result;
}

/** Runs the batch in a worker thread (sim/worker.ts). */
export function runBatchInWorker(spec: BatchSpec): Promise<BatchResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: spec });
    worker.once('message', (result: BatchResult) => resolve(result));
    worker.once('error', reject);
    worker.once('exit', (code) => { if (code !== 0) reject(new Error(`sim worker exited with ${code}`)); });
  });
}

/** Splits `count` seeds from `from` over `workers` threads and merges the results. */
export async function runParallel(spec: BatchSpec, workers: number): Promise<BatchResult> {
  const per = Math.ceil(spec.count / workers);
  const parts: Promise<BatchResult>[] = [];
  for (let w = 0; w < workers; w++) {
    const from = spec.from + w * per;
    const count = Math.min(per, spec.from + spec.count - from);
    if (count > 0) parts.push(runBatchInWorker({ ...spec, from, count }));
  }
  const results = await Promise.all(parts);
  const faults: Record<string, number> = {};
  for (const r of results) addCounts(faults, r.faults);
  return {
    faults,
    seeds: results.reduce((n, r) => n + r.seeds, 0),
    steps: results.reduce((n, r) => n + r.steps, 0),
    failures: results.flatMap((r) => r.failures).sort((x, y) => x.seed - y.seed),
  };
}
