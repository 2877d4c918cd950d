// Link frames of one event-loop turn, packed into one buffer that goes to the socket in one write
// (src/link/connection.ts corks the socket for the turn). At 4 KiB QD32 a write frame was three
// socket writes (header, the host's data, trailer: a stream entry and a view each, and the
// payload held until its write completed) and every ack one more; copying a small frame's bytes
// costs less than that. Bigger frames still go out as their pieces, never copied.

/** Frames up to this size are copied into the batch. */
export const BATCHED_FRAME_MAX_BYTES = 16 * 1024;
const BATCH_BYTES = 64 * 1024;
/**
 * Batch buffers the socket is done with, reused: fresh memory costs this VM a page fault per
 * page on first touch (docs/benchmarks.md, "Socket input into reused memory").
 */
const spareBuffers: Buffer[] = [];
const MAX_SPARE_BUFFERS = 16;

export class FrameBatch {
  private buffer: Buffer | null = null;
  private usedBytes = 0;

  /** `write` hands bytes to the socket and calls `written` once it no longer needs them. */
  constructor(private readonly write: (bytes: Buffer, written: () => void) => void) {}

  /** Bytes packed and not yet written. */
  get bytes(): number {
    return this.usedBytes;
  }

  /** Copies a frame's pieces in (frameBytes, their total, at most BATCHED_FRAME_MAX_BYTES). */
  add(pieces: readonly Buffer[], frameBytes: number): void {
    if (this.buffer !== null && this.usedBytes + frameBytes > this.buffer.length) this.flush();
    const buffer = this.buffer ??= spareBuffers.pop() ?? Buffer.allocUnsafeSlow(BATCH_BYTES);
    for (const piece of pieces) {
      buffer.set(piece, this.usedBytes);
      this.usedBytes += piece.length;
    }
  }

  /** Writes what is packed; the next frame starts a new buffer. */
  flush(): void {
    const buffer = this.buffer;
    if (buffer === null) return;
    const usedBytes = this.usedBytes;
    this.buffer = null;
    this.usedBytes = 0;
    this.write(buffer.subarray(0, usedBytes), () => {
      if (spareBuffers.length < MAX_SPARE_BUFFERS) spareBuffers.push(buffer);
    });
  }
}
