// `npm run bench:mirror -- --nodes 3` (issue 12 item 10): three-node volumes beside the pair and
// `nbdkit file`, in one run on one machine. Targets: the pair (flush: memory), three nodes with
// `ack: all`, three nodes with `ack: quorum` (both `quorum: majority`, the default from three
// nodes on), and nbdkit file (one node, no mirror). Rows: 4 KiB random write QD32, 1 MiB
// sequential write QD8, 4 KiB random write QD1. Then the frozen row: one secondary (c) stopped with
// SIGSTOP while fio writes 4 KiB QD32 to each three-node target; it is resumed, and the volume
// waits until c is in sync again. Each row runs N times per target with the order rotated every
// run; tables show medians, CPU per I/O of all the target's processes, and issue 12's verdicts.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { cleanupAll, makeTempDir, run } from '../test/helpers/node-process.js';
import { ensureTools } from '../test/helpers/tools.js';
import { commitDescription, copyFile, fmtNumber, loadAverage, machine, median, MiB, syncFs, waitForLowLoad, writeDataFile, startNbdkitFile } from './common.js';
import { withCpuUse } from './cpu.js';
import { medianMeasurement, rows as allRows, runFio, type Measurement, type Row } from './fio.js';
import { BenchPair, pairPaths } from './pair.js';

type TargetName = 'pair' | 'trioAll' | 'trioQuorum' | 'nbdkit';
const targetNames: TargetName[] = ['pair', 'trioAll', 'trioQuorum', 'nbdkit'];
const targetLabel: Record<TargetName, string> = {
  pair: 'twinblock pair',
  trioAll: 'three nodes, ack: all',
  trioQuorum: 'three nodes, ack: quorum',
  nbdkit: 'nbdkit file (one node)',
};
const rowIds = ['randwrite-4k-qd32', 'seqwrite-1m-qd8', 'randwrite-4k-qd1'];

export interface NodesBenchOptions {
  runs: number;
  runtimeSec: number;
  warmupSec: number;
  sizeBytes: number;
  cache: string;
  dir: string | null;
  maxLoad: number | null;
  maxWaitSec: number;
  markdownPath: string | null;
  command: string;
}

interface Target {
  name: TargetName;
  uri: string;
  settle(): Promise<void>;
  pids(): number[];
  volume: BenchPair | null;
}

interface Sample { m: Measurement; serverUsPerIo: number }

function describe(row: Row, s: Sample): string {
  const what = row.kind === 'latency'
    ? `p50 ${fmtNumber(s.m.p50LatencyUs, 1)} µs, p99 ${fmtNumber(s.m.p99LatencyUs, 1)} µs`
    : row.id.includes('1m') ? `${fmtNumber(s.m.bandwidthBytesPerSec / MiB)} MiB/s` : `${fmtNumber(s.m.iops)} IOPS`;
  return `${what}; CPU ${fmtNumber(s.serverUsPerIo)} µs/IO`;
}

function medianSample(samples: Sample[]): Sample {
  return { m: medianMeasurement(samples.map((s) => s.m)), serverUsPerIo: median(samples.map((s) => s.serverUsPerIo)) };
}

const pids = (v: BenchPair): number[] => v.names.map((n) => v.node(n).pid);

async function measure(t: Target, row: Row, opts: NodesBenchOptions): Promise<Sample> {
  const [m, cpu] = await withCpuUse(t.pids(), () => runFio(row, t.uri, opts.sizeBytes, opts.runtimeSec));
  return { m, serverUsPerIo: (cpu.serverCores * 1e6) / m.iops };
}

/** 4 KiB QD32 with secondary c frozen (SIGSTOP) for the whole run; c resumes and catches up after. */
async function measureFrozen(t: Target, row: Row, opts: NodesBenchOptions): Promise<Sample> {
  const v = t.volume!;
  const c = v.node('c');
  c.child.kill('SIGSTOP');
  try {
    return await measure(t, row, opts);
  } finally {
    c.child.kill('SIGCONT');
    await v.waitInSync(300_000);
  }
}

export async function runNodesBench(opts: NodesBenchOptions): Promise<void> {
  ensureTools(['fio', 'nbdkit']);
  const rows = rowIds.map((id) => allRows.find((r) => r.id === id)!);
  const loadBefore = opts.maxLoad === null ? loadAverage() : await waitForLowLoad(opts.maxLoad, opts.maxWaitSec);
  const dir = opts.dir ?? makeTempDir('twinblock-bench-nodes-');
  const base = path.join(dir, `bench-nodes-${process.pid}`);
  const kitFile = `${base}-nbdkit.img`;
  const pairFiles = pairPaths(base, 'pair');
  const allFiles = pairPaths(base, 'trio-all', ['a', 'b', 'c']);
  const quorumFiles = pairPaths(base, 'trio-quorum', ['a', 'b', 'c']);
  console.error(`writing a ${opts.sizeBytes / MiB} MiB random file and eight copies under ${base} ...`);
  execFileSync('mkdir', ['-p', pairFiles.dir, allFiles.dir, quorumFiles.dir]);
  writeDataFile(kitFile, opts.sizeBytes);
  for (const files of [pairFiles, allFiles, quorumFiles]) for (const f of Object.values(files.stores)) copyFile(kitFile, f);
  syncFs();
  const size = `${opts.sizeBytes / MiB}MiB`;
  const common = { size, cache: opts.cache, flush: 'memory' as const };
  const pair = await BenchPair.start({ dir: pairFiles.dir, stores: pairFiles.stores, ...common });
  const trioAll = await BenchPair.start({ dir: allFiles.dir, stores: allFiles.stores, ...common, extra: { ack: 'all' } });
  const trioQuorum = await BenchPair.start({ dir: quorumFiles.dir, stores: quorumFiles.stores, ...common, extra: { ack: 'quorum' } });
  const kit = await startNbdkitFile(kitFile);
  const results = new Map<Row, Record<TargetName, Sample>>();
  const frozen: Partial<Record<TargetName, Sample>> = {};
  let loadAfter = '';
  try {
    for (const v of [pair, trioAll, trioQuorum]) await v.waitInSync(600_000);
    console.error('initial full syncs done');
    const settle = (v: BenchPair) => async (): Promise<void> => {
      await v.waitHardened(180_000);
      syncFs();
    };
    const targets: Target[] = [
      { name: 'pair', uri: pair.uri('a'), settle: settle(pair), pids: () => pids(pair), volume: pair },
      { name: 'trioAll', uri: trioAll.uri('a'), settle: settle(trioAll), pids: () => pids(trioAll), volume: trioAll },
      { name: 'trioQuorum', uri: trioQuorum.uri('a'), settle: settle(trioQuorum), pids: () => pids(trioQuorum), volume: trioQuorum },
      { name: 'nbdkit', uri: kit.uri, settle: async () => syncFs(), pids: () => [kit.proc.child.pid!], volume: null },
    ];
    const rotated = (i: number): Target[] => targets.map((_, k) => targets[(k + i) % targets.length]!);
    for (const row of rows) {
      if (opts.warmupSec > 0) {
        for (const t of targets) {
          await t.settle();
          await runFio(row, t.uri, opts.sizeBytes, opts.warmupSec);
        }
      }
      const samples: Record<TargetName, Sample[]> = { pair: [], trioAll: [], trioQuorum: [], nbdkit: [] };
      for (let i = 0; i < opts.runs; i++) {
        for (const t of rotated(i)) {
          await t.settle();
          const s = await measure(t, row, opts);
          samples[t.name].push(s);
          console.error(`${row.id} run ${i + 1}/${opts.runs} ${t.name}: ${describe(row, s)} (load ${loadAverage()})`);
        }
      }
      results.set(row, { pair: medianSample(samples.pair), trioAll: medianSample(samples.trioAll), trioQuorum: medianSample(samples.trioQuorum), nbdkit: medianSample(samples.nbdkit) });
    }
    const qd32 = rows[0]!;
    for (const t of targets.filter((x) => x.name === 'trioAll' || x.name === 'trioQuorum')) {
      const samples: Sample[] = [];
      for (let i = 0; i < opts.runs; i++) {
        await t.settle();
        samples.push(await measureFrozen(t, qd32, opts));
        console.error(`frozen c run ${i + 1}/${opts.runs} ${t.name}: ${describe(qd32, samples[samples.length - 1]!)} (load ${loadAverage()})`);
      }
      frozen[t.name] = medianSample(samples);
    }
    loadAfter = loadAverage();
  } finally {
    for (const v of [pair, trioAll, trioQuorum]) await v.stop();
    await kit.proc.stop();
  }
  const markdown = report(results, frozen, opts, loadBefore, loadAfter);
  console.log(markdown);
  if (opts.markdownPath !== null) writeFileSync(opts.markdownPath, `${markdown}\n`);
  if (opts.dir !== null) await run('rm', ['-rf', base, kitFile]);
  await cleanupAll();
}

function report(results: Map<Row, Record<TargetName, Sample>>, frozen: Partial<Record<TargetName, Sample>>, opts: NodesBenchOptions, loadBefore: string, loadAfter: string): string {
  const md = [`| row (fio, nbd engine) | ${targetNames.map((t) => targetLabel[t]).join(' | ')} | ack: quorum vs pair | ack: all vs pair |`,
    '| --- | --- | --- | --- | --- | --- | --- |'];
  const verdicts: string[] = [];
  for (const [row, r] of results) {
    const ratio = (t: TargetName): number => row.kind === 'latency' ? r[t].m.p50LatencyUs / r.pair.m.p50LatencyUs
      : row.id.includes('1m') ? r[t].m.bandwidthBytesPerSec / r.pair.m.bandwidthBytesPerSec : r[t].m.iops / r.pair.m.iops;
    const fmt = (t: TargetName): string => `${row.kind === 'latency' ? 'p50 ' : ''}${ratio(t).toFixed(2)}×`;
    md.push(`| ${row.label} | ${targetNames.map((t) => describe(row, r[t])).join(' | ')} | ${fmt('trioQuorum')} | ${fmt('trioAll')} |`);
    const q = ratio('trioQuorum');
    verdicts.push(row.kind === 'latency'
      ? `| three nodes, ack: quorum, QD1 p50 ≤ 1.2× the pair's | ${q.toFixed(2)}× | ${q <= 1.2 ? 'yes' : '**no**'} |`
      : `| three nodes, ack: quorum, ${row.label} ≥ 0.8× the pair's | ${q.toFixed(2)}× | ${q >= 0.8 ? 'yes' : '**no**'} |`);
  }
  const qd32 = [...results.entries()].find(([row]) => row.id === 'randwrite-4k-qd32')?.[1];
  md.push('', '| 4 KiB random write QD32, secondary c frozen (SIGSTOP) for the run | IOPS | vs the same target unfrozen |', '| --- | --- | --- |');
  for (const t of ['trioAll', 'trioQuorum'] as const) {
    const f = frozen[t];
    if (f === undefined || qd32 === undefined) continue;
    const vs = f.m.iops / qd32[t].m.iops;
    md.push(`| ${targetLabel[t]} | ${fmtNumber(f.m.iops)} (p99 ${fmtNumber(f.m.p99LatencyUs / 1000, 1)} ms) | ${vs.toFixed(2)}× |`);
    if (t === 'trioQuorum') verdicts.push(`| ack: quorum keeps ≥ 0.8× of its own IOPS with one secondary frozen | ${vs.toFixed(2)}× | ${vs >= 0.8 ? 'yes' : '**no**'} |`);
  }
  md.push('', '| target | measured | met? |', '| --- | --- | --- |', ...verdicts, '',
    `Medians of ${opts.runs} runs per target, order rotated every run, after one unmeasured ${opts.warmupSec} s warm-up per row and target; fio runs ${opts.runtimeSec} s (+1 s ramp); volume ${opts.sizeBytes / MiB} MiB; twinblock cache ${opts.cache} per node; CPU per I/O is every process of the target, all threads. The frozen runs stop c for the whole fio run (heartbeat timeout 1 s by default), then resume it and wait until it is in sync again.`,
    '', `- date: ${new Date().toISOString()} (commit ${commitDescription()})`,
    ...Object.entries(machine()).map(([k, v]) => `- ${k}: ${v}`),
    `- load average (1/5/15 min) before: ${loadBefore}; after: ${loadAfter}`,
    `- command: \`${opts.command}\``);
  return md.join('\n');
}
