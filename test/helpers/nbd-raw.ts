// A raw NBD client for server tests: messages are built by hand here (not with our codec), so the
// wire layout is checked independently of the code under test. Raw reads exact lengths from a
// chunk list (a 32 MiB READ reply arrives in hundreds of chunks; concatenating on each one would
// be quadratic), and can stop reading (pause) to play a client that never reads its replies.
import assert from 'node:assert/strict';
import net from 'node:net';

export const IHAVEOPT = Buffer.from('IHAVEOPT');
export const REPLY_MAGIC = Buffer.from('0003e889045565a9', 'hex');
export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const ERR_UNSUP = 0x80000001;
export const ERR_INVALID = 0x80000003;
export const ERR_UNKNOWN = 0x80000006;
export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, EXTENDED_HEADERS: 11 };
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6 };
export const FLAG_FUA = 1;
export const MiB = 1024 * 1024;

export function u16(v: number): Buffer { const b = Buffer.alloc(2); b.writeUInt16BE(v); return b; }
export function u32(v: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; }
export function u64(v: number): Buffer { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(v)); return b; }

export function option(code: number, data: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([IHAVEOPT, u32(code), u32(data.length), data]);
}

export function infoData(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name);
  return Buffer.concat([u32(n.length), n, u16(infos.length), ...infos.map(u16)]);
}

export function request(type: number, cookie: number, offsetBytes: number, lengthBytes: number, flags = 0, data?: Buffer): Buffer {
  const header = Buffer.concat([u32(0x25609513), u16(flags), u16(type), u32(0), u32(cookie), u64(offsetBytes), u32(lengthBytes)]);
  return data ? Buffer.concat([header, data]) : header;
}

/** A raw client socket with exact-length reads. */
export class Raw {
  private chunks: Buffer[] = [];
  private receivedBytes = 0;
  private wake: (() => void) | null = null;
  ended = false;
  readonly closed: Promise<void>;
  /** Our port, as the server logs it ("remote"); the socket forgets it once closed. */
  readonly localPort: number;

  private constructor(readonly socket: net.Socket) {
    this.localPort = socket.localPort ?? -1;
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.receivedBytes += chunk.length;
      this.wake?.();
    });
    socket.on('error', () => { /* the close event reports it */ });
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.ended = true;
      this.wake?.();
      resolve();
    }));
  }

  static connect(port: number): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new Raw(socket)));
      socket.once('error', reject);
    });
  }

  send(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts));
  }

  /** Stop reading from the socket: the server's replies back up (kernel buffers, then its own). */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** Bytes received and not yet consumed by read(). */
  get bufferedBytes(): number {
    return this.receivedBytes;
  }

  async read(lengthBytes: number, timeoutMs = 15_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.receivedBytes < lengthBytes) {
      if (this.ended) throw new Error(`connection closed with ${this.receivedBytes}/${lengthBytes} bytes`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lengthBytes} bytes (have ${this.receivedBytes})`);
      await new Promise<void>((resolve) => { this.wake = resolve; setTimeout(resolve, 100); });
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.receivedBytes);
    const out = all.subarray(0, lengthBytes);
    const rest = all.subarray(lengthBytes);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.receivedBytes = rest.length;
    return out;
  }

  /** Resolves when the server closed the connection; returns any bytes it sent first. */
  async expectClosed(timeoutMs = 5000): Promise<Buffer> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('server did not close the connection')), timeoutMs);
    });
    await Promise.race([this.closed, timeout]).finally(() => clearTimeout(timer));
    return Buffer.concat(this.chunks, this.receivedBytes);
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const header = await this.read(20);
    assert.ok(header.subarray(0, 8).equals(REPLY_MAGIC), 'option reply magic');
    const data = await this.read(header.readUInt32BE(16));
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: Buffer.from(data) };
  }

  /** A simple reply: [error value, cookie, data]. */
  async reply(dataBytes = 0, timeoutMs = 15_000): Promise<{ error: number; cookie: number; data: Buffer }> {
    const header = await this.read(16, timeoutMs);
    assert.equal(header.readUInt32BE(0), 0x67446698, 'simple reply magic');
    const error = header.readUInt32BE(4);
    assert.equal(header.readUInt32BE(8), 0, 'cookie high half echoed');
    const data = error === 0 && dataBytes > 0 ? Buffer.from(await this.read(dataBytes, timeoutMs)) : Buffer.alloc(0);
    return { error, cookie: header.readUInt32BE(12), data };
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Greeting, client flags, GO: returns [size, transmission flags]. */
export async function negotiate(raw: Raw, exportName = 'vol'): Promise<{ sizeBytes: number; flags: number }> {
  const greeting = await raw.read(18);
  assert.equal(greeting.toString('latin1', 0, 16), 'NBDMAGICIHAVEOPT');
  assert.equal(greeting.readUInt16BE(16), 3, 'FIXED_NEWSTYLE | NO_ZEROES');
  raw.send(u32(3), option(OPT.GO, infoData(exportName)));
  let sizeBytes = -1;
  let flags = -1;
  for (;;) {
    const reply = await raw.optionReply();
    assert.equal(reply.option, OPT.GO);
    if (reply.type === REP_ACK) break;
    assert.equal(reply.type, REP_INFO);
    if (reply.data.readUInt16BE(0) === 0) {
      assert.equal(reply.data.length, 12);
      sizeBytes = Number(reply.data.readBigUInt64BE(2));
      flags = reply.data.readUInt16BE(10);
    }
  }
  return { sizeBytes, flags };
}

/** Connect and negotiate the export: a client in the transmission phase. */
export async function connectNegotiated(port: number, exportName = 'vol'): Promise<Raw> {
  const raw = await Raw.connect(port);
  await negotiate(raw, exportName);
  return raw;
}
