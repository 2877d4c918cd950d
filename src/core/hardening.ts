// Hardening policy: which dirty tracks to write to the store next, and when a FLUSH or FUA that
// waits on hardening is satisfied (DESIGN.md "Write path" step 5; seed Fig. 5 text: "the destage
// scan takes place at predetermined intervals or ... when the amount of unhardened data in a
// certain range ... is greater than some predetermined threshold. ... in between, the CU may
// continue hardening data intermittently according to other criteria" — here LRU pressure and age).
//
// Priorities, highest first, because each stands for something a caller is waiting on:
//   1. flush — a host FLUSH or FUA waits for exactly these tracks;
//   2. pressure — writers are blocked on a full cache, or dirty data passed the high-water mark:
//      harden the oldest dirty lines (LRU) so lines can be evicted;
//   3. age — a track has been dirty for half of `maxDirtyAgeMs`: harden it before the bound;
//   4. threshold — a range holds `rangeDirtyThresholdTracks` dirty tracks: destage that range;
//   5. scan — the periodic destage scan of every range with dirty tracks.
//
// Pure: the shell calls `nextJob(nowMs)` when a hardening slot is free and runs the store I/O.

import { assert } from './assert.js';
import type { HardenJob, TrackCache } from './cache.js';

export type HardenReason = 'flush' | 'pressure' | 'age' | 'threshold' | 'scan';

export interface HardeningSettings {
  maxDirtyAgeMs: number;
  destageIntervalMs: number;
  rangeDirtyThresholdTracks: number;
  /** Upper bound on one job's bytes (a job may be one big coalesced store write). */
  maxJobBytes: number;
  /** Dirty share of the cache above which LRU hardening starts without waiting for writers. */
  pressureFraction: number;
}

interface HardenWaiter {
  readonly id: number;
  /** Every write with a sequence ≤ seq must be hardened ... */
  readonly seq: number;
  /** ... in these tracks (FUA), or in the whole cache (null: FLUSH). */
  readonly tracks: number[] | null;
}

export class Hardener {
  private readonly waiters: HardenWaiter[] = [];
  private readonly thresholdRanges = new Set<number>();
  private readonly scanRanges: number[] = [];
  private nextScanMs: number;
  private ageDue = false;
  /** When tick last looked at the dirty lines' ages (each look is O(dirty lines)). */
  private lastAgeCheckMs: number;
  private blockedWriters = 0;

  constructor(private readonly cache: TrackCache, private readonly settings: HardeningSettings, nowMs: number) {
    assert(settings.maxJobBytes >= cache.geometry.trackSizeBytes, 'maxJobBytes must hold one track');
    this.nextScanMs = nowMs + settings.destageIntervalMs;
    this.lastAgeCheckMs = nowMs;
  }

  /** After a write landed in these tracks: note ranges that crossed the dirty threshold. */
  noteWrite(tracks: number[]): void {
    for (const t of tracks) {
      const range = this.cache.rangeOfTrack(t);
      if (this.cache.dirtyTracksInRange(range) >= this.settings.rangeDirtyThresholdTracks) this.thresholdRanges.add(range);
    }
  }

  /** The number of writers waiting for room in the cache (back-pressure). */
  setBlockedWriters(count: number): void {
    this.blockedWriters = count;
  }

  get blockedWriterCount(): number {
    return this.blockedWriters;
  }

  /**
   * Timer tick: start the age sweep and the periodic destage scan when due. The exact look at the
   * dirty lines' ages is O(dirty lines), and ticks come for other deadlines too (each range's
   * notice cycle: hundreds a second at 4 KiB QD32, where this look was ~1% of a node's CPU); the
   * O(1) bound is at or before the oldest line, so when even it is not half the bound old, no
   * line is.
   */
  tick(nowMs: number): void {
    const bound = this.cache.oldestDirtyBound;
    if (bound !== null && nowMs - bound >= this.settings.maxDirtyAgeMs / 2) {
      this.lastAgeCheckMs = nowMs;
      const oldest = this.cache.oldestDirtySinceMs();
      if (oldest !== null && nowMs - oldest >= this.settings.maxDirtyAgeMs / 2) this.ageDue = true;
    }
    if (nowMs >= this.nextScanMs) {
      this.nextScanMs = nowMs + this.settings.destageIntervalMs;
      if (this.scanRanges.length === 0) this.scanRanges.push(...this.cache.dirtyRanges());
    }
  }

  /**
   * When tick must run next (null: nothing is dirty, so neither the age bound nor the scan has
   * work): the destage scan's time, and the moment the oldest dirty line turns half
   * maxDirtyAgeMs old (from the cache's O(1) lower bound: at worst early, and tick makes it
   * exact). Age looks are at least a twentieth of maxDirtyAgeMs apart, so a stream of lines
   * reaching that age one after another costs a bounded number of O(dirty lines) looks. While
   * idle the scan keeps its cadence: the first write after a pause is scanned on the beat, not at once.
   */
  nextDeadlineMs(nowMs: number): number | null {
    const oldest = this.cache.oldestDirtyBound;
    const { maxDirtyAgeMs, destageIntervalMs } = this.settings;
    if (oldest === null && this.scanRanges.length === 0) {
      if (this.nextScanMs < nowMs) this.nextScanMs += Math.ceil((nowMs - this.nextScanMs) / destageIntervalMs) * destageIntervalMs;
      return null;
    }
    if (oldest === null) return this.nextScanMs;
    const ageCheckMs = Math.max(oldest + maxDirtyAgeMs / 2, this.lastAgeCheckMs + Math.max(1, maxDirtyAgeMs / 20));
    return Math.min(this.nextScanMs, ageCheckMs);
  }

  /** Registers a FLUSH (tracks null) or FUA wait for writes up to `seq`. */
  addWaiter(id: number, seq: number, tracks: number[] | null): void {
    this.waiters.push({ id, seq, tracks });
  }

  /** Forgets a waiter that was answered some other way (an error). */
  removeWaiter(id: number): void {
    const i = this.waiters.findIndex((w) => w.id === id);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  /** Ids of the waiters whose writes are all hardened now; they are forgotten. */
  takeSatisfiedWaiters(): number[] {
    const done: number[] = [];
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      const ok = w.tracks === null ? this.cache.hardenedUpTo(w.seq) : this.cache.tracksHardenedUpTo(w.tracks, w.seq);
      if (ok) {
        done.push(w.id);
        this.waiters.splice(i, 1);
      }
    }
    return done.reverse();
  }

  /** The next job to run, or null when nothing needs hardening now. */
  nextJob(nowMs: number): { job: HardenJob; reason: HardenReason } | null {
    const max = this.settings.maxJobBytes;
    for (const w of this.waiters) {
      const job = this.cache.takeHardenJob(w.tracks ?? this.cache.dirtyTracksUpToSeq(w.seq), max);
      if (job !== null) return { job, reason: 'flush' };
    }
    if (this.blockedWriters > 0 || this.cache.dirtyFraction() >= this.settings.pressureFraction) {
      const job = this.cache.takeOldestHardenJob(max);
      if (job !== null) return { job, reason: 'pressure' };
    }
    if (this.ageDue) {
      const job = this.cache.takeHardenJob(this.cache.dirtyTracksDirtySince(nowMs - this.settings.maxDirtyAgeMs / 2), max);
      if (job !== null) return { job, reason: 'age' };
      this.ageDue = false;
    }
    const fromThreshold = this.takeRangeJob(this.thresholdRanges, max);
    if (fromThreshold !== null) return { job: fromThreshold, reason: 'threshold' };
    const fromScan = this.takeScanJob(max);
    if (fromScan !== null) return { job: fromScan, reason: 'scan' };
    return null;
  }

  /** Destages one range from the set, dropping ranges with nothing left to start. */
  private takeRangeJob(ranges: Set<number>, maxBytes: number): HardenJob | null {
    for (const range of ranges) {
      const job = this.cache.takeHardenJob(this.cache.dirtyTracksOfRange(range), maxBytes);
      if (job !== null) return job;
      ranges.delete(range);
    }
    return null;
  }

  private takeScanJob(maxBytes: number): HardenJob | null {
    while (this.scanRanges.length > 0) {
      const job = this.cache.takeHardenJob(this.cache.dirtyTracksOfRange(this.scanRanges[0]!), maxBytes);
      if (job !== null) return job;
      this.scanRanges.shift();
    }
    return null;
  }

  pendingWaiters(): number {
    return this.waiters.length;
  }
}
