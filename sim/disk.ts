// The simulated store port (DESIGN.md "store"): the production Store interface (src/store/store.ts)
// over real bytes, so Volume hardens into it exactly as into a file. Each operation completes
// after a latency drawn from the node's PRNG, as an event of the seeded scheduler owned by the
// node's current incarnation (a crash cancels it: the promise never settles, like a dead process's
// I/O), so writes complete in whatever order the PRNG picks (the cache promises never to issue two
// overlapping writes at once, so order must not matter).
//
// What a crash keeps: a process crash (kill -9) keeps every write that completed, and each write
// still in flight either made it to the kernel or did not — the PRNG decides, per write, so a harden
// job can be left half on disk. A power loss (optional, `powerLoss`) also drops every completed write
// not yet made durable by a sync: that is the difference between "written" and "hardened" that a
// file store without O_DSYNC has.
//
// `meta` stands for the node metadata file beside the store (issue 5 item 3): replaced atomically,
// so a crash leaves the old or the new blob, never a torn one (SimMetadata below writes it).
import type { HardenRun } from '../src/core/cache-types.js';
import type { PersistedState } from '../src/core/replica-types.js';
import type { MetadataPort } from '../src/node/ports.js';
import type { Store } from '../src/store/store.js';
import type { Owner, Scheduler } from './events.js';
import type { Prng } from './prng.js';

interface PendingWrite {
  offsetBytes: number;
  data: Uint8Array;
}

/** Mean latencies of the simulated media, per node. */
export interface DiskTiming {
  storeWriteMeanMs: number;
  storeReadMeanMs: number;
  storeSyncMeanMs: number;
}

export class SimStore implements Store {
  readonly description: string;
  /** What a read returns and a process crash keeps: every completed write. */
  readonly bytes: Uint8Array;
  /** What a power loss keeps: the bytes as of the last completed sync (only kept when modelled). */
  private durable: Uint8Array | null;
  private readonly pending = new Map<number, PendingWrite>();
  private nextId = 1;
  meta: PersistedState | null = null;
  private syncGen = 0;
  private durableGen = 0;
  writes = 0;
  /** Fail the next n writes with EIO (a fault the simulator injects). */
  failNextWrites = 0;
  /** Power losses this store went through (un-synced writes dropped), for the run's fault counts. */
  powerLosses = 0;
  /** The next this-many reads fail (EIO): a resync or host read must report it, not stall. */
  failNextReads = 0;
  /** The incarnation whose I/O this is: set by the node at each start. */
  owner: Owner | null = null;

  constructor(
    readonly name: string, readonly sizeBytes: number, trackPowerLoss: boolean,
    private readonly sched: Scheduler, private readonly prng: Prng, private readonly timing: DiskTiming,
  ) {
    this.description = `sim store ${name}`;
    this.bytes = new Uint8Array(sizeBytes);
    this.durable = trackPowerLoss ? new Uint8Array(sizeBytes) : null;
  }

  /** Settles after `delayMs`, in an event of the current incarnation. */
  private later<T>(delayMs: number, label: string, settle: () => T): Promise<T> {
    return new Promise((resolve, reject) => {
      this.sched.after(delayMs, `${this.name} ${label}`, () => {
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
    const fails = this.failNextReads > 0;
    if (fails) this.failNextReads--;
    return this.later(this.prng.delay(this.timing.storeReadMeanMs), `store-read @${offsetBytes}+${lengthBytes}${fails ? ' fails' : ''}`, () => {
      if (fails) throw new Error('injected EIO');
      return this.peek(offsetBytes, lengthBytes);
    });
  }

  write(offsetBytes: number, data: Uint8Array): Promise<void> {
    return this.writeOne(offsetBytes, data, data.length, 'store-write');
  }

  writev(offsetBytes: number, buffers: Buffer[]): Promise<void> {
    return this.write(offsetBytes, Buffer.concat(buffers));
  }

  writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.writeOne(offsetBytes, null, lengthBytes, 'store-write');
  }

  /** Every run in flight at once; settles when all have landed or failed (as writeRunsEach). */
  async writeRuns(runs: readonly HardenRun[]): Promise<void> {
    const results = await Promise.allSettled(runs.map((r) => this.writeOne(r.offsetBytes, r.data, r.lengthBytes, 'store-write')));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure !== undefined) throw failure.reason;
  }

  /**
   * An fdatasync: it covers the writes completed when it starts (a write completing during it may
   * or may not be covered; we take the cautious side).
   */
  sync(): Promise<void> {
    const token = { gen: ++this.syncGen, bytes: this.durable === null ? null : this.bytes.slice() };
    return this.later(this.prng.delay(this.timing.storeSyncMeanMs), 'fsync', () => this.completeSync(token));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  // ---------------------------------------------------------------- simulation side

  private writeOne(offsetBytes: number, data: Uint8Array | null, lengthBytes: number, label: string): Promise<void> {
    this.checkSpan(offsetBytes, lengthBytes);
    const id = this.nextId++;
    const fails = this.failNextWrites > 0;
    if (fails) this.failNextWrites--;
    // A copy: the caller's buffer is the harden job's snapshot, which must not change under us.
    this.pending.set(id, { offsetBytes, data: data === null ? new Uint8Array(lengthBytes) : data.slice() });
    return this.later(this.prng.delay(this.timing.storeWriteMeanMs), `${label} @${offsetBytes}+${lengthBytes}${fails ? ' fails' : ''}`, () => {
      this.complete(id, !fails);
      if (fails) throw new Error('injected EIO');
    });
  }

  private checkSpan(offsetBytes: number, lengthBytes: number): void {
    if (offsetBytes < 0 || offsetBytes + lengthBytes > this.sizeBytes) throw new Error(`store I/O past the end: ${offsetBytes}+${lengthBytes}`);
  }

  /** The write reached the media (ok) or failed (nothing written). */
  private complete(id: number, ok: boolean): void {
    const w = this.pending.get(id);
    if (w === undefined) return;
    this.pending.delete(id);
    if (!ok) return;
    this.bytes.set(w.data, w.offsetBytes);
    this.writes++;
  }

  /** The bytes now, synchronously: for the invariants and probes, never for the node. */
  peek(offsetBytes: number, lengthBytes: number): Buffer {
    return Buffer.from(this.bytes.subarray(offsetBytes, offsetBytes + lengthBytes));
  }

  /** Syncs may overlap: a later one that finished first must not be undone by an earlier one. */
  private completeSync(token: { gen: number; bytes: Uint8Array | null }): void {
    if (this.durable === null || token.bytes === null || token.gen < this.durableGen) return;
    this.durableGen = token.gen;
    this.durable.set(token.bytes);
  }

  /** The process died: each in-flight write lands or not, as the PRNG picks. */
  crashProcess(prng: Prng): void {
    for (const id of [...this.pending.keys()]) this.complete(id, prng.chance(0.5));
    this.pending.clear();
  }

  /** The machine lost power: in-flight writes are lost, and so is everything not synced. */
  crashPower(): void {
    this.powerLosses++;
    this.pending.clear();
    if (this.durable !== null) this.bytes.set(this.durable);
  }

  get writesInFlight(): number {
    return this.pending.size;
  }
}

/**
 * The metadata port over `store.meta`: one write at a time (Volume chains them), landing after a
 * sync-like latency. A crash in the middle lands it or not (the file is replaced by rename).
 */
export class SimMetadata implements MetadataPort {
  readonly persisted: PersistedState | null;
  private inFlight: PersistedState | null = null;

  constructor(private readonly store: SimStore, private readonly sched: Scheduler, private readonly prng: Prng, private readonly timing: DiskTiming, private readonly owner: Owner) {
    this.persisted = store.meta === null ? null : structuredClone(store.meta);
  }

  save(state: PersistedState): Promise<void> {
    const copy = structuredClone(state);
    this.inFlight = copy;
    return new Promise((resolve) => {
      this.sched.after(1 + this.prng.delay(this.timing.storeSyncMeanMs), `${this.store.name} persist`, () => {
        this.store.meta = copy;
        if (this.inFlight === copy) this.inFlight = null;
        resolve();
      }, this.owner);
    });
  }

  /** The process died: the rename in flight happened entirely or not at all. */
  crash(prng: Prng): void {
    if (this.inFlight !== null && prng.chance(0.5)) this.store.meta = this.inFlight;
    this.inFlight = null;
  }
}
