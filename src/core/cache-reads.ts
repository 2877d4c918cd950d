// The read side of the track cache (src/core/cache.ts): read plans, read pins, the overlay of
// cached blocks on the store's bytes, sequential readahead, and the fill of the cache with what a
// host read took from the store (issue 11, reads). Pure.
//
// A read runs in two steps around the shell's store I/O: beginRead says which runs the store must
// supply and pins the tracks they touch; finishRead overlays every block the cache holds (newer
// than or equal to the store's), fills the cache with the rest if it is a host read, and unpins.
// The pins matter twice: a line hardened during the read stays, so its bytes overlay the store's;
// and no line is evicted and refilled from bytes the store held before that line was hardened.
import { assert } from './assert.js';
import { BLOCK_SIZE_BYTES, type CacheGeometry, type ReadCounters, type ReadPlan, type TrackLine } from './cache-types.js';

/**
 * How far a sequential host read reads ahead (more is read once half of it has been consumed), or
 * an eighth of a smaller cache: tiny caches (tests, the simulator) read ahead too.
 */
const READAHEAD_BYTES = 256 * 1024;

/** What the read side needs of the cache's lines. */
export interface CacheLines {
  readonly geometry: CacheGeometry;
  line(track: number): TrackLine | undefined;
  /** Whether reads may fill `aheadBytes` more now (no write waits for room, dirty data leaves room). */
  mayFillReads(aheadBytes: number): boolean;
  /** Fills the blocks of [fromBytes, toBytes) of one track the cache does not hold; false: no room. */
  fillTrack(track: number, fromBytes: number, toBytes: number, bytes: Buffer): boolean;
}

type StoreRun = { offsetBytes: number; lengthBytes: number };

export class CacheReads {
  /** Tracks with reads in flight: their lines must not be evicted (the store may be stale). */
  private readonly pins = new Map<number, number>();
  /** Where the last host read ended: a host read starting there is sequential (readahead). */
  private nextSequentialBytes = -1;
  private readonly readaheadBytes: number;
  /** Host reads so far (metrics: twinblock_read_bytes_total, twinblock_readahead_bytes_total). */
  readonly counters: ReadCounters = { cacheBytes: 0, storeBytes: 0, readaheadBytes: 0 };

  constructor(private readonly lines: CacheLines) {
    const eighth = Math.floor(lines.geometry.capacityBytes / 8 / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
    this.readaheadBytes = Math.max(BLOCK_SIZE_BYTES, Math.min(READAHEAD_BYTES, eighth));
  }

  isPinned(track: number): boolean {
    return this.pins.has(track);
  }

  /**
   * Starts a read: returns the runs the store must supply. The shell reads them, then calls
   * finishRead. A host read (`hostRead`) may add a readahead run past the request.
   */
  beginRead(offsetBytes: number, lengthBytes: number, hostRead: boolean): ReadPlan {
    const endBytes = offsetBytes + lengthBytes;
    const storeRuns: StoreRun[] = [];
    this.addStoreRuns(storeRuns, offsetBytes, endBytes);
    let planEndBytes = Math.max(endBytes, offsetBytes + 1);
    if (hostRead) {
      const aheadEnd = this.readaheadEnd(offsetBytes, endBytes);
      if (aheadEnd > endBytes) {
        this.addStoreRuns(storeRuns, endBytes, aheadEnd);
        planEndBytes = aheadEnd;
      }
      this.nextSequentialBytes = endBytes;
    }
    const { trackSizeBytes } = this.lines.geometry;
    const firstTrack = Math.floor(offsetBytes / trackSizeBytes);
    const lastTrack = Math.floor((planEndBytes - 1) / trackSizeBytes);
    // Pinned even when the cache holds it all: the shell then finishes in the same step, but a
    // plan finished later must still find the lines it counted on (cache property test).
    for (let t = firstTrack; t <= lastTrack; t++) this.pins.set(t, (this.pins.get(t) ?? 0) + 1);
    const { requestBytes, aheadBytes } = storeBytesOfRuns(storeRuns, endBytes);
    if (hostRead) {
      this.counters.storeBytes += requestBytes;
      this.counters.cacheBytes += lengthBytes - requestBytes;
      this.counters.readaheadBytes += aheadBytes;
    }
    return { offsetBytes, lengthBytes, storeRuns, firstTrack, lastTrack, fill: hostRead, aheadBytes };
  }

  /**
   * Completes a read: `storeData[i]` holds the bytes of `plan.storeRuns[i]`. Valid cache blocks
   * overlay them; a host read's store bytes then fill the blocks still not cached; the pins go.
   */
  finishRead(plan: ReadPlan, storeData: Buffer[]): Buffer {
    plan.storeRuns.forEach((run, i) => assert(storeData[i]?.length === run.lengthBytes, 'store returned a short read'));
    const out = this.assemble(plan, storeData);
    this.overlay(plan, out);
    // After the overlay, in the same step: the overlay wrote only blocks the cache holds, the fill
    // takes only blocks it does not (`out` may be a view of storeData[0]).
    if (plan.fill) this.fill(plan, storeData);
    this.cancelRead(plan);
    return out;
  }

  /** A read whose store I/O failed (or that finished): release its pins. */
  cancelRead(plan: ReadPlan): void {
    for (let t = plan.firstTrack; t <= plan.lastTrack; t++) {
      const pins = (this.pins.get(t) ?? 1) - 1;
      if (pins === 0) this.pins.delete(t);
      else this.pins.set(t, pins);
    }
  }

  /** Appends the runs of [fromBytes, toBytes) that the cache does not hold (merging neighbours). */
  private addStoreRuns(runs: StoreRun[], fromBytes: number, toBytes: number): void {
    for (let pos = fromBytes; pos < toBytes; pos += BLOCK_SIZE_BYTES) {
      if (this.isBlockValid(pos)) continue;
      const last = runs[runs.length - 1];
      if (last !== undefined && last.offsetBytes + last.lengthBytes === pos) last.lengthBytes += BLOCK_SIZE_BYTES;
      else runs.push({ offsetBytes: pos, lengthBytes: BLOCK_SIZE_BYTES });
    }
  }

  private isBlockValid(posBytes: number): boolean {
    const { trackSizeBytes } = this.lines.geometry;
    const track = Math.floor(posBytes / trackSizeBytes);
    return this.lines.line(track)?.valid[(posBytes - track * trackSizeBytes) / BLOCK_SIZE_BYTES] === 1;
  }

  /**
   * Where a host read over [offsetBytes, endBytes) reads ahead to: past the request when it
   * continues the previous one and the block half a window ahead is not cached yet (a stream
   * reads ahead once per half window, not on every request), while reads may fill; else endBytes.
   */
  private readaheadEnd(offsetBytes: number, endBytes: number): number {
    const { volumeSizeBytes } = this.lines.geometry;
    const aheadBytes = this.readaheadBytes;
    if (offsetBytes !== this.nextSequentialBytes || !this.lines.mayFillReads(aheadBytes)) return endBytes;
    const probe = endBytes + Math.floor(aheadBytes / 2 / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
    if (probe >= volumeSizeBytes || this.isBlockValid(probe)) return endBytes;
    return Math.min(volumeSizeBytes, endBytes + aheadBytes);
  }

  /** The request's bytes from the store runs (blocks the cache holds are overlaid after). */
  private assemble(plan: ReadPlan, storeData: Buffer[]): Buffer {
    const first = plan.storeRuns[0];
    // The common miss (nothing cached in the span) reuses the store's buffer: no extra copy.
    if (first !== undefined && first.offsetBytes === plan.offsetBytes && first.lengthBytes >= plan.lengthBytes) {
      return storeData[0]!.subarray(0, plan.lengthBytes);
    }
    const out = Buffer.allocUnsafe(plan.lengthBytes);
    const endBytes = plan.offsetBytes + plan.lengthBytes;
    plan.storeRuns.forEach((run, i) => {
      const to = Math.min(endBytes, run.offsetBytes + run.lengthBytes);
      if (run.offsetBytes < endBytes) storeData[i]!.copy(out, run.offsetBytes - plan.offsetBytes, 0, to - run.offsetBytes);
    });
    return out;
  }

  /** Copies every valid cached block inside the request's span into `out`. */
  private overlay(plan: ReadPlan, out: Buffer): void {
    const { trackSizeBytes } = this.lines.geometry;
    const endBytes = plan.offsetBytes + plan.lengthBytes;
    for (let t = plan.firstTrack; t <= plan.lastTrack; t++) {
      const line = this.lines.line(t);
      if (line === undefined) continue;
      const lineStart = t * trackSizeBytes;
      const from = Math.max(plan.offsetBytes, lineStart);
      const to = Math.min(endBytes, lineStart + line.lengthBytes);
      let runStart = -1;
      for (let pos = from; pos <= to; pos += BLOCK_SIZE_BYTES) {
        const isValid = pos < to && line.valid[(pos - lineStart) / BLOCK_SIZE_BYTES] === 1;
        if (isValid && runStart < 0) runStart = pos;
        if (!isValid && runStart >= 0) {
          copyOut(line, runStart - lineStart, pos - runStart, out, runStart - plan.offsetBytes);
          runStart = -1;
        }
      }
    }
  }

  /**
   * Keeps a host read's store bytes in the cache, track by track while there is free room (a fill
   * evicts nothing; CacheLines.fillTrack). The plan's tracks are still pinned here.
   */
  private fill(plan: ReadPlan, storeData: Buffer[]): void {
    const { trackSizeBytes } = this.lines.geometry;
    for (let i = 0; i < plan.storeRuns.length; i++) {
      const run = plan.storeRuns[i]!;
      const runEnd = run.offsetBytes + run.lengthBytes;
      for (let pos = run.offsetBytes; pos < runEnd;) {
        const track = Math.floor(pos / trackSizeBytes);
        const chunkEnd = Math.min(runEnd, (track + 1) * trackSizeBytes);
        if (!this.lines.fillTrack(track, pos, chunkEnd, storeData[i]!.subarray(pos - run.offsetBytes, chunkEnd - run.offsetBytes))) return;
        pos = chunkEnd;
      }
    }
  }
}

/** Bytes store runs read for a request ending at endBytes, and past it (readahead). */
function storeBytesOfRuns(runs: readonly StoreRun[], endBytes: number): { requestBytes: number; aheadBytes: number } {
  let requestBytes = 0;
  let aheadBytes = 0;
  for (const run of runs) {
    const inRequest = Math.max(0, Math.min(run.offsetBytes + run.lengthBytes, endBytes) - run.offsetBytes);
    requestBytes += inRequest;
    aheadBytes += run.lengthBytes - inRequest;
  }
  return { requestBytes, aheadBytes };
}

function copyOut(line: TrackLine, startInLine: number, lengthBytes: number, out: Buffer, outOffset: number): void {
  if (line.data === null) out.fill(0, outOffset, outOffset + lengthBytes);
  else line.data.copy(out, outOffset, startInLine, startInLine + lengthBytes);
}
