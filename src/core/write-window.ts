// Host write latency and IOPS over the last interval (issue 15: the dashboard's p50/p99 and IOPS;
// also in /status). The NBD shell records each write's latency; a reader closes the interval when
// it is at least minIntervalMs old and gets that interval's figures, until the next one closes.
// Percentiles come from the latest `capacity` writes of the interval (a ring): enough for p99 to
// mean something, and a fixed cost per write whatever the rate. Pure: time comes in.

export interface HostWriteFigures {
  /** Writes answered per second over the interval. */
  iops: number;
  /** null: no write in the interval. */
  p50Ms: number | null;
  p99Ms: number | null;
  /** How long the interval was (0 before the first one closed). */
  intervalMs: number;
}

export interface WriteWindowOptions {
  capacity?: number;
  minIntervalMs?: number;
}

export class HostWriteWindow {
  private readonly samples: Float64Array;
  private readonly minIntervalMs: number;
  /** Writes recorded in the open interval (may exceed the ring's capacity). */
  private writes = 0;
  private startMs: number;
  private last: HostWriteFigures = { iops: 0, p50Ms: null, p99Ms: null, intervalMs: 0 };

  constructor(startMs: number, opts: WriteWindowOptions = {}) {
    this.samples = new Float64Array(opts.capacity ?? 4096);
    this.minIntervalMs = opts.minIntervalMs ?? 1000;
    this.startMs = startMs;
  }

  record(latencyMs: number): void {
    this.samples[this.writes % this.samples.length] = latencyMs;
    this.writes++;
  }

  /** The last closed interval's figures; closes the open one first if it is old enough. */
  read(nowMs: number): HostWriteFigures {
    const intervalMs = nowMs - this.startMs;
    if (intervalMs < this.minIntervalMs) return this.last;
    const held = Math.min(this.writes, this.samples.length);
    const sorted = this.samples.slice(0, held).sort();
    this.last = {
      iops: (this.writes * 1000) / intervalMs,
      p50Ms: quantile(sorted, 0.5),
      p99Ms: quantile(sorted, 0.99),
      intervalMs,
    };
    this.writes = 0;
    this.startMs = nowMs;
    return this.last;
  }
}

/** Nearest rank: the smallest sample with at least q of them at or below it. */
function quantile(sorted: Float64Array, q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]!;
}
