// Shared pieces of the NBD codecs: the typed decode error, 64-bit big-endian helpers and the
// sticky-failure decoder base. Input buffering is src/core/byte-queue.ts (the link codec uses it
// too).
import { ByteQueue } from '../core/byte-queue.js';

export { ByteQueue };

/** Typed decode failure: the peer sent bytes that break the protocol. */
export class NbdProtocolError extends Error {
  override readonly name = 'NbdProtocolError';
  constructor(readonly reason: NbdProtocolErrorReason, message: string) {
    super(message);
  }
}

export type NbdProtocolErrorReason =
  | 'bad-magic'
  | 'oldstyle-negotiation'
  | 'bad-client-flags'
  | 'bad-option-magic'
  | 'bad-reply-magic'
  | 'bad-request-magic'
  | 'payload-too-large'
  | 'bad-length'
  | 'unknown-cookie'
  | 'structured-reply-not-negotiated'
  | 'size-too-large'
  | 'bad-padding';

const twoTo32 = 0x1_0000_0000;

/** Write an unsigned 64-bit value held in a JS number (exact up to 2^53). */
export function writeUint64(target: Buffer, value: number, offset: number): void {
  target.writeUInt32BE(Math.floor(value / twoTo32), offset);
  target.writeUInt32BE(value >>> 0, offset + 4);
}

/**
 * Read an unsigned 64-bit value as a JS number. Above 2^53 the result rounds, which callers only
 * ever compare against an export size, and every export size is far below 2^53.
 */
export function readUint64(source: Buffer, offset: number): number {
  return source.readUInt32BE(offset) * twoTo32 + source.readUInt32BE(offset + 4);
}

/**
 * What both NBD decoders share: bytes go in with feed(), messages come out of next(), and once the
 * peer broke the protocol every later next() throws the same error (the connection is done; no
 * byte after a framing error can be trusted). Subclasses decode one message in step().
 */
export abstract class StickyDecoder<Message> {
  protected readonly queue = new ByteQueue();
  private failure: NbdProtocolError | null = null;

  /** Queue bytes; a transient chunk (reused memory) needs retain() before its memory is reused. */
  feed(chunk: Buffer, transient = false): void {
    this.queue.push(chunk, transient);
  }

  /** Keep what is still unread of a transient chunk (src/core/byte-queue.ts). */
  retain(): void {
    this.queue.retain();
  }

  /** The next complete message, or null until more bytes arrive. */
  next(): Message | null {
    if (this.failure) throw this.failure;
    try {
      return this.step();
    } catch (err) {
      if (err instanceof NbdProtocolError) this.failure = err;
      throw err;
    }
  }

  protected abstract step(): Message | null;
}
