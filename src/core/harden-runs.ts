// Harden runs: the store writes a harden job is made of (src/core/cache.ts), and how a job's
// lines become runs. Pure.
import { BLOCK_SIZE_BYTES, type HardenRun, type TrackLine } from './cache-types.js';

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
 * The dirty runs of `lines` (sorted by track), coalesced into store writes: one pass, no
 * intermediate objects (a random 4 KiB load builds one run per write on both nodes).
 */
export function snapshotRuns(lines: readonly TrackLine[], trackSizeBytes: number): HardenRun[] {
  const runs: HardenRun[] = [];
  let runOffset = -1;
  let runEnd = -1;
  let runBuffers: Buffer[] | null = null;
  let runIsZero = false;
  for (const line of lines) {
    const lineStart = line.track * trackSizeBytes;
    const isZero = line.data === null;
    for (let b = 0; b < line.dirty.length;) {
      if (line.dirty[b] === 0) { b++; continue; }
      let e = b;
      while (e < line.dirty.length && line.dirty[e] === 1) e++;
      const offsetBytes = lineStart + b * BLOCK_SIZE_BYTES;
      const endBytes = lineStart + e * BLOCK_SIZE_BYTES;
      // No copy: the views stay valid because a write to a hardening line copies the line first.
      const view = isZero ? null : (line.data as Buffer).subarray(b * BLOCK_SIZE_BYTES, e * BLOCK_SIZE_BYTES);
      if (offsetBytes === runEnd && isZero === runIsZero) {
        runEnd = endBytes;
        if (view !== null) runBuffers!.push(view);
      } else {
        if (runOffset >= 0) runs.push(hardenRun(runOffset, runEnd - runOffset, runBuffers));
        runOffset = offsetBytes;
        runEnd = endBytes;
        runIsZero = isZero;
        runBuffers = view === null ? null : [view];
      }
      b = e;
    }
  }
  if (runOffset >= 0) runs.push(hardenRun(runOffset, runEnd - runOffset, runBuffers));
  return runs;
}
