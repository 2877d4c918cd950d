// Runs a range of seeds with one configuration, in this thread or in a worker thread, so the test
// suite can use every core (test/sim.test.ts) and the CLI can stay single-threaded (sim/main.ts).
import { Worker } from 'node:worker_threads';
import { runSeed, type RunHooks } from './cluster.js';
import { coreFixes, type AssumedFix } from './fixes.js';
import { mutants, type MutantName } from './mutants.js';

export interface BatchSpec {
  from: number;
  count: number;
  fixes: readonly AssumedFix[];
  mutant?: MutantName;
  /** Stop at the first failing seed (mutant hunts). */
  stopAtFailure?: boolean;
}

export interface BatchFailure {
  seed: number;
  failure: string;
}

export interface BatchResult {
  seeds: number;
  steps: number;
  failures: BatchFailure[];
}

export function hooksFor(fixes: readonly AssumedFix[], mutant?: MutantName): RunHooks {
  const wrappers = coreFixes(fixes);
  if (mutant !== undefined) wrappers.push(mutants[mutant]);
  return {
    shellFixes: new Set(fixes),
    ...(wrappers.length > 0 ? { wrapCore: (core) => { for (const w of wrappers) w(core); } } : {}),
  };
}

export async function runBatch(spec: BatchSpec): Promise<BatchResult> {
  const hooks = hooksFor(spec.fixes, spec.mutant);
  const result: BatchResult = { seeds: 0, steps: 0, failures: [] };
  for (let i = 0; i < spec.count; i++) {
    const r = await runSeed((spec.from + i) >>> 0, hooks);
    result.seeds++;
    result.steps += r.steps;
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
  return {
    seeds: results.reduce((n, r) => n + r.seeds, 0),
    steps: results.reduce((n, r) => n + r.steps, 0),
    failures: results.flatMap((r) => r.failures).sort((x, y) => x.seed - y.seed),
  };
}
