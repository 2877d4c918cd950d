// The simulated store port (DESIGN.md "store"): the production Store interface (src/store/store.ts)
// over real bytes, so Volume hardens into it exactly as into a file. Each operation completes
// after a latency drawn from the node's PRNG, as an event of the seeded scheduler owned by the
// node's current incarnation (a crash cancels it: the promise never settles, like a dead process's
// I/O), so writes complete in whatever order the PRNG picks (the cache promises never to issue two
// overlapping writes at once, so order must not matter).
//
// Storage faults (issue 10 item 3), each at a rate drawn per seed (sim/options.ts StorageFaults),
// from the store's own PRNG stream so a seed's other draws stay as they were:
//  - a store write or read fails with EIO (a failed write writes nothing);
//  - an fdatasync fails. Linux (since 4.13, "fsyncgate") reports a writeback error once and may
//    drop the dirty pages: the writes it covered are then in limbo — a later fdatasync that
//    succeeds does not make them durable, and a power loss may or may not keep each 512-byte
//    sector of them. We model exactly that, so a node that trusts a retry is caught;
//  - the store stalls: no operation completes for a few hundred ms to seconds;
//  - a power loss (`powerLoss`, on in a share of seeds): every sector written since the last
//    fdatasync that covered it keeps its old or its new bytes, independently, and so does each
//    sector of a write in flight (a torn write at 512-byte granularity).
// A process crash (kill -9) keeps every write that completed (the OS page cache survives), and
// each write still in flight either made it to the kernel or did not.
//
// `meta` stands for the node metadata file beside the store (issue 5 item 3): replaced atomically
// by rename, so a crash leaves the old or the new blob, never a torn one (SimMetadata below). Its
// save may fail (write, fsync or rename of the temporary file: the old file stays), and a power
// loss drops a save whose rename was not yet durable.
import type { HardenRun } from '../src/core/cache-types.js';
import type { PersistedState } from '../src/core/replica-types.js';
import type { MetadataPort } from '../src/node/ports.js';
import type { Store } from '../src/store/store.js';
import type { Owner, Scheduler } from './events.js';
import type { StorageFaults } from './options.js';
import type { Prng } from './prng.js';

const SECTOR = 512;
/** How long a stall lasts, at most (simulated ms). */
const MAX_STALL_MS = 3000;

interface PendingWrite {
  offsetBytes: number;
  data: Uint8Array;
}

/** A write that completed (it is in the page cache) and no successful fdatasync covers yet. */
interface UnsyncedWrite extends PendingWrite {
  seq: number;
}

/** Mean latencies of the simulated media, per node. */
export interface DiskTiming {
  storeWriteMeanMs: number;
  storeReadMeanMs: number;
  storeSyncMeanMs: number;
}

/** Counts of the storage faults a store injected, for the run's summary. */
export interface StorageFaultCounts {
  storeWriteFails: number;
  storeReadFails: number;
  fsyncFails: number;
  metadataFails: number;
  stalls: number;
  powerLosses: number;
}

export class SimStore implements Store {
  readonly description: string;
  /** What a read returns and a process crash keeps: every completed write (the page cache). */
  readonly bytes: Uint8Array;
  /** What a power loss surely keeps: the bytes as of the syncs that covered them (when modelled). */
  private durable: Uint8Array | null;
  private readonly pending = new Map<number, PendingWrite>();
  private nextId = 1;
  meta: PersistedState | null = null;
  /** Completed writes no successful fdatasync covered yet, in completion order (power loss only). */
  private unsynced: UnsyncedWrite[] = [];
  /** Sectors written before an fdatasync that failed: on disk or not, a later sync does not tell. */
  private readonly limbo = new Map<number, Uint8Array>();
  private writeSeq = 0;
  writes = 0;
  /** Fail the next n writes with EIO (a fault the simulator injects). */
  failNextWrites = 0;
  /** The next this-many reads fail (EIO): a resync or host read must report it, not stall. */
  failNextReads = 0;
  readonly faultCounts: StorageFaultCounts = { storeWriteFails: 0, storeReadFails: 0, fsyncFails: 0, metadataFails: 0, stalls: 0, powerLosses: 0 };
  /** Random storage faults on (the fault phase) or off (healing). */
  faultsOn = true;
  /** No operation completes before this (a stalled store). */
  private stalledUntilMs = 0;
  /** The incarnation whose I/O this is: set by the node at each start. */
  owner: Owner | null = null;

  constructor(
    readonly name: string, readonly sizeBytes: number, trackPowerLoss: boolean,
    private readonly sched: Scheduler, private readonly prng: Prng, private readonly timing: DiskTiming,
    /** The fault stream: its own PRNG, so the rates of a seed do not shift its other draws. */
    private readonly faultPrng: Prng, readonly rates: StorageFaults,
  ) {
    this.description = `sim store ${name}`;
    this.bytes = new Uint8Array(sizeBytes);
    this.durable = trackPowerLoss ? new Uint8Array(sizeBytes) : null;
  }

  /** Does a fault of this rate strike now? Draws nothing when the rate is 0 (most seeds' kinds). */
  fault(rate: number): boolean {
    return this.faultsOn && rate > 0 && this.faultPrng.chance(rate);
  }

  /** Settles after `delayMs` (and after a stall, if the store is stalled), in an event of the current incarnation. */
  private later<T>(delayMs: number, label: string, settle: () => T): Promise<T> {
    const now = this.sched.nowMs;
    if (now >= this.stalledUntilMs && this.fault(this.rates.stall)) {
      this.faultCounts.stalls++;
      this.stalledUntilMs = now + 100 + this.faultPrng.int(MAX_STALL_MS);
    }
    const stallMs = Math.max(0, this.stalledUntilMs - now);
    return new Promise((resolve, reject) => {
      this.sched.after(stallMs + delayMs, `${this.name} ${label}${stallMs > 0 ? ` (stalled ${stallMs} ms)` : ''}`, () => {
        try {
          resolve(settle());
        } catch (err) {
          reject(err as Error);
        }
      }, this.owner);
    });
  }

  // ---------------------------------------------------------------- the Store port

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.checkSpan(offsetBytes, lengthBytes);
    const fails = this.failNextReads > 0 || this.fault(this.rates.readFail);
    if (this.failNextReads > 0) this.failNextReads--;
    if (fails) this.faultCounts.storeReadFails++;
    return this.later(this.prng.delay(this.timing.storeReadMeanMs), `store-read @${offsetBytes}+${lengthBytes}${fails ? ' fails' : ''}`, () => {
      if (fails) throw new Error('injected EIO');
      return this.peek(offsetBytes, lengthBytes);
    });
  }

  write(offsetBytes: number, data: Uint8Array): Promise<void> {
    return this.writeOne(offsetBytes, data, data.length);
  }

  writev(offsetBytes: number, buffers: Buffer[]): Promise<void> {
    return this.write(offsetBytes, Buffer.concat(buffers));
  }

  writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.writeOne(offsetBytes, null, lengthBytes);
  }

  /** Every run in flight at once; settles when all have landed or failed (as writeRunsEach). */
  async writeRuns(runs: readonly HardenRun[]): Promise<void> {
    const results = await Promise.allSettled(runs.map((r) => this.writeOne(r.offsetBytes, r.data, r.lengthBytes)));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure !== undefined) throw failure.reason;
  }

  /**
   * An fdatasync: it covers the writes completed when it starts (a write completing during it may
   * or may not be covered; we take the cautious side). A failed one leaves them in limbo.
   */
  sync(): Promise<void> {
    const coversSeq = this.writeSeq;
    const fails = this.fault(this.rates.fsyncFail);
    if (fails) this.faultCounts.fsyncFails++;
    return this.later(this.prng.delay(this.timing.storeSyncMeanMs), `fsync${fails ? ' fails' : ''}`, () => this.completeSync(coversSeq, !fails));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  // ---------------------------------------------------------------- simulation side

  private writeOne(offsetBytes: number, data: Uint8Array | null, lengthBytes: number): Promise<void> {
    this.checkSpan(offsetBytes, lengthBytes);
    const id = this.nextId++;
    const fails = this.failNextWrites > 0 || this.fault(this.rates.writeFail);
    if (this.failNextWrites > 0) this.failNextWrites--;
    if (fails) this.faultCounts.storeWriteFails++;
    // A copy (Uint8Array.from: a Buffer's own slice() is a view): the caller's buffer is the harden
    // job's snapshot, which the shell may reuse once the job is done, while a power loss may still
    // replay this write from the unsynced log.
    this.pending.set(id, { offsetBytes, data: data === null ? new Uint8Array(lengthBytes) : Uint8Array.from(data) });
    return this.later(this.prng.delay(this.timing.storeWriteMeanMs), `store-write @${offsetBytes}+${lengthBytes}${fails ? ' fails' : ''}`, () => {
      this.complete(id, !fails);
      if (fails) throw new Error('injected EIO');
    });
  }

  private checkSpan(offsetBytes: number, lengthBytes: number): void {
    if (offsetBytes < 0 || offsetBytes + lengthBytes > this.sizeBytes) throw new Error(`store I/O past the end: ${offsetBytes}+${lengthBytes}`);
  }

  /** The write reached the page cache (ok) or failed (nothing written). */
  private complete(id: number, ok: boolean): void {
    const w = this.pending.get(id);
    if (w === undefined) return;
    this.pending.delete(id);
    if (!ok) return;
    this.bytes.set(w.data, w.offsetBytes);
    this.writes++;
    this.writeSeq++;
    if (this.durable !== null) this.unsynced.push({ ...w, seq: this.writeSeq });
  }

  /** The bytes now, synchronously: for the invariants and probes, never for the node. */
  peek(offsetBytes: number, lengthBytes: number): Buffer {
    return Buffer.from(this.bytes.subarray(offsetBytes, offsetBytes + lengthBytes));
  }

  /**
   * The writes completed up to `coversSeq` are durable (ok), or in limbo (failed). Syncs may
   * overlap: one that finishes after a later one finds its writes already taken.
   */
  private completeSync(coversSeq: number, ok: boolean): void {
    const durable = this.durable;
    if (durable !== null) {
      const covered = this.unsynced.filter((w) => w.seq <= coversSeq);
      this.unsynced = this.unsynced.filter((w) => w.seq > coversSeq);
      for (const w of covered) {
        for (let at = 0; at < w.data.length; at += SECTOR) {
          const sector = (w.offsetBytes + at) / SECTOR;
          const bytes = w.data.subarray(at, at + SECTOR);
          if (ok) {
            durable.set(bytes, w.offsetBytes + at);
            this.limbo.delete(sector);
          } else {
            this.limbo.set(sector, bytes);
          }
        }
      }
    }
    if (!ok) throw new Error('injected EIO');
  }

  /** The process died: each in-flight write lands or not, as the PRNG picks. */
  crashProcess(prng: Prng): void {
    for (const id of [...this.pending.keys()]) this.complete(id, prng.chance(0.5));
    this.pending.clear();
  }

  /**
   * The machine lost power: the disk keeps what syncs made durable, and each sector written since
   * (in limbo, completed but unsynced, or in flight: torn) keeps its old or new bytes by chance.
   */
  crashPower(prng: Prng): void {
    this.faultCounts.powerLosses++;
    const durable = this.durable;
    if (durable === null) throw new Error('power loss without the durable image');
    const image = durable.slice();
    const maybe = (offsetBytes: number, data: Uint8Array): void => {
      for (let at = 0; at < data.length; at += SECTOR) if (prng.chance(0.5)) image.set(data.subarray(at, at + SECTOR), offsetBytes + at);
    };
    for (const [sector, data] of this.limbo) maybe(sector * SECTOR, data);
    for (const w of this.unsynced) maybe(w.offsetBytes, w.data);
    for (const w of this.pending.values()) maybe(w.offsetBytes, w.data);
    this.pending.clear();
    this.unsynced = [];
    this.limbo.clear();
    this.bytes.set(image);
    durable.set(image);
  }

  get writesInFlight(): number {
    return this.pending.size;
  }
}

/**
 * The metadata port over `store.meta`: one write at a time (Volume chains them), landing after a
 * sync-like latency. It may fail (the old file stays); a crash in the middle lands it or not (the
 * file is replaced by rename), and a power loss drops it.
 */
export class SimMetadata implements MetadataPort {
  readonly persisted: PersistedState | null;
  private inFlight: PersistedState | null = null;

  constructor(private readonly store: SimStore, private readonly sched: Scheduler, private readonly prng: Prng, private readonly timing: DiskTiming, private readonly owner: Owner) {
    this.persisted = store.meta === null ? null : structuredClone(store.meta);
  }

  save(state: PersistedState): Promise<void> {
    const copy = structuredClone(state);
    const fails = this.store.fault(this.store.rates.metadataFail);
    // Which step of the atomic replace failed (src/node/metadata.ts): the old file stays either way.
    const step = fails ? ['write', 'fsync', 'rename'][this.prng.int(3)]! : null;
    if (fails) this.store.faultCounts.metadataFails++;
    this.inFlight = fails ? null : copy;
    return new Promise((resolve, reject) => {
      this.sched.after(1 + this.prng.delay(this.timing.storeSyncMeanMs), `${this.store.name} persist${fails ? ` fails (${step})` : ''}`, () => {
        if (step !== null) return reject(new Error(`injected EIO on metadata ${step}`));
        this.store.meta = copy;
        if (this.inFlight === copy) this.inFlight = null;
        resolve();
      }, this.owner);
    });
  }

  /** The process died: the rename in flight happened entirely or not at all; a power loss drops it. */
  crash(prng: Prng, powerLoss: boolean): void {
    if (!powerLoss && this.inFlight !== null && prng.chance(0.5)) this.store.meta = this.inFlight;
    this.inFlight = null;
  }
}
