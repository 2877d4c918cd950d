// Mirroring benchmark (issue 4 item 11), run by hand: `npm run bench:mirror -- [options]`.
//
// In one run, on one machine, fio's nbd engine against four targets:
//   mirrored  a twinblock pair (two node processes on loopback, file stores, flush: memory); fio
//             writes to the primary, which answers once the write is in both RAM caches;
//   nbdkit    `nbdkit file` on the same kind of file (one node, no mirror, defaults);
//   disk      a twinblock pair with flush: disk, and fio sending NBD_CMD_FLUSH after every write
//             (--fsync=1): each write is then durable on both nodes' disks before the next one —
//             the synchronous disk mirroring of the seed's background;
//   qemu      QEMU's synchronous mirror (bench/qemu-mirror.ts): qemu-storage-daemon mirroring a
//             file into `nbdkit file` with copy-mode=write-blocking, its filter node exported:
//             the mirror users could run instead of ours (issue 11). Checked still mirroring
//             before every run and byte-identical at the end.
// fio's nbd engine cannot set FUA (engines/nbd.c passes flags 0 to nbd_aio_pwrite; --sync=1 is
// ignored, checked against nbdkit's log filter), so a second table drives real FUA writes
// (NBD_CMD_FLAG_FUA on every write) with our own NBD client against the same three targets.
//
// Each row runs N times per target with the order rotated every run; tables show medians. All
// files start with the same random data (one file, copied); each pair finishes its initial full
// sync before anything is measured; before every run the target settles (nothing unhardened on
// either node, then `sync`).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cleanupAll, makeTempDir, run } from '../test/helpers/node-process.js';
import { ensureTools } from '../test/helpers/tools.js';
import {
  commitDescription, copyFile, exitWithUsageIf, failureLine, OptionError, fmtNumber, intOption, loadAverage, machine, maxLoadOption, MiB, syncFs, waitForLowLoad, writeDataFile, startNbdkitFile,
} from './common.js';
import { topSelfTime, type ProfileWindow } from './profile.js';
import { peakRssBytes, withCpuUse, type CpuUse } from './cpu.js';
import { fioArgs, median, medianMeasurement, rows as allRows, runFio, type Measurement, type Row } from './fio.js';
import { medianLoad, runWriteLoad, type LoadResult } from './nbd-load.js';
import { BenchPair, pairPaths } from './pair.js';
import { parseSize } from '../src/config/size.js';
import { QemuMirror } from './qemu-mirror.js';
import { runNodesBench } from './nodes.js';

const mirrorRowIds = ['randwrite-4k-qd32', 'seqwrite-1m-qd8', 'randwrite-4k-qd1'];
const fuaDepths = [1, 32];

const usage = `usage: npm run bench:mirror -- [options]
  --runs N          runs per row and target (default 3)
  --runtime SEC     seconds per fio run (default 10; --quick: 3)
  --fua-runtime SEC seconds per FUA-client run (default 5; --quick: 2)
  --warmup SEC      an unmeasured fio run per row and target first (default 3; 0: none)
  --size SIZE_MIB   volume and file size in MiB (default 1024; --quick: 256)
  --cache SIZE      twinblock cache per node, config syntax (default 256MiB)
  --dir DIR         where the seven files go (default: a temp dir under $TMPDIR)
  --rows a,b        only these fio rows (${mirrorRowIds.join(', ')}); "none" for none
  --no-fua          skip the FUA-client table
  --quick           short runs, smaller volume: a smoke test of the bench itself
  --profile         run the mirrored pair's nodes under node --cpu-prof; print top self time
  --max-load L      before starting, wait (up to --max-wait s, default 600) for 1-min load <= L
  --markdown FILE   also write the results to FILE
  --nodes 3         instead: three-node volumes (ack: all, ack: quorum) beside the pair and nbdkit
                    file, and the same with one secondary frozen (bench/nodes.ts; uses --runs,
                    --runtime, --warmup, --size, --cache, --dir, --max-load, --max-wait, --markdown)`;

type TargetName = 'mirrored' | 'nbdkit' | 'disk' | 'qemu';
const targetNames: TargetName[] = ['mirrored', 'qemu', 'nbdkit', 'disk'];
const targetLabel: Record<TargetName, string> = {
  mirrored: 'twinblock pair, flush: memory',
  qemu: 'QEMU sync mirror (write-blocking)',
  nbdkit: 'nbdkit file (one node)',
  disk: 'twinblock pair, flush: disk, FLUSH after every write',
};

/** One value per target, each made fresh. */
function perTarget<T>(make: () => T): Record<TargetName, T> {
  return { mirrored: make(), qemu: make(), nbdkit: make(), disk: make() };
}

function perTargetMap<A, B>(from: Record<TargetName, A>, f: (a: A) => B): Record<TargetName, B> {
  return { mirrored: f(from.mirrored), qemu: f(from.qemu), nbdkit: f(from.nbdkit), disk: f(from.disk) };
}

interface Options {
  runs: number;
  runtimeSec: number;
  fuaRuntimeSec: number;
  warmupSec: number;
  sizeBytes: number;
  cache: string;
  dir: string | null;
  rowIds: string[];
  fua: boolean;
  profile: boolean;
  maxLoad: number | null;
  maxWaitSec: number;
  markdownPath: string | null;
  nodes: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' }, runtime: { type: 'string' }, 'fua-runtime': { type: 'string' }, size: { type: 'string' }, warmup: { type: 'string' },
      cache: { type: 'string' }, dir: { type: 'string' }, rows: { type: 'string' }, 'no-fua': { type: 'boolean' },
      quick: { type: 'boolean' }, profile: { type: 'boolean' }, 'max-load': { type: 'string' }, 'max-wait': { type: 'string' },
      markdown: { type: 'string' }, nodes: { type: 'string' }, help: { type: 'boolean' },
    },
  });
  exitWithUsageIf(values.help, usage);
  const quick = values.quick === true;
  const rowIds = values.rows === undefined ? mirrorRowIds : values.rows === 'none' ? [] : values.rows.split(',');
  for (const id of rowIds) if (!mirrorRowIds.includes(id)) throw new OptionError(`unknown row ${id} (rows: ${mirrorRowIds.join(', ')})`);
  const maxLoad = maxLoadOption(values['max-load']);
  return {
    runs: intOption(values.runs, 3, 'runs'),
    runtimeSec: intOption(values.runtime, quick ? 3 : 10, 'runtime'),
    fuaRuntimeSec: intOption(values['fua-runtime'], quick ? 2 : 5, 'fua-runtime'),
    warmupSec: intOption(values.warmup, quick ? 1 : 3, 'warmup', 0),
    sizeBytes: intOption(values.size, quick ? 256 : 1024, 'size') * MiB,
    cache: values.cache ?? '256MiB',
    dir: values.dir ?? null,
    rowIds,
    fua: values['no-fua'] !== true,
    profile: values.profile === true,
    maxLoad,
    maxWaitSec: intOption(values['max-wait'], 600, 'max-wait'),
    markdownPath: values.markdown ?? null,
    nodes: intOption(values.nodes, 2, 'nodes', 2),
  };
}

interface Target {
  name: TargetName;
  uri: string;
  /** fio arguments this target adds to every row. */
  fioExtra: string[];
  settle(): Promise<void>;
  /** The target's server processes (both nodes of a pair), for CPU accounting. */
  pids(): number[];
}

/** CPU per I/O of one fio run: the target's servers, fio itself, and how busy the machine was. */
interface CpuSample { serverUsPerIo: number; fioUsPerIo: number; machineCores: number }

function cpuSample(m: Measurement, cpu: CpuUse): CpuSample {
  return { serverUsPerIo: (cpu.serverCores * 1e6) / m.iops, fioUsPerIo: (m.fioCores * 1e6) / m.iops, machineCores: cpu.machineCores };
}

function medianCpu(samples: CpuSample[]): CpuSample {
  return {
    serverUsPerIo: median(samples.map((c) => c.serverUsPerIo)),
    fioUsPerIo: median(samples.map((c) => c.fioUsPerIo)),
    machineCores: median(samples.map((c) => c.machineCores)),
  };
}

function describeFio(row: Row, t: TargetName, m: Measurement): string {
  if (row.kind === 'latency') {
    const base = `p50 ${fmtNumber(m.p50LatencyUs, 1)} µs, p99 ${fmtNumber(m.p99LatencyUs, 1)} µs (${fmtNumber(m.iops)} IOPS)`;
    if (t !== 'disk' || Number.isNaN(m.syncP50LatencyUs)) return base;
    return `write + FLUSH: p50 ${fmtNumber(durableP50(m), 1)} µs (write ${fmtNumber(m.p50LatencyUs, 1)} + FLUSH ${fmtNumber(m.syncP50LatencyUs, 1)}), `
      + `p99 write ${fmtNumber(m.p99LatencyUs, 1)} / FLUSH ${fmtNumber(m.syncP99LatencyUs, 1)} µs (${fmtNumber(m.iops)} writes/s)`;
  }
  if (row.id.includes('1m')) return `${fmtNumber(m.bandwidthBytesPerSec / MiB)} MiB/s`;
  return `${fmtNumber(m.iops)} IOPS`;
}

/** A durable 4 KiB write in disk mode is a WRITE then a FLUSH: the sum of their medians. */
function durableP50(m: Measurement): number {
  return m.p50LatencyUs + (Number.isNaN(m.syncP50LatencyUs) ? 0 : m.syncP50LatencyUs);
}

function describeLoad(r: LoadResult): string {
  return `p50 ${fmtNumber(r.p50LatencyUs, 1)} µs, p99 ${fmtNumber(r.p99LatencyUs, 1)} µs, ${fmtNumber(r.iops)} IOPS`;
}

interface Verdict { target: string; measured: string; met: boolean }

/**
 * Issue 11's targets: the pair against QEMU's synchronous mirror and against `nbdkit file`, its
 * CPU per I/O (both nodes, all threads), and the disk-mode gap kept from issue 4.
 */
function verdicts(fio: Map<Row, Record<TargetName, Measurement>>, fua: Map<number, Record<TargetName, LoadResult>>, cpu: Map<Row, Record<TargetName, CpuSample>>): Verdict[] {
  const out: Verdict[] = [];
  const byId = <T>(m: Map<Row, T>, id: string): T | undefined => [...m.entries()].find(([r]) => r.id === id)?.[1];
  const ratioVerdict = (target: string, r: number, met: boolean, unit = '×'): void => { out.push({ target, measured: `${r.toFixed(2)}${unit}`, met }); };
  const qd32 = byId(fio, 'randwrite-4k-qd32');
  if (qd32) {
    ratioVerdict('pair 4 KiB randwrite QD32 ≥ 2.0× QEMU mirror IOPS', qd32.mirrored.iops / qd32.qemu.iops, qd32.mirrored.iops / qd32.qemu.iops >= 2);
    ratioVerdict('pair 4 KiB randwrite QD32 ≥ 0.3× nbdkit IOPS', qd32.mirrored.iops / qd32.nbdkit.iops, qd32.mirrored.iops / qd32.nbdkit.iops >= 0.3);
  }
  const seq = byId(fio, 'seqwrite-1m-qd8');
  if (seq) {
    const q = seq.mirrored.bandwidthBytesPerSec / seq.qemu.bandwidthBytesPerSec;
    const k = seq.mirrored.bandwidthBytesPerSec / seq.nbdkit.bandwidthBytesPerSec;
    ratioVerdict('pair 1 MiB seq write QD8 ≥ 2.0× QEMU mirror MiB/s', q, q >= 2);
    ratioVerdict('pair 1 MiB seq write QD8 ≥ 0.3× nbdkit MiB/s', k, k >= 0.3);
  }
  const qd1 = byId(fio, 'randwrite-4k-qd1');
  if (qd1) {
    const p50q = qd1.mirrored.p50LatencyUs / qd1.qemu.p50LatencyUs;
    const p99q = qd1.mirrored.p99LatencyUs / qd1.qemu.p99LatencyUs;
    const p50k = qd1.mirrored.p50LatencyUs / qd1.nbdkit.p50LatencyUs;
    const p99k = qd1.mirrored.p99LatencyUs / qd1.nbdkit.p99LatencyUs;
    ratioVerdict('pair 4 KiB QD1 p50 ≤ 1.0× QEMU mirror\'s', p50q, p50q <= 1);
    ratioVerdict('pair 4 KiB QD1 p99 ≤ 1.5× QEMU mirror\'s', p99q, p99q <= 1.5);
    ratioVerdict('pair 4 KiB QD1 p50 ≤ 2.5× nbdkit\'s', p50k, p50k <= 2.5);
    ratioVerdict('pair 4 KiB QD1 p99 ≤ 4× nbdkit\'s', p99k, p99k <= 4);
    const d = durableP50(qd1.disk) / qd1.mirrored.p50LatencyUs;
    out.push({ target: 'pair 4 KiB QD1 p50 ≥ 10× lower than flush: disk (fio: write + FLUSH)', measured: `${d.toFixed(1)}× lower`, met: d >= 10 });
  }
  const cpu4k = byId(cpu, 'randwrite-4k-qd32');
  if (cpu4k) out.push({ target: 'pair CPU ≤ 45 µs per 4 KiB write (both nodes, QD32)', measured: `${fmtNumber(cpu4k.mirrored.serverUsPerIo)} µs`, met: cpu4k.mirrored.serverUsPerIo <= 45 });
  const cpu1m = byId(cpu, 'seqwrite-1m-qd8');
  if (cpu1m) out.push({ target: 'pair CPU ≤ 3 ms per MiB written (both nodes)', measured: `${fmtNumber(cpu1m.mirrored.serverUsPerIo / 1000, 2)} ms`, met: cpu1m.mirrored.serverUsPerIo <= 3000 });
  const f1 = fua.get(1);
  if (f1) {
    const d = f1.disk.p50LatencyUs / f1.mirrored.p50LatencyUs;
    out.push({ target: 'same, with real FUA writes (our client, QD1)', measured: `${d.toFixed(1)}× lower`, met: d >= 10 });
  }
  return out;
}

async function main(): Promise<void> {
  const opts = parseOptions();
  const command = `npm run bench:mirror -- ${process.argv.slice(2).join(' ')}`.trim();
  if (opts.nodes !== 2) {
    if (opts.nodes !== 3) throw new OptionError('--nodes: 2 (the default bench) or 3');
    return runNodesBench({ ...opts, command });
  }
  ensureTools(['fio', 'nbdkit', 'qemu-storage-daemon']);
  const selected = mirrorRowIds.filter((id) => opts.rowIds.includes(id)).map((id) => allRows.find((r) => r.id === id)!);
  const loadBefore = opts.maxLoad === null ? loadAverage() : await waitForLowLoad(opts.maxLoad, opts.maxWaitSec);

  const dir = opts.dir ?? makeTempDir('twinblock-bench-mirror-');
  const base = path.join(dir, `bench-mirror-${process.pid}`);
  const kitFile = `${base}-nbdkit.img`;
  const mem = pairPaths(base, 'memory');
  const disk = pairPaths(base, 'disk');
  const qemuFiles = { source: `${base}-qemu-source.img`, target: `${base}-qemu-target.img` };
  console.error(`writing a ${opts.sizeBytes / MiB} MiB random file and six copies under ${base} ...`);
  execFileSync('mkdir', ['-p', mem.dir, disk.dir]);
  writeDataFile(kitFile, opts.sizeBytes);
  for (const f of [mem.stores.a, mem.stores.b, disk.stores.a, disk.stores.b, qemuFiles.source, qemuFiles.target]) copyFile(kitFile, f);
  syncFs();

  const profileDir = opts.profile ? mkdtempSync(path.join(os.tmpdir(), 'twinblock-cpuprof-')) : null;
  const profArgs = profileDir === null ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir];
  const size = `${opts.sizeBytes / MiB}MiB`;
  const memPair = await BenchPair.start({ dir: mem.dir, stores: mem.stores, size, cache: opts.cache, flush: 'memory', nodeArgs: { a: profArgs, b: profArgs } });
  const diskPair = await BenchPair.start({ dir: disk.dir, stores: disk.stores, size, cache: opts.cache, flush: 'disk' });
  const kit = await startNbdkitFile(kitFile);
  const qemu = await QemuMirror.start({ sourceFile: qemuFiles.source, targetFile: qemuFiles.target, dir });

  const fioResults = new Map<Row, Record<TargetName, Measurement>>();
  const fuaResults = new Map<number, Record<TargetName, LoadResult>>();
  const cpuResults = new Map<Row, Record<TargetName, CpuSample>>();
  let loadAfter = '';
  let qemuIdentical = false;
  const peakRss = perTarget<number[]>(() => []);
  const initialSyncMs: Record<string, number> = {};
  /** Wall-clock spans (Date.now) of the mirrored target's runs, per row: profile windows. */
  const mirroredSpans = new Map<string, Array<[number, number]>>();
  const span = async <T>(key: string, t: TargetName, f: () => Promise<T>): Promise<T> => {
    const from = Date.now();
    const r = await f();
    if (t === 'mirrored') mirroredSpans.set(key, [...(mirroredSpans.get(key) ?? []), [from, Date.now()]]);
    return r;
  };
  try {
    // A new pair always starts with a full sync of the volume: wait for both, one after the other.
    // Both pairs sync at once (they share the machine): times are from each pair's start.
    await memPair.waitInSync(300_000);
    initialSyncMs['memory'] = Date.now() - memPair.spawnedAtMs.b;
    await diskPair.waitInSync(300_000);
    initialSyncMs['disk'] = Date.now() - diskPair.spawnedAtMs.b;
    console.error(`initial full sync done (memory pair ${initialSyncMs['memory']} ms, disk pair ${initialSyncMs['disk']} ms after start)`);

    const settlePair = (pair: BenchPair) => async (): Promise<void> => {
      await pair.waitHardened(180_000);
      syncFs();
    };
    const targets: Target[] = [
      { name: 'mirrored', uri: memPair.uri('a'), fioExtra: [], settle: settlePair(memPair), pids: () => pairPids(memPair) },
      { name: 'nbdkit', uri: kit.uri, fioExtra: [], settle: async () => syncFs(), pids: () => [kit.proc.child.pid!] },
      { name: 'disk', uri: diskPair.uri('a'), fioExtra: ['--fsync=1'], settle: settlePair(diskPair), pids: () => pairPids(diskPair) },
      // Before every run (so after the one before): the job must still be mirroring.
      { name: 'qemu', uri: qemu.uri, fioExtra: [], settle: async () => { await qemu.checkMirroring(); syncFs(); }, pids: () => qemu.pids },
    ];
    const rotated = (i: number): Target[] => targets.map((_, k) => targets[(k + i) % targets.length]!);

    for (const row of selected) {
      // Unmeasured: a fresh cache allocates (and the kernel faults in) its line buffers on first
      // use, which costs far more than a copy on this VM; measure the steady state instead.
      if (opts.warmupSec > 0) {
        for (const t of targets) {
          await t.settle();
          await runFio(row, t.uri, opts.sizeBytes, opts.warmupSec, t.fioExtra);
        }
      }
      const samples = perTarget<Measurement[]>(() => []);
      const cpuSamples = perTarget<CpuSample[]>(() => []);
      for (let i = 0; i < opts.runs; i++) {
        for (const t of rotated(i)) {
          await t.settle();
          const [m, cpu] = await withCpuUse(t.pids(), () => span(row.id, t.name, () => runFio(row, t.uri, opts.sizeBytes, opts.runtimeSec, t.fioExtra)));
          samples[t.name].push(m);
          cpuSamples[t.name].push(cpuSample(m, cpu));
          console.error(`${row.id} run ${i + 1}/${opts.runs} ${t.name}: ${describeFio(row, t.name, m)} (load ${loadAverage()})`);
        }
      }
      fioResults.set(row, perTargetMap(samples, medianMeasurement));
      cpuResults.set(row, perTargetMap(cpuSamples, medianCpu));
    }

    if (opts.fua) {
      for (const depth of fuaDepths) {
        const samples = perTarget<LoadResult[]>(() => []);
        for (let i = 0; i < opts.runs; i++) {
          for (const t of rotated(i)) {
            await t.settle();
            const r = await span(`fua-4k-qd${depth}`, t.name, () => runWriteLoad({
              uri: t.uri, blockBytes: 4096, depth, runtimeSec: opts.fuaRuntimeSec, rampSec: 1, fua: true, spanBytes: opts.sizeBytes,
            }));
            samples[t.name].push(r);
            console.error(`fua-4k-qd${depth} run ${i + 1}/${opts.runs} ${t.name}: ${describeLoad(r)} (load ${loadAverage()})`);
          }
        }
        fuaResults.set(depth, perTargetMap(samples, medianLoad));
      }
    }
    loadAfter = loadAverage();
    // Peaks over the whole bench, every row (issue 11: RSS ≤ cache + 64 MiB under random writes).
    for (const [name, pids] of [['mirrored', pairPids(memPair)], ['disk', pairPids(diskPair)], ['nbdkit', [kit.proc.child.pid!]], ['qemu', qemu.pids]] as const) {
      peakRss[name] = pids.map(peakRssBytes);
    }
    await qemu.checkMirroring();
    qemuIdentical = await qemu.stopAndCompare(qemuFiles.source, qemuFiles.target);
  } finally {
    await memPair.stop();
    await diskPair.stop();
    await kit.proc.stop();
    await qemu.stop();
  }

  const md: string[] = [];
  if (fioResults.size > 0) {
    md.push(`| row (fio, nbd engine) | ${targetNames.map((t) => targetLabel[t]).join(' | ')} | pair vs QEMU | pair vs nbdkit | pair vs disk |`,
      '| --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const [row, r] of fioResults) {
      const versus = (other: TargetName): string => {
        if (row.kind === 'latency') return `p50 ${(r.mirrored.p50LatencyUs / r[other].p50LatencyUs).toFixed(2)}×, p99 ${(r.mirrored.p99LatencyUs / r[other].p99LatencyUs).toFixed(2)}×`;
        const key = row.id.includes('1m') ? 'bandwidthBytesPerSec' : 'iops';
        return `${(r.mirrored[key] / r[other][key]).toFixed(2)}×`;
      };
      const vsDisk = row.kind === 'latency' ? `p50 ${(durableP50(r.disk) / r.mirrored.p50LatencyUs).toFixed(1)}× lower` : versus('disk');
      md.push(`| ${row.label} | ${targetNames.map((t) => describeFio(row, t, r[t])).join(' | ')} | ${versus('qemu')} | ${versus('nbdkit')} | ${vsDisk} |`);
    }
    md.push('');
  }
  if (fuaResults.size > 0) {
    md.push(`| 4 KiB random write, FUA on every write (our client) | ${targetNames.map((t) => targetLabel[t].replace(', FLUSH after every write', '')).join(' | ')} | disk / mirrored p50 |`,
      '| --- | --- | --- | --- | --- | --- |');
    for (const [depth, r] of fuaResults) {
      md.push(`| QD${depth} | ${targetNames.map((t) => describeLoad(r[t])).join(' | ')} | ${(r.disk.p50LatencyUs / r.mirrored.p50LatencyUs).toFixed(1)}× |`);
    }
    md.push('');
  }
  if (cpuResults.size > 0) md.push(...cpuTable(cpuResults), '');
  const cacheBytes = parseSize(opts.cache);
  md.push(`Peak RSS over the whole bench (VmHWM; a pair: node a, node b): ${targetNames.map((t) => `${targetLabel[t]} ${peakRss[t].map((b) => `${fmtNumber(b / MiB)} MiB`).join(', ')}`).join('; ')}. twinblock cache ${opts.cache} per node.`, '');
  const vs = verdicts(fioResults, fuaResults, cpuResults);
  const nodePeak = Math.max(...peakRss.mirrored, ...peakRss.disk);
  if (nodePeak > 0) vs.push({ target: 'node RSS ≤ its cache + 64 MiB (peak over the bench)', measured: `${fmtNumber(nodePeak / MiB)} MiB (cache ${opts.cache})`, met: nodePeak <= cacheBytes + 64 * MiB });
  if (vs.length > 0) {
    md.push('| target | measured | met? |', '| --- | --- | --- |');
    for (const v of vs) md.push(`| ${v.target} | ${v.measured} | ${v.met ? 'yes' : '**no**'} |`);
    md.push('');
  }
  const exampleRow = selected[0] ?? allRows[0]!;
  md.push(`Medians of ${opts.runs} runs per target, order rotated every run, after one unmeasured ${opts.warmupSec} s warm-up run per row and target; fio runs ${opts.runtimeSec} s (+1 s ramp),`,
    `${opts.fua ? `FUA-client runs ${opts.fuaRuntimeSec} s (+1 s ramp). ` : ''}Volume ${opts.sizeBytes / MiB} MiB, twinblock cache ${opts.cache} per node,`,
    'default trackSize (64 KiB), tracker (destage-scan), syncRate and maxDirtyAgeMs.', '',
    `- date: ${new Date().toISOString()} (commit ${commitDescription()})`,
    ...Object.entries(machine([['fio', ['--version']], ['nbdkit', ['--version']], ['qemu-storage-daemon', ['--version']]])).map(([k, v]) => `- ${k}: ${v}`),
    `- load average (1/5/15 min) before: ${loadBefore}; after: ${loadAfter}`,
    `- initial full sync before measuring: memory pair ${initialSyncMs['memory']} ms, disk pair ${initialSyncMs['disk']} ms (from each pair's start to both in-sync; the two pairs synced at the same time)`,
    `- QEMU mirror: still mirroring (job ready, write-blocking) before every run and after the last; source and target files ${qemuIdentical ? 'byte-identical' : '**differ**'} at the end`,
    `- command: \`${command}\``,
    `- fio per run, e.g.: \`fio ${fioArgs(exampleRow, 'nbd://127.0.0.1:PORT/vol0', opts.sizeBytes, opts.runtimeSec).join(' ')}\`; the disk target adds \`--fsync=1\``);
  const markdown = md.join('\n');
  console.log(markdown);
  if (opts.markdownPath !== null) writeFileSync(opts.markdownPath, `${markdown}\n`);

  if (profileDir !== null) {
    // One profile per node of the mirrored pair; print each row's share, only while it ran.
    for (const name of ['a', 'b'] as const) {
      const pid = memPair.node(name).pid;
      const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile') && f.includes(`.${pid}.`));
      if (file === undefined) {
        console.log(`\nno .cpuprofile for node ${name} (pid ${pid}) in ${profileDir}`);
        continue;
      }
      for (const [key, spans] of mirroredSpans) {
        const windows: ProfileWindow[] = spans.map(([from, to]) => ({ fromMs: from - memPair.spawnedAtMs[name], toMs: to - memPair.spawnedAtMs[name] }));
        console.log(`\nTop self time in the mirrored pair's ${name === 'a' ? 'primary a' : 'secondary b'} during ${key} (${path.join(profileDir, file)}):`);
        for (const s of topSelfTime(path.join(profileDir, file), 15, windows)) {
          console.log(`${(s.share * 100).toFixed(1).padStart(5)}%  ${s.selfMs.toFixed(0).padStart(7)} ms  ${s.name}`);
        }
      }
    }
  }
  if (opts.dir !== null) await run('rm', ['-rf', kitFile, qemuFiles.source, qemuFiles.target, mem.dir, disk.dir, base]);
  await cleanupAll();
}

function pairPids(pair: BenchPair): number[] {
  return (['a', 'b'] as const).map((n) => pair.node(n).pid);
}

/**
 * CPU per I/O (µs, user + system, medians over the runs): the target's servers (both nodes of a
 * pair, all their threads), fio, and the machine's busy cores during the run. With the machine
 * near its 2 cores, a target's throughput is about (2 cores) / (its total CPU per I/O).
 */
function cpuTable(cpu: Map<Row, Record<TargetName, CpuSample>>): string[] {
  const cell = (c: CpuSample): string => `${fmtNumber(c.serverUsPerIo)} + fio ${fmtNumber(c.fioUsPerIo)} = ${fmtNumber(c.serverUsPerIo + c.fioUsPerIo)} µs (machine ${c.machineCores.toFixed(2)} cores busy)`;
  const out = [`| CPU per I/O: servers + fio = total | ${targetNames.map((t) => targetLabel[t]).join(' | ')} | pair / QEMU servers | pair / nbdkit total |`, '| --- | --- | --- | --- | --- | --- | --- |'];
  for (const [row, c] of cpu) {
    const vsQemu = c.mirrored.serverUsPerIo / c.qemu.serverUsPerIo;
    const vsKit = (c.mirrored.serverUsPerIo + c.mirrored.fioUsPerIo) / (c.nbdkit.serverUsPerIo + c.nbdkit.fioUsPerIo);
    out.push(`| ${row.label} | ${targetNames.map((t) => cell(c[t])).join(' | ')} | ${vsQemu.toFixed(2)}× | ${vsKit.toFixed(2)}× |`);
  }
  return out;
}

main().catch(async (err: unknown) => {
  console.error(failureLine('bench:mirror', err));
  await cleanupAll();
  process.exit(1);
});
