// Benchmark, run by hand (`npm run bench -- [--runs N] [--quick] [--profile] ...`; not a test):
// fio's nbd engine against a standalone twinblock node on a file store and, in the same run,
// against `nbdkit file` on the same kind of file (same size, same directory, same data), so both
// see the same disk, page cache and kernel. Each row is run N times, alternating which target goes
// first so drift (thermal, page cache, neighbours) does not favour one side; we report medians.
//
// Ratios are always "how many times better twinblock is": IOPS twinblock/nbdkit for throughput
// rows, latency nbdkit/twinblock for the QD1 row. Above 1.0 means twinblock is better.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  cleanupAll, freePort, makeTempDir, run, startBackground, startNode, type BackgroundProcess, type NodeProcess,
} from '../test/helpers/node-process.js';
import { fileURLToPath } from 'node:url';
import { ensureTools } from '../test/helpers/tools.js';
import {
  commitDescription, exitWithUsageIf, fmtNumber, intOption, loadAverage, machine, maxLoadOption, MiB, printProfiles, syncFs, waitForLowLoad, writeDataFile, startNbdkitFile,
} from './common.js';
import { peakRssBytes } from './cpu.js';
import { medianMeasurement, rows, runFio, type Measurement, type Row } from './fio.js';

const usage = `usage: npm run bench -- [options]
  --runs N          fio runs per row and target (default 3)
  --runtime SEC     seconds per fio run (default 10; --quick: 3)
  --size SIZE_MIB   volume and file size in MiB (default 1024; --quick: 256)
  --cache SIZE      twinblock cache, config syntax (default 256MiB)
  --dir DIR         where the two files go (default: a temp dir under $TMPDIR)
  --rows a,b        only these row ids (${rows.map((r) => r.id).join(', ')})
  --quick           short runs, smaller volume: a smoke test of the bench itself
  --profile         run twinblock under node --cpu-prof; print top self-time functions
  --floor           also run the floor (bench/floor-node.ts standalone): a bare Node.js NBD server
                    on a file, reads from the file each time (libuv, and a synchronous pread)
  --max-load L      before starting, wait (up to --max-wait s, default 600) for 1-min load <= L
  --markdown FILE   also write the results (table, machine, command) to FILE`;

interface Options {
  runs: number;
  runtimeSec: number;
  sizeBytes: number;
  cache: string;
  dir: string | null;
  rowIds: string[] | null;
  profile: boolean;
  maxLoad: number | null;
  maxWaitSec: number;
  markdownPath: string | null;
  floor: boolean;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' }, runtime: { type: 'string' }, size: { type: 'string' }, cache: { type: 'string' },
      dir: { type: 'string' }, rows: { type: 'string' }, quick: { type: 'boolean' }, profile: { type: 'boolean' },
      markdown: { type: 'string' }, help: { type: 'boolean' }, floor: { type: 'boolean' }, 'max-load': { type: 'string' }, 'max-wait': { type: 'string' },
    },
  });
  exitWithUsageIf(values.help, usage);
  const quick = values.quick === true;
  return {
    runs: intOption(values.runs, 3, 'runs'),
    runtimeSec: intOption(values.runtime, quick ? 3 : 10, 'runtime'),
    sizeBytes: intOption(values.size, quick ? 256 : 1024, 'size') * MiB,
    cache: values.cache ?? '256MiB',
    dir: values.dir ?? null,
    rowIds: values.rows === undefined ? null : values.rows.split(','),
    profile: values.profile === true,
    maxLoad: maxLoadOption(values['max-load']),
    maxWaitSec: intOption(values['max-wait'], 600, 'max-wait'),
    markdownPath: values.markdown ?? null,
    floor: values.floor === true,
  };
}

type TargetName = 'twinblock' | 'nbdkit' | 'floor-pool' | 'floor-sync';
const targetLabel: Record<TargetName, string> = {
  'twinblock': 'twinblock', 'nbdkit': 'nbdkit file',
  'floor-pool': 'floor: bare Node.js, libuv reads', 'floor-sync': 'floor: bare Node.js, sync preads',
};

interface Target {
  name: TargetName;
  uri: string;
  /** Wait until the target has no write backlog, so one run's leftovers do not slow the next. */
  settle(): Promise<void>;
}

async function waitHardened(node: NodeProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const status = await node.status();
    if (status.exposure.unhardenedBytes === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  console.error(`warning: twinblock still has unhardened data after ${timeoutMs} ms`);
}

function describeMeasurement(row: Row, m: Measurement): string {
  if (row.kind === 'latency') return `p50 ${fmtNumber(m.p50LatencyUs, 1)} µs, p99 ${fmtNumber(m.p99LatencyUs, 1)} µs (${fmtNumber(m.iops)} IOPS)`;
  if (row.id.includes('1m')) return `${fmtNumber(m.bandwidthBytesPerSec / MiB)} MiB/s`;
  return `${fmtNumber(m.iops)} IOPS`;
}

function ratioOf(row: Row, tb: Measurement, kit: Measurement): string {
  if (row.kind === 'latency') {
    return `p50 ${(kit.p50LatencyUs / tb.p50LatencyUs).toFixed(2)}×, p99 ${(kit.p99LatencyUs / tb.p99LatencyUs).toFixed(2)}×`;
  }
  return `${(tb.iops / kit.iops).toFixed(2)}×`;
}

function resultsMarkdown(opts: Options, names: TargetName[], results: Map<Row, Partial<Record<TargetName, Measurement>>>, command: string, loadBefore: string): string {
  const others = names.filter((n) => n !== 'nbdkit');
  const lines = [
    `| row | ${names.map((n) => targetLabel[n]).join(' | ')} | ${others.map((n) => `${targetLabel[n]} vs nbdkit`).join(' | ')} |`,
    `| --- | ${names.map(() => '---').join(' | ')} | ${others.map(() => '---').join(' | ')} |`,
  ];
  for (const [row, r] of results) {
    lines.push(`| ${row.label} | ${names.map((n) => describeMeasurement(row, r[n]!)).join(' | ')} | ${others.map((n) => ratioOf(row, r[n]!, r.nbdkit!)).join(' | ')} |`);
  }
  if (opts.floor) lines.push('', 'Ratios above 1.0 mean better than nbdkit. The floor (bench/floor-node.ts, standalone) answers WRITEs from RAM and pwrites them to its file unwaited, and reads every READ from the file: a target the floor misses is bound by the runtime on these cores.');
  const m = machine();
  lines.push('', `Medians of ${opts.runs} runs of ${opts.runtimeSec} s each (plus 1 s ramp), targets alternating;`,
    `volume ${opts.sizeBytes / MiB} MiB, twinblock cache ${opts.cache}. Ratios: IOPS (or MiB/s) twinblock/nbdkit;`,
    'for QD1 latency nbdkit/twinblock, so above 1.0 always means twinblock is better.', '',
    `- date: ${new Date().toISOString()} (commit ${commitDescription()})`,
    ...Object.entries(m).map(([k, v]) => `- ${k}: ${v}`),
    // Other work on the machine skews the CPU-bound side more: say how busy it was.
    `- load average (1/5/15 min) before: ${loadBefore}; after: ${loadAverage()}`,
    `- command: \`${command}\``);
  return lines.join('\n');
}

/** The standalone floor, in its two read modes, each on a copy of the data file of its own. */
async function startFloors(dir: string, sizeBytes: number): Promise<{ name: TargetName; uri: string; proc: BackgroundProcess; file: string }[]> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'floor-node.js');
  const out: { name: TargetName; uri: string; proc: BackgroundProcess; file: string }[] = [];
  for (const [name, flags] of [['floor-pool', ['--pool']], ['floor-sync', ['--sync-reads']]] as const) {
    const file = path.join(dir, `bench-${name}-${process.pid}.img`);
    writeDataFile(file, sizeBytes);
    const port = await freePort();
    const proc = await startBackground('node', [script, 'standalone', String(port), String(sizeBytes / MiB), '--harden', file, '--fsync-ms', '20', ...flags], port);
    out.push({ name, uri: `nbd://127.0.0.1:${port}/`, proc, file });
  }
  return out;
}

async function main(): Promise<void> {
  const opts = parseOptions();
  ensureTools(['fio', 'nbdkit']);
  const selected = opts.rowIds === null ? rows : rows.filter((r) => opts.rowIds!.includes(r.id));
  if (selected.length === 0) throw new Error(`no rows match --rows ${opts.rowIds?.join(',')}`);
  const command = `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim();
  const loadBefore = opts.maxLoad === null ? loadAverage() : await waitForLowLoad(opts.maxLoad, opts.maxWaitSec);

  const dir = opts.dir ?? makeTempDir('twinblock-bench-');
  const tbFile = path.join(dir, `bench-twinblock-${process.pid}.img`);
  const kitFile = path.join(dir, `bench-nbdkit-${process.pid}.img`);
  console.error(`writing two ${opts.sizeBytes / MiB} MiB data files in ${dir} ...`);
  writeDataFile(tbFile, opts.sizeBytes);
  writeDataFile(kitFile, opts.sizeBytes);
  syncFs();

  // Not a tracked temp dir: the profile outlives the run, for DevTools or a second look.
  const profileDir = opts.profile ? mkdtempSync(path.join(os.tmpdir(), 'twinblock-cpuprof-')) : null;
  const node = await startNode({
    dir,
    config: { size: `${opts.sizeBytes / MiB}MiB`, nodes: { a: { store: tbFile, cache: opts.cache } } },
    nodeArgs: profileDir === null ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir],
  });
  const kit = await startNbdkitFile(kitFile);

  const targets: Target[] = [
    { name: 'twinblock', uri: node.uri, settle: async () => { await waitHardened(node, 120_000); syncFs(); } },
    { name: 'nbdkit', uri: kit.uri, settle: async () => syncFs() },
  ];
  const floors = opts.floor ? await startFloors(dir, opts.sizeBytes) : [];
  for (const f of floors) targets.push({ name: f.name, uri: f.uri, settle: async () => syncFs() });
  const names = targets.map((t) => t.name);

  const results = new Map<Row, Partial<Record<TargetName, Measurement>>>();
  let peakRss = '';
  try {
    for (const row of selected) {
      const samples = Object.fromEntries(names.map((n) => [n, [] as Measurement[]])) as Record<TargetName, Measurement[]>;
      for (let i = 0; i < opts.runs; i++) {
        // Rotated every run, so that no target always goes first.
        const order = targets.map((_, k) => targets[(k + i) % targets.length]!);
        for (const t of order) {
          await t.settle();
          const m = await runFio(row, t.uri, opts.sizeBytes, opts.runtimeSec);
          samples[t.name].push(m);
          console.error(`${row.id} run ${i + 1}/${opts.runs} ${t.name}: ${describeMeasurement(row, m)}`);
        }
      }
      results.set(row, Object.fromEntries(names.map((n) => [n, medianMeasurement(samples[n])])));
    }
    peakRss = `Peak RSS over the whole bench (VmHWM): twinblock ${fmtNumber(peakRssBytes(node.pid) / MiB)} MiB (cache ${opts.cache}), nbdkit ${fmtNumber(peakRssBytes(kit.proc.child.pid!) / MiB)} MiB.`;
  } finally {
    const code = await node.stop({ timeoutMs: 300_000 });
    if (code !== 0) console.error(`warning: twinblock exited ${code}; stderr tail:\n${node.stderr.slice(-4000)}`);
    await kit.proc.stop();
    for (const f of floors) await f.proc.stop();
  }

  const markdown = `${resultsMarkdown(opts, names, results, command, loadBefore)}\n\n${peakRss}`;
  console.log(markdown);
  if (opts.markdownPath !== null) writeFileSync(opts.markdownPath, `${markdown}\n`);

  if (profileDir !== null) {
    printProfiles(profileDir, () => 'twinblock');
  }
  // A directory the user chose is not ours to delete: remove just our files from it.
  if (opts.dir !== null) await run('rm', ['-f', tbFile, kitFile, ...floors.map((f) => f.file)]);
  await cleanupAll();
}

main().catch(async (err: unknown) => {
  console.error(`bench: ${(err as Error).message}`);
  await cleanupAll();
  process.exit(1);
});
