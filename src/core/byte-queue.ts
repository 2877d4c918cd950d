// A queue of received byte chunks for the incremental decoders (the NBD codecs and the link
// codec). Socket input arrives split anywhere, so the decoders read from the chunks as received.
// Design (after node-postgres pg-protocol's parser, but with a chunk list instead of one growing
// buffer): chunks are kept as received and never mutated; a fixed-size header is read in place
// when it lies in one chunk and copied to a small scratch buffer when it straddles chunks; a
// payload is returned as a view when it lies in one chunk and otherwise copied exactly once into a
// buffer of its final size. A 32 MiB WRITE therefore costs one copy at most, never the O(n^2) of
// concatenating on every read. Pure: no I/O.

const scratchBytes = 64;

export class ByteQueue {
  private readonly chunks: Buffer[] = [];
  /** Offset of the first unread byte in chunks[0]. */
  private headOffset = 0;
  /** Unread bytes across all chunks. */
  private availableBytes = 0;
  private readonly scratch = Buffer.allocUnsafe(scratchBytes);
  /** After view(): the buffer holding the requested bytes, and where they start in it. */
  viewBuffer: Buffer = this.scratch;
  viewOffset = 0;

  get length(): number {
    return this.availableBytes;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.availableBytes += chunk.length;
  }

  /**
   * Make the next lengthBytes (at most 64) readable at viewBuffer[viewOffset...] without
   * consuming them; false when fewer bytes have arrived. Reads in place when possible, so
   * parsing a request header allocates nothing.
   */
  view(lengthBytes: number): boolean {
    if (this.availableBytes < lengthBytes) return false;
    const first = this.chunks[0] as Buffer;
    if (first.length - this.headOffset >= lengthBytes) {
      this.viewBuffer = first;
      this.viewOffset = this.headOffset;
      return true;
    }
    this.copyOut(this.scratch, lengthBytes, false);
    this.viewBuffer = this.scratch;
    this.viewOffset = 0;
    return true;
  }

  /** Consume lengthBytes (which must be available). */
  skip(lengthBytes: number): void {
    if (lengthBytes === 0) return;
    this.availableBytes -= lengthBytes;
    let remaining = lengthBytes;
    let dropChunks = 0;
    let offset = this.headOffset;
    for (;;) {
      const inChunk = (this.chunks[dropChunks] as Buffer).length - offset;
      // Received chunks are never empty and headOffset never reaches a chunk's end.
      if (inChunk > remaining) break;
      remaining -= inChunk;
      dropChunks += 1;
      offset = 0;
      if (dropChunks === this.chunks.length) break;
    }
    // One splice per skip, not one shift per chunk: a 32 MiB payload spans ~512 chunks.
    if (dropChunks > 0) this.chunks.splice(0, dropChunks);
    this.headOffset = offset + remaining;
  }

  /** Consume up to lengthBytes, as many as have arrived; returns how many were dropped. */
  discard(lengthBytes: number): number {
    const droppedBytes = Math.min(lengthBytes, this.availableBytes);
    this.skip(droppedBytes);
    return droppedBytes;
  }

  /**
   * Consume lengthBytes (which must be available) as one Buffer: a view of the received chunk
   * when the bytes lie in one chunk, else a single copy into a buffer from `allocate` (the
   * server passes a pool, since the codec itself stays free of state beyond its input).
   */
  take(lengthBytes: number, allocate: (lengthBytes: number) => Buffer = Buffer.allocUnsafe): Buffer {
    const first = this.chunks[0];
    if (lengthBytes === 0 || first === undefined) return Buffer.alloc(0);
    if (first.length - this.headOffset >= lengthBytes) {
      const result = first.subarray(this.headOffset, this.headOffset + lengthBytes);
      this.skip(lengthBytes);
      return result;
    }
    const result = allocate(lengthBytes);
    this.copyOut(result, lengthBytes, true);
    return result;
  }

  private copyOut(target: Buffer, lengthBytes: number, consume: boolean): void {
    let copiedBytes = 0;
    let chunkIndex = 0;
    let offset = this.headOffset;
    while (copiedBytes < lengthBytes) {
      const chunk = this.chunks[chunkIndex] as Buffer;
      const n = Math.min(chunk.length - offset, lengthBytes - copiedBytes);
      chunk.copy(target, copiedBytes, offset, offset + n);
      copiedBytes += n;
      chunkIndex += 1;
      offset = 0;
    }
    if (consume) this.skip(lengthBytes);
  }
}
