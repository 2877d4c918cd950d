// Harden runs: the store writes a harden job is made of (src/core/cache.ts), the lines it is
// chosen from, and how those lines become runs. Pure.
import { BLOCK_SIZE_BYTES, type HardenRun, type TrackLine } from './cache-types.js';

/** The lines a harden job is being built from, up to a byte budget. */
export class JobChoice {
  readonly lines: TrackLine[] = [];
  bytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** Adds a line; true once the job holds its budget. */
  add(line: TrackLine): boolean {
    this.lines.push(line);
    this.bytes += line.dirtyBlocks * BLOCK_SIZE_BYTES;
    return this.bytes >= this.maxBytes;
  }
}

export function hardenRun(offsetBytes: number, lengthBytes: number, buffers: Buffer[] | null): HardenRun {
  return new Run(offsetBytes, lengthBytes, buffers);
}

/** A class, not an object literal with a getter: one allocation per run, no closure. */
class Run implements HardenRun {
  constructor(readonly offsetBytes: number, readonly lengthBytes: number, readonly buffers: Buffer[] | null) {}

  get data(): Buffer | null {
    const { buffers } = this;
    return buffers === null ? null : buffers.length === 1 ? buffers[0]! : Buffer.concat(buffers, this.lengthBytes);
  }
}

/**
 * The longest clean gap between two dirty runs that a store write spans, within a line or across
 * the boundary of two neighbouring lines of one job. Its blocks must be valid: the cache holds
 * their current bytes, so writing them again changes nothing on the store. Random 4 KiB writes
 * leave a line with a few dirty runs between clean blocks when the destage scan comes (seed
 * Fig. 5; ~6 of 16 4 KiB blocks at 24,000 writes/s over 256 MiB), and a store write costs a
 * syscall on a pool thread and a callback on the event loop whatever its size, where the gap
 * costs a copy into the page cache (docs/benchmarks.md, "Spanning clean gaps").
 */
export const SPAN_GAP_MAX_BYTES = 32 * 1024;

/**
 * The dirty runs of `lines` (sorted by track), coalesced into store writes: one pass, no
 * intermediate objects (a random 4 KiB load builds one run per write on both nodes). A run
 * spans a valid clean gap of at most `spanGapMaxBytes` to the next dirty run, in its line or in
 * the next track's line when that is in the job too (a track in no job, or in another one, is
 * never written: the store must not see two writes of one block at once).
 */
export function snapshotRuns(lines: readonly TrackLine[], trackSizeBytes: number, spanGapMaxBytes = SPAN_GAP_MAX_BYTES): HardenRun[] {
  const runs: HardenRun[] = [];
  const spanGapBlocks = Math.floor(spanGapMaxBytes / BLOCK_SIZE_BYTES);
  let runOffset = -1;
  let runEnd = -1;
  let runBuffers: Buffer[] | null = null;
  let runIsZero = false;
  /** The line the current run ends in. */
  let runLine: TrackLine | null = null;
  for (const line of lines) {
    const lineStart = line.track * trackSizeBytes;
    const isZero = line.data === null;
    const { dirty, valid } = line;
    for (let b = 0; b < dirty.length;) {
      if (dirty[b] === 0) { b++; continue; }
      const e = spannedEnd(dirty, valid, b, spanGapBlocks);
      const endBytes = lineStart + e * BLOCK_SIZE_BYTES;
      const tailFrom = runLine?.track === line.track - 1 && isZero === runIsZero ? (runEnd - (lineStart - trackSizeBytes)) / BLOCK_SIZE_BYTES : -1;
      if (tailFrom >= 0 && spansBoundary(runLine!, tailFrom, line, b, spanGapBlocks)) {
        // No copy: views stay valid because a write to a hardening line copies the line first.
        if (!isZero) {
          if (tailFrom < runLine!.dirty.length) runBuffers!.push((runLine!.data as Buffer).subarray(tailFrom * BLOCK_SIZE_BYTES));
          runBuffers!.push((line.data as Buffer).subarray(0, e * BLOCK_SIZE_BYTES));
        }
      } else {
        if (runOffset >= 0) runs.push(hardenRun(runOffset, runEnd - runOffset, runBuffers));
        runOffset = lineStart + b * BLOCK_SIZE_BYTES;
        runIsZero = isZero;
        runBuffers = isZero ? null : [(line.data as Buffer).subarray(b * BLOCK_SIZE_BYTES, e * BLOCK_SIZE_BYTES)];
      }
      runEnd = endBytes;
      runLine = line;
      b = e;
    }
  }
  if (runOffset >= 0) runs.push(hardenRun(runOffset, runEnd - runOffset, runBuffers));
  return runs;
}

/**
 * End (exclusive) of the store write that starts at dirty block `first`: its dirty run, extended
 * over each following gap of valid clean blocks no longer than `spanGapBlocks` that ends at
 * another dirty block of the line. It always ends on a dirty block.
 */
function spannedEnd(dirty: Uint8Array, valid: Uint8Array, first: number, spanGapBlocks: number): number {
  let e = first;
  for (;;) {
    while (e < dirty.length && dirty[e] === 1) e++;
    let next = e;
    while (next < dirty.length && dirty[next] === 0 && valid[next] === 1 && next - e < spanGapBlocks) next++;
    if (next === e || next === dirty.length || dirty[next] === 0) return e;
    e = next;
  }
}

/**
 * True when a run ending at block `tailFrom` of `prev` may go on to the dirty block `headEnd` of
 * `line`, the next track: every block between is valid (they are clean: each run ends on its
 * line's last dirty block, and `headEnd` is the line's first) and there are at most
 * `spanGapBlocks` of them. Runs that touch (no gap) always merge.
 */
function spansBoundary(prev: TrackLine, tailFrom: number, line: TrackLine, headEnd: number, spanGapBlocks: number): boolean {
  if (prev.dirty.length - tailFrom + headEnd > spanGapBlocks) return false;
  for (let b = tailFrom; b < prev.dirty.length; b++) if (prev.valid[b] === 0) return false;
  for (let b = 0; b < headEnd; b++) if (line.valid[b] === 0) return false;
  return true;
}
