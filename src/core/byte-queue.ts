// A queue of received byte chunks for the incremental decoders (the NBD codecs and the link
// codec). Socket input arrives split anywhere, so the decoders read from the chunks as received.
// Design (after node-postgres pg-protocol's parser, but with a chunk list instead of one growing
// buffer): chunks are kept as received and never mutated; a fixed-size header is read in place
// when it lies in one chunk and copied to a small scratch buffer when it straddles chunks; a
// payload is returned as a view when it lies in one chunk and otherwise copied exactly once into a
// buffer of its final size. A 32 MiB WRITE therefore costs one copy at most, never the O(n^2) of
// concatenating on every read. Pure: no I/O.
//
// Transient chunks (issue 11 item 4): production sockets read into one reused buffer (Node's
// `onread`) instead of a fresh 64 KiB chunk per read, whose churn kept V8's collector busy (whole
// mark-compacts many times a second on 1 MiB writes, docs/benchmarks.md). Such a chunk is valid
// only until the socket's callback returns, so (1) take() never hands out a view of it, it copies;
// (2) takeWhenComplete() moves a payload's bytes into its final buffer as they arrive, so a
// payload that spans many reads is copied once and the chunks it came in are not kept; and
// (3) retain(), called before the callback returns, copies whatever of the chunk is still unread
// (a partial header, messages held back by back-pressure) into memory of the queue's own.

const scratchBytes = 64;

export class ByteQueue {
  private readonly chunks: Buffer[] = [];
  /** Offset of the first unread byte in chunks[0]. */
  private headOffset = 0;
  /** Unread bytes across all chunks. */
  private availableBytes = 0;
  private readonly scratch = Buffer.allocUnsafe(scratchBytes);
  /** The chunk pushed as transient and not yet retained (at most one: retain() ends its life). */
  private transient: Buffer | null = null;
  /** A payload takeWhenComplete() is filling, and how many of its bytes have arrived. */
  private filling: { target: Buffer; filledBytes: number } | null = null;
  /** After view(): the buffer holding the requested bytes, and where they start in it. */
  viewBuffer: Buffer = this.scratch;
  viewOffset = 0;

  /** Bytes that can be read now (not those already moved into a payload being filled). */
  get length(): number {
    return this.availableBytes;
  }

  /** Everything received and held: readable bytes plus a partly filled payload. */
  get bufferedBytes(): number {
    return this.availableBytes + (this.filling?.filledBytes ?? 0);
  }

  /**
   * Queue received bytes. A transient chunk's memory is reused by the caller once it returns:
   * retain() must be called before then.
   */
  push(chunk: Buffer, transient = false): void {
    if (chunk.length === 0) return;
    if (this.transient !== null) throw new Error('ByteQueue: a transient chunk was pushed without retain()');
    this.chunks.push(chunk);
    this.availableBytes += chunk.length;
    if (transient) this.transient = chunk;
  }

  /** The caller is about to reuse the transient chunk's memory: keep a copy of its unread bytes. */
  retain(): void {
    const chunk = this.transient;
    if (chunk === null) return;
    this.transient = null;
    const index = this.chunks.length - 1;
    if (this.chunks[index] !== chunk) return; // read to the end and dropped already
    const from = index === 0 ? this.headOffset : 0;
    this.chunks[index] = Buffer.from(chunk.subarray(from));
    if (index === 0) this.headOffset = 0;
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
    if (first !== this.transient && first.length - this.headOffset >= lengthBytes) {
      const result = first.subarray(this.headOffset, this.headOffset + lengthBytes);
      this.skip(lengthBytes);
      return result;
    }
    const result = allocate(lengthBytes);
    this.copyOut(result, lengthBytes, true);
    return result;
  }

  /**
   * The next lengthBytes as one Buffer once all have arrived, else null. Bytes that have arrived
   * are moved into a buffer from `allocate` at once (the first call allocates it), so the chunks
   * they came in are not held; call again with the same length as more arrive. With everything
   * already here it is take().
   */
  takeWhenComplete(lengthBytes: number, allocate: (lengthBytes: number) => Buffer = Buffer.allocUnsafe): Buffer | null {
    let filling = this.filling;
    if (filling === null) {
      if (this.availableBytes >= lengthBytes) return this.take(lengthBytes, allocate);
      if (this.availableBytes === 0) return null;
      filling = this.filling = { target: allocate(lengthBytes), filledBytes: 0 };
    }
    if (filling.target.length !== lengthBytes) throw new Error(`ByteQueue: filling ${filling.target.length} bytes, asked for ${lengthBytes}`);
    const n = Math.min(this.availableBytes, lengthBytes - filling.filledBytes);
    if (n > 0) {
      this.copyOut(filling.target.subarray(filling.filledBytes), n, true);
      filling.filledBytes += n;
    }
    if (filling.filledBytes < lengthBytes) return null;
    this.filling = null;
    return filling.target;
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
