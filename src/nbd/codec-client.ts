// Incremental decoder of what a server sends, used by the client: the greeting, option replies,
// the NBD_OPT_EXPORT_NAME reply, then simple replies. A simple reply does not say whether data
// follows (proto.md "Transmission": it is impossible to tell from server traffic alone), so the
// decoder asks its owner for the READ length of each cookie. Malformed input throws
// NbdProtocolError and the decoder stays failed.
import { NbdProtocolError, readUint64, StickyDecoder } from './codec-bytes.js';
import {
  NBD_CLISERV_MAGIC, NBD_EXPORT_NAME_PADDING_BYTES, NBD_INIT_MAGIC, NBD_OPTION_REPLY_MAGIC,
  NBD_OPTS_MAGIC, NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC,
} from './codec-constants.js';
import { NBD_EXPORT_NAME_REPLY_BYTES, NBD_GREETING_BYTES, NBD_OPTION_REPLY_HEADER_BYTES } from './codec-handshake.js';
import { NBD_SIMPLE_REPLY_HEADER_BYTES, type NbdSimpleReply } from './codec-transmission.js';

/**
 * Largest option reply payload we accept. Replies carry strings of at most 4096 bytes plus a
 * few fixed fields (proto.md "Option reply types"); anything far larger is not a real reply.
 */
export const NBD_MAX_OPTION_REPLY_BYTES = 64 * 1024;

export type NbdServerMessage =
  | { kind: 'greeting'; handshakeFlags: number }
  | { kind: 'optionReply'; option: number; replyType: number; data: Buffer }
  | { kind: 'exportNameReply'; sizeBytes: number; transmissionFlags: number }
  | NbdSimpleReply;

/**
 * For a cookie in flight, how many payload bytes a successful reply carries (the READ length,
 * 0 for other commands); undefined when no request with that cookie is in flight.
 */
export type ReplyPayloadLookup = (cookieHigh: number, cookieLow: number) => number | undefined;

type Phase =
  | { name: 'greeting' }
  | { name: 'optionReplyHeader' }
  | { name: 'optionReplyData'; option: number; replyType: number; lengthBytes: number }
  | { name: 'exportNameReply'; noZeroes: boolean }
  | { name: 'replyHeader' }
  | { name: 'replyPayload'; reply: NbdSimpleReply; lengthBytes: number };

export class NbdClientDecoder extends StickyDecoder<NbdServerMessage> {
  private phase: Phase = { name: 'greeting' };

  constructor(private readonly replyPayloadBytes: ReplyPayloadLookup) {
    super();
  }

  /** After sending NBD_OPT_EXPORT_NAME: its reply has no option-reply framing. */
  expectExportNameReply(noZeroes: boolean): void {
    this.phase = { name: 'exportNameReply', noZeroes };
  }

  /** After NBD_REP_ACK to NBD_OPT_GO, the next bytes are transmission replies. */
  startTransmission(): void {
    this.phase = { name: 'replyHeader' };
  }

  protected step(): NbdServerMessage | null {
    const phase = this.phase;
    switch (phase.name) {
      case 'greeting':
        return this.decodeGreeting();
      case 'optionReplyHeader':
        return this.decodeOptionReplyHeader();
      case 'optionReplyData':
        if (this.queue.length < phase.lengthBytes) return null;
        this.phase = { name: 'optionReplyHeader' };
        return {
          kind: 'optionReply', option: phase.option, replyType: phase.replyType,
          data: this.queue.take(phase.lengthBytes),
        };
      case 'exportNameReply':
        return this.decodeExportNameReply(phase.noZeroes);
      case 'replyHeader':
        return this.decodeReplyHeader();
      case 'replyPayload':
        if (this.queue.length < phase.lengthBytes) return null;
        phase.reply.data = this.queue.take(phase.lengthBytes);
        this.phase = { name: 'replyHeader' };
        return phase.reply;
    }
  }

  /** S: NBDMAGIC, IHAVEOPT, handshake flags (proto.md "Newstyle negotiation"). */
  private decodeGreeting(): NbdServerMessage | null {
    const queue = this.queue;
    if (!queue.view(NBD_GREETING_BYTES)) return null;
    const at = queue.viewOffset;
    if (queue.viewBuffer.readBigUInt64BE(at) !== NBD_INIT_MAGIC) {
      throw new NbdProtocolError('bad-magic', 'server greeting does not start with NBDMAGIC');
    }
    const second = queue.viewBuffer.readBigUInt64BE(at + 8);
    if (second === NBD_CLISERV_MAGIC) {
      throw new NbdProtocolError('oldstyle-negotiation', 'server uses oldstyle negotiation, which we do not support');
    }
    if (second !== NBD_OPTS_MAGIC) {
      throw new NbdProtocolError('bad-magic', 'server greeting lacks IHAVEOPT');
    }
    const handshakeFlags = queue.viewBuffer.readUInt16BE(at + 16);
    queue.skip(NBD_GREETING_BYTES);
    this.phase = { name: 'optionReplyHeader' };
    return { kind: 'greeting', handshakeFlags };
  }

  private decodeOptionReplyHeader(): NbdServerMessage | null {
    const queue = this.queue;
    if (!queue.view(NBD_OPTION_REPLY_HEADER_BYTES)) return null;
    const at = queue.viewOffset;
    if (queue.viewBuffer.readBigUInt64BE(at) !== NBD_OPTION_REPLY_MAGIC) {
      throw new NbdProtocolError('bad-reply-magic', 'option reply has a bad magic');
    }
    const option = queue.viewBuffer.readUInt32BE(at + 8);
    const replyType = queue.viewBuffer.readUInt32BE(at + 12);
    const lengthBytes = queue.viewBuffer.readUInt32BE(at + 16);
    if (lengthBytes > NBD_MAX_OPTION_REPLY_BYTES) {
      throw new NbdProtocolError('payload-too-large', `option reply of ${lengthBytes} bytes`);
    }
    queue.skip(NBD_OPTION_REPLY_HEADER_BYTES);
    this.phase = { name: 'optionReplyData', option, replyType, lengthBytes };
    return this.step();
  }

  /** S: size, transmission flags, and 124 zero bytes unless NO_ZEROES was negotiated. */
  private decodeExportNameReply(noZeroes: boolean): NbdServerMessage | null {
    const queue = this.queue;
    if (!queue.view(NBD_EXPORT_NAME_REPLY_BYTES)) return null;
    const totalBytes = NBD_EXPORT_NAME_REPLY_BYTES + (noZeroes ? 0 : NBD_EXPORT_NAME_PADDING_BYTES);
    if (queue.length < totalBytes) return null;
    const sizeBytes = readUint64(queue.viewBuffer, queue.viewOffset);
    if (sizeBytes > Number.MAX_SAFE_INTEGER) {
      throw new NbdProtocolError('size-too-large', 'export size is beyond 2^53 bytes');
    }
    const transmissionFlags = queue.viewBuffer.readUInt16BE(queue.viewOffset + 8);
    // The padding is reserved; its content carries nothing, so it is skipped unread.
    queue.skip(totalBytes);
    this.phase = { name: 'replyHeader' };
    return { kind: 'exportNameReply', sizeBytes, transmissionFlags };
  }

  /** S: magic, error, cookie; then the READ payload when error is 0 (proto.md "Simple reply message"). */
  private decodeReplyHeader(): NbdServerMessage | null {
    const queue = this.queue;
    if (!queue.view(NBD_SIMPLE_REPLY_HEADER_BYTES)) return null;
    const buf = queue.viewBuffer;
    const at = queue.viewOffset;
    const magic = buf.readUInt32BE(at);
    if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
      // "The server MUST NOT send this reply type unless the client has successfully negotiated
      // structured replies" (proto.md "Structured reply chunk message"); we never do.
      throw new NbdProtocolError('structured-reply-not-negotiated', 'server sent a structured reply chunk');
    }
    if (magic !== NBD_SIMPLE_REPLY_MAGIC) {
      throw new NbdProtocolError('bad-reply-magic', `bad reply magic 0x${magic.toString(16)}`);
    }
    const reply: NbdSimpleReply = {
      kind: 'simpleReply',
      errorValue: buf.readUInt32BE(at + 4),
      cookieHigh: buf.readUInt32BE(at + 8),
      cookieLow: buf.readUInt32BE(at + 12),
      data: null,
    };
    const payloadBytes = this.replyPayloadBytes(reply.cookieHigh, reply.cookieLow);
    if (payloadBytes === undefined) {
      throw new NbdProtocolError('unknown-cookie',
        `reply for cookie 0x${reply.cookieHigh.toString(16)}${reply.cookieLow.toString(16).padStart(8, '0')} that is not in flight`);
    }
    queue.skip(NBD_SIMPLE_REPLY_HEADER_BYTES);
    // "no payload is sent if error was set" (proto.md "Structured reply chunk message").
    if (reply.errorValue !== 0 || payloadBytes === 0) return reply;
    this.phase = { name: 'replyPayload', reply, lengthBytes: payloadBytes };
    return this.step();
  }
}
