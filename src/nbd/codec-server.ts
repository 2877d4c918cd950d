// Incremental decoder of what a client sends, used by the server: client flags, then options,
// then (once the server says so) transmission requests. Feed it any split of the byte stream;
// pull messages with next(). Malformed input throws NbdProtocolError, and the decoder stays
// failed: the same error is thrown again on every later call.
import { NbdProtocolError, StickyDecoder } from './codec-bytes.js';
import {
  NBD_CMD_READ, NBD_CMD_WRITE, NBD_KNOWN_CLIENT_FLAGS, NBD_MAX_PAYLOAD_BYTES, NBD_OPTS_MAGIC, NBD_REQUEST_MAGIC,
} from './codec-constants.js';
import { NBD_OPTION_HEADER_BYTES } from './codec-handshake.js';
import { NBD_REQUEST_HEADER_BYTES, readRequestHeader, type NbdRequest } from './codec-transmission.js';

/**
 * Option data we buffer whole. The largest sensible option is NBD_OPT_GO with a 4096-byte name
 * and a handful of information requests; bigger data is skipped as it streams in (never
 * buffered), and the option is reported as oversized so the server can still answer it and
 * read the next one (proto.md "Baseline": MUST NOT fail to parse the next message).
 */
export const NBD_MAX_OPTION_DATA_BYTES = 64 * 1024;

export type NbdClientMessage =
  | { kind: 'clientFlags'; clientFlags: number }
  | { kind: 'option'; option: number; data: Buffer }
  | { kind: 'oversizedOption'; option: number; lengthBytes: number }
  | NbdRequest;

type Phase =
  | { name: 'clientFlags' }
  | { name: 'optionHeader' }
  | { name: 'optionData'; option: number; lengthBytes: number }
  | { name: 'optionDiscard'; option: number; lengthBytes: number; remainingBytes: number }
  | { name: 'requestHeader' }
  | { name: 'requestPayload'; request: NbdRequest };

export class NbdServerDecoder extends StickyDecoder<NbdClientMessage> {
  private phase: Phase = { name: 'clientFlags' };

  /** `allocatePayload` provides the buffer a WRITE payload spanning several chunks is copied into. */
  constructor(private readonly allocatePayload: (lengthBytes: number) => Buffer = Buffer.allocUnsafe) {
    super();
  }

  /** Bytes received but not yet decoded. */
  get bufferedBytes(): number {
    return this.queue.bufferedBytes;
  }

  /**
   * The payload a server must allocate to answer the next request: its length when the next
   * complete message is a READ within the payload limit, else 0 (other requests bring their own
   * payload, which is already buffered here, or none). Looks without consuming, so the server can
   * decide whether it has room before it takes the request.
   */
  nextReadBytes(): number {
    if (this.phase.name !== 'requestHeader' || !this.queue.view(NBD_REQUEST_HEADER_BYTES)) return 0;
    const at = this.queue.viewOffset;
    const header = this.queue.viewBuffer;
    if (header.readUInt32BE(at) !== NBD_REQUEST_MAGIC || header.readUInt16BE(at + 6) !== NBD_CMD_READ) return 0;
    const lengthBytes = header.readUInt32BE(at + 24);
    return lengthBytes <= NBD_MAX_PAYLOAD_BYTES ? lengthBytes : 0;
  }

  /**
   * Switch to transmission requests. The server calls this right after it has handled the
   * option that ends negotiation (EXPORT_NAME, or GO answered with ACK); bytes already queued
   * are then decoded as requests (proto.md "Termination of the session during option haggling").
   */
  startTransmission(): void {
    this.phase = { name: 'requestHeader' };
  }

  protected step(): NbdClientMessage | null {
    for (;;) {
      const phase = this.phase;
      switch (phase.name) {
        case 'clientFlags':
          return this.decodeClientFlags();
        case 'optionHeader':
          if (!this.decodeOptionHeader()) return null;
          break;
        case 'optionData': {
          if (this.queue.length < phase.lengthBytes) return null;
          this.phase = { name: 'optionHeader' };
          return { kind: 'option', option: phase.option, data: this.queue.take(phase.lengthBytes) };
        }
        case 'optionDiscard':
          phase.remainingBytes -= this.queue.discard(phase.remainingBytes);
          if (phase.remainingBytes > 0) return null;
          this.phase = { name: 'optionHeader' };
          return { kind: 'oversizedOption', option: phase.option, lengthBytes: phase.lengthBytes };
        case 'requestHeader':
          return this.decodeRequestHeader();
        case 'requestPayload': {
          const request = phase.request;
          const data = this.queue.takeWhenComplete(request.lengthBytes, this.allocatePayload);
          if (data === null) return null;
          request.data = data;
          this.phase = { name: 'requestHeader' };
          return request;
        }
      }
    }
  }

  /** C: 32-bit client flags; unknown bits MUST make the server drop the connection (proto.md "Client flags"). */
  private decodeClientFlags(): NbdClientMessage | null {
    if (!this.queue.view(4)) return null;
    const clientFlags = this.queue.viewBuffer.readUInt32BE(this.queue.viewOffset);
    if ((clientFlags & ~NBD_KNOWN_CLIENT_FLAGS) !== 0) {
      throw new NbdProtocolError('bad-client-flags', `unknown client flags 0x${clientFlags.toString(16)}`);
    }
    this.queue.skip(4);
    this.phase = { name: 'optionHeader' };
    return { kind: 'clientFlags', clientFlags };
  }

  /** C: IHAVEOPT, option, length; moves to the data phase. False until 16 bytes are queued. */
  private decodeOptionHeader(): boolean {
    const queue = this.queue;
    if (!queue.view(NBD_OPTION_HEADER_BYTES)) return false;
    const at = queue.viewOffset;
    if (queue.viewBuffer.readBigUInt64BE(at) !== NBD_OPTS_MAGIC) {
      throw new NbdProtocolError('bad-option-magic', 'option does not start with IHAVEOPT');
    }
    const option = queue.viewBuffer.readUInt32BE(at + 8);
    const lengthBytes = queue.viewBuffer.readUInt32BE(at + 12);
    queue.skip(NBD_OPTION_HEADER_BYTES);
    this.phase = lengthBytes > NBD_MAX_OPTION_DATA_BYTES
      ? { name: 'optionDiscard', option, lengthBytes, remainingBytes: lengthBytes }
      : { name: 'optionData', option, lengthBytes };
    return true;
  }

  private decodeRequestHeader(): NbdClientMessage | null {
    const queue = this.queue;
    if (!queue.view(NBD_REQUEST_HEADER_BYTES)) return null;
    const at = queue.viewOffset;
    const magic = queue.viewBuffer.readUInt32BE(at);
    if (magic !== NBD_REQUEST_MAGIC) {
      throw new NbdProtocolError('bad-request-magic', `bad request magic 0x${magic.toString(16)}`);
    }
    const request = readRequestHeader(queue.viewBuffer, at);
    queue.skip(NBD_REQUEST_HEADER_BYTES);
    if (request.type !== NBD_CMD_WRITE) return request;
    // A WRITE payload cannot be skipped safely past our limit: we would have to trust a length
    // the client already got wrong, so the connection ends (proto.md "Size constraints": a
    // payload deemed a denial of service MAY be answered by a hard disconnect).
    if (request.lengthBytes > NBD_MAX_PAYLOAD_BYTES) {
      throw new NbdProtocolError('payload-too-large',
        `WRITE payload of ${request.lengthBytes} bytes exceeds ${NBD_MAX_PAYLOAD_BYTES}`);
    }
    this.phase = { name: 'requestPayload', request };
    return this.step();
  }
}
