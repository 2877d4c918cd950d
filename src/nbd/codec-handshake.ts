// Handshake-phase encoders and option/reply payload parsers, both directions (proto.md "Fixed
// newstyle negotiation", "Option types", "Option reply types"). Pure: Buffers in, Buffers out.
import { NbdProtocolError, readUint64, writeUint64 } from './codec-bytes.js';
import {
  NBD_EXPORT_NAME_PADDING_BYTES, NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION, NBD_INFO_EXPORT,
  NBD_INFO_NAME, NBD_INIT_MAGIC, NBD_MAX_STRING_BYTES, NBD_OPTION_REPLY_MAGIC, NBD_OPTS_MAGIC,
} from './codec-constants.js';

export const NBD_GREETING_BYTES = 18;
export const NBD_OPTION_HEADER_BYTES = 16;
export const NBD_OPTION_REPLY_HEADER_BYTES = 20;
/** Size (8) + transmission flags (2) of an NBD_OPT_EXPORT_NAME reply, before any padding. */
export const NBD_EXPORT_NAME_REPLY_BYTES = 10;

/** S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags (proto.md "Newstyle negotiation"). */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const out = Buffer.allocUnsafe(NBD_GREETING_BYTES);
  out.writeBigUInt64BE(NBD_INIT_MAGIC, 0);
  out.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  out.writeUInt16BE(handshakeFlags, 16);
  return out;
}

/** C: 32-bit client flags, the client's answer to the greeting. */
export function encodeClientFlags(clientFlags: number): Buffer {
  const out = Buffer.allocUnsafe(4);
  out.writeUInt32BE(clientFlags >>> 0, 0);
  return out;
}

/** C: IHAVEOPT, option, length, data (proto.md "Newstyle negotiation"). */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(NBD_OPTION_HEADER_BYTES + data.length);
  out.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  out.writeUInt32BE(option >>> 0, 8);
  out.writeUInt32BE(data.length, 12);
  data.copy(out, NBD_OPTION_HEADER_BYTES);
  return out;
}

/** Data of NBD_OPT_INFO / NBD_OPT_GO: name length, name, request count, requests. */
export function encodeInfoRequestData(exportName: string, infoTypes: readonly number[]): Buffer {
  const name = Buffer.from(exportName, 'utf8');
  const out = Buffer.allocUnsafe(4 + name.length + 2 + 2 * infoTypes.length);
  out.writeUInt32BE(name.length, 0);
  name.copy(out, 4);
  out.writeUInt16BE(infoTypes.length, 4 + name.length);
  infoTypes.forEach((infoType, i) => out.writeUInt16BE(infoType, 6 + name.length + 2 * i));
  return out;
}

export interface NbdInfoRequest {
  exportName: string;
  infoTypes: number[];
}

/**
 * Parse NBD_OPT_INFO / NBD_OPT_GO data; null when the lengths do not add up or the name breaks
 * the string rules, which the server answers with NBD_REP_ERR_INVALID (proto.md "NBD_OPT_INFO").
 */
export function parseInfoRequestData(data: Buffer): NbdInfoRequest | null {
  if (data.length < 6) return null;
  const nameBytes = data.readUInt32BE(0);
  // "MUST be no larger than the option data length - 6", and the request list must fill the rest.
  if (nameBytes > data.length - 6 || nameBytes > NBD_MAX_STRING_BYTES) return null;
  const count = data.readUInt16BE(4 + nameBytes);
  if (data.length !== 6 + nameBytes + 2 * count) return null;
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++) infoTypes.push(data.readUInt16BE(6 + nameBytes + 2 * i));
  return { exportName: data.toString('utf8', 4, 4 + nameBytes), infoTypes };
}

/** S: reply magic, option, reply type, length, data (proto.md "Fixed newstyle negotiation"). */
export function encodeOptionReply(option: number, replyType: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(NBD_OPTION_REPLY_HEADER_BYTES + data.length);
  out.writeBigUInt64BE(NBD_OPTION_REPLY_MAGIC, 0);
  out.writeUInt32BE(option >>> 0, 8);
  out.writeUInt32BE(replyType >>> 0, 12);
  out.writeUInt32BE(data.length, 16);
  data.copy(out, NBD_OPTION_REPLY_HEADER_BYTES);
  return out;
}

/** NBD_INFO_EXPORT payload: type, 64-bit size, 16-bit transmission flags; length MUST be 12. */
export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const out = Buffer.allocUnsafe(12);
  out.writeUInt16BE(NBD_INFO_EXPORT, 0);
  writeUint64(out, sizeBytes, 2);
  out.writeUInt16BE(transmissionFlags, 10);
  return out;
}

/** NBD_INFO_NAME / NBD_INFO_DESCRIPTION payload: type, then the string. */
export function encodeInfoString(infoType: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION, text: string): Buffer {
  const body = Buffer.from(text, 'utf8');
  const out = Buffer.allocUnsafe(2 + body.length);
  out.writeUInt16BE(infoType, 0);
  body.copy(out, 2);
  return out;
}

/** NBD_INFO_BLOCK_SIZE payload: type, minimum, preferred, maximum; length MUST be 14. */
export function encodeInfoBlockSize(minimumBytes: number, preferredBytes: number, maximumBytes: number): Buffer {
  const out = Buffer.allocUnsafe(14);
  out.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  out.writeUInt32BE(minimumBytes, 2);
  out.writeUInt32BE(preferredBytes, 6);
  out.writeUInt32BE(maximumBytes, 10);
  return out;
}

export type NbdInfo =
  | { infoType: 'export'; sizeBytes: number; transmissionFlags: number }
  | { infoType: 'name'; name: string }
  | { infoType: 'description'; description: string }
  | { infoType: 'blockSize'; minimumBytes: number; preferredBytes: number; maximumBytes: number }
  | { infoType: 'unknown'; code: number };

function badInfo(what: string, lengthBytes: number): NbdProtocolError {
  return new NbdProtocolError('bad-length', `NBD_REP_INFO ${what} has length ${lengthBytes}`);
}

/** Parse an NBD_REP_INFO payload; wrong fixed lengths are protocol errors (proto.md "NBD_REP_INFO"). */
export function parseInfoReplyData(data: Buffer): NbdInfo {
  if (data.length < 2) throw badInfo('without a type', data.length);
  const code = data.readUInt16BE(0);
  switch (code) {
    case NBD_INFO_EXPORT: {
      if (data.length !== 12) throw badInfo('NBD_INFO_EXPORT', data.length);
      const sizeBytes = readUint64(data, 2);
      if (sizeBytes > Number.MAX_SAFE_INTEGER) {
        throw new NbdProtocolError('size-too-large', `export size ${data.readBigUInt64BE(2)} bytes is beyond 2^53`);
      }
      return { infoType: 'export', sizeBytes, transmissionFlags: data.readUInt16BE(10) };
    }
    case NBD_INFO_NAME:
      return { infoType: 'name', name: data.toString('utf8', 2) };
    case NBD_INFO_DESCRIPTION:
      return { infoType: 'description', description: data.toString('utf8', 2) };
    case NBD_INFO_BLOCK_SIZE:
      if (data.length !== 14) throw badInfo('NBD_INFO_BLOCK_SIZE', data.length);
      return {
        infoType: 'blockSize',
        minimumBytes: data.readUInt32BE(2),
        preferredBytes: data.readUInt32BE(6),
        maximumBytes: data.readUInt32BE(10),
      };
    default:
      // "The client MUST ignore information replies it does not understand."
      return { infoType: 'unknown', code };
  }
}

/** NBD_REP_SERVER payload: name length, name, then human-readable details. */
export function encodeServerReplyData(exportName: string, details: string): Buffer {
  const name = Buffer.from(exportName, 'utf8');
  const rest = Buffer.from(details, 'utf8');
  const out = Buffer.allocUnsafe(4 + name.length + rest.length);
  out.writeUInt32BE(name.length, 0);
  name.copy(out, 4);
  rest.copy(out, 4 + name.length);
  return out;
}

/** Parse an NBD_REP_SERVER payload (proto.md "NBD_REP_SERVER"). */
export function parseServerReplyData(data: Buffer): { exportName: string; details: string } {
  if (data.length < 4) throw new NbdProtocolError('bad-length', `NBD_REP_SERVER has length ${data.length}`);
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 4) {
    throw new NbdProtocolError('bad-length', `NBD_REP_SERVER name length ${nameBytes} exceeds its reply`);
  }
  return { exportName: data.toString('utf8', 4, 4 + nameBytes), details: data.toString('utf8', 4 + nameBytes) };
}

/**
 * S: reply to NBD_OPT_EXPORT_NAME: 64-bit size, 16-bit transmission flags, then 124 zero bytes
 * unless the client set NBD_FLAG_C_NO_ZEROES (proto.md "Newstyle negotiation").
 */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const out = Buffer.alloc(NBD_EXPORT_NAME_REPLY_BYTES + (noZeroes ? 0 : NBD_EXPORT_NAME_PADDING_BYTES));
  writeUint64(out, sizeBytes, 0);
  out.writeUInt16BE(transmissionFlags, 8);
  return out;
}
