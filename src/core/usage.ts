// Usage metering (issue 14 item 7; the seed's provider charges a fee per service): per volume and
// node, what hosts read and wrote, what was mirrored and resent, the provisioned capacity over
// time, and how long the node was primary, secondary and degraded. Pure: the shell samples the
// node's cumulative counters of this run with the wall-clock time passed in, and persists and logs
// what this returns.

/** Totals since the volume was created on this node (they survive restarts: the shell persists them). */
export interface UsageTotals {
  hostReadBytes: number;
  hostReadOps: number;
  hostWriteBytes: number;
  hostWriteOps: number;
  /** Bytes of host writes sent to peers (once per peer). */
  mirroredBytes: number;
  /** Bytes this node sent in resyncs. */
  resyncBytes: number;
  /** Volume size × time this node served it. */
  provisionedGiBHours: number;
  primarySeconds: number;
  secondarySeconds: number;
  /** Time primary with a peer out of sync (or away). */
  degradedSeconds: number;
}

/** The counters the node keeps itself (this run's, cumulative: they restart from 0 with the process). */
const sampleKeys = ['hostReadBytes', 'hostReadOps', 'hostWriteBytes', 'hostWriteOps', 'mirroredBytes', 'resyncBytes'] as const;
export type UsageSample = Pick<UsageTotals, (typeof sampleKeys)[number]>;

export interface UsageState {
  /** Wall-clock ms when metering began for this volume on this node. */
  sinceMs: number;
  totals: UsageTotals;
}

const GiB = 1024 ** 3;

export function zeroUsage(): UsageTotals {
  return {
    hostReadBytes: 0, hostReadOps: 0, hostWriteBytes: 0, hostWriteOps: 0, mirroredBytes: 0, resyncBytes: 0,
    provisionedGiBHours: 0, primarySeconds: 0, secondarySeconds: 0, degradedSeconds: 0,
  };
}

export class UsageMeter {
  readonly state: UsageState;
  private last: UsageSample = { hostReadBytes: 0, hostReadOps: 0, hostWriteBytes: 0, hostWriteOps: 0, mirroredBytes: 0, resyncBytes: 0 };
  private lastTickMs: number;

  constructor(private readonly sizeBytes: number, persisted: UsageState | null, nowMs: number) {
    this.state = persisted === null ? { sinceMs: nowMs, totals: zeroUsage() } : { sinceMs: persisted.sinceMs, totals: { ...zeroUsage(), ...persisted.totals } };
    this.lastTickMs = nowMs;
  }

  /**
   * Adds what happened since the last tick: the counters' growth, and the time, charged to the
   * role the node has now (ticks come every interval, so a role change is off by at most one).
   * Returns the interval's usage (the usage log's line).
   */
  tick(sample: UsageSample, role: 'primary' | 'secondary', degraded: boolean, nowMs: number): { fromMs: number; toMs: number; usage: UsageTotals } {
    const interval = this.intervalTo(sample, role, degraded, nowMs);
    const totals = this.state.totals;
    for (const key of Object.keys(interval) as (keyof UsageTotals)[]) totals[key] += interval[key];
    const fromMs = this.lastTickMs;
    this.last = { ...sample };
    this.lastTickMs = nowMs;
    return { fromMs, toMs: nowMs, usage: interval };
  }

  /** The totals as they would be after a tick now, without taking one (GET /usage between ticks). */
  peek(sample: UsageSample, role: 'primary' | 'secondary', degraded: boolean, nowMs: number): UsageTotals {
    return sumUsage([this.state.totals, this.intervalTo(sample, role, degraded, nowMs)]);
  }

  /** When the interval now running began. */
  get intervalStartMs(): number {
    return this.lastTickMs;
  }

  /** The interval now running, up to `nowMs`, without ending it. */
  intervalTo(sample: UsageSample, role: 'primary' | 'secondary', degraded: boolean, nowMs: number): UsageTotals {
    const interval = zeroUsage();
    // A counter that went down restarted (never within one run): count it from zero.
    for (const key of sampleKeys) interval[key] = sample[key] >= this.last[key] ? sample[key] - this.last[key] : sample[key];
    const seconds = Math.max(0, nowMs - this.lastTickMs) / 1000;
    interval.provisionedGiBHours = (this.sizeBytes / GiB) * (seconds / 3600);
    if (role === 'primary') interval.primarySeconds = seconds;
    else interval.secondarySeconds = seconds;
    if (role === 'primary' && degraded) interval.degradedSeconds = seconds;
    return interval;
  }
}

/** Adds intervals (usage log lines) into one total. */
export function sumUsage(parts: readonly UsageTotals[]): UsageTotals {
  const sum = zeroUsage();
  for (const part of parts) for (const key of Object.keys(sum) as (keyof UsageTotals)[]) sum[key] += part[key] ?? 0;
  return sum;
}
