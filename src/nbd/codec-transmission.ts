// Transmission-phase encoders (proto.md "Request message", "Simple reply message"). The write*
// forms fill a caller-supplied buffer so the server and client can put header and payload in
// one allocation and one socket write.
import { readUint64, writeUint64 } from './codec-bytes.js';
import { NBD_REQUEST_MAGIC, NBD_SIMPLE_REPLY_MAGIC } from './codec-constants.js';

export const NBD_REQUEST_HEADER_BYTES = 28;
export const NBD_SIMPLE_REPLY_HEADER_BYTES = 16;

/** A decoded request; data is the WRITE payload, null for every other command. */
export interface NbdRequest {
  kind: 'request';
  commandFlags: number;
  type: number;
  /** The 64-bit cookie as two 32-bit halves: opaque, echoed back, never allocated as a BigInt. */
  cookieHigh: number;
  cookieLow: number;
  offsetBytes: number;
  lengthBytes: number;
  data: Buffer | null;
}

/** A decoded simple reply; data is the READ payload when errorValue is 0, else null. */
export interface NbdSimpleReply {
  kind: 'simpleReply';
  errorValue: number;
  cookieHigh: number;
  cookieLow: number;
  data: Buffer | null;
}

/** C: magic, command flags, type, cookie, offset, length (28 bytes) at target[at]. */
export function writeRequestHeader(
  target: Buffer, at: number,
  request: Pick<NbdRequest, 'commandFlags' | 'type' | 'cookieHigh' | 'cookieLow' | 'offsetBytes' | 'lengthBytes'>,
): void {
  target.writeUInt32BE(NBD_REQUEST_MAGIC, at);
  target.writeUInt16BE(request.commandFlags, at + 4);
  target.writeUInt16BE(request.type, at + 6);
  target.writeUInt32BE(request.cookieHigh >>> 0, at + 8);
  target.writeUInt32BE(request.cookieLow >>> 0, at + 12);
  writeUint64(target, request.offsetBytes, at + 16);
  target.writeUInt32BE(request.lengthBytes >>> 0, at + 24);
}

/** A whole request: header, then the WRITE payload if any, in one buffer. */
export function encodeRequest(request: Omit<NbdRequest, 'kind'>): Buffer {
  const payloadBytes = request.data?.length ?? 0;
  const out = Buffer.allocUnsafe(NBD_REQUEST_HEADER_BYTES + payloadBytes);
  writeRequestHeader(out, 0, request);
  if (request.data) request.data.copy(out, NBD_REQUEST_HEADER_BYTES);
  return out;
}

/** Read the fields after the magic of a request header at source[at]. */
export function readRequestHeader(source: Buffer, at: number): NbdRequest {
  return {
    kind: 'request',
    commandFlags: source.readUInt16BE(at + 4),
    type: source.readUInt16BE(at + 6),
    cookieHigh: source.readUInt32BE(at + 8),
    cookieLow: source.readUInt32BE(at + 12),
    offsetBytes: readUint64(source, at + 16),
    lengthBytes: source.readUInt32BE(at + 24),
    data: null,
  };
}

/** S: magic, error, cookie (16 bytes) at target[at]. */
export function writeSimpleReplyHeader(
  target: Buffer, at: number, errorValue: number, cookieHigh: number, cookieLow: number,
): void {
  target.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, at);
  target.writeUInt32BE(errorValue >>> 0, at + 4);
  target.writeUInt32BE(cookieHigh >>> 0, at + 8);
  target.writeUInt32BE(cookieLow >>> 0, at + 12);
}

/** A whole simple reply: header, then the READ payload if any, in one buffer. */
export function encodeSimpleReply(
  errorValue: number, cookieHigh: number, cookieLow: number, data: Buffer | null = null,
): Buffer {
  const out = Buffer.allocUnsafe(NBD_SIMPLE_REPLY_HEADER_BYTES + (data?.length ?? 0));
  writeSimpleReplyHeader(out, 0, errorValue, cookieHigh, cookieLow);
  if (data) data.copy(out, NBD_SIMPLE_REPLY_HEADER_BYTES);
  return out;
}
