// Small writes of one event-loop turn to a corked socket, packed into one buffer that goes to the
// socket in one write: link frames up to 16 KiB (src/link/connection.ts) and NBD simple replies
// (src/nbd/server.ts). At 4 KiB QD32 a link write frame was three socket writes (header, the
// host's data, trailer: a stream entry and a view each, and the payload held until its write
// completed), every ack one more, and every NBD reply a buffer and a write of its own; copying
// a small frame's bytes costs less than that. Bigger frames still go out as their pieces.

import { assert, assertionFailed } from '../core/assert.js';

/** The largest frame a link copies into its batch. */
export const BATCHED_FRAME_MAX_BYTES = 16 * 1024;
const BATCH_BYTES = 64 * 1024;
/**
 * Batch buffers the socket is done with, reused: fresh memory costs this VM a page fault per
 * page on first touch (docs/benchmarks.md, "Socket input into reused memory").
 */
const spareBuffers: Buffer[] = [];
const MAX_SPARE_BUFFERS = 16;

export class WriteBatch {
  private current: Buffer | null = null;
  private usedBytes = 0;

  /** `write` hands bytes to the socket and calls `written` once it no longer needs them. */
  constructor(private readonly write: (bytes: Buffer, written: () => void) => void) {}

  /** Bytes packed and not yet written. */
  get bytes(): number {
    return this.usedBytes;
  }

  /**
   * Room for `lengthBytes` (at most 64 KiB) more: returns where in `target` they go. A batch
   * without the room is written first.
   */
  reserve(lengthBytes: number): number {
    if (lengthBytes > BATCH_BYTES) assertionFailed(`a ${lengthBytes}-byte write is too big to batch`);
    if (this.current !== null && this.usedBytes + lengthBytes > this.current.length) this.flush();
    this.current ??= spareBuffers.pop() ?? Buffer.allocUnsafeSlow(BATCH_BYTES);
    const at = this.usedBytes;
    this.usedBytes += lengthBytes;
    return at;
  }

  /** The buffer being filled (after reserve). */
  get target(): Buffer {
    assert(this.current !== null, 'nothing reserved in the batch');
    return this.current;
  }

  /** Copies a frame's pieces in (frameBytes, their total, at most BATCHED_FRAME_MAX_BYTES). */
  add(pieces: readonly Buffer[], frameBytes: number): void {
    let at = this.reserve(frameBytes);
    const buffer = this.target;
    for (const piece of pieces) {
      buffer.set(piece, at);
      at += piece.length;
    }
  }

  /** Writes what is packed; the next write starts a new buffer. */
  flush(): void {
    const buffer = this.current;
    if (buffer === null) return;
    const usedBytes = this.usedBytes;
    this.current = null;
    this.usedBytes = 0;
    this.write(buffer.subarray(0, usedBytes), () => {
      if (spareBuffers.length < MAX_SPARE_BUFFERS) spareBuffers.push(buffer);
    });
  }
}
