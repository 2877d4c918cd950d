// A small NBD write load on our own client (src/nbd/client.ts), for what fio's nbd engine cannot
// send: NBD_CMD_FLAG_FUA on every write (fio's engine always passes flags 0 to nbd_aio_pwrite).
// Random 4 KiB-aligned writes of random data, `depth` in flight, for a fixed time; latency per
// write from just before the request is handed to the client to its reply.
import { randomFillSync, randomInt } from 'node:crypto';
import { NbdClient } from '../src/nbd/client.js';
import { median } from './common.js';

export interface LoadResult {
  writes: number;
  iops: number;
  p50LatencyUs: number;
  p99LatencyUs: number;
}

export interface LoadOptions {
  uri: string;
  blockBytes: number;
  depth: number;
  runtimeSec: number;
  /** Writes in the first rampSec are not counted. */
  rampSec: number;
  fua: boolean;
  /** Spread writes over [0, spanBytes). */
  spanBytes: number;
}

function percentile(sortedUs: Float64Array, p: number): number {
  if (sortedUs.length === 0) return Number.NaN;
  return sortedUs[Math.min(sortedUs.length - 1, Math.floor((p / 100) * sortedUs.length))]!;
}

export async function runWriteLoad(o: LoadOptions): Promise<LoadResult> {
  const client = await NbdClient.connect(o.uri);
  if (o.fua && !client.canFua) throw new Error(`${o.uri} does not advertise FUA`);
  const blocks = Math.floor(o.spanBytes / o.blockBytes);
  // A few distinct payloads, rotated: random data without a randomFill per write.
  const payloads = Array.from({ length: 64 }, () => randomFillSync(Buffer.allocUnsafe(o.blockBytes)));
  const latenciesUs: number[] = [];
  const start = performance.now();
  const countFrom = start + o.rampSec * 1000;
  const end = countFrom + o.runtimeSec * 1000;
  let firstCounted = Number.NaN;
  let lastDone = start;
  let n = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const offset = randomInt(blocks) * o.blockBytes;
      const t0 = performance.now();
      await client.write(offset, payloads[n++ % payloads.length]!, { fua: o.fua });
      const t1 = performance.now();
      if (t0 >= countFrom) {
        if (Number.isNaN(firstCounted)) firstCounted = t0;
        latenciesUs.push((t1 - t0) * 1000);
        lastDone = t1;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: o.depth }, () => worker()));
  } finally {
    await client.disconnect();
  }
  const sorted = Float64Array.from(latenciesUs).sort();
  const seconds = (lastDone - firstCounted) / 1000;
  return {
    writes: sorted.length,
    iops: seconds > 0 ? sorted.length / seconds : Number.NaN,
    p50LatencyUs: percentile(sorted, 50),
    p99LatencyUs: percentile(sorted, 99),
  };
}

export function medianLoad(rs: LoadResult[]): LoadResult {
  return {
    writes: median(rs.map((r) => r.writes)),
    iops: median(rs.map((r) => r.iops)),
    p50LatencyUs: median(rs.map((r) => r.p50LatencyUs)),
    p99LatencyUs: median(rs.map((r) => r.p99LatencyUs)),
  };
}
