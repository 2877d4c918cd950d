// The I/O shell around one node's cache: serves NBD requests from the pure TrackCache, runs the
// Hardener's jobs against the store, and owns the only timer. Everything that decides *what*
// happens lives in src/core; this file only moves bytes and wakes things up.
//
// Standalone durability (DESIGN.md "Durability policy"): one copy in RAM is not durable, so FLUSH
// and FUA complete only after the data they cover is hardened and the store synced.
import { BLOCK_SIZE_BYTES, TrackCache, type CacheStats, type HardenJob } from '../core/cache.js';
import { Hardener, type HardenReason, type HardeningSettings } from '../core/hardening.js';
import { NbdRequestError, type NbdExport } from '../nbd/export.js';
import type { Store } from '../store/store.js';

export interface VolumeOptions {
  name: string;
  description: string;
  sizeBytes: number;
  trackSizeBytes: number;
  cacheBytes: number;
  rangeTracks: number;
  readOnly: boolean;
  hardening: Omit<HardeningSettings, 'maxJobBytes' | 'pressureFraction'>;
  store: Store;
  /** Called after each harden job, for metrics. */
  onHardened?: (bytes: number, storeWrites: number, seconds: number, reason: HardenReason) => void;
  /** Called when a store write fails (the data stays dirty and is retried). */
  onStoreError?: (err: Error) => void;
  nowMs?: () => number;
}

/** Hardening jobs in flight at once: enough to keep a disk queue busy, few enough to stay ordered. */
const MAX_CONCURRENT_HARDENS = 4;
/** Largest coalesced store write. */
const MAX_JOB_BYTES = 4 * 1024 * 1024;
/** Dirty share of the cache where LRU hardening starts even before writers block. */
const PRESSURE_FRACTION = 0.5;
/** After a store write fails, wait this long before hardening again. */
const STORE_RETRY_MS = 1000;

interface PendingWrite {
  offsetBytes: number;
  lengthBytes: number;
  data: Buffer | null;
  resolve: () => void;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export interface VolumeStats extends CacheStats {
  waitingWrites: number;
  hardenJobsInFlight: number;
}

/** Running totals since the node started (status `counters`). */
export interface VolumeCounters {
  writes: number;
  writtenBytes: number;
  hardenedBytes: number;
  hardenWrites: number;
  /** Harden jobs by what triggered them. */
  hardenRuns: Record<HardenReason, number>;
}

export class Volume implements NbdExport {
  readonly name: string;
  readonly description: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly counters: VolumeCounters = {
    writes: 0, writtenBytes: 0, hardenedBytes: 0, hardenWrites: 0,
    hardenRuns: { flush: 0, pressure: 0, age: 0, threshold: 0, scan: 0 },
  };
  private readonly cache: TrackCache;
  private readonly hardener: Hardener;
  private readonly store: Store;
  private readonly now: () => number;
  private readonly writeQueue: PendingWrite[] = [];
  private readonly waiters = new Map<number, Waiter>();
  private nextWaiterId = 1;
  private hardensInFlight = 0;
  private pausedUntilMs = 0;
  private closing = false;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly opts: VolumeOptions) {
    this.name = opts.name;
    this.description = opts.description;
    this.sizeBytes = opts.sizeBytes;
    this.readOnly = opts.readOnly;
    this.store = opts.store;
    this.now = opts.nowMs ?? Date.now;
    this.cache = new TrackCache({
      volumeSizeBytes: opts.sizeBytes, trackSizeBytes: opts.trackSizeBytes,
      capacityBytes: opts.cacheBytes, rangeTracks: opts.rangeTracks,
    });
    this.hardener = new Hardener(this.cache, {
      ...opts.hardening, maxJobBytes: Math.max(MAX_JOB_BYTES, opts.trackSizeBytes), pressureFraction: PRESSURE_FRACTION,
    }, this.now());
    // Tick often enough that the age bound holds to within a few percent.
    const tickMs = Math.max(10, Math.min(250, Math.floor(opts.hardening.maxDirtyAgeMs / 10)));
    this.timer = setInterval(() => this.tick(), tickMs);
    this.timer.unref();
  }

  // ---------------------------------------------------------------- NBD requests

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const { start, end } = alignOut(offsetBytes, lengthBytes);
    const bytes = await this.readAligned(start, end - start);
    return start === offsetBytes && end - start === lengthBytes ? bytes : bytes.subarray(offsetBytes - start, offsetBytes - start + lengthBytes);
  }

  private async readAligned(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const plan = this.cache.beginRead(offsetBytes, lengthBytes);
    if (plan.storeRuns.length === 0) return this.cache.finishRead(plan, []);
    try {
      const parts = await Promise.all(plan.storeRuns.map((r) => this.store.read(r.offsetBytes, r.lengthBytes)));
      return this.cache.finishRead(plan, parts);
    } catch (err) {
      this.cache.cancelRead(plan);
      throw err;
    }
  }

  async write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    await this.modify(offsetBytes, data.length, data);
    this.counters.writes++;
    this.counters.writtenBytes += data.length;
    if (fua) await this.hardenTracks(offsetBytes, data.length);
  }

  async trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    // TRIM is advisory (proto.md NBD_CMD_TRIM), but reading trimmed blocks as zeros keeps the
    // cache and store in step on both nodes later; partial blocks at the edges are left alone.
    const start = Math.ceil(offsetBytes / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
    const end = Math.floor((offsetBytes + lengthBytes) / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
    if (end > start) await this.modify(start, end - start, null);
    if (fua) await this.hardenTracks(offsetBytes, lengthBytes);
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    await this.modify(offsetBytes, lengthBytes, null);
    if (fua) await this.hardenTracks(offsetBytes, lengthBytes);
  }

  async flush(): Promise<void> {
    await this.waitHardened(this.cache.sequence, null);
    await this.store.sync();
  }

  /** FUA: the tracks of this request hardened and synced before the reply. */
  private async hardenTracks(offsetBytes: number, lengthBytes: number): Promise<void> {
    await this.waitHardened(this.cache.sequence, this.cache.tracksOf(offsetBytes, lengthBytes));
    await this.store.sync();
  }

  /** Writes bytes (data) or zeros (null); unaligned edges go through read-modify-write. */
  private async modify(offsetBytes: number, lengthBytes: number, data: Buffer | null): Promise<void> {
    this.checkOpen();
    const { start, end } = alignOut(offsetBytes, lengthBytes);
    if (start === offsetBytes && end === offsetBytes + lengthBytes) return this.enqueue(start, lengthBytes, data);
    // Hosts honour our 512-byte minimum block size (NBD_INFO_BLOCK_SIZE), so this is rare; it is
    // not atomic against a concurrent write to the same edge block, which the spec allows.
    const merged = await this.readAligned(start, end - start);
    if (data === null) merged.fill(0, offsetBytes - start, offsetBytes - start + lengthBytes);
    else data.copy(merged, offsetBytes - start);
    return this.enqueue(start, end - start, merged);
  }

  /**
   * Puts a write into the cache, waiting for room if needed. A write larger than half the cache
   * goes in track-aligned pieces, each of which fits once hardening has emptied the cache; a
   * single piece for the whole request could never fit and would wait forever.
   */
  private async enqueue(offsetBytes: number, lengthBytes: number, data: Buffer | null): Promise<void> {
    const { trackSizeBytes, cacheBytes } = this.opts;
    const pieceBytes = Math.max(trackSizeBytes, Math.floor(cacheBytes / 2 / trackSizeBytes) * trackSizeBytes);
    if (lengthBytes <= pieceBytes) return this.enqueuePiece(offsetBytes, lengthBytes, data);
    const endBytes = offsetBytes + lengthBytes;
    for (let pos = offsetBytes; pos < endBytes;) {
      const pieceEnd = Math.min(endBytes, (Math.floor(pos / pieceBytes) + 1) * pieceBytes);
      await this.enqueuePiece(pos, pieceEnd - pos, data === null ? null : data.subarray(pos - offsetBytes, pieceEnd - offsetBytes));
      pos = pieceEnd;
    }
  }

  private enqueuePiece(offsetBytes: number, lengthBytes: number, data: Buffer | null): Promise<void> {
    if (this.writeQueue.length === 0 && this.applyToCache(offsetBytes, lengthBytes, data)) return Promise.resolve();
    // Back-pressure: the cache is full of dirty data. Wait, in order, for hardening to free room.
    return new Promise<void>((resolve) => {
      this.writeQueue.push({ offsetBytes, lengthBytes, data, resolve });
      this.hardener.setBlockedWriters(this.writeQueue.length);
      this.pump();
    });
  }

  private applyToCache(offsetBytes: number, lengthBytes: number, data: Buffer | null): boolean {
    const nowMs = this.now();
    const ok = data === null ? this.cache.writeZeroes(offsetBytes, lengthBytes, nowMs) : this.cache.write(offsetBytes, data, nowMs);
    if (ok) {
      this.hardener.noteWrite(this.cache.tracksOf(offsetBytes, lengthBytes));
      if (this.hardensInFlight < MAX_CONCURRENT_HARDENS) this.pump();
    }
    return ok;
  }

  private drainWriteQueue(): void {
    while (this.writeQueue.length > 0) {
      const head = this.writeQueue[0]!;
      if (!this.applyToCache(head.offsetBytes, head.lengthBytes, head.data)) break;
      this.writeQueue.shift();
      head.resolve();
    }
    this.hardener.setBlockedWriters(this.writeQueue.length);
  }

  private waitHardened(seq: number, tracks: number[] | null): Promise<void> {
    const id = this.nextWaiterId++;
    const done = new Promise<void>((resolve, reject) => this.waiters.set(id, { resolve, reject }));
    this.hardener.addWaiter(id, seq, tracks);
    this.settleWaiters();
    this.pump();
    return done;
  }

  private settleWaiters(): void {
    for (const id of this.hardener.takeSatisfiedWaiters()) {
      this.waiters.get(id)?.resolve();
      this.waiters.delete(id);
    }
  }

  // ---------------------------------------------------------------- hardening

  private tick(): void {
    this.hardener.tick(this.now());
    this.pump();
  }

  private pump(): void {
    if (this.now() < this.pausedUntilMs) return;
    while (this.hardensInFlight < MAX_CONCURRENT_HARDENS) {
      const next = this.hardener.nextJob(this.now());
      if (next === null) return;
      void this.runHardenJob(next.job, next.reason);
    }
  }

  private async runHardenJob(job: HardenJob, reason: HardenReason): Promise<void> {
    this.hardensInFlight++;
    const started = process.hrtime.bigint();
    try {
      await Promise.all(job.runs.map((r) => (r.data === null
        ? this.store.writeZeroes(r.offsetBytes, r.lengthBytes)
        : this.store.write(r.offsetBytes, r.data))));
      this.cache.completeHarden(job.id);
      this.counters.hardenedBytes += job.bytes;
      this.counters.hardenWrites += job.runs.length;
      this.counters.hardenRuns[reason]++;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      this.opts.onHardened?.(job.bytes, job.runs.length, seconds, reason);
    } catch (err) {
      this.cache.abandonHarden(job.id);
      this.failWaiters(err as Error);
    } finally {
      this.hardensInFlight--;
    }
    this.drainWriteQueue();
    this.settleWaiters();
    this.pump();
  }

  /** A store write failed: FLUSH/FUA waiting on hardening get EIO rather than hang. */
  private failWaiters(err: Error): void {
    this.pausedUntilMs = this.now() + STORE_RETRY_MS;
    this.opts.onStoreError?.(err);
    for (const [id, w] of this.waiters) {
      w.reject(new NbdRequestError('EIO', `store write failed: ${err.message}`));
      this.waiters.delete(id);
      this.hardener.removeWaiter(id);
    }
  }

  // ---------------------------------------------------------------- lifecycle and status

  private checkOpen(): void {
    if (this.closing) throw new NbdRequestError('ESHUTDOWN', 'node is shutting down');
  }

  get storeDescription(): string {
    return this.store.description;
  }

  stats(): VolumeStats {
    return { ...this.cache.stats(this.now()), waitingWrites: this.writeQueue.length, hardenJobsInFlight: this.hardensInFlight };
  }

  /** Hardens everything, syncs and closes the store. New writes are refused from now on. */
  async close(): Promise<void> {
    this.closing = true;
    // Writes already admitted (in the cache or queued for room) are hardened; new ones get ESHUTDOWN.
    do await this.flush(); while (this.writeQueue.length > 0 || this.cache.stats(this.now()).dirtyTracks > 0);
    clearInterval(this.timer);
    await this.store.close();
  }
}

function alignOut(offsetBytes: number, lengthBytes: number): { start: number; end: number } {
  const start = Math.floor(offsetBytes / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
  const end = Math.ceil((offsetBytes + lengthBytes) / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
  return { start, end };
}
