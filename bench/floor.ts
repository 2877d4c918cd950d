// The floor benchmark (issue 11 "Done when"), run by hand: `npm run bench:floor -- [options]`.
//
// In one run, fio's nbd engine against:
//   floor       a bare Node.js mirror (bench/floor-node.ts): two processes that move the same
//               bytes as a twinblock pair (NBD in, a frame to the secondary, its ack, the reply)
//               into preallocated RAM and do nothing else;
//   floor-disk  the same, and each node also pwrites every payload to its store file (synchronous
//               pwrite, fdatasync every 20 ms): the cheapest Node.js way to harden the same bytes;
//   floor-pool  the same with the pwrite through libuv's thread pool (`fs.write`), as twinblock's
//               harden runs are written today;
//   pair        a twinblock pair (flush: memory), as bench:mirror runs it;
//   qemu        QEMU's synchronous mirror (bench/qemu-mirror.ts), the peer of issue 11's targets.
// A target the floor itself misses is bound by the runtime on these cores, not by our code; where
// the floor meets it, the gap between the floor and the pair is ours.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cleanupAll, freePort, makeTempDir, startBackground, type BackgroundProcess } from '../test/helpers/node-process.js';
import { ensureTools } from '../test/helpers/tools.js';
import {
  commitDescription, copyFile, exitWithUsageIf, failureLine, fmtNumber, OptionError, intOption, loadAverage, machine, maxLoadOption, MiB, syncFs, waitForLowLoad, writeDataFile,
} from './common.js';
import { withCpuUse } from './cpu.js';
import { median, medianMeasurement, rows as allRows, runFio, type Measurement, type Row } from './fio.js';
import { BenchPair, pairPaths } from './pair.js';
import { QemuMirror } from './qemu-mirror.js';

const rowIds = ['randwrite-4k-qd32', 'seqwrite-1m-qd8', 'randwrite-4k-qd1'];
const targetNames = ['floor', 'floor-disk', 'floor-pool', 'pair', 'qemu'] as const;
type TargetName = typeof targetNames[number];
const targetLabel: Record<TargetName, string> = {
  'floor': 'bare Node.js mirror, RAM only',
  'floor-disk': 'bare Node.js mirror + sync pwrite',
  'floor-pool': 'bare Node.js mirror + libuv fs.write',
  'pair': 'twinblock pair, flush: memory',
  'qemu': 'QEMU sync mirror (write-blocking)',
};
const floorFsyncMs = 20;

const usage = `usage: npm run bench:floor -- [options]
  --runs N          runs per row and target (default 3)
  --runtime SEC     seconds per fio run (default 10)
  --warmup SEC      an unmeasured fio run per row and target first (default 3)
  --size SIZE_MIB   volume and file size in MiB (default 256)
  --rows a,b        only these rows (${rowIds.join(', ')})
  --max-load L      before starting, wait (up to 600 s) for 1-min load <= L
  --markdown FILE   also write the results to FILE`;

interface Target {
  name: TargetName;
  uri: string;
  settle(): Promise<void>;
  pids(): number[];
}

interface Sample { m: Measurement; serverUsPerIo: number }

async function startFloor(sizeBytes: number, hardenMode: 'none' | 'sync' | 'pool', stores: { a: string; b: string }): Promise<{ uri: string; procs: BackgroundProcess[] }> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'floor-node.js');
  const [linkPort, nbdPort] = [await freePort(), await freePort()];
  const harden = (store: string): string[] => hardenMode === 'none' ? [] : ['--harden', store, '--fsync-ms', String(floorFsyncMs), ...(hardenMode === 'pool' ? ['--pool'] : [])];
  const sizeMiB = String(sizeBytes / MiB);
  const secondary = await startBackground('node', [script, 'secondary', String(linkPort), sizeMiB, ...harden(stores.b)], linkPort);
  const primary = await startBackground('node', [script, 'primary', String(nbdPort), sizeMiB, '--peer', String(linkPort), ...harden(stores.a)], nbdPort);
  return { uri: `nbd://127.0.0.1:${nbdPort}/`, procs: [primary, secondary] };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' }, runtime: { type: 'string' }, warmup: { type: 'string' }, size: { type: 'string' },
      rows: { type: 'string' }, 'max-load': { type: 'string' }, markdown: { type: 'string' }, help: { type: 'boolean' },
    },
  });
  exitWithUsageIf(values.help, usage);
  const runs = intOption(values.runs, 3, 'runs');
  const runtimeSec = intOption(values.runtime, 10, 'runtime');
  const warmupSec = intOption(values.warmup, 3, 'warmup', 0);
  const sizeBytes = intOption(values.size, 256, 'size') * MiB;
  const ids = values.rows === undefined ? rowIds : values.rows.split(',');
  for (const id of ids) if (!rowIds.includes(id)) throw new OptionError(`unknown row ${id} (rows: ${rowIds.join(', ')})`);
  const selected = allRows.filter((r) => ids.includes(r.id));
  const maxLoad = maxLoadOption(values['max-load']);
  ensureTools(['fio', 'nbdkit', 'qemu-storage-daemon']);
  const loadBefore = maxLoad === null ? loadAverage() : await waitForLowLoad(maxLoad, 600);
  const command = `npm run bench:floor -- ${process.argv.slice(2).join(' ')}`.trim();

  const dir = makeTempDir('twinblock-bench-floor-');
  const base = path.join(dir, 'floor');
  const mem = pairPaths(base, 'memory');
  const files = { data: `${base}-data.img`, fa: `${base}-floor-a.img`, fb: `${base}-floor-b.img`, pa: `${base}-pool-a.img`, pb: `${base}-pool-b.img`, qs: `${base}-qemu-source.img`, qt: `${base}-qemu-target.img` };
  execFileSync('mkdir', ['-p', mem.dir]);
  writeDataFile(files.data, sizeBytes);
  for (const f of [mem.stores.a, mem.stores.b, files.fa, files.fb, files.pa, files.pb, files.qs, files.qt]) copyFile(files.data, f);
  syncFs();

  const floor = await startFloor(sizeBytes, 'none', { a: '', b: '' });
  const floorDisk = await startFloor(sizeBytes, 'sync', { a: files.fa, b: files.fb });
  const floorPool = await startFloor(sizeBytes, 'pool', { a: files.pa, b: files.pb });
  const pair = await BenchPair.start({ dir: mem.dir, stores: mem.stores, size: `${sizeBytes / MiB}MiB`, cache: '256MiB', flush: 'memory' });
  const qemu = await QemuMirror.start({ sourceFile: files.qs, targetFile: files.qt, dir });
  const results = new Map<Row, Record<TargetName, Sample>>();
  let loadAfter = '';
  try {
    await pair.waitInSync(300_000);
    const floorTarget = (name: TargetName, f: { uri: string; procs: BackgroundProcess[] }): Target => ({
      name, uri: f.uri, settle: async () => syncFs(), pids: () => f.procs.map((p) => p.child.pid!),
    });
    const targets: Target[] = [
      floorTarget('floor', floor), floorTarget('floor-disk', floorDisk), floorTarget('floor-pool', floorPool),
      { name: 'pair', uri: pair.uri('a'), settle: async () => { await pair.waitHardened(180_000); syncFs(); }, pids: () => (['a', 'b'] as const).map((n) => pair.node(n).pid) },
      { name: 'qemu', uri: qemu.uri, settle: async () => { await qemu.checkMirroring(); syncFs(); }, pids: () => qemu.pids },
    ];
    for (const row of selected) {
      for (const t of targets) {
        await t.settle();
        if (warmupSec > 0) await runFio(row, t.uri, sizeBytes, warmupSec);
      }
      const samples = Object.fromEntries(targetNames.map((n) => [n, [] as Sample[]])) as Record<TargetName, Sample[]>;
      for (let i = 0; i < runs; i++) {
        for (let k = 0; k < targets.length; k++) {
          const t = targets[(k + i) % targets.length]!;
          await t.settle();
          const [m, cpu] = await withCpuUse(t.pids(), () => runFio(row, t.uri, sizeBytes, runtimeSec));
          samples[t.name].push({ m, serverUsPerIo: (cpu.serverCores * 1e6) / m.iops });
          console.error(`${row.id} run ${i + 1}/${runs} ${t.name}: ${fmtNumber(m.iops)} IOPS, p50 ${fmtNumber(m.p50LatencyUs, 1)} µs, ${fmtNumber((cpu.serverCores * 1e6) / m.iops, 1)} µs CPU/IO (load ${loadAverage()})`);
        }
      }
      results.set(row, Object.fromEntries(targetNames.map((n) => [n, {
        m: medianMeasurement(samples[n].map((s) => s.m)), serverUsPerIo: median(samples[n].map((s) => s.serverUsPerIo)),
      }])) as Record<TargetName, Sample>);
    }
    loadAfter = loadAverage();
    await qemu.checkMirroring();
  } finally {
    await pair.stop();
    await qemu.stop();
    for (const p of [...floor.procs, ...floorDisk.procs, ...floorPool.procs]) await p.stop();
  }
  const markdown = [...table(results), '',
    `Medians of ${runs} runs per target, order rotated every run, after one unmeasured ${warmupSec} s warm-up per row and target; fio runs ${runtimeSec} s (+1 s ramp); volume ${sizeBytes / MiB} MiB; twinblock cache 256 MiB per node; the floor's hardening fdatasyncs every ${floorFsyncMs} ms.`,
    '',
    `- date: ${new Date().toISOString()} (commit ${commitDescription()})`,
    ...Object.entries(machine([['fio', ['--version']], ['qemu-storage-daemon', ['--version']]])).map(([k, v]) => `- ${k}: ${v}`),
    `- load average (1/5/15 min) before: ${loadBefore}; after: ${loadAfter}`,
    `- command: \`${command}\``].join('\n');
  console.log(markdown);
  if (values.markdown !== undefined) writeFileSync(values.markdown, `${markdown}\n`);
  execFileSync('rm', ['-rf', dir]);
  await cleanupAll();
}

function describe(row: Row, s: Sample): string {
  const perf = row.kind === 'latency'
    ? `p50 ${fmtNumber(s.m.p50LatencyUs, 1)} / p99 ${fmtNumber(s.m.p99LatencyUs, 1)} µs`
    : row.id.includes('1m') ? `${fmtNumber(s.m.bandwidthBytesPerSec / MiB)} MiB/s` : `${fmtNumber(s.m.iops)} IOPS`;
  const cpu = row.id.includes('1m') ? `${fmtNumber(s.serverUsPerIo / 1000, 2)} ms/MiB` : `${fmtNumber(s.serverUsPerIo, 1)} µs/IO`;
  return `${perf}; CPU ${cpu}`;
}

/**
 * One line per row: every target's figure and CPU (servers, all threads), then the floor's and
 * the pair's ratio to QEMU on issue 11's own terms (≥ 2.0× throughput, QD1 p50 ≤ 1.0×).
 */
function table(results: Map<Row, Record<TargetName, Sample>>): string[] {
  const out = [`| row | ${targetNames.map((t) => targetLabel[t]).join(' | ')} | floor-disk vs QEMU | pair vs QEMU | pair CPU / floor-disk CPU |`,
    `| --- | ${targetNames.map(() => '---').join(' | ')} | --- | --- | --- |`];
  for (const [row, r] of results) {
    const ratio = (t: TargetName): string => {
      if (row.kind === 'latency') return `p50 ${(r[t].m.p50LatencyUs / r.qemu.m.p50LatencyUs).toFixed(2)}×`;
      const key = row.id.includes('1m') ? 'bandwidthBytesPerSec' : 'iops';
      return `${(r[t].m[key] / r.qemu.m[key]).toFixed(2)}×`;
    };
    out.push(`| ${row.label} | ${targetNames.map((t) => describe(row, r[t])).join(' | ')} | ${ratio('floor-disk')} | ${ratio('pair')} | ${(r.pair.serverUsPerIo / r['floor-disk'].serverUsPerIo).toFixed(2)}× |`);
  }
  return out;
}

main().catch(async (err: unknown) => {
  console.error(failureLine('bench:floor', err));
  await cleanupAll();
  process.exit(1);
});
