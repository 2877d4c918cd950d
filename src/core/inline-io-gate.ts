// Whether a file store may do a small read with a plain pread on the event loop's own thread, or
// must hand it to libuv's thread pool (src/store/file-store.ts).
//
// Why inline at all: a read the page cache holds costs a few µs as a pread, while the pool costs a
// request, a pool thread's wake-up and a completion callback: a bare Node.js NBD server reading a
// file through the pool reaches 0.48x `nbdkit file` on 4 KiB random reads, with preads on its own
// thread 1.26x (`npm run bench -- --floor`, docs/benchmarks.md).
//
// Why a gate: a read the page cache does not hold waits for the device, and the event loop is the
// thread that answers every host (and, on a primary, acknowledges writes into RAM). Worse, reads
// done one after another on one thread lose the device's parallelism (a QD32 load becomes QD1).
// So every inline read is timed. A device read is slower than `slowMs` (a page-cache copy is not),
// but so is now and then a copy whose thread the scheduler preempted (2 cores, fio beside us): the
// gate closes when `windowSlowLimit` of the last `windowOps` inline reads were slow, or on a read
// slower than `hardSlowMs` that is not the only slow one of its window, for a backoff that doubles
// while it keeps closing (up to `maxBackoffMs`) and starts over at `minBackoffMs` once it stays
// open for `forgetAfterMs`. Not on one lone read over `hardSlowMs`: a preemption makes one read
// that slow, and the reads after it are fast again, while a disk that slow is slow for every
// read (`npm run bench -- --floor`, docs/benchmarks.md: each of the 4 closes in one random-read row
// came from one such read among 1.4 million, 0.09% of them slow at all). With
// a volume larger than RAM the gate is then mostly closed (at most one window of device reads
// per `maxBackoffMs` on this thread); with the data in the page cache it stays open.
//
// Pure: time is passed in (DESIGN.md "pure core").
import { assert } from './assert.js';

export interface InlineIoGateSettings {
  /** An inline operation slower than this probably did not only copy from the page cache. */
  slowMs: number;
  /** ...and one slower than this surely did not, or was preempted: with another slow one in the window, the gate closes. */
  hardSlowMs: number;
  /** The gate closes when windowSlowLimit of the last windowOps operations were slow. */
  windowOps: number;
  windowSlowLimit: number;
  minBackoffMs: number;
  maxBackoffMs: number;
  /** A close this long after the previous one starts the backoff over at minBackoffMs. */
  forgetAfterMs: number;
  /** Larger operations always go to the pool (their copy alone takes a while). */
  maxInlineBytes: number;
}

export const DEFAULT_INLINE_READ_GATE: InlineIoGateSettings = {
  slowMs: 0.1,
  hardSlowMs: 2,
  windowOps: 64,
  windowSlowLimit: 8,
  minBackoffMs: 100,
  maxBackoffMs: 10_000,
  forgetAfterMs: 30_000,
  maxInlineBytes: 64 * 1024,
};

export class InlineIoGate {
  private openAtMs = 0;
  private backoffMs = 0;
  private lastCloseAtMs = Number.NEGATIVE_INFINITY;
  private windowCount = 0;
  private windowSlow = 0;
  /** Operations done inline, slow ones among them, times the gate closed, and of those the closes on an operation slower than hardSlowMs (status reads them). */
  inline = 0;
  slow = 0;
  closes = 0;
  hardCloses = 0;

  constructor(readonly settings: InlineIoGateSettings = DEFAULT_INLINE_READ_GATE) {
    const s = settings;
    assert(s.slowMs > 0 && s.hardSlowMs >= s.slowMs && s.windowSlowLimit >= 1 && s.windowOps >= s.windowSlowLimit, 'inline I/O gate: bad slow thresholds');
    assert(s.minBackoffMs > 0 && s.maxBackoffMs >= s.minBackoffMs && s.maxInlineBytes > 0, 'inline I/O gate: bad settings');
  }

  /** May an operation of this size run inline now? */
  allows(lengthBytes: number, nowMs: number): boolean {
    return lengthBytes <= this.settings.maxInlineBytes && nowMs >= this.openAtMs;
  }

  /** When the gate opens again (a past time: open). */
  get closedUntilMs(): number {
    return this.openAtMs;
  }

  /** An inline operation took `durationMs`, ending at `nowMs`. */
  done(durationMs: number, nowMs: number): void {
    const s = this.settings;
    this.inline++;
    this.windowCount++;
    if (durationMs > s.slowMs) {
      this.slow++;
      this.windowSlow++;
    }
    const hardClose = durationMs > s.hardSlowMs && this.windowSlow >= 2;
    if (hardClose) this.hardCloses++;
    if (hardClose || this.windowSlow >= s.windowSlowLimit) return this.close(nowMs);
    if (this.windowCount >= s.windowOps) this.windowCount = this.windowSlow = 0;
  }

  private close(nowMs: number): void {
    const { minBackoffMs, maxBackoffMs, forgetAfterMs } = this.settings;
    this.closes++;
    this.backoffMs = nowMs - this.lastCloseAtMs > forgetAfterMs ? minBackoffMs : Math.min(maxBackoffMs, 2 * this.backoffMs);
    this.lastCloseAtMs = nowMs;
    this.openAtMs = nowMs + this.backoffMs;
    this.windowCount = this.windowSlow = 0;
  }
}
