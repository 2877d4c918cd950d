// A resync that yields to host writes (issue 14 item 6). DRBD's dynamic resync controller is the
// reference: with no application I/O its resync runs at c-max-rate; with application I/O it holds
// a fill target of resync data in flight and never drops below c-min-rate. Ours steers on what
// the resync actually costs the host: the round trip of the host's own mirrored writes to the peer
// being resynced. Resync chunks queue on the same ordered link, are applied by the same event
// loops and hardened to the same disks as those writes, so when they delay the host, that round
// trip grows. The target is on the tail (the is host p99 ≤ 2× its p99 without a resync):
// a median hardly moves while the resync adds the stalls that make a p99.
//
// The tail without the resync is measured, not guessed: the resync pauses for a probe step
// (BBR's ProbeRTT, in spirit) when host writes start and every few seconds after, and the 90th
// percentile of the round trips in that pause is the base. Then, one step every THROTTLE_STEP_MS:
// - the step's 90th percentile is within 1.5× the base (plus a small allowance): the rate grows
//   by a thirty-second of the ceiling;
// - it is above: the rate halves, down to the floor (`syncMinRate`), never below;
// - while yielding, chunks are at most `yieldChunkBytes`, `yieldWindowChunks` in flight, so no large chunk sits
//   ahead of a host write on the link;
// - no host write for THROTTLE_QUIET_MS: full speed (`syncRate`, the ceiling), full chunks.
// A step with too few round trips to judge (a light host load) holds the rate.
//
// Pure: time is passed in, and the samples come from the core's ack path.
import { assert } from './assert.js';

export interface ThrottleSettings {
  /** syncRate: the rate with no host writes, and the most it may ever use. */
  ceilingBytesPerSec: number;
  /** syncMinRate: outside its probes, a yielding resync runs at least this fast (DRBD's c-min-rate). */
  floorBytesPerSec: number;
  /** The chunk size while yielding; full chunks otherwise. */
  yieldChunkBytes: number;
  /** Reads in flight while yielding. */
  yieldWindowChunks: number;
}

/** Control step, and how long without a host write means "no host I/O". */
export const THROTTLE_STEP_MS = 100;
export const THROTTLE_QUIET_MS = 500;
/** A probe (the resync paused to measure the host's round trip without it) this often, for one step. */
export const THROTTLE_PROBE_EVERY_MS = 3000;
/** Round trips a step needs before it is judged. */
const MIN_SAMPLES = 8;
/** The tail the resync may cause: the base's 90th percentile times this, plus the allowance. */
const TAIL_FACTOR = 1.5;
const TAIL_ALLOWANCE_MS = 0.05;

type Phase = 'probe' | 'run';

export class ResyncThrottle {
  private rate: number;
  /** The rate to go back to after a probe. */
  private runRate: number;
  private phase: Phase = 'run';
  private lastHostMs = -Infinity;
  private stepStartMs = -Infinity;
  private lastProbeMs = -Infinity;
  private samples: number[] = [];
  /** The 90th percentile of the round trip in the last probe (the resync paused); null: none yet. */
  private baseP90Ms: number | null = null;

  constructor(private readonly settings: ThrottleSettings) {
    assert(settings.floorBytesPerSec > 0 && settings.floorBytesPerSec <= settings.ceilingBytesPerSec, `resync floor ${settings.floorBytesPerSec} must be within (0, ceiling ${settings.ceilingBytesPerSec}]`);
    this.rate = settings.ceilingBytesPerSec;
    this.runRate = settings.floorBytesPerSec;
  }

  /** A host write arrived. */
  hostWrite(nowMs: number): void {
    if (!this.yielding(nowMs)) {
      // Host I/O after a quiet spell: measure the host without the resync, then start at the floor.
      this.runRate = this.settings.floorBytesPerSec;
      this.startProbe(nowMs);
    }
    this.lastHostMs = nowMs;
  }

  /** A host write mirrored to the peer being resynced came back acknowledged after `rttMs`. */
  roundTrip(nowMs: number, rttMs: number): void {
    if (this.yielding(nowMs)) this.samples.push(rttMs);
  }

  /** Host writes arrived within the quiet time: the resync yields. */
  yielding(nowMs: number): boolean {
    return nowMs - this.lastHostMs < THROTTLE_QUIET_MS;
  }

  /** The rate allowed now (bytes per second; 0 during a probe); takes the control step due. */
  rateAt(nowMs: number): number {
    if (!this.yielding(nowMs)) return (this.rate = this.settings.ceilingBytesPerSec);
    // One step per call: a step decides on the samples since the last, however long ago.
    if (nowMs - this.stepStartMs >= THROTTLE_STEP_MS) this.step(nowMs);
    return this.rate;
  }

  /** The rate allowed now, as rateAt would answer it, without taking a step (status reads this). */
  currentRate(nowMs: number): number {
    return this.yielding(nowMs) ? this.rate : this.settings.ceilingBytesPerSec;
  }

  /** While a probe pauses the resync: when it ends (the next read waits for it); else null. */
  pausedUntilMs(nowMs: number): number | null {
    return this.yielding(nowMs) && this.phase === 'probe' ? this.stepStartMs + THROTTLE_STEP_MS : null;
  }

  /** Chunk size and reads in flight now. */
  shape(nowMs: number, full: { chunkBytes: number; windowChunks: number }): { chunkBytes: number; windowChunks: number } {
    if (!this.yielding(nowMs)) return full;
    return { chunkBytes: Math.min(full.chunkBytes, this.settings.yieldChunkBytes), windowChunks: Math.min(full.windowChunks, this.settings.yieldWindowChunks) };
  }

  private startProbe(nowMs: number): void {
    this.phase = 'probe';
    this.rate = 0;
    this.stepStartMs = nowMs;
    this.lastProbeMs = nowMs;
    this.samples = [];
  }

  private step(nowMs: number): void {
    const samples = this.samples;
    if (samples.length < MIN_SAMPLES && this.phase === 'run') {
      // Too little to judge: hold, and keep collecting (a probe ends anyway, below).
      this.stepStartMs = nowMs;
      return;
    }
    this.samples = [];
    const p90 = samples.length === 0 ? null : percentile90(samples);
    if (this.phase === 'probe') {
      if (p90 !== null && samples.length >= MIN_SAMPLES) this.baseP90Ms = p90;
      this.phase = 'run';
      this.rate = this.runRate;
    } else if (this.baseP90Ms !== null && p90 !== null) {
      const { floorBytesPerSec: floor, ceilingBytesPerSec: ceiling } = this.settings;
      const over = p90 > this.baseP90Ms * TAIL_FACTOR + TAIL_ALLOWANCE_MS;
      this.rate = over ? Math.max(floor, this.rate / 2) : Math.min(ceiling, this.rate + ceiling / 32);
    }
    this.stepStartMs = nowMs;
    if (this.phase === 'run' && nowMs - this.lastProbeMs >= THROTTLE_PROBE_EVERY_MS) {
      this.runRate = this.rate;
      this.startProbe(nowMs);
    }
  }
}

function percentile90(samples: number[]): number {
  samples.sort((x, y) => x - y);
  return samples[Math.min(samples.length - 1, Math.floor(samples.length * 0.9))]!;
}
