// A simulated store (DESIGN.md "store"): the bytes a node hardens into. Writes are in flight for a
// latency the node's shell draws from the PRNG, so they complete in whatever order the PRNG picks
// (the cache promises never to issue two overlapping writes at once, so order must not matter).
//
// What a crash keeps: a process crash (kill -9) keeps every write that completed, and each write
// still in flight either made it to the kernel or did not — the PRNG decides, per write, so a harden
// job can be left half on disk. A power loss (optional, `powerLoss`) also drops every completed write
// not yet made durable by a sync: that is the difference between "written" and "hardened" that a
// file store without O_DSYNC has.
//
// `meta` stands for the node metadata file beside the store (issue 5 item 3): replaced atomically,
// so a crash leaves the old or the new blob, never a torn one.
import type { PersistedState } from '../src/core/replica-types.js';
import type { Prng } from './prng.js';

interface PendingWrite {
  offsetBytes: number;
  data: Uint8Array | null; // null: zeros
}

export class SimStore {
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
  /** The next this-many resync reads that reach the store fail (EIO). */
  failNextSyncReads = 0;

  constructor(readonly sizeBytes: number, trackPowerLoss: boolean) {
    this.bytes = new Uint8Array(sizeBytes);
    this.durable = trackPowerLoss ? new Uint8Array(sizeBytes) : null;
  }

  /** Starts a write; the shell calls `complete(id)` when its latency has passed. */
  begin(offsetBytes: number, data: Uint8Array | null, lengthBytes: number): { id: number; fails: boolean } {
    if (offsetBytes < 0 || offsetBytes + lengthBytes > this.sizeBytes) throw new Error(`store write past the end: ${offsetBytes}+${lengthBytes}`);
    const id = this.nextId++;
    const fails = this.failNextWrites > 0;
    if (fails) this.failNextWrites--;
    // A copy: the caller's buffer is the harden job's snapshot, which must not change under us,
    // and a zero run is remembered by its length alone.
    this.pending.set(id, { offsetBytes, data: data === null ? new Uint8Array(lengthBytes) : data.slice() });
    return { id, fails };
  }

  /** The write reached the media (ok) or failed (nothing written). */
  complete(id: number, ok: boolean): void {
    const w = this.pending.get(id);
    if (w === undefined) return;
    this.pending.delete(id);
    if (!ok) return;
    this.bytes.set(w.data as Uint8Array, w.offsetBytes);
    this.writes++;
  }

  read(offsetBytes: number, lengthBytes: number): Buffer {
    return Buffer.from(this.bytes.subarray(offsetBytes, offsetBytes + lengthBytes));
  }

  /**
   * An fdatasync starts: it covers the writes completed by now (a write completing during it may
   * or may not be covered; we take the cautious side). Returns what completeSync makes durable.
   */
  beginSync(): { gen: number; bytes: Uint8Array | null } {
    return { gen: ++this.syncGen, bytes: this.durable === null ? null : this.bytes.slice() };
  }

  /** Syncs may overlap: a later one that finished first must not be undone by an earlier one. */
  completeSync(token: { gen: number; bytes: Uint8Array | null }): void {
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
    this.pending.clear();
    if (this.durable !== null) this.bytes.set(this.durable);
  }

  get writesInFlight(): number {
    return this.pending.size;
  }
}
