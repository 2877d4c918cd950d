// The usage meter's shell (issue 14 item 7): samples the node's counters every usageIntervalMs,
// keeps the totals in a file beside the node's metadata (`<store>.twinblock-usage.json`, written
// atomically, so a restart loses nothing but the current interval on a crash), and appends one
// JSON line per interval to `usageLog` in the CloudEvents 1.0 shape a billing system ingests.
// The arithmetic is src/core/usage.ts.
import { appendFile, open, readFile, rename } from 'node:fs/promises';
import { sumUsage, UsageMeter, type UsageSample, type UsageState, type UsageTotals } from '../core/usage.js';
import type { Volume } from './volume.js';

export interface UsageOptions {
  volume: Volume;
  volumeName: string;
  node: string;
  sizeBytes: number;
  /** The totals' file. */
  file: string;
  /** A store created at this start: any old totals belong to a volume that is gone. */
  fresh: boolean;
  logPath: string | null;
  intervalMs: number;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

export interface UsageReport {
  volume: string;
  node: string;
  since: string;
  to: string;
  usage: UsageTotals;
}

/** One usage log line: a CloudEvents 1.0 event (structured JSON mode). */
export interface UsageEvent {
  specversion: '1.0';
  type: 'io.twinblock.usage.v1';
  source: string;
  id: string;
  time: string;
  datacontenttype: 'application/json';
  data: { volume: string; node: string; from: string; to: string; usage: UsageTotals };
}

export class UsageRecorder {
  private readonly meter: UsageMeter;
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<void> = Promise.resolve();

  private constructor(private readonly opts: UsageOptions, persisted: UsageState | null) {
    this.meter = new UsageMeter(opts.sizeBytes, persisted, Date.now());
  }

  static async open(opts: UsageOptions): Promise<UsageRecorder> {
    let persisted: UsageState | null = null;
    if (!opts.fresh) {
      try {
        persisted = JSON.parse(await readFile(opts.file, 'utf8')) as UsageState;
        if (typeof persisted.sinceMs !== 'number' || typeof persisted.totals !== 'object') throw new Error('not a usage file');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT') throw new Error(`usage file ${opts.file}: ${code ?? (err as Error).message}: move it away to start metering afresh`);
        persisted = null;
      }
    }
    return new UsageRecorder(opts, persisted);
  }

  start(): void {
    this.timer = setInterval(() => { void this.record(); }, this.opts.intervalMs);
    this.timer.unref();
  }

  private sample(): { sample: UsageSample; role: 'primary' | 'secondary'; degraded: boolean } {
    const v = this.opts.volume;
    const c = v.counters;
    const role = v.core.role;
    return {
      sample: { hostReadBytes: v.hostReads.bytes, hostReadOps: v.hostReads.ops, hostWriteBytes: c.writtenBytes, hostWriteOps: c.writes, mirroredBytes: c.mirroredBytes, resyncBytes: c.syncBytesSent },
      role,
      degraded: role === 'primary' && v.core.peers.some((ch) => ch.state !== 'in-sync'),
    };
  }

  /** Takes an interval: the totals to their file, the interval to the usage log. One at a time. */
  record(): Promise<void> {
    const { sample, role, degraded } = this.sample();
    const interval = this.meter.tick(sample, role, degraded, Date.now());
    const state = JSON.stringify(this.meter.state);
    this.chain = this.chain.then(async () => {
      await writeAtomically(this.opts.file, state);
      if (this.opts.logPath !== null) await appendFile(this.opts.logPath, `${JSON.stringify(this.event(interval.fromMs, interval.toMs, interval.usage))}\n`);
    }).catch((err: unknown) => this.opts.log('error', 'usage: could not record an interval (it stays in the totals)', { error: (err as Error).message }));
    return this.chain;
  }

  private event(fromMs: number, toMs: number, usage: UsageTotals): UsageEvent {
    const { volumeName: volume, node } = this.opts;
    return {
      specversion: '1.0', type: 'io.twinblock.usage.v1', source: `twinblock://${volume}/${node}`, id: `${volume}-${node}-${toMs}`,
      time: new Date(toMs).toISOString(), datacontenttype: 'application/json',
      data: { volume, node, from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString(), usage },
    };
  }

  /** Since metering began here, up to now (the current interval included). */
  report(): UsageReport {
    const { sample, role, degraded } = this.sample();
    const now = Date.now();
    return { volume: this.opts.volumeName, node: this.opts.node, since: new Date(this.meter.state.sinceMs).toISOString(), to: new Date(now).toISOString(), usage: this.meter.peek(sample, role, degraded, now) };
  }

  /** Totals for the time since `sinceMs`: the logged intervals that began then or later. */
  async reportSince(sinceMs: number): Promise<UsageReport> {
    if (this.opts.logPath === null) throw new UsageQueryError('usage since a given time is summed from the usage log: set usageLog in the config');
    await this.chain; // intervals already taken are in the log
    const text = await readFile(this.opts.logPath, 'utf8').catch(() => '');
    const parts: UsageTotals[] = [];
    for (const line of text.split('\n')) {
      if (line === '') continue;
      try {
        const e = JSON.parse(line) as UsageEvent;
        if (e.data?.volume === this.opts.volumeName && e.data.node === this.opts.node && Date.parse(e.data.from) >= sinceMs) parts.push(e.data.usage);
      } catch {
        // a torn last line (a crash while appending): skip it
      }
    }
    // The interval now running is not logged yet: it counts too (a query takes no tick, writes nothing).
    const now = Date.now();
    const { sample, role, degraded } = this.sample();
    if (this.meter.intervalStartMs >= sinceMs) parts.push(this.meter.intervalTo(sample, role, degraded, now));
    return { volume: this.opts.volumeName, node: this.opts.node, since: new Date(sinceMs).toISOString(), to: new Date(now).toISOString(), usage: sumUsage(parts) };
  }

  /** The last interval, recorded; no more after. */
  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.record();
  }
}

/** A usage query the node cannot answer as asked (HTTP 400). */
export class UsageQueryError extends Error {}

async function writeAtomically(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp`;
  const handle = await open(tmp, 'w');
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
}
