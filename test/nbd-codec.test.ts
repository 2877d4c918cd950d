// Codec tests: every message round-trips through its encoder and the opposite side's decoder;
// any split of the input decodes the same; arbitrary bytes give messages or NbdProtocolError,
// never another exception and never a hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  NBD_CMD_DISC, NBD_CMD_FLAG_FUA, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM,
  NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_HAS_FLAGS, NBD_FLAG_NO_ZEROES, NBD_FLAG_SEND_FLUSH,
  NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION, NBD_INFO_EXPORT, NBD_INFO_NAME, NBD_MAX_OPTION_DATA_BYTES,
  NBD_MAX_PAYLOAD_BYTES, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_LIST,
  NBD_REP_ACK, NBD_REP_ERR_UNSUP, NBD_REP_INFO, NBD_REP_SERVER, NbdClientDecoder, NbdProtocolError,
  NbdServerDecoder, encodeClientFlags, encodeExportNameReply, encodeGreeting, encodeInfoBlockSize,
  encodeInfoExport, encodeInfoRequestData, encodeInfoString, encodeOption, encodeOptionReply,
  encodeRequest, encodeServerReplyData, encodeSimpleReply, nbdErrnoName, nbdErrnoValue,
  parseInfoReplyData, parseInfoRequestData, parseServerReplyData,
  type NbdClientMessage, type NbdRequest, type NbdServerMessage,
} from '../src/nbd/codec.js';

// ---- helpers -------------------------------------------------------------------------------

/** Feed chunks to a server-side decoder, entering transmission after EXPORT_NAME or GO as a server would. */
function decodeClientStream(chunks: Buffer[]): NbdClientMessage[] {
  const decoder = new NbdServerDecoder();
  const out: NbdClientMessage[] = [];
  for (const chunk of chunks) {
    decoder.feed(chunk);
    for (let m = decoder.next(); m !== null; m = decoder.next()) {
      out.push(m);
      if (m.kind === 'option' && (m.option === NBD_OPT_GO || m.option === NBD_OPT_EXPORT_NAME)) {
        decoder.startTransmission();
      }
    }
  }
  return out;
}

/** Feed chunks to a client-side decoder; replies to cookies in readLengths carry that many bytes. */
function decodeServerStream(
  chunks: Buffer[], readLengths: Map<number, number>, exportNameReply: false | { noZeroes: boolean } = false,
): NbdServerMessage[] {
  const decoder = new NbdClientDecoder((high, low) => (high === 0 ? readLengths.get(low) : undefined));
  const out: NbdServerMessage[] = [];
  for (const chunk of chunks) {
    decoder.feed(chunk);
    for (let m = decoder.next(); m !== null; m = decoder.next()) {
      out.push(m);
      if (m.kind === 'greeting' && exportNameReply) decoder.expectExportNameReply(exportNameReply.noZeroes);
      if (m.kind === 'optionReply' && m.option === NBD_OPT_GO && m.replyType === NBD_REP_ACK) decoder.startTransmission();
    }
  }
  return out;
}

/** Every way of cutting the stream in two, plus byte-at-a-time. */
function splits(stream: Buffer): Buffer[][] {
  const result: Buffer[][] = [];
  for (let i = 0; i <= stream.length; i++) result.push([stream.subarray(0, i), stream.subarray(i)]);
  result.push([...stream].map((byte) => Buffer.from([byte])));
  return result;
}

function request(type: number, fields: Partial<NbdRequest> = {}): NbdRequest {
  return {
    kind: 'request', commandFlags: 0, type, cookieHigh: 0, cookieLow: 1, offsetBytes: 0, lengthBytes: 0,
    data: null, ...fields,
  };
}

const payload = Buffer.from('0123456789abcdef'.repeat(4));

const clientRequests: NbdRequest[] = [
  request(NBD_CMD_READ, { cookieHigh: 0xdeadbeef, cookieLow: 0xfeedface, offsetBytes: 2 ** 53 - 512, lengthBytes: 4096 }),
  request(NBD_CMD_WRITE, { commandFlags: NBD_CMD_FLAG_FUA, cookieLow: 2, offsetBytes: 4096, lengthBytes: payload.length, data: payload }),
  request(NBD_CMD_FLUSH, { cookieLow: 3 }),
  request(NBD_CMD_TRIM, { cookieLow: 4, offsetBytes: 8192, lengthBytes: 0xffffffff }),
  request(NBD_CMD_WRITE_ZEROES, { commandFlags: NBD_CMD_FLAG_NO_HOLE, cookieLow: 5, offsetBytes: 512, lengthBytes: 1024 }),
  request(NBD_CMD_WRITE, { cookieLow: 6, offsetBytes: 0, lengthBytes: 0, data: Buffer.alloc(0) }),
  request(NBD_CMD_DISC, { cookieLow: 7 }),
];

function clientStream(): Buffer {
  return Buffer.concat([
    encodeClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES),
    encodeOption(NBD_OPT_LIST),
    encodeOption(NBD_OPT_INFO, encodeInfoRequestData('vol', [NBD_INFO_BLOCK_SIZE])),
    encodeOption(99, Buffer.from('unknown option data')),
    encodeOption(NBD_OPT_GO, encodeInfoRequestData('vol', [NBD_INFO_NAME, NBD_INFO_DESCRIPTION])),
    ...clientRequests.map((r) => encodeRequest(r)),
  ]);
}

// ---- round trips, client to server ----------------------------------------------------------

test('client flags, options and every request round-trip through the server-side decoder', () => {
  const messages = decodeClientStream([clientStream()]);
  assert.deepEqual(messages.slice(0, 5), [
    { kind: 'clientFlags', clientFlags: NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES },
    { kind: 'option', option: NBD_OPT_LIST, data: Buffer.alloc(0) },
    { kind: 'option', option: NBD_OPT_INFO, data: encodeInfoRequestData('vol', [NBD_INFO_BLOCK_SIZE]) },
    { kind: 'option', option: 99, data: Buffer.from('unknown option data') },
    { kind: 'option', option: NBD_OPT_GO, data: encodeInfoRequestData('vol', [NBD_INFO_NAME, NBD_INFO_DESCRIPTION]) },
  ]);
  assert.deepEqual(messages.slice(5), clientRequests);
});

test('EXPORT_NAME and ABORT options round-trip', () => {
  const stream = Buffer.concat([
    encodeClientFlags(0), encodeOption(NBD_OPT_ABORT), encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from('né')),
  ]);
  assert.deepEqual(decodeClientStream([stream]), [
    { kind: 'clientFlags', clientFlags: 0 },
    { kind: 'option', option: NBD_OPT_ABORT, data: Buffer.alloc(0) },
    { kind: 'option', option: NBD_OPT_EXPORT_NAME, data: Buffer.from('né') },
  ]);
});

test('GO/INFO data parses back, and malformed data is rejected as invalid', () => {
  assert.deepEqual(parseInfoRequestData(encodeInfoRequestData('volume-1', [3, 1, 2])),
    { exportName: 'volume-1', infoTypes: [3, 1, 2] });
  assert.deepEqual(parseInfoRequestData(encodeInfoRequestData('', [])), { exportName: '', infoTypes: [] });
  const good = encodeInfoRequestData('vol', [3]);
  assert.equal(parseInfoRequestData(good.subarray(0, good.length - 1)), null, 'truncated request list');
  assert.equal(parseInfoRequestData(Buffer.concat([good, Buffer.from([0])])), null, 'trailing byte');
  const nameTooLong = Buffer.from(good);
  nameTooLong.writeUInt32BE(100, 0);
  assert.equal(parseInfoRequestData(nameTooLong), null, 'name length beyond the data');
  assert.equal(parseInfoRequestData(Buffer.alloc(5)), null, 'shorter than the fixed fields');
  assert.equal(parseInfoRequestData(encodeInfoRequestData('x'.repeat(4097), [])), null, 'name over 4096 bytes');
});

// ---- round trips, server to client ----------------------------------------------------------

function serverHandshakeStream(): Buffer {
  return Buffer.concat([
    encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
    encodeOptionReply(NBD_OPT_LIST, NBD_REP_SERVER, encodeServerReplyData('vol', 'a volume')),
    encodeOptionReply(NBD_OPT_LIST, NBD_REP_ACK),
    encodeOptionReply(99, NBD_REP_ERR_UNSUP, Buffer.from('no')),
    encodeOptionReply(NBD_OPT_GO, NBD_REP_INFO, encodeInfoExport(2 ** 40, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH)),
    encodeOptionReply(NBD_OPT_GO, NBD_REP_INFO, encodeInfoBlockSize(512, 4096, NBD_MAX_PAYLOAD_BYTES)),
    encodeOptionReply(NBD_OPT_GO, NBD_REP_INFO, encodeInfoString(NBD_INFO_NAME, 'vol')),
    encodeOptionReply(NBD_OPT_GO, NBD_REP_INFO, encodeInfoString(NBD_INFO_DESCRIPTION, '')),
    encodeOptionReply(NBD_OPT_GO, NBD_REP_ACK),
  ]);
}

const readData = Buffer.from('read payload bytes');
const serverReplies = [
  encodeSimpleReply(0, 0, 1, readData),
  encodeSimpleReply(nbdErrnoValue.EINVAL, 0, 2),
  encodeSimpleReply(0, 0, 3),
  encodeSimpleReply(0, 0, 4, Buffer.alloc(0)),
];
const readLengths = new Map([[1, readData.length], [2, 100], [3, 0], [4, 0]]);

function serverStream(): Buffer {
  return Buffer.concat([serverHandshakeStream(), ...serverReplies]);
}

test('greeting, option replies, info payloads and simple replies round-trip through the client-side decoder', () => {
  const messages = decodeServerStream([serverStream()], readLengths);
  assert.deepEqual(messages[0], { kind: 'greeting', handshakeFlags: NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES });
  const replies = messages.slice(1, 9) as Extract<NbdServerMessage, { kind: 'optionReply' }>[];
  assert.deepEqual(replies.map((r) => [r.option, r.replyType]), [
    [NBD_OPT_LIST, NBD_REP_SERVER], [NBD_OPT_LIST, NBD_REP_ACK], [99, NBD_REP_ERR_UNSUP],
    [NBD_OPT_GO, NBD_REP_INFO], [NBD_OPT_GO, NBD_REP_INFO], [NBD_OPT_GO, NBD_REP_INFO], [NBD_OPT_GO, NBD_REP_INFO],
    [NBD_OPT_GO, NBD_REP_ACK],
  ]);
  assert.deepEqual(parseServerReplyData(replies[0]!.data), { exportName: 'vol', details: 'a volume' });
  assert.equal(replies[2]!.data.toString(), 'no');
  assert.deepEqual(replies.slice(3, 7).map((r) => parseInfoReplyData(r.data)), [
    { infoType: 'export', sizeBytes: 2 ** 40, transmissionFlags: NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH },
    { infoType: 'blockSize', minimumBytes: 512, preferredBytes: 4096, maximumBytes: NBD_MAX_PAYLOAD_BYTES },
    { infoType: 'name', name: 'vol' },
    { infoType: 'description', description: '' },
  ]);
  assert.deepEqual(messages.slice(9), [
    { kind: 'simpleReply', errorValue: 0, cookieHigh: 0, cookieLow: 1, data: readData },
    { kind: 'simpleReply', errorValue: 22, cookieHigh: 0, cookieLow: 2, data: null },
    { kind: 'simpleReply', errorValue: 0, cookieHigh: 0, cookieLow: 3, data: null },
    { kind: 'simpleReply', errorValue: 0, cookieHigh: 0, cookieLow: 4, data: null },
  ]);
});

test('EXPORT_NAME reply round-trips with and without the 124 zero bytes', () => {
  for (const noZeroes of [true, false]) {
    const reply = encodeExportNameReply(2 ** 53 - 1, 0x1ff, noZeroes);
    assert.equal(reply.length, noZeroes ? 10 : 134);
    const stream = Buffer.concat([encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE), reply, encodeSimpleReply(0, 0, 9)]);
    for (const chunks of splits(stream)) {
      assert.deepEqual(decodeServerStream(chunks, new Map([[9, 0]]), { noZeroes }), [
        { kind: 'greeting', handshakeFlags: NBD_FLAG_FIXED_NEWSTYLE },
        { kind: 'exportNameReply', sizeBytes: 2 ** 53 - 1, transmissionFlags: 0x1ff },
        { kind: 'simpleReply', errorValue: 0, cookieHigh: 0, cookieLow: 9, data: null },
      ]);
    }
  }
});

test('unknown info types are passed on, wrong fixed lengths are protocol errors', () => {
  assert.deepEqual(parseInfoReplyData(Buffer.from([0, 42, 1, 2])), { infoType: 'unknown', code: 42 });
  assert.throws(() => parseInfoReplyData(encodeInfoExport(1, 1).subarray(0, 11)), NbdProtocolError);
  assert.throws(() => parseInfoReplyData(Buffer.concat([encodeInfoBlockSize(1, 2, 3), Buffer.from([0])])), NbdProtocolError);
  assert.throws(() => parseInfoReplyData(Buffer.from([0])), NbdProtocolError);
  const huge = encodeInfoExport(0, 1);
  huge.writeUInt32BE(0xffffffff, 2);
  assert.throws(() => parseInfoReplyData(huge), (e: unknown) => e instanceof NbdProtocolError && e.reason === 'size-too-large');
  assert.throws(() => parseServerReplyData(Buffer.from([0, 0, 0, 9, 65])), NbdProtocolError);
  assert.equal(NBD_INFO_EXPORT, 0);
});

test('errno values map both ways, unknown values read as EINVAL (proto.md "Error values")', () => {
  for (const [name, value] of Object.entries(nbdErrnoValue)) assert.equal(nbdErrnoName(value), name);
  assert.equal(nbdErrnoName(9999), 'EINVAL');
});

// ---- splitting -------------------------------------------------------------------------------

test('a client stream split at every byte boundary decodes the same', () => {
  const stream = clientStream();
  const expected = decodeClientStream([stream]);
  for (const chunks of splits(stream)) assert.deepEqual(decodeClientStream(chunks), expected);
});

test('a server stream split at every byte boundary decodes the same', () => {
  const stream = serverStream();
  const expected = decodeServerStream([stream], readLengths);
  for (const chunks of splits(stream)) assert.deepEqual(decodeServerStream(chunks, readLengths), expected);
});

test('random requests in random chunkings decode to themselves (fast-check)', () => {
  const arbRequest = fc.record({
    type: fc.constantFrom(NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_FLUSH, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES, 7, 0xffff),
    commandFlags: fc.integer({ min: 0, max: 0xffff }),
    cookieHigh: fc.nat({ max: 0xffffffff }),
    cookieLow: fc.nat({ max: 0xffffffff }),
    offsetBytes: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    payload: fc.uint8Array({ maxLength: 300 }),
    lengthBytes: fc.nat({ max: 0xffffffff }),
  }).map((r): NbdRequest => {
    const data = r.type === NBD_CMD_WRITE ? Buffer.from(r.payload) : null;
    return { kind: 'request', type: r.type, commandFlags: r.commandFlags, cookieHigh: r.cookieHigh, cookieLow: r.cookieLow,
      offsetBytes: r.offsetBytes, lengthBytes: data ? data.length : r.lengthBytes, data };
  });
  fc.assert(fc.property(fc.array(arbRequest, { maxLength: 20 }), fc.array(fc.nat({ max: 400 }), { maxLength: 30 }),
    (requests, cutPoints) => {
      const stream = Buffer.concat([encodeClientFlags(0), encodeOption(NBD_OPT_GO, encodeInfoRequestData('', [])),
        ...requests.map((r) => encodeRequest(r))]);
      const cuts = [...new Set(cutPoints.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
      const chunks = [0, ...cuts].map((from, i) => stream.subarray(from, cuts[i] ?? stream.length));
      assert.deepEqual(decodeClientStream(chunks).slice(2), requests);
    }));
});

test('requests read through one reused receive buffer decode intact, even when held back (fast-check)', () => {
  // Production sockets read into one reused buffer (src/node/socket-input.ts): a chunk is valid
  // only until retain(). Scribbling over the buffer after every chunk catches any view of it that
  // a decoded message kept; taking at most `perChunk` messages per chunk leaves whole messages
  // queued across chunks, as back-pressure does.
  fc.assert(fc.property(
    fc.array(fc.uint8Array({ minLength: 1, maxLength: 9000 }), { minLength: 1, maxLength: 12 }),
    fc.array(fc.nat({ max: 20000 }), { maxLength: 30 }),
    fc.integer({ min: 1, max: 4 }),
    (payloads, cutPoints, perChunk) => {
      const requests = payloads.map((p, i) => request(NBD_CMD_WRITE, { cookieLow: i, offsetBytes: i * 4096, lengthBytes: p.length, data: Buffer.from(p) }));
      const stream = Buffer.concat([encodeClientFlags(0), encodeOption(NBD_OPT_GO, encodeInfoRequestData('', [])), ...requests.map((r) => encodeRequest(r))]);
      const cuts = [...new Set(cutPoints.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
      const receive = Buffer.alloc(stream.length);
      const decoder = new NbdServerDecoder();
      const out: NbdClientMessage[] = [];
      const take = (limit: number): void => {
        for (let n = 0; n < limit; n++) {
          const m = decoder.next();
          if (m === null) return;
          out.push(m);
          if (m.kind === 'option' && m.option === NBD_OPT_GO) decoder.startTransmission();
        }
      };
      for (const [i, from] of [0, ...cuts].entries()) {
        const chunk = stream.subarray(from, cuts[i] ?? stream.length);
        chunk.copy(receive);
        decoder.feed(receive.subarray(0, chunk.length), true);
        take(perChunk);
        decoder.retain();
        receive.fill(0xee);
      }
      take(Infinity);
      assert.deepEqual(out.slice(2), requests);
    }), { numRuns: 300 });
});

// ---- bad input -------------------------------------------------------------------------------

function serverDecoderError(stream: Buffer, transmission = false): NbdProtocolError {
  const decoder = new NbdServerDecoder();
  if (transmission) decoder.startTransmission();
  decoder.feed(stream);
  try {
    while (decoder.next() !== null) { /* drain */ }
  } catch (err) {
    assert.ok(err instanceof NbdProtocolError, `expected NbdProtocolError, got ${String(err)}`);
    assert.throws(() => decoder.next(), (again: unknown) => again === err, 'the decoder stays failed');
    return err;
  }
  assert.fail('no protocol error');
}

test('server-side decoder names each protocol violation', () => {
  assert.equal(serverDecoderError(encodeClientFlags(4)).reason, 'bad-client-flags');
  const badOption = encodeOption(NBD_OPT_GO);
  badOption[0] = 0;
  assert.equal(serverDecoderError(Buffer.concat([encodeClientFlags(1), badOption])).reason, 'bad-option-magic');
  const badRequest = encodeRequest(request(NBD_CMD_READ, { lengthBytes: 512 }));
  badRequest[3] = 0;
  assert.equal(serverDecoderError(badRequest, true).reason, 'bad-request-magic');
  const hugeWrite = encodeRequest(request(NBD_CMD_WRITE, { lengthBytes: NBD_MAX_PAYLOAD_BYTES + 1 }));
  assert.equal(serverDecoderError(hugeWrite, true).reason, 'payload-too-large');
});

test('a READ longer than the maximum payload decodes (the server answers it EINVAL, it has no payload)', () => {
  const decoder = new NbdServerDecoder();
  decoder.startTransmission();
  decoder.feed(encodeRequest(request(NBD_CMD_READ, { lengthBytes: 0xffffffff })));
  assert.equal((decoder.next() as NbdRequest).lengthBytes, 0xffffffff);
});

test('nextReadBytes looks at the next whole READ header without taking it, and is 0 for anything else', () => {
  const decoder = new NbdServerDecoder();
  decoder.feed(encodeClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE));
  assert.equal(decoder.nextReadBytes(), 0, 'not in transmission yet');
  decoder.next();
  decoder.startTransmission();
  const read = encodeRequest(request(NBD_CMD_READ, { lengthBytes: 1024 * 1024 }));
  decoder.feed(read.subarray(0, 27));
  assert.equal(decoder.nextReadBytes(), 0, 'header not complete');
  decoder.feed(read.subarray(27));
  assert.equal(decoder.nextReadBytes(), 1024 * 1024);
  assert.equal(decoder.nextReadBytes(), 1024 * 1024, 'nothing was consumed');
  assert.equal((decoder.next() as NbdRequest).lengthBytes, 1024 * 1024);
  decoder.feed(encodeRequest(request(NBD_CMD_READ, { lengthBytes: NBD_MAX_PAYLOAD_BYTES + 512 })));
  assert.equal(decoder.nextReadBytes(), 0, 'an over-long READ is refused without a buffer');
  decoder.next();
  decoder.feed(encodeRequest(request(NBD_CMD_WRITE, { lengthBytes: 512, data: Buffer.alloc(512) })));
  assert.equal(decoder.nextReadBytes(), 0, 'a WRITE brings its own payload');
});

test('an oversized option is skipped as it streams in and the next option is still read', () => {
  const big = Buffer.alloc(NBD_MAX_OPTION_DATA_BYTES + 1000, 7);
  const stream = Buffer.concat([encodeClientFlags(1), encodeOption(1234, big), encodeOption(NBD_OPT_LIST)]);
  const messages = decodeClientStream([stream.subarray(0, 5000), stream.subarray(5000, 40000), stream.subarray(40000)]);
  assert.deepEqual(messages, [
    { kind: 'clientFlags', clientFlags: 1 },
    { kind: 'oversizedOption', option: 1234, lengthBytes: big.length },
    { kind: 'option', option: NBD_OPT_LIST, data: Buffer.alloc(0) },
  ]);
});

test('client-side decoder names each protocol violation', () => {
  const reasonOf = (stream: Buffer, lengths = new Map<number, number>()): string => {
    try {
      decodeServerStream([stream], lengths);
    } catch (err) {
      assert.ok(err instanceof NbdProtocolError);
      return err.reason;
    }
    return 'no error';
  };
  assert.equal(reasonOf(Buffer.from('NOTMAGICIHAVEOPT\0\x03')), 'bad-magic');
  const oldstyle = Buffer.alloc(152);
  oldstyle.write('NBDMAGIC');
  oldstyle.writeBigUInt64BE(0x00420281861253n, 8);
  assert.equal(reasonOf(oldstyle), 'oldstyle-negotiation');
  const greeting = encodeGreeting(1);
  const badReply = encodeOptionReply(NBD_OPT_GO, NBD_REP_ACK);
  badReply[7] ^= 1;
  assert.equal(reasonOf(Buffer.concat([greeting, badReply])), 'bad-reply-magic');
  const hugeReply = encodeOptionReply(NBD_OPT_GO, NBD_REP_INFO);
  hugeReply.writeUInt32BE(1 << 30, 16);
  assert.equal(reasonOf(Buffer.concat([greeting, hugeReply])), 'payload-too-large');
  const handshake = Buffer.concat([greeting, encodeOptionReply(NBD_OPT_GO, NBD_REP_ACK)]);
  assert.equal(reasonOf(Buffer.concat([handshake, encodeSimpleReply(0, 0, 5)])), 'unknown-cookie');
  assert.equal(reasonOf(Buffer.concat([handshake, encodeSimpleReply(0, 1, 5)]), new Map([[5, 0]])), 'unknown-cookie');
  const structured = encodeSimpleReply(0, 0, 5);
  structured.writeUInt32BE(0x668e33ef, 0);
  assert.equal(reasonOf(Buffer.concat([handshake, structured]), new Map([[5, 0]])), 'structured-reply-not-negotiated');
  const badMagic = encodeSimpleReply(0, 0, 5);
  badMagic[0] = 0;
  assert.equal(reasonOf(Buffer.concat([handshake, badMagic]), new Map([[5, 0]])), 'bad-reply-magic');
});

/** Drain a decoder fed with arbitrary chunks; only messages or NbdProtocolError may come out. */
function drainArbitrary(next: () => unknown, feed: (b: Buffer) => void, chunks: Uint8Array[]): void {
  let totalBytes = 0;
  for (const chunk of chunks) {
    feed(Buffer.from(chunk));
    totalBytes += chunk.length;
    // Each message consumes at least one byte, so more pulls than bytes would mean a hang.
    let pulls = 0;
    try {
      while (next() !== null) assert.ok(++pulls <= totalBytes + 1, 'decoder yields without consuming input');
    } catch (err) {
      if (!(err instanceof NbdProtocolError)) throw err;
      assert.ok(typeof err.reason === 'string' && err.reason.length > 0);
      return;
    }
  }
}

test('arbitrary bytes give the server-side decoder only messages or NbdProtocolError (fast-check)', () => {
  const arbChunks = fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 12 });
  fc.assert(fc.property(fc.boolean(), arbChunks, (transmission, chunks) => {
    const decoder = new NbdServerDecoder();
    if (transmission) decoder.startTransmission();
    drainArbitrary(() => decoder.next(), (b) => decoder.feed(b), chunks);
  }), { numRuns: 2000 });
});

test('arbitrary bytes after a valid prefix give the client-side decoder only messages or NbdProtocolError (fast-check)', () => {
  const arbChunks = fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 12 });
  const prefixes = [
    Buffer.alloc(0),
    encodeGreeting(3),
    Buffer.concat([encodeGreeting(3), encodeOptionReply(NBD_OPT_GO, NBD_REP_ACK)]),
  ];
  fc.assert(fc.property(fc.constantFrom(0, 1, 2), fc.nat({ max: 100 }), arbChunks, (prefixIndex, readBytes, chunks) => {
    const decoder = new NbdClientDecoder((high, low) => (low % 3 === 0 ? undefined : low % 3 === 1 ? readBytes : high));
    const feed = (b: Buffer): void => decoder.feed(b);
    const next = (): NbdServerMessage | null => {
      const m = decoder.next();
      if (m?.kind === 'optionReply' && m.option === NBD_OPT_GO && m.replyType === NBD_REP_ACK) decoder.startTransmission();
      return m;
    };
    drainArbitrary(next, feed, [prefixes[prefixIndex]!, ...chunks]);
  }), { numRuns: 2000 });
});

test('a 32 MiB WRITE arriving in 64 KiB chunks decodes with its bytes intact', () => {
  const data = Buffer.alloc(NBD_MAX_PAYLOAD_BYTES);
  for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i);
  const stream = encodeRequest(request(NBD_CMD_WRITE, { lengthBytes: data.length, data }));
  const decoder = new NbdServerDecoder();
  decoder.startTransmission();
  const started = performance.now();
  let decoded: NbdClientMessage | null = null;
  for (let at = 0; at < stream.length; at += 65536) {
    decoder.feed(stream.subarray(at, at + 65536));
    decoded = decoder.next() ?? decoded;
  }
  assert.ok(decoded?.kind === 'request' && decoded.data !== null);
  assert.ok(decoded.data.equals(data));
  assert.ok(performance.now() - started < 2000, 'linear-time reassembly');
});

test('valid streams with corrupted bytes give only messages or NbdProtocolError (fast-check)', () => {
  const client = clientStream();
  const server = serverStream();
  const arbEdits = fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 6 });
  fc.assert(fc.property(arbEdits, fc.nat({ max: 64 }), (edits, chunkBytes) => {
    for (const original of [client, server]) {
      const stream = Buffer.from(original);
      for (const [at, value] of edits) stream[at % stream.length] = value;
      const chunks: Buffer[] = [];
      for (let at = 0; at < stream.length; at += chunkBytes + 1) chunks.push(stream.subarray(at, at + chunkBytes + 1));
      try {
        if (original === client) decodeClientStream(chunks);
        else decodeServerStream(chunks, readLengths);
      } catch (err) {
        assert.ok(err instanceof NbdProtocolError, `unexpected ${String(err)}`);
      }
    }
  }), { numRuns: 2000 });
});
