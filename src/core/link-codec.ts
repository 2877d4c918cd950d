// Replication link codec: the framed binary messages two nodes exchange over their one ordered
// TCP stream (DESIGN.md "Write path": the link is one FIFO stream per direction; issue 4 item 1).
//
// Frame (all integers big-endian):
//   header  magic 'TBLK' u32 | version u8 | type u8 | flags u16 | bodyLength u32 | headerCrc u32
//   body    bodyLength bytes, laid out per type (below)
//   trailer bodyCrc u32 = CRC32C(body)
// headerCrc covers the 12 header bytes before it. The decoder checks it before it trusts
// bodyLength (a flipped length bit must not make us wait for, or buffer, 33 MiB of nothing), and
// checks bodyCrc before it yields anything: a corrupt frame is an error, never a message, so the
// node applies nothing from it (issue 4: "a corrupt frame drops the connection and applies nothing
// from it"). Every byte of a frame is covered by one of the two CRCs or by an exact-match check.
//
// Decoding follows node-postgres' pg-protocol parser, with a chunk list (ByteQueue) instead of one
// growing buffer: received chunks are kept as they are, a header is read in place, and a body is a
// view of its chunk or one copy, never the O(n^2) of re-concatenating for a 1 MiB write.
//
// Pure: no I/O, no clock, no randomness (the connection passes nonces and times in).
import { ByteQueue } from './byte-queue.js';
import { crc32c } from './crc32c.js';
import {
  helloFixedBytes, LINK_FRAME_VERSION, LINK_HEADER_BYTES, LINK_MAC_BYTES, LINK_MAGIC, LINK_MAX_STRING_BYTES,
  LINK_NONCE_BYTES, LINK_TRAILER_BYTES, MAX_SUM_TRACKS, maxBodyBytesByType, noticeOps, TRACK_SUM_BYTES, typeByCode, typeCodes,
  type HelloMessage, type LinkMessage, type LinkMessageType, type NoticeMessage, type StateMessage, type SumReplyMessage, type SumReqMessage,
} from './link-messages.js';

// The message definitions are part of this module's interface: importers need only this file.
export {
  LINK_FRAME_VERSION, LINK_HEADER_BYTES, LINK_MAC_BYTES, LINK_MAGIC, LINK_MAX_BODY_BYTES, LINK_MAX_STRING_BYTES, LINK_NONCE_BYTES,
  LINK_PROTOCOL_VERSION, LINK_TRAILER_BYTES, linkMessageTypes, MAX_SUM_TRACKS, TRACK_SUM_BYTES,
} from './link-messages.js';
export type * from './link-messages.js';

/** Typed decode failure: the peer sent bytes that break the protocol. The connection drops. */
export class LinkProtocolError extends Error {
  override readonly name = 'LinkProtocolError';
  constructor(readonly reason: LinkProtocolErrorReason, message: string) {
    super(message);
  }
}

export type LinkProtocolErrorReason =
  | 'bad-magic'
  | 'bad-header-crc'
  | 'bad-version'
  | 'unknown-type'
  | 'unexpected-type'
  | 'bad-flags'
  | 'body-too-large'
  | 'bad-body-crc'
  | 'malformed-body';

// ---- encoding ------------------------------------------------------------------------------

/**
 * A frame smaller than this is built in one buffer, copying its data: Buffer.allocUnsafe takes
 * such buffers from Node's shared pool (below poolSize / 2), and one socket write of a small frame
 * is cheaper than three. Bigger data stays a separate piece, never copied.
 */
const inlineFrameMaxBytes = (Buffer.poolSize >>> 1) - 1;
const twoTo32 = 0x1_0000_0000;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function checkU32(value: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`link: ${field} ${value} is not a u32`);
  }
}

function checkU64(value: number, field: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`link: ${field} ${value} is not an integer in [0, 2^53)`);
  }
}

function checkString(value: string, field: string): number {
  const lengthBytes = Buffer.byteLength(value, 'utf8');
  if (lengthBytes > LINK_MAX_STRING_BYTES) {
    throw new RangeError(`link: ${field} is ${lengthBytes} bytes, over ${LINK_MAX_STRING_BYTES}`);
  }
  return lengthBytes;
}

function checkFixed(value: Uint8Array, lengthBytes: number, field: string): void {
  if (value.length !== lengthBytes) throw new RangeError(`link: ${field} must be ${lengthBytes} bytes, not ${value.length}`);
}

/** An epoch history: count u16, entries (u64 epoch, string node). */
function historyBytes(history: readonly { node: string }[], field: string): number {
  let n = 2;
  for (const e of history) n += 8 + 2 + checkString(e.node, `${field}.node`);
  return n;
}

/** flags u8, history, two length-prefixed bitmaps, streamEpoch u64, lastSeq u64, a third bitmap. */
function stateBodyBytes(msg: StateMessage): number {
  return 1 + historyBytes(msg.history, 'state.history') + 4 + msg.outOfSync.length + 4 + msg.dirty.length + 16 + 4 + msg.above.length;
}

/** Body bytes before the data of a write or syncData, or the whole body of any other type. */
function fixedBodyBytes(msg: LinkMessage): number {
  switch (msg.type) {
    case 'hello': return helloFixedBytes + 2 + checkString(msg.node, 'hello.node') + 2 + checkString(msg.volumeId, 'hello.volumeId');
    case 'refuse': return 2 + checkString(msg.reason, 'refuse.reason');
    case 'notice': return 1 + 4 * msg.ranges.length;
    case 'write': return 24;
    case 'fetchReq': return 4 + msg.tracks.length;
    case 'sumReply': return 4 + 1 + 4 + msg.sums.length;
    case 'syncData': return 8;
    case 'state': return stateBodyBytes(msg);
    case 'promoteReq': return 4 + historyBytes(msg.history, 'promoteReq.history');
    case 'promoteAck': return 4 + 1 + 2 + checkString(msg.reason, 'promoteAck.reason');
    default: return maxBodyBytesByType[msg.type];
  }
}

function dataOf(msg: LinkMessage): Uint8Array | null {
  return msg.type === 'write' || msg.type === 'syncData' ? msg.data : null;
}

/** Total bytes this message occupies on the wire (header + body + trailer), for accounting. */
export function frameBytes(msg: LinkMessage): number {
  const data = dataOf(msg);
  return LINK_HEADER_BYTES + fixedBodyBytes(msg) + (data === null ? 0 : data.length) + LINK_TRAILER_BYTES;
}

/**
 * Encode one frame as a list of buffers to write in order. A large write's data is one of them,
 * as given (a view, not a copy): the body CRC is chained across the pieces instead. The caller
 * must not modify that data until the socket has written it (the peer would see a CRC mismatch
 * and drop the link, which is safe but costly).
 */
export function encode(msg: LinkMessage): Buffer[] {
  // A write goes to every mirroring peer as one message object, byte for byte the same frame: a
  // big one is encoded (its CRC computed) once (crc32c was 13% of the primary's CPU at 1 MiB with
  // three nodes). A small one is cheaper to encode again than to remember in a WeakMap.
  const cached = msg.type === 'write' && msg.data.length > inlineFrameMaxBytes;
  if (cached) {
    const encoded = encodedWrites.get(msg);
    if (encoded !== undefined) return encoded;
  }
  const frame = encodeFrame(msg);
  if (cached) encodedWrites.set(msg, frame);
  return frame;
}

/** Frames of write messages already encoded, while the message lives. */
const encodedWrites = new WeakMap<LinkMessage, Buffer[]>();

function encodeFrame(msg: LinkMessage): Buffer[] {
  const fixedBytes = fixedBodyBytes(msg);
  const data = dataOf(msg);
  const dataBytes = data === null ? 0 : data.length;
  const bodyBytes = fixedBytes + dataBytes;
  if (bodyBytes > maxBodyBytesByType[msg.type]) {
    throw new RangeError(`link: ${msg.type} body of ${bodyBytes} bytes exceeds ${maxBodyBytesByType[msg.type]}`);
  }
  const headBytes = LINK_HEADER_BYTES + fixedBytes;
  const totalBytes = headBytes + dataBytes + LINK_TRAILER_BYTES;
  if (data === null || totalBytes <= inlineFrameMaxBytes) {
    const whole = Buffer.allocUnsafe(totalBytes);
    writeHeader(whole, typeCodes[msg.type], bodyBytes);
    writeFixedBody(whole, LINK_HEADER_BYTES, msg);
    if (data !== null) whole.set(data, headBytes);
    const bodyEnd = LINK_HEADER_BYTES + bodyBytes;
    whole.writeUInt32BE(crc32c(whole.subarray(LINK_HEADER_BYTES, bodyEnd)), bodyEnd);
    return [whole];
  }
  // Header, fixed fields and trailer share one small pooled allocation around the data.
  const around = Buffer.allocUnsafe(headBytes + LINK_TRAILER_BYTES);
  writeHeader(around, typeCodes[msg.type], bodyBytes);
  writeFixedBody(around, LINK_HEADER_BYTES, msg);
  around.writeUInt32BE(crc32c(data, crc32c(around.subarray(LINK_HEADER_BYTES, headBytes))), headBytes);
  return [around.subarray(0, headBytes), Buffer.from(data.buffer, data.byteOffset, data.byteLength), around.subarray(headBytes)];
}

function writeHeader(target: Buffer, typeCode: number, bodyBytes: number): void {
  target.writeUInt32BE(LINK_MAGIC, 0);
  target[4] = LINK_FRAME_VERSION;
  target[5] = typeCode;
  target.writeUInt16BE(0, 6);
  target.writeUInt32BE(bodyBytes, 8);
  target.writeUInt32BE(crc32c(target.subarray(0, 12)), 12);
}

function writeU64(target: Buffer, value: number, at: number, field: string): number {
  checkU64(value, field);
  target.writeUInt32BE(Math.floor(value / twoTo32), at);
  target.writeUInt32BE(value >>> 0, at + 4);
  return at + 8;
}

function writeU32(target: Buffer, value: number, at: number, field: string): number {
  checkU32(value, field);
  target.writeUInt32BE(value, at);
  return at + 4;
}

function writeString(target: Buffer, value: string, at: number): number {
  const lengthBytes = target.write(value, at + 2, 'utf8');
  target.writeUInt16BE(lengthBytes, at);
  return at + 2 + lengthBytes;
}

function writeFixedBody(b: Buffer, at: number, msg: LinkMessage): void {
  switch (msg.type) {
    case 'hello': {
      checkFixed(msg.nonce, LINK_NONCE_BYTES, 'hello.nonce');
      at = writeU32(b, msg.protocolVersion, at, 'hello.protocolVersion');
      at = writeU64(b, msg.sizeBytes, at, 'hello.sizeBytes');
      at = writeU32(b, msg.trackSizeBytes, at, 'hello.trackSizeBytes');
      at = writeU32(b, msg.rangeTracks, at, 'hello.rangeTracks');
      at = writeU64(b, msg.epoch, at, 'hello.epoch');
      b[at++] = msg.role === 'primary' ? 0 : 1;
      b.set(msg.nonce, at);
      at = writeString(b, msg.node, at + LINK_NONCE_BYTES);
      writeString(b, msg.volumeId, at);
      return;
    }
    case 'auth':
      checkFixed(msg.mac, LINK_MAC_BYTES, 'auth.mac');
      b.set(msg.mac, at);
      return;
    case 'refuse':
      writeString(b, msg.reason, at);
      return;
    case 'write':
      at = writeU64(b, msg.heldSeq, writeU64(b, msg.seq, at, 'write.seq'), 'write.heldSeq');
      writeU64(b, msg.offsetBytes, at, 'write.offsetBytes');
      return;
    case 'zero':
      at = writeU64(b, msg.heldSeq, writeU64(b, msg.seq, at, 'zero.seq'), 'zero.heldSeq');
      at = writeU64(b, msg.offsetBytes, at, 'zero.offsetBytes');
      b[writeU64(b, msg.lengthBytes, at, 'zero.lengthBytes')] = msg.trim ? 1 : 0;
      return;
    case 'writeAck':
      writeU64(b, msg.seq, at, 'writeAck.seq');
      return;
    case 'notice': {
      const op = noticeOps.indexOf(msg.op);
      if (op < 0) throw new RangeError(`link: unknown notice op ${String(msg.op)}`);
      b[at++] = op;
      for (const range of msg.ranges) at = writeU32(b, range, at, 'notice range');
      return;
    }
    case 'heartbeat':
    case 'heartbeatAck':
      if (!Number.isFinite(msg.sentAtMs)) throw new RangeError(`link: ${msg.type}.sentAtMs must be finite`);
      b.writeDoubleBE(msg.sentAtMs, writeU32(b, msg.id, at, `${msg.type}.id`));
      return;
    case 'flushReq':
      at = writeU64(b, msg.offsetBytes, writeU32(b, msg.id, at, 'flushReq.id'), 'flushReq.offsetBytes');
      writeU64(b, msg.lengthBytes, at, 'flushReq.lengthBytes');
      return;
    case 'flushAck':
      b[writeU32(b, msg.id, at, 'flushAck.id')] = msg.ok ? 1 : 0;
      return;
    case 'syncStart':
      b[writeU64(b, msg.seq, writeU64(b, msg.totalBytes, at, 'syncStart.totalBytes'), 'syncStart.seq')] = msg.compare ? 1 : 0;
      return;
    case 'syncData':
      writeU64(b, msg.offsetBytes, at, 'syncData.offsetBytes');
      return;
    case 'syncDone':
      return;
    case 'state':
      writeStateBody(b, at, msg);
      return;
    case 'syncZero':
      writeU64(b, msg.lengthBytes, writeU64(b, msg.offsetBytes, at, 'syncZero.offsetBytes'), 'syncZero.lengthBytes');
      return;
    case 'promoteReq':
      writeHistory(b, writeU32(b, msg.id, at, 'promoteReq.id'), msg.history, 'promoteReq.history');
      return;
    case 'promoteAck':
      at = writeU32(b, msg.id, at, 'promoteAck.id');
      b[at] = msg.ok ? 1 : 0;
      writeString(b, msg.reason, at + 1);
      return;
    case 'fetchReq':
      b.set(msg.tracks, writeU32(b, msg.tracks.length, at, 'fetchReq tracks length'));
      return;
    case 'sumReq':
      if (msg.trackCount > MAX_SUM_TRACKS) throw new RangeError(`link: sumReq asks for ${msg.trackCount} tracks, over ${MAX_SUM_TRACKS}`);
      writeU32(b, msg.trackCount, writeU32(b, msg.firstTrack, writeU32(b, msg.id, at, 'sumReq.id'), 'sumReq.firstTrack'), 'sumReq.trackCount');
      return;
    case 'sumReply':
      at = writeU32(b, msg.id, at, 'sumReply.id');
      b[at] = msg.ok ? 1 : 0;
      b.set(msg.sums, writeU32(b, msg.sums.length, at + 1, 'sumReply sums length'));
      return;
  }
}

function writeHistory(b: Buffer, at: number, history: readonly { epoch: number; node: string }[], field: string): number {
  if (history.length > 0xffff) throw new RangeError(`link: ${field} has too many entries`);
  b.writeUInt16BE(history.length, at);
  at += 2;
  for (const e of history) at = writeString(b, e.node, writeU64(b, e.epoch, at, `${field}.epoch`));
  return at;
}

function writeStateBody(b: Buffer, at: number, msg: StateMessage): void {
  b[at++] = (msg.role === 'primary' ? 1 : 0) | (msg.storeTrusted ? 2 : 0) | (msg.outOfSyncValid ? 4 : 0) | (msg.discardLocal ? 8 : 0) | (msg.positionValid ? 16 : 0) | (msg.storeBlank ? 32 : 0);
  at = writeHistory(b, at, msg.history, 'state.history');
  for (const bitmap of [msg.outOfSync, msg.dirty]) at = writeBitmap(b, at, bitmap);
  at = writeU64(b, msg.lastSeq, writeU64(b, msg.streamEpoch, at, 'state.streamEpoch'), 'state.lastSeq');
  writeBitmap(b, at, msg.above);
}

function writeBitmap(b: Buffer, at: number, bitmap: Uint8Array): number {
  at = writeU32(b, bitmap.length, at, 'state bitmap length');
  b.set(bitmap, at);
  return at + bitmap.length;
}

// ---- decoding ------------------------------------------------------------------------------

/** Reads one verified body; any overrun, trailing byte or out-of-range value is malformed. */
class BodyReader {
  private at = 0;
  constructor(private readonly body: Buffer, private readonly type: LinkMessageType) {}

  private need(n: number): number {
    const at = this.at;
    if (at + n > this.body.length) this.fail(`ends early (needs ${at + n} bytes, has ${this.body.length})`);
    this.at = at + n;
    return at;
  }

  fail(what: string): never {
    throw new LinkProtocolError('malformed-body', `${this.type} body ${what}`);
  }

  u8(): number { return this.body[this.need(1)]!; }
  u16(): number { return this.body.readUInt16BE(this.need(2)); }
  u32(): number { return this.body.readUInt32BE(this.need(4)); }
  f64(): number {
    const value = this.body.readDoubleBE(this.need(8));
    if (!Number.isFinite(value)) this.fail('has a non-finite time');
    return value;
  }

  u64(): number {
    const at = this.need(8);
    const high = this.body.readUInt32BE(at);
    // JS numbers are exact below 2^53; a larger offset or seq is no value we ever send.
    if (high > 0x1fffff) this.fail('has a u64 of 2^53 or more');
    return high * twoTo32 + this.body.readUInt32BE(at + 4);
  }

  bool(): boolean {
    const value = this.u8();
    if (value > 1) this.fail(`has boolean byte ${value}`);
    return value === 1;
  }

  bytes(n: number): Uint8Array {
    const at = this.need(n);
    return this.body.subarray(at, at + n);
  }

  rest(): Uint8Array {
    return this.bytes(this.body.length - this.at);
  }

  string(): string {
    const lengthBytes = this.body.readUInt16BE(this.need(2));
    if (lengthBytes > LINK_MAX_STRING_BYTES) this.fail(`has a ${lengthBytes}-byte string`);
    const bytes = this.bytes(lengthBytes);
    try {
      return utf8.decode(bytes);
    } catch {
      return this.fail('has a string that is not UTF-8');
    }
  }

  end(): void {
    if (this.at !== this.body.length) this.fail(`has ${this.body.length - this.at} trailing bytes`);
  }
}

function decodeBody(type: LinkMessageType, body: Buffer): LinkMessage {
  const r = new BodyReader(body, type);
  let msg: LinkMessage;
  switch (type) {
    case 'hello': msg = decodeHello(r); break;
    case 'auth': msg = { type, mac: r.bytes(LINK_MAC_BYTES) }; break;
    case 'refuse': msg = { type, reason: r.string() }; break;
    case 'write': msg = { type, seq: r.u64(), heldSeq: r.u64(), offsetBytes: r.u64(), data: r.rest() }; break;
    case 'zero': msg = { type, seq: r.u64(), heldSeq: r.u64(), offsetBytes: r.u64(), lengthBytes: r.u64(), trim: r.bool() }; break;
    case 'writeAck': msg = { type, seq: r.u64() }; break;
    case 'notice': msg = decodeNotice(r, body.length); break;
    case 'heartbeat':
    case 'heartbeatAck': msg = { type, id: r.u32(), sentAtMs: r.f64() }; break;
    case 'flushReq': msg = { type, id: r.u32(), offsetBytes: r.u64(), lengthBytes: r.u64() }; break;
    case 'flushAck': msg = { type, id: r.u32(), ok: r.bool() }; break;
    case 'syncStart': msg = { type, totalBytes: r.u64(), seq: r.u64(), compare: r.bool() }; break;
    case 'syncData': msg = { type, offsetBytes: r.u64(), data: r.rest() }; break;
    case 'syncDone': msg = { type }; break;
    case 'state': msg = decodeState(r); break;
    case 'syncZero': msg = { type, offsetBytes: r.u64(), lengthBytes: r.u64() }; break;
    case 'promoteReq': msg = { type, id: r.u32(), history: readHistory(r) }; break;
    case 'promoteAck': msg = { type, id: r.u32(), ok: r.bool(), reason: r.string() }; break;
    case 'fetchReq': msg = { type, tracks: r.bytes(r.u32()) }; break;
    case 'sumReq': msg = decodeSumReq(r); break;
    case 'sumReply': msg = decodeSumReply(r); break;
  }
  r.end();
  return msg;
}

function decodeSumReq(r: BodyReader): SumReqMessage {
  const msg: SumReqMessage = { type: 'sumReq', id: r.u32(), firstTrack: r.u32(), trackCount: r.u32() };
  if (msg.trackCount > MAX_SUM_TRACKS) r.fail(`asks for ${msg.trackCount} tracks, over ${MAX_SUM_TRACKS}`);
  return msg;
}

function decodeSumReply(r: BodyReader): SumReplyMessage {
  const id = r.u32();
  const ok = r.bool();
  const sums = r.bytes(r.u32());
  if (sums.length % TRACK_SUM_BYTES !== 0) r.fail(`has ${sums.length} bytes of sums, not a multiple of ${TRACK_SUM_BYTES}`);
  return { type: 'sumReply', id, ok, sums };
}

function decodeState(r: BodyReader): StateMessage {
  const flags = r.u8();
  if (flags > 63) r.fail(`has flags ${flags}`);
  const history = readHistory(r);
  const outOfSync = r.bytes(r.u32());
  const dirty = r.bytes(r.u32());
  const streamEpoch = r.u64();
  const lastSeq = r.u64();
  const above = r.bytes(r.u32());
  return {
    type: 'state', role: (flags & 1) !== 0 ? 'primary' : 'secondary', history,
    storeTrusted: (flags & 2) !== 0, storeBlank: (flags & 32) !== 0, outOfSyncValid: (flags & 4) !== 0, discardLocal: (flags & 8) !== 0, outOfSync, dirty,
    streamEpoch, positionValid: (flags & 16) !== 0, lastSeq, above,
  };
}

function readHistory(r: BodyReader): { epoch: number; node: string }[] {
  const count = r.u16();
  const history: { epoch: number; node: string }[] = [];
  for (let i = 0; i < count; i++) history.push({ epoch: r.u64(), node: r.string() });
  return history;
}

function decodeHello(r: BodyReader): HelloMessage {
  const protocolVersion = r.u32();
  const sizeBytes = r.u64();
  const trackSizeBytes = r.u32();
  const rangeTracks = r.u32();
  const epoch = r.u64();
  const roleByte = r.u8();
  if (roleByte > 1) r.fail(`has role byte ${roleByte}`);
  const nonce = r.bytes(LINK_NONCE_BYTES);
  const node = r.string();
  const volumeId = r.string();
  return {
    type: 'hello', protocolVersion, node, volumeId, sizeBytes, trackSizeBytes, rangeTracks, nonce,
    role: roleByte === 0 ? 'primary' : 'secondary', epoch,
  };
}

function decodeNotice(r: BodyReader, bodyBytes: number): NoticeMessage {
  const op = noticeOps[r.u8()];
  if (op === undefined) r.fail('has an unknown op');
  if ((bodyBytes - 1) % 4 !== 0) r.fail(`length ${bodyBytes} is not 1 + 4 per range`);
  const ranges = new Array<number>((bodyBytes - 1) / 4);
  for (let i = 0; i < ranges.length; i++) ranges[i] = r.u32();
  return { type: 'notice', op, ranges };
}

/**
 * Incremental decoder. feed() any split of the byte stream, then call next() until it returns
 * null. Bad input throws LinkProtocolError, and the decoder stays failed: the same error is
 * thrown on every later call, so nothing after a corrupt frame is ever yielded either.
 */
export class LinkDecoder {
  private readonly queue = new ByteQueue();

  /** `allocate` provides the buffer a frame spanning several chunks is copied into (a pool). */
  constructor(private readonly allocate: (lengthBytes: number) => Buffer = Buffer.allocUnsafe) {}
  private pending: { type: LinkMessageType; bodyBytes: number } | null = null;
  private failure: LinkProtocolError | null = null;
  private allowed: ReadonlySet<LinkMessageType> | null = null;
  private allowedWhy = '';
  /** Wire bytes of the message next() returned last, for per-type byte counters. */
  lastFrameBytes = 0;

  /** Queue bytes; a transient chunk (reused memory) needs retain() before its memory is reused. */
  feed(chunk: Buffer, transient = false): void {
    this.queue.push(chunk, transient);
  }

  /** Keep what is still unread of a transient chunk (src/core/byte-queue.ts). */
  retain(): void {
    this.queue.retain();
  }

  /** Bytes received but not yet decoded. */
  get bufferedBytes(): number {
    return this.queue.bufferedBytes;
  }

  /**
   * Reject any other type at its header, before its body is buffered (e.g. volume data before
   * the handshake has authenticated the peer); null allows every type again.
   */
  restrictTypes(types: readonly LinkMessageType[] | null, why = ''): void {
    this.allowed = types === null ? null : new Set(types);
    this.allowedWhy = why;
  }

  get failed(): LinkProtocolError | null {
    return this.failure;
  }

  /** The next complete, verified message, or null until more bytes arrive. */
  next(): LinkMessage | null {
    if (this.failure) throw this.failure;
    try {
      if (this.pending === null && !this.readHeader()) return null;
      return this.readBody();
    } catch (err) {
      if (err instanceof LinkProtocolError) this.failure = err;
      throw err;
    }
  }

  private readHeader(): boolean {
    const q = this.queue;
    if (!q.view(LINK_HEADER_BYTES)) return false;
    const b = q.viewBuffer;
    const at = q.viewOffset;
    const magic = b.readUInt32BE(at);
    if (magic !== LINK_MAGIC) throw new LinkProtocolError('bad-magic', `bad frame magic 0x${magic.toString(16)}`);
    const headerCrc = b.readUInt32BE(at + 12);
    if (crc32c(b.subarray(at, at + 12)) !== headerCrc) throw new LinkProtocolError('bad-header-crc', 'frame header checksum mismatch');
    // Only now are the version, type and length trustworthy.
    const version = b[at + 4]!;
    if (version !== LINK_FRAME_VERSION) throw new LinkProtocolError('bad-version', `frame version ${version}, expected ${LINK_FRAME_VERSION}`);
    const type = typeByCode[b[at + 5]!];
    if (type === undefined) throw new LinkProtocolError('unknown-type', `unknown frame type ${b[at + 5]}`);
    if (this.allowed !== null && !this.allowed.has(type)) {
      throw new LinkProtocolError('unexpected-type', `unexpected ${type} frame ${this.allowedWhy}`.trimEnd());
    }
    const flags = b.readUInt16BE(at + 6);
    if (flags !== 0) throw new LinkProtocolError('bad-flags', `unknown frame flags 0x${flags.toString(16)}`);
    const bodyBytes = b.readUInt32BE(at + 8);
    if (bodyBytes > maxBodyBytesByType[type]) {
      throw new LinkProtocolError('body-too-large', `${type} body of ${bodyBytes} bytes exceeds ${maxBodyBytesByType[type]}`);
    }
    q.skip(LINK_HEADER_BYTES);
    this.pending = { type, bodyBytes };
    return true;
  }

  private readBody(): LinkMessage | null {
    const { type, bodyBytes } = this.pending!;
    const frame = this.queue.takeWhenComplete(bodyBytes + LINK_TRAILER_BYTES, this.allocate);
    if (frame === null) return null;
    this.pending = null;
    const body = frame.subarray(0, bodyBytes);
    if (crc32c(body) !== frame.readUInt32BE(bodyBytes)) {
      throw new LinkProtocolError('bad-body-crc', `${type} frame body checksum mismatch`);
    }
    const msg = decodeBody(type, body);
    this.lastFrameBytes = LINK_HEADER_BYTES + bodyBytes + LINK_TRAILER_BYTES;
    return msg;
  }
}
