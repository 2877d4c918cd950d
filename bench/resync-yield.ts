// A resync that yields (issue 14 item 6), run by hand: `npm run bench:resync-yield -- [options]`.
//
// For each mode, alternating, in one run:
// - `yield`: the default, syncMinRate 4MiB (the resync yields to host writes down to it);
// - `no-yield`: syncMinRate = syncRate (the resync never yields: what the code did before).
//
// Each run:
// 1. A pair on fresh stores. The volume is filled through the primary, and both nodes harden.
// 2. **Baseline.** Host writes with no resync: fio, 4 KiB random writes at QD1, rate-limited to
//    --iops, for --seconds. Its p99 (submission + completion) is the reference.
// 3. **During a resync.** The secondary is stopped, its store and metadata deleted, and it is
//    restarted: a full resync of the whole volume begins. Once status shows it running, the same
//    fio runs again. The bench records whether the resync was still running when fio ended (if it
//    was not, the row says so: part of that run had no resync).
// 4. **Idle resync.** With no host I/O, the same full resync is made again and timed, start to
//    in-sync: this shows whether the yielding resync still runs at full speed when nothing competes.
//
// Target (issue 14 item 6): p99 during the resync ≤ 2× the baseline p99, and the idle resync at
// full speed (the same time in both modes).
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { cleanupAll, makeTempDir, run, describeRun } from '../test/helpers/node-process.js';
import { ensureTools } from '../test/helpers/tools.js';
import {
  commitDescription, exitWithUsageIf, failureLine, fmtNumber, intOption, loadAverage, machine, maxLoadOption, median, MiB, sleep, waitForLowLoad,
} from './common.js';
import { rows, runFio, type Measurement } from './fio.js';
import { BenchPair, pairPaths } from './pair.js';

const usage = `usage: npm run bench:resync-yield -- [options]
  --runs N         alternating runs per mode (default 3)
  --size MIB       volume size in MiB (default 1024)
  --iops N         host write rate, 4 KiB random writes at QD1 (default 2000)
  --seconds N      fio runtime per measurement (default 6)
  --max-load L     before starting, wait (up to 600 s) for 1-min load <= L
  --dir DIR        where the files go (default: a temp dir)`;

type Mode = 'yield' | 'no-yield';
interface RunResult {
  baseline: Measurement; during: Measurement; resyncRanThroughout: boolean; idleResyncMs: number; idleResyncBytes: number;
  /** The resync's progress while fio ran, and the median limit status showed meanwhile. */
  resyncBytesPerSecDuring: number; medianLimitBytesPerSec: number;
}

/** The ceiling of both modes: low enough that a resync that never yields outlasts the fio run. */
const SYNC_RATE = '100MiB';

function fioLoad(iops: number): string[] {
  return [`--rate_iops=${iops}`];
}

/** Delete b's store and metadata, start it again: a full resync of the volume begins. */
async function restartBlank(pair: BenchPair): Promise<void> {
  await pair.node('b').stop({ timeoutMs: 120_000 });
  const store = pair.opts.stores['b']!;
  for (const f of [store, `${store}.twinblock-meta.json`, `${store}.twinblock-usage.json`]) rmSync(f, { force: true });
  await pair.startNode('b');
  await pair.waitFor('resync running', async () => {
    const s = await pair.status('a');
    const p = s.peers[0];
    return { ok: p?.state === 'resyncing' && p.sync !== null, detail: JSON.stringify(p) };
  }, 60_000);
}

async function oneRun(mode: Mode, label: string, dir: string, sizeMiB: number, iops: number, seconds: number): Promise<RunResult> {
  const paths = pairPaths(dir, label);
  const pair = await BenchPair.start({
    ...paths, size: `${sizeMiB}MiB`, cache: '256MiB', flush: 'memory', syncRate: SYNC_RATE,
    extra: { syncMinRate: mode === 'yield' ? '4MiB' : SYNC_RATE },
  });
  try {
    await pair.waitInSync();
    const fill = await run('fio', ['--name=fill', '--ioengine=nbd', `--uri=${pair.uri('a')}`, `--size=${sizeMiB * MiB}`, '--rw=write', '--bs=1m', '--iodepth=8'], { timeoutMs: 600_000 });
    if (fill.code !== 0) throw new Error(describeRun('fio fill', fill));
    await pair.waitHardened();
    const row = rows.find((r) => r.id === 'randwrite-4k-qd1')!;
    const sizeBytes = sizeMiB * MiB;
    const baseline = await runFio(row, pair.uri('a'), sizeBytes, seconds, fioLoad(iops));
    await restartBlank(pair);
    const doneBefore = (await pair.status('a')).peers[0]?.sync?.doneBytes ?? 0;
    const fioStartMs = Date.now();
    const limits: number[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const sync = (await pair.status('a')).peers[0]?.sync as { limitBytesPerSec?: number } | null | undefined;
        if (sync?.limitBytesPerSec !== undefined) limits.push(sync.limitBytesPerSec);
        await sleep(200);
      }
    })();
    const during = await runFio(row, pair.uri('a'), sizeBytes, seconds, fioLoad(iops));
    polling = false;
    await poller;
    const after = await pair.status('a');
    const resyncBytesPerSecDuring = ((after.peers[0]?.sync?.doneBytes ?? sizeBytes) - doneBefore) / ((Date.now() - fioStartMs) / 1000);
    const resyncRanThroughout = after.peers[0]?.state === 'resyncing';
    await pair.waitInSync(600_000);
    await pair.waitHardened();
    await restartBlank(pair);
    const startMs = Date.now();
    await pair.waitInSync(600_000);
    const idleResyncMs = Date.now() - startMs;
    return { baseline, during, resyncRanThroughout, idleResyncMs, idleResyncBytes: sizeBytes, resyncBytesPerSecDuring, medianLimitBytesPerSec: median(limits) };
  } finally {
    await pair.stop().catch(() => undefined);
    rmSync(paths.dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, size: { type: 'string' }, iops: { type: 'string' }, seconds: { type: 'string' }, 'max-load': { type: 'string' }, dir: { type: 'string' }, help: { type: 'boolean' } } });
  exitWithUsageIf(values.help, usage);
  const runs = intOption(values.runs, 3, 'runs');
  const sizeMiB = intOption(values.size, 1024, 'size');
  const iops = intOption(values.iops, 2000, 'iops');
  const seconds = intOption(values.seconds, 6, 'seconds');
  const maxLoad = maxLoadOption(values['max-load']);
  ensureTools(['fio']);
  const dir = values.dir ?? makeTempDir('twinblock-bench-yield-');
  const loadBefore = maxLoad === null ? loadAverage() : await waitForLowLoad(maxLoad, 600);
  const results: Record<Mode, RunResult[]> = { yield: [], 'no-yield': [] };
  for (let i = 0; i < runs; i++) {
    for (const mode of (i % 2 === 0 ? ['yield', 'no-yield'] : ['no-yield', 'yield']) as Mode[]) {
      const r = await oneRun(mode, `${mode}-${i}`, dir, sizeMiB, iops, seconds);
      results[mode].push(r);
      console.error(`${mode} run ${i + 1}: p99 ${fmtNumber(r.baseline.p99LatencyUs)} -> ${fmtNumber(r.during.p99LatencyUs)} us (resync throughout: ${r.resyncRanThroughout}, ${fmtNumber(r.resyncBytesPerSecDuring / MiB, 1)} MiB/s meanwhile, median limit ${fmtNumber(r.medianLimitBytesPerSec / MiB, 1)} MiB/s), idle resync ${r.idleResyncMs} ms`);
    }
  }
  const loadAfter = loadAverage();
  const lines = [
    `Resync that yields: ${commitDescription()}, ${runs} alternating runs per mode, ${sizeMiB} MiB volume, syncRate ${SYNC_RATE}; host load fio 4 KiB randwrite QD1 at ${iops} IOPS for ${seconds} s.`,
    `Load (1/5/15 min) before: ${loadBefore}; after: ${loadAfter}. Machine: ${JSON.stringify(machine())}`,
    '',
    '| mode | p99 without resync (us) | p99 during resync (us) | ratio | p50 without / during (us) | IOPS during | resync MiB/s during (median limit) | resync ran throughout | idle full resync (ms, MiB/s) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const mode of ['yield', 'no-yield'] as Mode[]) {
    const rs = results[mode];
    const base = median(rs.map((r) => r.baseline.p99LatencyUs));
    const during = median(rs.map((r) => r.during.p99LatencyUs));
    const idleMs = median(rs.map((r) => r.idleResyncMs));
    lines.push(`| ${mode} | ${fmtNumber(base)} | ${fmtNumber(during)} | ${(during / base).toFixed(2)}x | ${fmtNumber(median(rs.map((r) => r.baseline.p50LatencyUs)))} / ${fmtNumber(median(rs.map((r) => r.during.p50LatencyUs)))} | ` +
      `${fmtNumber(median(rs.map((r) => r.during.iops)))} | ${fmtNumber(median(rs.map((r) => r.resyncBytesPerSecDuring)) / MiB, 1)} (${fmtNumber(median(rs.map((r) => r.medianLimitBytesPerSec)) / MiB, 1)}) | ${rs.filter((r) => r.resyncRanThroughout).length} of ${rs.length} | ${idleMs} (${fmtNumber(sizeMiB / (idleMs / 1000))}) |`);
  }
  console.log(lines.join('\n'));
}

main().then(() => cleanupAll(), async (err: unknown) => {
  console.error(failureLine('bench:resync-yield', err));
  await cleanupAll();
  process.exit(1);
});
