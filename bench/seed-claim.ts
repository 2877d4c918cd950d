// The seed's own claim, measured the way issue 11 asks (run by hand: `npm run bench:seed-claim`):
// memory-synchronous against disk-synchronous mirroring, with slow disks. Two twinblock pairs whose
// four stores are `nbdkit --filter=delay memory SIZE wdelay=2ms` (every write to a disk takes
// 2 ms, as a real disk's would), one pair with `flush: memory`, one with `flush: disk`; fio sends a
// FLUSH after every 4 KiB write at QD1 (`--fsync=1`). A durable write costs the mean write plus
// the mean FLUSH latency; the target is the disk pair's cost ≥ 10× the memory pair's (medians of
// the runs, the two pairs alternating, after an unmeasured sequential pass that fills the caches).
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { cleanupAll, freePort, makeTempDir, run, startBackground, describeRun, type BackgroundProcess } from '../test/helpers/node-process.js';
import { ensureTools } from '../test/helpers/tools.js';
import { commitDescription, exitWithUsageIf, failureLine, fmtNumber, intOption, loadAverage, machine, maxLoadOption, MiB, waitForLowLoad } from './common.js';
import { median, rows, runFio } from './fio.js';
import { BenchPair } from './pair.js';

const usage = `usage: npm run bench:seed-claim -- [options]
  --runs N          runs per pair (default 3)
  --runtime SEC     seconds per fio run (default 10)
  --size SIZE_MIB   volume size in MiB (default 256)
  --max-load L      before starting, wait (up to 600 s) for 1-min load <= L
  --markdown FILE   also write the results to FILE`;

const writeDelay = '2ms';

// The write's p50 and p99 beside its mean: the mean is what the claim is about, the percentiles show
// whether a tail (hardening that shares the event loop) or the common case sets it.
interface DurableWrite { writeMeanUs: number; writeP50Us: number; writeP99Us: number; flushMeanUs: number; writesPerSec: number }

async function slowDisk(sizeBytes: number): Promise<{ uri: string; proc: BackgroundProcess }> {
  const port = await freePort();
  const proc = await startBackground('nbdkit', ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port),
    '--filter=delay', 'memory', String(sizeBytes), `wdelay=${writeDelay}`], port);
  return { uri: `nbd://127.0.0.1:${port}/`, proc };
}

async function durableWrites(uri: string, sizeBytes: number, runtimeSec: number): Promise<DurableWrite> {
  const row = rows.find((r) => r.id === 'randwrite-4k-qd1')!;
  const m = await runFio(row, uri, sizeBytes, runtimeSec, ['--fsync=1']);
  if (Number.isNaN(m.syncMeanLatencyUs)) throw new Error('fio sent no FLUSH (--fsync=1 ignored?)');
  return { writeMeanUs: m.meanLatencyUs, writeP50Us: m.p50LatencyUs, writeP99Us: m.p99LatencyUs, flushMeanUs: m.syncMeanLatencyUs, writesPerSec: m.iops };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    runs: { type: 'string' }, runtime: { type: 'string' }, size: { type: 'string' }, 'max-load': { type: 'string' },
    markdown: { type: 'string' }, help: { type: 'boolean' },
  } });
  exitWithUsageIf(values.help, usage);
  const runs = intOption(values.runs, 3, 'runs');
  const runtimeSec = intOption(values.runtime, 10, 'runtime');
  const sizeBytes = intOption(values.size, 256, 'size') * MiB;
  const maxLoad = maxLoadOption(values['max-load']);
  ensureTools(['fio', 'nbdkit']);
  const loadBefore = maxLoad === null ? loadAverage() : await waitForLowLoad(maxLoad, 600);
  const dir = makeTempDir('twinblock-bench-seed-');
  const disks = [await slowDisk(sizeBytes), await slowDisk(sizeBytes), await slowDisk(sizeBytes), await slowDisk(sizeBytes)];
  const size = `${sizeBytes / MiB}MiB`;
  const pairs = {
    memory: await BenchPair.start({ dir: path.join(dir, 'memory'), stores: { a: disks[0]!.uri, b: disks[1]!.uri }, size, cache: '256MiB', flush: 'memory' }),
    disk: await BenchPair.start({ dir: path.join(dir, 'disk'), stores: { a: disks[2]!.uri, b: disks[3]!.uri }, size, cache: '256MiB', flush: 'disk' }),
  };
  const results: Record<'memory' | 'disk', DurableWrite[]> = { memory: [], disk: [] };
  try {
    await pairs.memory.waitInSync(300_000);
    await pairs.disk.waitInSync(300_000);
    // Unmeasured: one sequential pass over the volume, so every cache line exists and its memory
    // is faulted in (a fresh line's first touch costs ~250 µs on this VM, and random 4 KiB writes
    // keep meeting fresh tracks for tens of seconds); the runs then measure the steady state, as
    // bench:mirror's warm-up does.
    for (const pair of [pairs.memory, pairs.disk]) {
      const warm = await run('fio', ['--name=warmup', '--ioengine=nbd', `--uri=${pair.uri('a')}`, `--size=${sizeBytes}`, '--rw=write', '--bs=1m', '--iodepth=8', '--output-format=terse'], { timeoutMs: 600_000 });
      if (warm.code !== 0) throw new Error(describeRun('fio warm-up', warm));
      await pair.waitHardened(600_000);
    }
    for (let i = 0; i < runs; i++) {
      for (const mode of (i % 2 === 0 ? ['memory', 'disk'] : ['disk', 'memory']) as Array<'memory' | 'disk'>) {
        await pairs[mode].waitHardened(180_000);
        const r = await durableWrites(pairs[mode].uri('a'), sizeBytes, runtimeSec);
        results[mode].push(r);
        console.error(`run ${i + 1}/${runs} flush: ${mode}: write ${fmtNumber(r.writeMeanUs, 1)} (p50 ${fmtNumber(r.writeP50Us, 1)}, p99 ${fmtNumber(r.writeP99Us, 1)}) + FLUSH ${fmtNumber(r.flushMeanUs, 1)} µs (load ${loadAverage()})`);
      }
    }
  } finally {
    await pairs.memory.stop();
    await pairs.disk.stop();
    for (const d of disks) await d.proc.stop();
  }
  const loadAfter = loadAverage();
  const cost = (rs: DurableWrite[]): number => median(rs.map((r) => r.writeMeanUs + r.flushMeanUs));
  const cell = (rs: DurableWrite[]): string => `${fmtNumber(cost(rs), 1)} µs (write ${fmtNumber(median(rs.map((r) => r.writeMeanUs)), 1)} (p50 ${fmtNumber(median(rs.map((r) => r.writeP50Us)), 1)}, p99 ${fmtNumber(median(rs.map((r) => r.writeP99Us)), 1)}) + FLUSH ${fmtNumber(median(rs.map((r) => r.flushMeanUs)), 1)}; runs ${rs.map((r) => fmtNumber(r.writeMeanUs + r.flushMeanUs)).join(' / ')})`;
  const ratio = cost(results.disk) / cost(results.memory);
  const markdown = [
    '| 4 KiB write + FLUSH, QD1, stores on 2 ms-write disks | twinblock pair, flush: memory | twinblock pair, flush: disk | disk / memory | target ≥ 10× met? |',
    '| --- | --- | --- | --- | --- |',
    `| mean write + mean FLUSH (median of ${runs}) | ${cell(results.memory)} | ${cell(results.disk)} | ${ratio.toFixed(1)}× | ${ratio >= 10 ? 'yes' : '**no**'} |`,
    '',
    `Stores: \`nbdkit --filter=delay memory ${sizeBytes} wdelay=${writeDelay}\` (four, one per node); fio \`--fsync=1\`, ${runtimeSec} s runs (+1 s ramp), the pairs alternating; cache 256 MiB per node; first, unmeasured, one sequential 1 MiB pass over each volume.`,
    '',
    `- date: ${new Date().toISOString()} (commit ${commitDescription()})`,
    ...Object.entries(machine()).map(([k, v]) => `- ${k}: ${v}`),
    `- load average (1/5/15 min) before: ${loadBefore}; after: ${loadAfter}`,
    `- command: \`npm run bench:seed-claim -- ${process.argv.slice(2).join(' ')}\``.replace(' -- `', '`'),
  ].join('\n');
  console.log(markdown);
  if (values.markdown !== undefined) writeFileSync(values.markdown, `${markdown}\n`);
  await run('rm', ['-rf', dir]);
  await cleanupAll();
}

main().catch(async (err: unknown) => {
  console.error(failureLine('bench:seed-claim', err));
  await cleanupAll();
  process.exit(1);
});
