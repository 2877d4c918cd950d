// The benchmark rows and how one fio run is done and read: fio's nbd engine, JSON output, one job.
// Kept apart from run.ts so the row definitions (what we claim to measure) are in one short place.
import { describeRun, parseFioJson, run, type FioIoStats } from '../test/helpers/node-process.js';
import { median } from './common.js';

export { median };

export interface Row {
  id: string;
  /** Column label in the results table. */
  label: string;
  fioArgs: string[];
  /** Which side of fio's report holds the numbers. */
  direction: 'read' | 'write';
  /** 'throughput': compare IOPS/bandwidth; 'latency': compare p50/p99 completion latency. */
  kind: 'throughput' | 'latency';
}

export const rows: Row[] = [
  {
    id: 'randwrite-4k-qd32', label: '4 KiB random write, QD32', direction: 'write', kind: 'throughput',
    fioArgs: ['--rw=randwrite', '--bs=4k', '--iodepth=32', '--norandommap', '--randrepeat=0'],
  },
  {
    id: 'randread-4k-qd32', label: '4 KiB random read, QD32', direction: 'read', kind: 'throughput',
    fioArgs: ['--rw=randread', '--bs=4k', '--iodepth=32', '--norandommap', '--randrepeat=0'],
  },
  {
    id: 'seqwrite-1m-qd8', label: '1 MiB sequential write, QD8', direction: 'write', kind: 'throughput',
    fioArgs: ['--rw=write', '--bs=1m', '--iodepth=8'],
  },
  {
    id: 'randwrite-4k-qd1', label: '4 KiB random write, QD1', direction: 'write', kind: 'latency',
    fioArgs: ['--rw=randwrite', '--bs=4k', '--iodepth=1', '--norandommap', '--randrepeat=0'],
  },
];

/** What one fio run measured, in the units the table prints. */
export interface Measurement {
  iops: number;
  bandwidthBytesPerSec: number;
  p50LatencyUs: number;
  p99LatencyUs: number;
  /** The mean (bench:seed-claim's figure: a durable write costs the mean write plus the mean FLUSH). */
  meanLatencyUs: number;
  /**
   * With --fsync=N fio sends NBD_CMD_FLUSH after every N writes and reports those separately
   * ("sync" in its JSON); NaN when the run sent none.
   */
  syncP50LatencyUs: number;
  syncP99LatencyUs: number;
  syncMeanLatencyUs: number;
  /** fio's own CPU (user + system, its usr_cpu and sys_cpu), in cores: the load generator's share. */
  fioCores: number;
}

// Total latency (submission + completion), not clat: with the nbd engine the request is sent during
// submission, so clat alone can miss most of the round trip (we saw nbdkit "3.8 µs" at QD1).
function percentileUs(stats: Pick<FioIoStats, 'lat_ns'> | undefined, key: string): number {
  const ns = stats?.lat_ns.percentile?.[key];
  return ns === undefined ? Number.NaN : ns / 1000;
}

/** The fio command line of one run (also printed in docs/benchmarks.md). */
export function fioArgs(row: Row, uri: string, sizeBytes: number, runtimeSec: number, extraArgs: string[] = []): string[] {
  return [
    `--name=${row.id}`, '--ioengine=nbd', `--uri=${uri}`, `--size=${sizeBytes}`,
    '--time_based', `--runtime=${runtimeSec}`, '--ramp_time=1', '--lat_percentiles=1', '--output-format=json',
    ...row.fioArgs, ...extraArgs,
  ];
}

/**
 * One time-based fio run of a row against an NBD URI covering sizeBytes. extraArgs go last, e.g.
 * ['--fsync=1']: fio's nbd engine never sets NBD_CMD_FLAG_FUA (nbd_aio_pwrite with flags 0), and
 * ignores --sync=1 (O_SYNC means nothing to it), so a FLUSH after every write is the closest fio
 * gets to "FUA on every write".
 */
export async function runFio(row: Row, uri: string, sizeBytes: number, runtimeSec: number, extraArgs: string[] = []): Promise<Measurement> {
  const args = fioArgs(row, uri, sizeBytes, runtimeSec, extraArgs);
  const r = await run('fio', args, { timeoutMs: (runtimeSec + 120) * 1000 });
  if (r.code !== 0) throw new Error(describeRun(`fio ${args.join(' ')}`, r));
  const job = parseFioJson(r.stdout).jobs[0];
  if (job === undefined || job.error !== 0) throw new Error(describeRun(`fio job error (${job?.error})`, r));
  const stats = job[row.direction];
  const sync = job['sync'] as { total_ios?: number; lat_ns: FioIoStats['lat_ns'] } | undefined;
  const syncStats = sync !== undefined && (sync.total_ios ?? 0) > 0 ? sync : undefined;
  return {
    iops: stats.iops,
    bandwidthBytesPerSec: stats.bw_bytes,
    p50LatencyUs: percentileUs(stats, '50.000000'),
    p99LatencyUs: percentileUs(stats, '99.000000'),
    meanLatencyUs: stats.lat_ns.mean / 1000,
    syncP50LatencyUs: percentileUs(syncStats, '50.000000'),
    syncP99LatencyUs: percentileUs(syncStats, '99.000000'),
    syncMeanLatencyUs: syncStats === undefined ? Number.NaN : syncStats.lat_ns.mean / 1000,
    fioCores: ((Number(job['usr_cpu']) || 0) + (Number(job['sys_cpu']) || 0)) / 100,
  };
}

/** Median of each field separately (the run with median IOPS need not have the median p99). */
export function medianMeasurement(ms: Measurement[]): Measurement {
  return {
    iops: median(ms.map((m) => m.iops)),
    bandwidthBytesPerSec: median(ms.map((m) => m.bandwidthBytesPerSec)),
    p50LatencyUs: median(ms.map((m) => m.p50LatencyUs)),
    p99LatencyUs: median(ms.map((m) => m.p99LatencyUs)),
    syncP50LatencyUs: median(ms.map((m) => m.syncP50LatencyUs)),
    syncP99LatencyUs: median(ms.map((m) => m.syncP99LatencyUs)),
    meanLatencyUs: median(ms.map((m) => m.meanLatencyUs)),
    syncMeanLatencyUs: median(ms.map((m) => m.syncMeanLatencyUs)),
    fioCores: median(ms.map((m) => m.fioCores)),
  };
}
