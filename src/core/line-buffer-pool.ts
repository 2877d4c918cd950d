// Full-track buffers and line objects for cache lines, reused (part of the track cache,
// src/core/cache.ts). Pure.
//
// Allocating and dropping a 64 KiB buffer per line made the garbage collector the p99 of every
// write (docs/benchmarks.md), so evicted lines give their buffers back here and new lines take
// them. Line bytes never leave the cache by reference (reads and hardening copy them), so reuse is
// safe. A reused buffer holds stale bytes: the cache zero-fills what it needs zeroed.

import { BLOCK_SIZE_BYTES, type TrackLine } from './cache-types.js';

export class LineBufferPool {
  private readonly buffers: Buffer[] = [];

  /**
   * `lineBytes`: the full-track size (only buffers of that size are pooled); `maxPooledBytes`:
   * evictions come in bursts right before the same number of new lines, so a quarter of the cache
   * is plenty, and bounds what the pool holds beyond the cache itself.
   */
  constructor(private readonly lineBytes: number, private readonly maxPooledBytes: number) {}

  take(lengthBytes: number): Buffer {
    if (lengthBytes === this.lineBytes) {
      const pooled = this.buffers.pop();
      if (pooled !== undefined) return pooled;
    }
    // Touch every page of a new buffer once, now. A new buffer is untouched memory and a small
    // write faults in only its own page, so the buffer went round the pool with most pages still
    // untouched and random 4 KiB writes kept faulting long after start: fillLine was 15% of the
    // primary's time on 4 KiB QD32, ~49 µs per write (a first touch costs ~4 ms per MiB on this
    // VM; docs/benchmarks.md). Now each buffer faults in once, at most one cache's worth.
    // (Buffer.alloc would not do: calloc may hand back untouched zero pages.)
    return Buffer.allocUnsafe(lengthBytes).fill(0);
  }

  give(data: Buffer | null): void {
    if (data !== null && data.length === this.lineBytes && this.buffers.length * data.length < this.maxPooledBytes) this.buffers.push(data);
  }
}

/**
 * Evicted full-track lines, arrays and all, reset for the next track: a random-write load evicts
 * one line per write, and lines live long enough to be promoted, so a fresh one per write kept the
 * old-space GC busy (docs/benchmarks.md, "CPU per I/O"). Bounded like the buffer pool.
 */
export class SpareLines {
  private readonly lines: TrackLine[] = [];

  constructor(private readonly lineBytes: number, private readonly maxLines: number) {}

  /** A clean, empty line holding no data buffer: an evicted one reset, or a new one. */
  take(track: number, lengthBytes: number, chargeBytes: number): TrackLine {
    const spare = lengthBytes === this.lineBytes ? this.lines.pop() : undefined;
    if (spare === undefined) {
      const blocks = lengthBytes / BLOCK_SIZE_BYTES;
      return {
        track, lengthBytes, data: null, valid: new Uint8Array(blocks), dirty: new Uint8Array(blocks),
        dirtyBlocks: 0, dirtySeq: 0, dirtySinceMs: 0, rewritten: null, rewrittenSpare: new Uint8Array(blocks), hardenBuffer: null,
        rewrittenSeq: 0, rewrittenSinceMs: 0, chargeBytes,
      };
    }
    spare.track = track;
    spare.valid.fill(0);
    spare.dirty.fill(0);
    spare.dirtyBlocks = 0;
    spare.dirtySeq = 0;
    spare.dirtySinceMs = 0;
    spare.rewrittenSeq = 0;
    spare.rewrittenSinceMs = 0;
    spare.chargeBytes = chargeBytes;
    return spare;
  }

  /** An evicted line (no data buffer, not hardening). */
  give(line: TrackLine): void {
    if (line.lengthBytes === this.lineBytes && this.lines.length < this.maxLines) this.lines.push(line);
  }
}
