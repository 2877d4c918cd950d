// Prometheus metrics of one node. Each node owns a fresh Registry (never prom-client's global
// one) so that tests and the demo can run two nodes in one process without name clashes.
//
// The exposure the design promises to show (DESIGN.md "Durability policy": unhardened bytes, age
// of the oldest dirty track) is read from the cache at scrape time, not pushed on every write:
// the write path stays free of metric bookkeeping, and a scrape always sees the current value.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { NbdErrno, NbdRequestObserver } from '../nbd/export.js';
import type { UsageTotals } from '../core/usage.js';
import { RequestHistogram } from './request-histogram.js';

/** What the cache reports at scrape time; getCacheStats must be cheap (it runs once per gauge). */
export interface CacheStats {
  dirtyBytes: number;
  dirtyTracks: number;
  cachedTracks: number;
  capacityBytes: number;
  /** 0 when nothing is dirty. */
  oldestDirtyAgeMs: number;
  /** Writes blocked waiting for cache space. */
  waitingWrites: number;
}

/** Why a hardening run happened (DESIGN.md write path step 5, plus flush and shutdown). */
export type HardenReason = 'threshold' | 'scan' | 'pressure' | 'age' | 'flush' | 'shutdown';
export const hardenReasons: readonly HardenReason[] = ['threshold', 'scan', 'pressure', 'age', 'flush', 'shutdown'];

/** What a pair's node reports about its link and peer at scrape time (issue 12: labelled by peer). */
export interface LinkStats {
  peer: string;
  connected: boolean;
  sentBytes: number;
  receivedBytes: number;
  noticeSentBytes: number;
  unitedTracks: number;
  outOfSyncTracks: number;
  resyncSentBytes: number;
}

/** Quorum as the node sees it at scrape time (issue 12). */
export interface QuorumStats {
  have: number;
  need: number;
  ok: boolean;
}

// Loopback is tens of µs; a WAN link tens of ms.
const linkRttBuckets = [20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 500e-3];

export interface NodeMetricsOptions {
  /** Labels on every series, e.g. { node: 'a', volume: 'vol0' } when nodes share a scrape host. */
  defaultLabels?: Record<string, string>;
  /** process_* and nodejs_* metrics; default true. */
  processMetrics?: boolean;
  /** Scrapes within this long of a generated exposition get that same text; default METRICS_REUSE_MS. */
  reuseWithinMs?: number;
}

/**
 * Why scrapes share one exposition for a second: prom-client's event-loop-lag collector reads and
 * then resets a delay histogram that samples every 10 ms, so a second scrape within that window
 * read an empty one and exposed nodejs_eventloop_lag_min_seconds 9223372036.85 and a mean of
 * "Nan" (seen with 500 concurrent GET /metrics, issue 9 item 3). Sharing also makes a scrape flood
 * cost one generation a second instead of one per request, CPU the NBD path keeps.
 */
export const METRICS_REUSE_MS = 1000;

// NBD latency spans RAM-only reads (tens of µs) to writes waiting for cache space (seconds).
const nbdLatencyBuckets = [
  20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 200e-3, 500e-3, 1, 2,
];
// A hardening run is one or more store writes: a millisecond on SSD up to seconds on a remote disk.
const hardenDurationBuckets = [100e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3, 100e-3, 500e-3, 1, 5, 10];

export class NodeMetrics implements NbdRequestObserver {
  readonly registry = new Registry();
  private readonly reuseWithinMs: number;
  private lastExposition: { text: Promise<string>; generatedAtMs: number } | null = null;

  /** Requests answered per command and result; bytes per command (see the constructor). */
  private readonly requestTotals = new Map<string, { command: string; result: string; count: number }>();
  private readonly byteTotals = new Map<string, number>();
  private readonly nbdDuration: RequestHistogram;
  private readonly defaultLabels: Readonly<Record<string, string>>;
  private readonly nbdConnections: Gauge;
  private readonly hardenBytes: Counter;
  private readonly hardenWrites: Counter;
  private readonly hardenDuration: Histogram;
  private readonly hardenRuns: Counter<'reason'>;
  private readonly linkRtt: Histogram;

  constructor(private readonly getCacheStats: () => CacheStats, opts: NodeMetricsOptions = {}) {
    const registers = [this.registry];
    this.reuseWithinMs = opts.reuseWithinMs ?? METRICS_REUSE_MS;
    this.defaultLabels = { ...opts.defaultLabels };
    if (opts.defaultLabels !== undefined) this.registry.setDefaultLabels(opts.defaultLabels);
    // Counted in plain maps per request and copied into prom-client at scrape time: its inc()
    // hashes and validates the label object on every call, which showed in the primary's heap
    // profile under 4 KiB random writes (a few percent of all it allocated).
    const requestTotals = this.requestTotals;
    const byteTotals = this.byteTotals;
    new Counter({
      name: 'twinblock_nbd_requests_total', help: 'NBD requests answered, by command and result (ok or errno)',
      labelNames: ['command', 'result'], registers,
      collect() {
        this.reset();
        for (const t of requestTotals.values()) this.inc({ command: t.command, result: t.result }, t.count);
      },
    });
    new Counter({
      name: 'twinblock_nbd_bytes_total', help: 'Bytes read, written, trimmed or zeroed by NBD requests that succeeded',
      labelNames: ['command'], registers,
      collect() {
        this.reset();
        for (const [command, bytes] of byteTotals) this.inc({ command }, bytes);
      },
    });
    // Not prom-client's: observed on every reply (request-histogram.ts), written out in metricsText.
    this.nbdDuration = new RequestHistogram('twinblock_nbd_request_duration_seconds', 'Time from receiving an NBD request to sending its reply', 'command', nbdLatencyBuckets);
    this.nbdConnections = new Gauge({ name: 'twinblock_nbd_connections', help: 'Open NBD connections from hosts', registers });
    this.hardenBytes = new Counter({ name: 'twinblock_harden_bytes_total', help: 'Bytes hardened from cache to store', registers });
    this.hardenWrites = new Counter({ name: 'twinblock_harden_writes_total', help: 'Store writes issued by hardening (after coalescing)', registers });
    this.hardenDuration = new Histogram({
      name: 'twinblock_harden_duration_seconds', help: 'Duration of one hardening run', buckets: hardenDurationBuckets, registers,
    });
    this.hardenRuns = new Counter({
      name: 'twinblock_harden_runs_total', help: 'Hardening runs, by what triggered them', labelNames: ['reason'], registers,
    });
    this.linkRtt = new Histogram({
      name: 'twinblock_link_rtt_seconds', help: 'Replication link round trip (heartbeat to its ack)', labelNames: ['peer'], buckets: linkRttBuckets, registers,
    });
    // Zero-initialise so rate() works from the first scrape, before any run of that kind.
    for (const reason of hardenReasons) this.hardenRuns.inc({ reason }, 0);
    this.registerCacheGauges(registers);
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  private registerCacheGauges(registers: Registry[]): void {
    const stats = this.getCacheStats;
    const gauge = (name: string, help: string, read: (s: CacheStats) => number): void => {
      new Gauge({ name, help, registers, collect() { this.set(read(stats())); } });
    };
    gauge('twinblock_cache_dirty_bytes', 'Bytes in cache not yet hardened on this node (exposure if both nodes fail)', (s) => s.dirtyBytes);
    gauge('twinblock_cache_dirty_tracks', 'Tracks with unhardened data', (s) => s.dirtyTracks);
    gauge('twinblock_cache_cached_tracks', 'Tracks held in cache', (s) => s.cachedTracks);
    gauge('twinblock_cache_capacity_bytes', 'Configured cache size', (s) => s.capacityBytes);
    gauge('twinblock_cache_oldest_dirty_age_seconds', 'Age of the oldest unhardened track (0 when clean)', (s) => s.oldestDirtyAgeMs / 1000);
    gauge('twinblock_cache_waiting_writes', 'Writes waiting for cache space', (s) => s.waitingWrites);
  }

  /** Host read bytes by source (`cache`, `store`) and bytes read ahead, read at scrape time. */
  registerReadCounters(read: () => { cacheBytes: number; storeBytes: number; readaheadBytes: number }): void {
    const registers = [this.registry];
    new Counter({
      name: 'twinblock_read_bytes_total', help: 'Host read bytes, by where they came from (cache or store)', labelNames: ['source'], registers,
      collect() {
        const r = read();
        this.reset();
        this.inc({ source: 'cache' }, r.cacheBytes);
        this.inc({ source: 'store' }, r.storeBytes);
      },
    });
    new Counter({
      name: 'twinblock_readahead_bytes_total', help: 'Bytes read from the store ahead of sequential host reads', registers,
      collect() {
        this.reset();
        this.inc(read().readaheadBytes);
      },
    });
  }

  linkRttObserved(seconds: number, peer: string): void {
    this.linkRtt.observe({ peer }, seconds);
  }

  /** Quorum gauges, read at scrape time (every node: a standalone one reaches the one it needs). */
  registerQuorumGauges(read: () => QuorumStats): void {
    const registers = [this.registry];
    new Gauge({ name: 'twinblock_quorum_ok', help: '1 when this node reaches the nodes its quorum policy needs (a primary answers writes)', registers, collect() { this.set(read().ok ? 1 : 0); } });
    new Gauge({ name: 'twinblock_quorum_reachable_nodes', help: 'Nodes this node reaches, itself included', registers, collect() { this.set(read().have); } });
    new Gauge({ name: 'twinblock_quorum_needed_nodes', help: 'Nodes a primary needs to answer writes', registers, collect() { this.set(read().need); } });
  }

  /** Issue 14 item 7: usage since metering began on this node, in base units (bytes, seconds). */
  registerUsageCounters(read: () => UsageTotals): void {
    const registers = [this.registry];
    const counter = (name: string, help: string, pick: (u: UsageTotals) => number): void => {
      new Counter({ name, help, registers, collect() { this.reset(); this.inc(pick(read())); } });
    };
    counter('twinblock_usage_host_read_bytes_total', 'Bytes hosts read from this node since metering began', (u) => u.hostReadBytes);
    counter('twinblock_usage_host_read_ops_total', 'Host reads served since metering began', (u) => u.hostReadOps);
    counter('twinblock_usage_host_write_bytes_total', 'Bytes hosts wrote to this node since metering began', (u) => u.hostWriteBytes);
    counter('twinblock_usage_host_write_ops_total', 'Host writes since metering began', (u) => u.hostWriteOps);
    counter('twinblock_usage_mirrored_bytes_total', 'Host write bytes sent to peers (once per peer)', (u) => u.mirroredBytes);
    counter('twinblock_usage_resync_bytes_total', 'Bytes this node sent in resyncs', (u) => u.resyncBytes);
    counter('twinblock_usage_provisioned_byte_seconds_total', 'Volume size times the time this node served it', (u) => u.provisionedGiBHours * 1024 ** 3 * 3600);
    new Counter({
      name: 'twinblock_usage_role_seconds_total', help: 'Time this node spent primary, secondary, and primary degraded', labelNames: ['role'], registers,
      collect() {
        const u = read();
        this.reset();
        this.inc({ role: 'primary' }, u.primarySeconds);
        this.inc({ role: 'secondary' }, u.secondarySeconds);
        this.inc({ role: 'degraded' }, u.degradedSeconds);
      },
    });
  }

  /** Issue 13: the etcd arbiter as this node sees it, and the replies its ack gate holds. */
  registerArbiterGauges(read: () => { connected: boolean; holdsLease: boolean; leaseRemainingMs: number; epoch: number | null; heldReplies: number }): void {
    const registers = [this.registry];
    new Gauge({ name: 'twinblock_arbiter_connected', help: '1 while this node reaches etcd', registers, collect() { this.set(read().connected ? 1 : 0); } });
    new Gauge({ name: 'twinblock_arbiter_leader', help: '1 while this node holds the leader lease', registers, collect() { this.set(read().holdsLease ? 1 : 0); } });
    new Gauge({ name: 'twinblock_arbiter_lease_remaining_seconds', help: 'Leadership left by this node\'s own clock (0: not leader)', registers, collect() { this.set(read().leaseRemainingMs / 1000); } });
    new Gauge({ name: 'twinblock_arbiter_epoch', help: 'The fencing epoch etcd holds for the volume', registers, collect() { this.set(read().epoch ?? 0); } });
    new Gauge({ name: 'twinblock_arbiter_held_replies', help: 'Host replies held until this node holds the lease', registers, collect() { this.set(read().heldReplies); } });
  }

  /** Mirroring gauges per peer, read at scrape time (a node calls this once per peer at startup). */
  /** Per-peer link gauges: `read` gives one entry per other node of the volume, each a `peer` label. */
  registerLinkGauges(read: () => LinkStats[]): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, pick: (s: LinkStats) => number): void => {
      new Gauge({
        name, help, labelNames: ['peer'], registers,
        collect() {
          for (const s of read()) this.set({ peer: s.peer }, pick(s));
        },
      });
    };
    gauge('twinblock_link_connected', '1 when the link to the peer is up and authenticated', (s) => (s.connected ? 1 : 0));
    gauge('twinblock_link_sent_bytes', 'Bytes sent on the replication link since start', (s) => s.sentBytes);
    gauge('twinblock_link_received_bytes', 'Bytes received on the replication link since start', (s) => s.receivedBytes);
    gauge('twinblock_link_notice_sent_bytes', 'Bytes of hardening notices sent since start', (s) => s.noticeSentBytes);
    gauge('twinblock_peer_united_tracks', 'Tracks the peer may hold only in RAM (current OR old bitmap)', (s) => s.unitedTracks);
    gauge('twinblock_peer_out_of_sync_tracks', 'Tracks the peer lacks and must be resent', (s) => s.outOfSyncTracks);
    gauge('twinblock_peer_resync_sent_bytes', 'Bytes of resync data sent to the peer since start', (s) => s.resyncSentBytes);
  }

  requestDone(command: string, bytes: number, latencySeconds: number, errno: NbdErrno | null): void {
    const result = errno ?? 'ok';
    const key = errno === null ? command : `${command} ${result}`;
    const total = this.requestTotals.get(key);
    if (total === undefined) this.requestTotals.set(key, { command, result, count: 1 });
    else total.count++;
    if (errno === null && bytes > 0) this.byteTotals.set(command, (this.byteTotals.get(command) ?? 0) + bytes);
    this.nbdDuration.observe(command, latencySeconds);
  }

  connectionOpened(): void {
    this.nbdConnections.inc();
  }

  connectionClosed(_reason: string): void {
    this.nbdConnections.dec();
  }

  hardenDone(bytes: number, writes: number, seconds: number, reason: HardenReason): void {
    this.hardenBytes.inc(bytes);
    this.hardenWrites.inc(writes);
    this.hardenDuration.observe(seconds);
    this.hardenRuns.inc({ reason });
  }

  /**
   * Prometheus text exposition of every metric of this node: generated at most once per
   * reuseWithinMs (see METRICS_REUSE_MS); a failed generation is not reused.
   */
  metricsText(): Promise<string> {
    const nowMs = performance.now();
    const last = this.lastExposition;
    if (last !== null && nowMs - last.generatedAtMs < this.reuseWithinMs) return last.text;
    const text = this.registry.metrics().then((t) => t + this.nbdDuration.text(this.defaultLabels));
    const entry = { text, generatedAtMs: nowMs };
    this.lastExposition = entry;
    text.catch(() => {
      if (this.lastExposition === entry) this.lastExposition = null;
    });
    return text;
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
