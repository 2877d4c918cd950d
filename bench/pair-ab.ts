// A/B of twinblock pairs, run by hand: `npm run bench:pair-ab -- SPEC SPEC... [options]`.
//
// Each SPEC is a built tree's dist directory, optionally with config keys for its pair:
// `/work/tmp/base/dist` or `dist@{"rangeDirtyThresholdTracks":64}`. Every pair runs from its own
// dist (its own node processes and code), all on this machine at once, idle while another is
// measured; one fio row per round, pairs alternating, so drift on the machine favours none.
//
// It answers "did this change pay, and where" in a few minutes, where bench:mirror answers
// "where do we stand" in twenty: per run, besides IOPS and p50, the CPU per I/O of both nodes
// (all threads, /proc), split into each node's main thread and the rest (libuv's pool, V8's
// helpers), write syscalls and bytes dirtied for the disk per host write (/proc/PID/io), and
// store writes and harden jobs by reason per host write (the nodes' /metrics). --prof DIR also
// runs the nodes under --cpu-prof and prints each node's top self time over the measured runs.
//
// Start order biases the result: on this project's VM the pair started later ran about 5 µs per
// 4 KiB write cheaper, whatever its build (docs/benchmarks.md, "The pressure reserve"), which is
// the size of the changes it is asked to judge. So with two or more trees it runs twice: the
// pairs started in the order given, then stopped and started again in the reverse order, and the
// medians are over both halves (each half's median is printed too).
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { exitWithUsageIf, failureLine, loadAverage, median, MiB, syncFs, writeDataFile } from './common.js';
import { cpuTicksOf, clockTicksPerSec, withCpuUse } from './cpu.js';
import { rows, runFio, type Row } from './fio.js';
import { topSelfTime } from './profile.js';
import { cleanupAll } from '../test/helpers/node-process.js';
import type { BenchPair as BenchPairType } from './pair.js';

const usage = `usage: npm run bench:pair-ab -- DIST[@JSON] DIST[@JSON] ... [options]
  --rounds N      measured runs per pair (default 3)
  --row ID        fio row (default randwrite-4k-qd32; ${rows.map((r) => r.id).join(', ')})
  --runtime SEC   seconds per measured run (default 8; each pair gets one 3 s warm-up first)
  --size MIB      volume size (default 256; cache 256 MiB per node)
  --fsync         a FLUSH after every write (fio --fsync=1, as bench:seed-claim sends): also print
                  the mean write + mean FLUSH latency, the seed claim's figure
  --one-order     start the pairs once, in the order given (default with 2+ trees: that order,
                  then again in reverse, --rounds runs per pair in each; start order biases CPU)
  --prof DIR      run the nodes under --cpu-prof into DIR; print top self time at the end
                  (implies --one-order)`;

interface Spec { label: string; dist: string; extra: Record<string, unknown> | undefined }

function parseSpec(s: string): Spec {
  const at = s.indexOf('@');
  const dist = path.resolve(at < 0 ? s : s.slice(0, at));
  return { label: s, dist, extra: at < 0 ? undefined : JSON.parse(s.slice(at + 1)) as Record<string, unknown> };
}

/** CPU ticks per thread of a process: its main thread (tid = pid) and the rest. */
function threadTicks(pid: number): { main: number; rest: number } {
  let main = 0;
  let rest = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const ticks = cpuTicksOf(`/proc/${pid}/task/${tid}/stat`);
    if (Number(tid) === pid) main += ticks;
    else rest += ticks;
  }
  return { main, rest };
}

/**
 * A process's write syscalls so far (all threads), and the bytes it dirtied in the page cache
 * for the disk to write back (a page dirtied again before writeback counts once): /proc/PID/io
 * syscw and write_bytes.
 */
function writeCounters(pid: number): { syscalls: number; diskBytes: number } {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(io)?.[1] ?? Number.NaN);
  return { syscalls: field('syscw'), diskBytes: field('write_bytes') };
}

/** A node's harden counters: store writes, and jobs by reason. */
async function hardenCounters(adminUrl: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await (await fetch(`${adminUrl}/metrics`)).text()).split('\n')) {
    const m = /^twinblock_harden_(writes_total|runs_total)(\{[^}]*\})? (\S+)/.exec(line);
    if (m === null) continue;
    const reason = /reason="(\w+)"/.exec(m[2] ?? '')?.[1];
    out[reason === undefined ? 'storeWrites' : `jobs:${reason}`] = Number(m[3]);
  }
  return out;
}

interface Run { row: Row; rounds: number; runtimeSec: number; sizeBytes: number; fsync: boolean; prof: string | undefined }

/** Per spec: CPU per I/O and write + FLUSH latency of every measured run, and when each ran. */
interface Results { cpuPerIo: number[][]; durableUs: number[][]; spans: Array<Array<[number, number]>> }

const base = '/tmp/twinblock-pair-ab';

/** Start one pair per spec, in `order` (indexes into specs); the result is indexed by spec. */
async function startPairs(specs: Spec[], order: number[], run: Run): Promise<BenchPairType[]> {
  rmSync(base, { recursive: true, force: true });
  const pairs: BenchPairType[] = [];
  for (const i of order) {
    const spec = specs[i]!;
    // Each pair runs its own tree's code: its BenchPair spawns that tree's CLI.
    const { BenchPair, pairPaths } = await import(path.join(spec.dist, 'bench/pair.js')) as typeof import('./pair.js');
    const p = pairPaths(base, `p${i}`);
    mkdirSync(p.dir, { recursive: true });
    for (const store of Object.values(p.stores)) writeDataFile(store, run.sizeBytes);
    const nodeArgs = run.prof === undefined ? undefined : Object.fromEntries(['a', 'b'].map((n) => [n, ['--cpu-prof', '--cpu-prof-dir', path.join(run.prof!, `p${i}${n}`)]]));
    const pair = await BenchPair.start({ ...p, size: `${run.sizeBytes / MiB}MiB`, cache: '256MiB', flush: 'memory', extra: spec.extra, ...(nodeArgs ? { nodeArgs } : {}) });
    await pair.waitInSync(300_000);
    pairs[i] = pair;
  }
  for (const i of order) {
    await pairs[i]!.waitHardened(180_000);
    await runFio(run.row, pairs[i]!.uri('a'), run.sizeBytes, 3);
  }
  return pairs;
}

/** `run.rounds` measured runs per pair, pairs alternating; each run's figures printed and kept. */
async function measure(specs: Spec[], pairs: BenchPairType[], run: Run, results: Results, half: string): Promise<void> {
  const fioExtra = run.fsync ? ['--fsync=1'] : [];
  for (let r = 0; r < run.rounds; r++) {
    for (let k = 0; k < specs.length; k++) {
      const i = (k + r) % specs.length;
      const pair = pairs[i]!;
      await pair.waitHardened(180_000);
      syncFs();
      const pids = pair.names.map((n) => pair.node(n).pid);
      const before = { threads: pids.map(threadTicks), writes: pids.map(writeCounters), harden: await Promise.all(pair.names.map((n) => hardenCounters(pair.adminUrl(n)))) };
      const t0 = Date.now();
      const [m, use] = await withCpuUse(pids, () => runFio(run.row, pair.uri('a'), run.sizeBytes, run.runtimeSec, fioExtra));
      results.spans[i]!.push([t0, Date.now()]);
      const ios = m.iops * (Date.now() - t0) / 1000;
      const writes = pids.map(writeCounters);
      const harden = await Promise.all(pair.names.map((n) => hardenCounters(pair.adminUrl(n))));
      const perIo = (v: number, digits = 2): string => (v / ios).toFixed(digits);
      const threads = pids.map((pid, j) => {
        const now = threadTicks(pid);
        const then = before.threads[j]!;
        const usPerTick = 1e6 / clockTicksPerSec();
        return `${pair.names[j]} main ${perIo((now.main - then.main) * usPerTick, 1)} rest ${perIo((now.rest - then.rest) * usPerTick, 1)}`;
      });
      const counters = harden.map((h, j) => Object.entries(h).filter(([key, v]) => v !== (before.harden[j]![key] ?? 0))
        .map(([key, v]) => `${key} ${perIo(v - (before.harden[j]![key] ?? 0), 3)}`).join(', '));
      const cpu = (use.serverCores / m.iops) * 1e6;
      results.cpuPerIo[i]!.push(cpu);
      results.durableUs[i]!.push(m.meanLatencyUs + m.syncMeanLatencyUs);
      const flushText = run.fsync ? `, write + FLUSH mean ${m.meanLatencyUs.toFixed(1)} + ${m.syncMeanLatencyUs.toFixed(1)} µs (FLUSH p50 ${m.syncP50LatencyUs.toFixed(0)})` : '';
      console.log(`${specs[i]!.label}${half} run ${r + 1}: ${m.iops.toFixed(0)} IOPS, p50 ${m.p50LatencyUs.toFixed(0)} µs, p99 ${m.p99LatencyUs.toFixed(0)} µs${flushText}, CPU ${cpu.toFixed(1)} µs/IO `
        + `(${use.serverCores.toFixed(2)} cores; machine ${use.machineCores.toFixed(2)}), load ${loadAverage()}\n`
        + `  µs per I/O by thread: ${threads.join('; ')}\n`
        + `  write syscalls per I/O: ${writes.map((w, j) => `${pair.names[j]} ${perIo(w.syscalls - before.writes[j]!.syscalls)}`).join(', ')}; `
        + `KiB dirtied for the disk per I/O: ${writes.map((w, j) => `${pair.names[j]} ${perIo((w.diskBytes - before.writes[j]!.diskBytes) / 1024, 1)}`).join(', ')}\n`
        + `  per I/O: ${pair.names.map((n, j) => `${n}: ${counters[j]}`).join('; ')}`);
    }
  }
}

/** Stop the pairs; with --prof, print each node's top self time over its measured runs. */
async function stopPairs(specs: Spec[], pairs: BenchPairType[], run: Run, results: Results): Promise<void> {
  for (const [i, pair] of pairs.entries()) {
    const spawned = { ...pair.spawnedAtMs };
    await pair.stop();
    if (run.prof === undefined) continue;
    for (const n of pair.names) {
      const dir = path.join(run.prof, `p${i}${n}`);
      const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
      if (file === undefined) continue;
      console.log(`== ${specs[i]!.label}, node ${n}: top self time over the measured runs`);
      const windows = results.spans[i]!.map(([from, to]) => ({ fromMs: from - spawned[n]!, toMs: to - spawned[n]! }));
      for (const t of topSelfTime(path.join(dir, file), 30, windows)) console.log(`${(t.share * 100).toFixed(1)}%  ${t.selfMs.toFixed(0)} ms  ${t.name}`);
    }
  }
}

function medianLine(runs: number[], unit: string): string {
  return `${median(runs).toFixed(1)} ${unit} (runs ${runs.map((c) => c.toFixed(1)).join(', ')})`;
}

async function main(): Promise<void> {
  const { values: o, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      rounds: { type: 'string' }, row: { type: 'string' }, runtime: { type: 'string' }, size: { type: 'string' }, prof: { type: 'string' },
      fsync: { type: 'boolean' }, 'one-order': { type: 'boolean' }, help: { type: 'boolean' },
    },
  });
  exitWithUsageIf(o.help === true || positionals.length === 0, usage);
  const specs = positionals.map(parseSpec);
  const row = rows.find((r) => r.id === (o.row ?? 'randwrite-4k-qd32'));
  if (row === undefined) throw new Error(`--row: one of ${rows.map((r) => r.id).join(', ')}`);
  const run: Run = { row, rounds: Number(o.rounds ?? 3), runtimeSec: Number(o.runtime ?? 8), sizeBytes: Number(o.size ?? 256) * MiB, fsync: o.fsync === true, prof: o.prof };
  const given = specs.map((_, i) => i);
  const orders = o['one-order'] === true || o.prof !== undefined || specs.length < 2 ? [given] : [given, [...given].reverse()];
  const halves: Results[] = [];
  for (const [h, order] of orders.entries()) {
    const results: Results = { cpuPerIo: specs.map(() => []), durableUs: specs.map(() => []), spans: specs.map(() => []) };
    const half = orders.length === 1 ? '' : ` (${h === 0 ? 'started in the order given' : 'started in reverse'})`;
    const pairs = await startPairs(specs, order, run);
    await measure(specs, pairs, run, results, half);
    await stopPairs(specs, pairs, run, results);
    halves.push(results);
  }
  for (const [i, spec] of specs.entries()) {
    const all = (pick: (r: Results) => number[][]): number[] => halves.flatMap((r) => pick(r)[i]!);
    const byHalf = halves.length === 1 ? '' : `; started as given ${median(halves[0]!.cpuPerIo[i]!).toFixed(1)}, reversed ${median(halves[1]!.cpuPerIo[i]!).toFixed(1)}`;
    const durable = run.fsync ? `; median write + FLUSH ${medianLine(all((r) => r.durableUs), 'µs')}` : '';
    console.log(`${spec.label}: median CPU ${medianLine(all((r) => r.cpuPerIo), 'µs/IO')}${byHalf}${durable}`);
  }
}

main().then(async () => { await cleanupAll(); }, async (err: unknown) => {
  console.error(failureLine('bench:pair-ab', err));
  await cleanupAll();
  process.exit(1);
});
