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
//   qemu        QEMU's synchronous mirror (bench/qemu-mirror.ts), the peer of issue 11's targets;
//   nbdkit      `nbdkit file` (one node, no mirror), the physical reference of the others.
// A target the floor itself misses is bound by the runtime on these cores, not by our code; where
// the floor meets it, the gap between the floor and the pair is ours.
//
// With --nodes 3 (issue 12 item 10: three nodes with `ack: quorum` at >= 0.8x the pair), the
// targets are instead the floor-pool pair, the same floor with a primary and two secondaries
// answering on the first secondary's ack (a majority of three), the twinblock pair and three
// twinblock nodes with `ack: quorum`: what a third process costs on these cores when it does
// nothing but take the bytes, beside what it costs twinblock.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cleanupAll, freePort, makeTempDir, startBackground, type BackgroundProcess } from '../test/helpers/node-process.js';
import { ensureTools } from '../test/helpers/tools.js';
import {
  commitDescription, copyFile, exitWithUsageIf, failureLine, fmtNumber, OptionError, intOption, loadAverage, machine, maxLoadOption, MiB, syncFs, waitForLowLoad, writeDataFile, startNbdkitFile,
} from './common.js';
import { withCpuUse } from './cpu.js';
import { median, medianMeasurement, rows as allRows, runFio, type Measurement, type Row } from './fio.js';
import { BenchPair } from './pair.js';
import { QemuMirror } from './qemu-mirror.js';

const rowIds = ['randwrite-4k-qd32', 'seqwrite-1m-qd8', 'randwrite-4k-qd1'];
const pairTargets = ['floor', 'floor-disk', 'floor-pool', 'pair', 'qemu', 'nbdkit'] as const;
const trioTargets = ['floor-pool', 'floor3-pool', 'pair', 'trio'] as const;
type TargetName = typeof pairTargets[number] | typeof trioTargets[number];
const targetLabel: Record<TargetName, string> = {
  'floor': 'bare Node.js mirror, RAM only',
  'floor-disk': 'bare Node.js mirror + sync pwrite',
  'floor-pool': 'bare Node.js mirror + libuv fs.write',
  'floor3-pool': 'bare Node.js mirror to two secondaries + libuv fs.write, answered on the first ack',
  'pair': 'twinblock pair, flush: memory',
  'trio': 'twinblock, three nodes, ack: quorum',
  'qemu': 'QEMU sync mirror (write-blocking)',
  'nbdkit': 'nbdkit file (one node)',
};
const floorFsyncMs = 20;

const usage = `usage: npm run bench:floor -- [options]
  --runs N          runs per row and target (default 3)
  --runtime SEC     seconds per fio run (default 10)
  --warmup SEC      an unmeasured fio run per row and target first (default 3)
  --size SIZE_MIB   volume and file size in MiB (default 256)
  --rows a,b        only these rows (${rowIds.join(', ')})
  --nodes 3         the three-node floor beside three twinblock nodes (ack: quorum) instead of QEMU
  --max-load L      before starting, wait (up to 600 s) for 1-min load <= L
  --markdown FILE   also write the results to FILE`;

interface Target {
  name: TargetName;
  uri: string;
  settle(): Promise<void>;
  pids(): number[];
}

interface Sample { m: Measurement; serverUsPerIo: number }

/** A floor volume: one primary, `stores.length - 1` secondaries; the primary answers on `acks` acks. */
async function startFloor(sizeBytes: number, hardenMode: 'none' | 'sync' | 'pool', stores: string[], acks: number): Promise<{ uri: string; procs: BackgroundProcess[] }> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'floor-node.js');
  const harden = (store: string): string[] => hardenMode === 'none' ? [] : ['--harden', store, '--fsync-ms', String(floorFsyncMs), ...(hardenMode === 'pool' ? ['--pool'] : [])];
  const sizeMiB = String(sizeBytes / MiB);
  const procs: BackgroundProcess[] = [];
  const peerArgs: string[] = [];
  for (const store of stores.slice(1)) {
    const linkPort = await freePort();
    procs.push(await startBackground('node', [script, 'secondary', String(linkPort), sizeMiB, ...harden(store)], linkPort));
    peerArgs.push('--peer', String(linkPort));
  }
  const nbdPort = await freePort();
  procs.unshift(await startBackground('node', [script, 'primary', String(nbdPort), sizeMiB, ...peerArgs, '--acks', String(acks), ...harden(stores[0]!)], nbdPort));
  return { uri: `nbd://127.0.0.1:${nbdPort}/`, procs };
}

interface Started { targets: Target[]; check(): Promise<void>; stop(): Promise<void> }

/** The targets of one run: the pair mode's five, or with --nodes 3 the floors and twinblock volumes of two and three nodes. */
async function startTargets(trio: boolean, sizeBytes: number, dir: string, stores: (name: string, count: number) => string[]): Promise<Started> {
  const floorTarget = (name: TargetName, f: { uri: string; procs: BackgroundProcess[] }): Target => ({
    name, uri: f.uri, settle: async () => syncFs(), pids: () => f.procs.map((p) => p.child.pid!),
  });
  const volumeTarget = (name: TargetName, v: BenchPair): Target => ({
    name, uri: v.uri('a'), settle: async () => { await v.waitHardened(180_000); syncFs(); }, pids: () => v.names.map((n) => v.node(n).pid),
  });
  const startVolume = async (name: string, count: number, extra?: Record<string, unknown>): Promise<BenchPair> => {
    const names = ['a', 'b', 'c'].slice(0, count);
    const files = stores(name, count);
    const volume = await BenchPair.start({
      dir: path.join(dir, name), stores: Object.fromEntries(names.map((n, i) => [n, files[i]!])), size: `${sizeBytes / MiB}MiB`, cache: '256MiB', flush: 'memory', ...(extra ? { extra } : {}),
    });
    await volume.waitInSync(300_000);
    return volume;
  };
  const floors = [await startFloor(sizeBytes, 'pool', stores('pool', 2), 1)];
  if (trio) {
    floors.push(await startFloor(sizeBytes, 'pool', stores('pool3', 3), 1));
    const pair = await startVolume('pair', 2);
    const three = await startVolume('trio', 3, { ack: 'quorum' });
    return {
      targets: [floorTarget('floor-pool', floors[0]!), floorTarget('floor3-pool', floors[1]!), volumeTarget('pair', pair), volumeTarget('trio', three)],
      check: async () => {},
      stop: async () => { for (const v of [pair, three]) await v.stop(); for (const p of floors.flatMap((f) => f.procs)) await p.stop(); },
    };
  }
  floors.push(await startFloor(sizeBytes, 'none', ['', ''], 1), await startFloor(sizeBytes, 'sync', stores('disk', 2), 1));
  const pair = await startVolume('pair', 2);
  const qemuFiles = stores('qemu', 2);
  const qemu = await QemuMirror.start({ sourceFile: qemuFiles[0]!, targetFile: qemuFiles[1]!, dir });
  const kit = await startNbdkitFile(stores('kit', 1)[0]!);
  return {
    targets: [floorTarget('floor', floors[1]!), floorTarget('floor-disk', floors[2]!), floorTarget('floor-pool', floors[0]!), volumeTarget('pair', pair),
      { name: 'qemu', uri: qemu.uri, settle: async () => { await qemu.checkMirroring(); syncFs(); }, pids: () => qemu.pids },
      floorTarget('nbdkit', { uri: kit.uri, procs: [kit.proc] })],
    check: async () => qemu.checkMirroring(),
    stop: async () => { await pair.stop(); await qemu.stop(); for (const p of [...floors.flatMap((f) => f.procs), kit.proc]) await p.stop(); },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' }, runtime: { type: 'string' }, warmup: { type: 'string' }, size: { type: 'string' },
      rows: { type: 'string' }, 'max-load': { type: 'string' }, markdown: { type: 'string' }, nodes: { type: 'string' }, help: { type: 'boolean' },
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
  ensureTools(values.nodes === undefined ? ['fio', 'nbdkit', 'qemu-storage-daemon'] : ['fio', 'nbdkit']);
  const loadBefore = maxLoad === null ? loadAverage() : await waitForLowLoad(maxLoad, 600);
  const command = `npm run bench:floor -- ${process.argv.slice(2).join(' ')}`.trim();

  const trio = values.nodes !== undefined && intOption(values.nodes, 2, 'nodes') === 3;
  if (values.nodes !== undefined && !trio) throw new OptionError('--nodes takes 3 (the pair is the default)');
  const targetNames: readonly TargetName[] = trio ? trioTargets : pairTargets;
  const dir = makeTempDir('twinblock-bench-floor-');
  const data = path.join(dir, 'floor-data.img');
  writeDataFile(data, sizeBytes);
  /** Stores for a volume of `count` nodes, each a copy of the same random data. */
  const stores = (name: string, count: number): string[] => Array.from({ length: count }, (_, i) => {
    const f = path.join(dir, `floor-${name}-${i}.img`);
    copyFile(data, f);
    return f;
  });
  const started = await startTargets(trio, sizeBytes, dir, stores);
  syncFs();
  const results = new Map<Row, Record<TargetName, Sample>>();
  let loadAfter = '';
  try {
    for (const t of started.targets) await t.settle();
    const targets = started.targets;
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
    await started.check();
  } finally {
    await started.stop();
  }
  const markdown = [...(trio ? trioTable(results) : table(results)), '',
    `Medians of ${runs} runs per target, order rotated every run, after one unmeasured ${warmupSec} s warm-up per row and target; fio runs ${runtimeSec} s (+1 s ramp); volume ${sizeBytes / MiB} MiB; twinblock cache 256 MiB per node; the floor's hardening fdatasyncs every ${floorFsyncMs} ms.`,
    '',
    `- date: ${new Date().toISOString()} (commit ${commitDescription()})`,
    ...Object.entries(machine([['fio', ['--version']], ...(trio ? [] : [['qemu-storage-daemon', ['--version']] as [string, string[]]])])).map(([k, v]) => `- ${k}: ${v}`),
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
 * the pair's ratios on issue 11's own terms: to QEMU (>= 2.0x throughput, QD1 p50 <= 1.0x and
 * p99 <= 1.5x) and to nbdkit (>= 0.3x throughput, QD1 p50 <= 2.5x and p99 <= 4x), and the pair's
 * CPU against the floors that harden the same bytes.
 */
function table(results: Map<Row, Record<TargetName, Sample>>): string[] {
  const targetNames = pairTargets;
  const out = [`| row | ${targetNames.map((t) => targetLabel[t]).join(' | ')} | floor-disk vs QEMU | pair vs QEMU | floor-disk vs nbdkit | pair vs nbdkit | pair CPU / floor-disk CPU, / floor-pool CPU |`,
    `| --- | ${targetNames.map(() => '---').join(' | ')} | --- | --- | --- | --- | --- |`];
  for (const [row, r] of results) {
    const ratio = (t: TargetName, peer: TargetName): string => {
      const [a, b] = [r[t].m, r[peer].m];
      if (row.kind === 'latency') return `p50 ${(a.p50LatencyUs / b.p50LatencyUs).toFixed(2)}×, p99 ${(a.p99LatencyUs / b.p99LatencyUs).toFixed(2)}×`;
      const key = row.id.includes('1m') ? 'bandwidthBytesPerSec' : 'iops';
      return `${(a[key] / b[key]).toFixed(2)}×`;
    };
    const cpu = (floor: TargetName): string => `${(r.pair.serverUsPerIo / r[floor].serverUsPerIo).toFixed(2)}×`;
    out.push(`| ${row.label} | ${targetNames.map((t) => describe(row, r[t])).join(' | ')} | ${ratio('floor-disk', 'qemu')} | ${ratio('pair', 'qemu')} | ${ratio('floor-disk', 'nbdkit')} | ${ratio('pair', 'nbdkit')} | ${cpu('floor-disk')}, ${cpu('floor-pool')} |`);
  }
  return out;
}

/**
 * --nodes 3: every target's figure and CPU, then three nodes against two for the floor and for
 * twinblock (issue 12 item 10's terms: >= 0.8x throughput, QD1 p50 <= 1.2x).
 */
function trioTable(results: Map<Row, Record<TargetName, Sample>>): string[] {
  const names = trioTargets;
  const out = [`| row | ${names.map((t) => targetLabel[t]).join(' | ')} | floor: three vs two | twinblock: three vs two | CPU per I/O, three vs two: floor / twinblock |`,
    `| --- | ${names.map(() => '---').join(' | ')} | --- | --- | --- |`];
  for (const [row, r] of results) {
    const ratio = (three: TargetName, two: TargetName): string => {
      if (row.kind === 'latency') return `p50 ${(r[three].m.p50LatencyUs / r[two].m.p50LatencyUs).toFixed(2)}×`;
      const key = row.id.includes('1m') ? 'bandwidthBytesPerSec' : 'iops';
      return `${(r[three].m[key] / r[two].m[key]).toFixed(2)}×`;
    };
    const cpu = (three: TargetName, two: TargetName): string => `${(r[three].serverUsPerIo / r[two].serverUsPerIo).toFixed(2)}×`;
    out.push(`| ${row.label} | ${names.map((t) => describe(row, r[t])).join(' | ')} | ${ratio('floor3-pool', 'floor-pool')} | ${ratio('trio', 'pair')} | ${cpu('floor3-pool', 'floor-pool')} / ${cpu('trio', 'pair')} |`);
  }
  return out;
}

main().catch(async (err: unknown) => {
  console.error(failureLine('bench:floor', err));
  await cleanupAll();
  process.exit(1);
});
