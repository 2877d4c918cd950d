// The hardening events that wait for an fdatasync before the peer may hear of them, a part the
// replica core owns. "Hardened" means written to the store, which may still sit in the OS page
// cache: a power loss of this node would take it. Before the peer is told to drop a mark (CLEAR,
// or a toggle-counter track counted as hardened), the store is fdatasync'd. One fdatasync at a
// time covers every event queued before it started. Pure: the core allocates the sync's id, emits
// the sync-store action and hands the result back; this part only keeps the batches.
import { assert } from './assert.js';
import { retryBackoffMs } from './backoff.js';

/** A range whose destage finished for a cycle with one peer (each peer's cycles are its own). */
export interface DurableRange {
  peer: string;
  range: number;
}

export interface DurableBatch {
  /** Tracks hardened before the sync started (the core drops any written again since). */
  tracks: number[];
  /** Ranges whose destage finished before the sync started, for the current link's cycles only. */
  ranges: DurableRange[];
}

type StampedRange = DurableRange & { generation: number };

export class DurableNotices {
  private pending: { tracks: number[]; ranges: StampedRange[] } = { tracks: [], ranges: [] };
  private inFlight: { tracks: number[]; ranges: StampedRange[]; syncId: number; tainted: boolean } | null = null;
  /**
   * Per peer, bumped when the cycles of its link are reset: a range hardened for a dead link's
   * cycle is moot. Each range carries its peer's generation from when it was added.
   */
  private readonly generations = new Map<string, number>();
  /** After a failed fdatasync, the next one waits until then (backoff), or null. */
  private retryAtValue: number | null = null;
  /** fdatasyncs (any of the store's) that failed since the last one that succeeded. */
  private failuresInRowValue = 0;

  add(tracks: readonly number[], ranges: readonly DurableRange[]): void {
    this.pending.tracks.push(...tracks);
    for (const { peer, range } of ranges) this.pending.ranges.push({ peer, range, generation: this.generations.get(peer) ?? 0 });
  }

  /** True when no sync is in flight, events wait for one, and no failed one's backoff runs. */
  get canStart(): boolean {
    return this.inFlight === null && this.retryAtValue === null && (this.pending.tracks.length > 0 || this.pending.ranges.length > 0);
  }

  /**
   * Any fdatasync of the store finished (a host FLUSH's too). A failure starts a backoff before
   * the next notice sync, doubling with each failure in a row (backoff.ts); returns its length.
   */
  syncFinished(ok: boolean, nowMs: number, baseRetryMs: number): number {
    if (ok) {
      this.failuresInRowValue = 0;
      return 0;
    }
    this.failuresInRowValue++;
    const retryInMs = retryBackoffMs(baseRetryMs, this.failuresInRowValue);
    this.retryAtValue = nowMs + retryInMs;
    return retryInMs;
  }

  get failuresInRow(): number {
    return this.failuresInRowValue;
  }

  /** When a failed sync's backoff ends (null: none runs): a deadline of the core. */
  get retryAtMs(): number | null {
    return this.retryAtValue;
  }

  /** The backoff is over at `nowMs`: true if one ended (the caller starts the next sync). */
  retryDue(nowMs: number): boolean {
    if (this.retryAtValue === null || nowMs < this.retryAtValue) return false;
    this.retryAtValue = null;
    return true;
  }

  /** The sync `syncId` now covers every waiting event. */
  start(syncId: number): void {
    assert(this.canStart, 'a durable sync started while one is in flight, or with nothing to cover');
    this.inFlight = { ...this.pending, syncId, tainted: false };
    this.pending = { tracks: [], ranges: [] };
  }

  /**
   * Another fdatasync of the store failed while this part's was in flight. Linux reports a lost
   * writeback once, to one caller ("fsyncgate"): the sync in flight may still succeed although
   * sectors it covers were dropped, so its success proves nothing and it counts as failed
   * (simulator, seed 20023000: a CLEAR from such a sync, then a power loss took the track, and the
   * untrust mark the failure had started was not on disk yet).
   */
  taintInFlight(): void {
    if (this.inFlight !== null) this.inFlight.tainted = true;
  }

  /** Tracks hardened whose fdatasync has not yet succeeded (waiting for one, or in flight). */
  get tracks(): number[] {
    return [...this.pending.tracks, ...(this.inFlight?.tracks ?? [])];
  }

  /** Is `syncId` this part's fdatasync (rather than a FLUSH's)? */
  owns(syncId: number): boolean {
    return this.inFlight?.syncId === syncId;
  }

  /**
   * The sync finished. Ok: the events it covered are now true on disk. Failed: they wait for the
   * next sync, and null is returned. Either way a range event of an older generation is dropped:
   * requeued after a failure, it would join the next sync under the new generation and end the new
   * link's cycle of that range before its tracks are hardened (a COMPLETE too early, so the peer
   * would clear marks of tracks still only in this node's RAM).
   */
  synced(ok: boolean): DurableBatch | null {
    const batch = this.inFlight;
    assert(batch !== null, 'a durable sync finished that was never started');
    this.inFlight = null;
    const ranges = batch.ranges.filter((r) => r.generation === (this.generations.get(r.peer) ?? 0)).map(({ peer, range }) => ({ peer, range }));
    if (!ok || batch.tainted) {
      this.add(batch.tracks, ranges);
      return null;
    }
    return { tracks: batch.tracks, ranges };
  }

  /** The cycles of the link to `peer` were reset: its waiting range events are moot, and so are any in flight. */
  resetCycles(peer: string): void {
    this.generations.set(peer, (this.generations.get(peer) ?? 0) + 1);
    this.pending.ranges = this.pending.ranges.filter((r) => r.peer !== peer);
  }
}
