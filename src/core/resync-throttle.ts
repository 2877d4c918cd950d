// A resync that yields to host writes (issue 14 item 6). DRBD's dynamic resync controller is the
// reference: with no application I/O its resync runs at c-max-rate; with application I/O it holds
// a fill target of resync data in flight and never drops below c-min-rate. Ours steers on what
// the resync actually costs the host: the round trip of the host's own mirrored writes to the peer
// being resynced. Resync chunks queue on the same ordered link and are applied by the same event
// loop as those writes, so when they delay the host, that round trip grows. This is LEDBAT's idea
// (RFC 6817, a background transfer that keeps the queueing delay it adds under a target), with
// host activity deciding when it applies at all.
//
// The rule, one step every `stepMs` while host writes arrive:
// - Host writes start after a quiet spell: the rate drops to the floor (`syncMinRate`) at once, and
//   chunks shrink to `yieldChunkBytes`, so no large chunk sits ahead of a host write.
// - The step's median round trip is within the target of the base (the lowest round trip of the
//   last ten seconds): the rate grows by a sixteenth of the ceiling. Over the target, it halves.
// - No host write for `quietMs`: full speed again (`syncRate`, the ceiling), with full chunks.
//
// Pure: time is passed in, and the samples come from the core's ack path.
import { assert } from './assert.js';

export interface ThrottleSettings {
  /** syncRate: the rate with no host writes, and the most it may ever use. */
  ceilingBytesPerSec: number;
  /** syncMinRate: a resync always progresses at least this fast (DRBD's c-min-rate). */
  floorBytesPerSec: number;
  /** The chunk size while yielding; full chunks otherwise. */
  yieldChunkBytes: number;
  /** Reads in flight while yielding. */
  yieldWindowChunks: number;
}

/** Control step, and how long without a host write means "no host I/O". */
export const THROTTLE_STEP_MS = 100;
export const THROTTLE_QUIET_MS = 500;
/** The round-trip growth the resync may cause: the larger of this and half the base round trip. */
const TARGET_QUEUE_MS = 0.25;
/** The base round trip is the lowest of this many one-second buckets. */
const BASE_BUCKETS = 10;

export class ResyncThrottle {
  private rate: number;
  private lastHostMs = -Infinity;
  private stepStartMs = -Infinity;
  private samples: number[] = [];
  /** Lowest round trip per second, newest last. */
  private readonly baseBuckets: Array<{ second: number; minMs: number }> = [];

  constructor(private readonly settings: ThrottleSettings) {
    assert(settings.floorBytesPerSec > 0 && settings.floorBytesPerSec <= settings.ceilingBytesPerSec, `resync floor ${settings.floorBytesPerSec} must be within (0, ceiling ${settings.ceilingBytesPerSec}]`);
    this.rate = settings.ceilingBytesPerSec;
  }

  /** A host write arrived. */
  hostWrite(nowMs: number): void {
    if (!this.yielding(nowMs)) {
      // Host I/O after a quiet spell: yield at once, then earn the rate back.
      this.rate = this.settings.floorBytesPerSec;
      this.stepStartMs = nowMs;
      this.samples = [];
    }
    this.lastHostMs = nowMs;
  }

  /** A host write mirrored to the peer being resynced came back acknowledged after `rttMs`. */
  roundTrip(nowMs: number, rttMs: number): void {
    const second = Math.floor(nowMs / 1000);
    const last = this.baseBuckets.at(-1);
    if (last !== undefined && last.second === second) last.minMs = Math.min(last.minMs, rttMs);
    else {
      this.baseBuckets.push({ second, minMs: rttMs });
      if (this.baseBuckets.length > BASE_BUCKETS) this.baseBuckets.shift();
    }
    if (this.yielding(nowMs)) this.samples.push(rttMs);
  }

  /** Host writes arrived within the quiet time: the resync yields. */
  yielding(nowMs: number): boolean {
    return nowMs - this.lastHostMs < THROTTLE_QUIET_MS;
  }

  /** The rate allowed now (bytes per second); takes the control steps due. */
  rateAt(nowMs: number): number {
    if (!this.yielding(nowMs)) return (this.rate = this.settings.ceilingBytesPerSec);
    // One step per call: a step decides on the samples since the last, however long ago.
    if (nowMs - this.stepStartMs >= THROTTLE_STEP_MS) {
      this.step();
      this.stepStartMs = nowMs;
    }
    return this.rate;
  }

  /** Chunk size and reads in flight now. */
  shape(nowMs: number, full: { chunkBytes: number; windowChunks: number }): { chunkBytes: number; windowChunks: number } {
    if (!this.yielding(nowMs)) return full;
    return { chunkBytes: Math.min(full.chunkBytes, this.settings.yieldChunkBytes), windowChunks: Math.min(full.windowChunks, this.settings.yieldWindowChunks) };
  }

  private step(): void {
    const samples = this.samples;
    this.samples = [];
    const { floorBytesPerSec: floor, ceilingBytesPerSec: ceiling } = this.settings;
    if (samples.length === 0) return; // nothing learned: hold
    samples.sort((x, y) => x - y);
    const median = samples[Math.floor(samples.length / 2)]!;
    const base = Math.min(...this.baseBuckets.map((b) => b.minMs));
    const queueMs = median - base;
    if (queueMs > Math.max(TARGET_QUEUE_MS, base / 2)) this.rate = Math.max(floor, this.rate / 2);
    else this.rate = Math.min(ceiling, this.rate + ceiling / 16);
  }
}
