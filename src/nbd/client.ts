// The NBD client, used for nbd:// stores (seed Fig. 2, a remote disk). Fixed newstyle
// negotiation with NBD_OPT_GO, falling back to NBD_OPT_EXPORT_NAME when the server does not
// know GO (proto.md "NBD_OPT_INFO (6) and NBD_OPT_GO (7)"); then many requests in flight on one
// socket, matched to replies by cookie, simple replies only.
import net from 'node:net';
import {
  NBD_CMD_DISC, NBD_CMD_FLAG_FUA, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM,
  NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES, NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE, NBD_MAX_PAYLOAD_BYTES, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_REP_ACK,
  NBD_REP_ERR_UNSUP, NBD_REP_FLAG_ERROR, NBD_REP_INFO, NBD_REQUEST_HEADER_BYTES, NbdClientDecoder,
  NbdProtocolError, encodeClientFlags, encodeInfoRequestData, encodeOption, nbdCommandName,
  nbdErrnoName, parseInfoReplyData, writeRequestHeader, type NbdServerMessage, type NbdSimpleReply,
} from './codec.js';
import type { NbdErrno } from './export.js';

export const NBD_DEFAULT_PORT = 10809;

export interface NbdTarget {
  host: string;
  port: number;
  /** May be empty: the server's default export (proto.md "NBD_OPT_EXPORT_NAME"). */
  exportName: string;
}

/** Size constraints in force (proto.md "Size constraints"); defaults when the server sent none. */
export interface NbdBlockSize {
  minimumBytes: number;
  preferredBytes: number;
  maximumBytes: number;
}

export interface NbdConnectOptions {
  /** Give up if TCP connect plus negotiation takes longer (a silent non-NBD peer would hang us). */
  handshakeTimeoutMs?: number;
}

/** The server answered a request with an error; errno is its name (proto.md "Error values"). */
export class NbdReplyError extends Error {
  override readonly name = 'NbdReplyError';
  constructor(readonly errno: NbdErrno, readonly errorValue: number, message: string) {
    super(message);
  }
}

/** Parse nbd://host[:port]/[export]; the port defaults to 10809, the export name may be empty. */
export function parseNbdUri(uri: string): NbdTarget {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new Error(`invalid NBD URI ${JSON.stringify(uri)}`);
  }
  if (url.protocol !== 'nbd:') throw new Error(`unsupported NBD URI scheme in ${JSON.stringify(uri)}: only nbd:// is supported`);
  if (url.hostname === '') throw new Error(`NBD URI ${JSON.stringify(uri)} has no host`);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === '' ? NBD_DEFAULT_PORT : Number(url.port);
  return { host, port, exportName: decodeURIComponent(url.pathname.replace(/^\//, '')) };
}

function describeTarget(target: NbdTarget): string {
  const host = target.host.includes(':') ? `[${target.host}]` : target.host;
  return `nbd://${host}:${target.port}/${encodeURIComponent(target.exportName)}`;
}

interface Pending {
  type: number;
  offsetBytes: number;
  lengthBytes: number;
  resolve(data: Buffer | null): void;
  reject(err: Error): void;
}

const defaultBlockSize: NbdBlockSize = { minimumBytes: 1, preferredBytes: 4096, maximumBytes: NBD_MAX_PAYLOAD_BYTES };
/** Write payloads up to this size are copied behind their header (one small write beats two). */
const copyPayloadLimitBytes = 16 * 1024;
/** After NBD_CMD_DISC, how long we wait for the server to close before we do. */
const disconnectGraceMs = 2000;

export class NbdClient {
  private readonly pending = new Map<number, Pending>();
  private nextCookie = 1;
  private failure: Error | null = null;
  private disconnecting = false;
  private corked = false;
  private idleWaiters: (() => void)[] = [];
  private readonly closedPromise: Promise<void>;

  private constructor(
    private readonly socket: net.Socket,
    private readonly decoder: NbdClientDecoder,
    readonly target: NbdTarget,
    readonly sizeBytes: number,
    readonly transmissionFlags: number,
    readonly blockSize: NbdBlockSize,
  ) {
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      decoder.feed(chunk);
      this.pump();
    });
    socket.on('error', (err) => this.fail(new Error(`NBD connection to ${describeTarget(target)} failed: ${err.message}`)));
    socket.on('close', () => this.fail(new Error(`NBD connection to ${describeTarget(target)} closed`)));
  }

  /** Connect and negotiate; rejects with a message naming the target on any failure. */
  static async connect(target: string | NbdTarget, options: NbdConnectOptions = {}): Promise<NbdClient> {
    const resolved = typeof target === 'string' ? parseNbdUri(target) : target;
    const socket = await openSocket(resolved, options.handshakeTimeoutMs ?? 10_000);
    let client: NbdClient | undefined;
    // The decoder asks which cookies carry READ data; before the client exists nothing is in flight.
    const decoder = new NbdClientDecoder((high, low) => (client ? client.replyPayloadBytes(high, low) : undefined));
    try {
      const negotiated = await negotiate(socket, decoder, resolved);
      socket.setTimeout(0);
      client = new NbdClient(socket, decoder, resolved, negotiated.sizeBytes, negotiated.transmissionFlags, negotiated.blockSize);
    } catch (err) {
      socket.destroy();
      throw new Error(`NBD negotiation with ${describeTarget(resolved)} failed: ${(err as Error).message}`);
    }
    client.pump();
    return client;
  }

  get readOnly(): boolean { return (this.transmissionFlags & NBD_FLAG_READ_ONLY) !== 0; }
  get canFlush(): boolean { return (this.transmissionFlags & NBD_FLAG_SEND_FLUSH) !== 0; }
  get canFua(): boolean { return (this.transmissionFlags & NBD_FLAG_SEND_FUA) !== 0; }
  get canTrim(): boolean { return (this.transmissionFlags & NBD_FLAG_SEND_TRIM) !== 0; }
  get canWriteZeroes(): boolean { return (this.transmissionFlags & NBD_FLAG_SEND_WRITE_ZEROES) !== 0; }
  get canMultiConn(): boolean { return (this.transmissionFlags & NBD_FLAG_CAN_MULTI_CONN) !== 0; }
  /** Requests sent and not yet answered. */
  get inFlight(): number { return this.pending.size; }
  /** Set once the connection is unusable; every request then rejects with it. */
  get closedError(): Error | null { return this.failure; }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.submit(NBD_CMD_READ, 0, offsetBytes, lengthBytes, null) as Promise<Buffer>;
  }

  async write(offsetBytes: number, data: Uint8Array, options: { fua?: boolean } = {}): Promise<void> {
    const flags = this.fuaFlag(options.fua);
    const payload = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    await this.submit(NBD_CMD_WRITE, flags, offsetBytes, payload.length, payload);
  }

  async flush(): Promise<void> {
    this.require(this.canFlush, 'NBD_CMD_FLUSH');
    await this.submit(NBD_CMD_FLUSH, 0, 0, 0, null);
  }

  async trim(offsetBytes: number, lengthBytes: number, options: { fua?: boolean } = {}): Promise<void> {
    this.require(this.canTrim, 'NBD_CMD_TRIM');
    await this.submit(NBD_CMD_TRIM, this.fuaFlag(options.fua), offsetBytes, lengthBytes, null);
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, options: { fua?: boolean; noHole?: boolean } = {}): Promise<void> {
    this.require(this.canWriteZeroes, 'NBD_CMD_WRITE_ZEROES');
    const flags = this.fuaFlag(options.fua) | (options.noHole ? NBD_CMD_FLAG_NO_HOLE : 0);
    await this.submit(NBD_CMD_WRITE_ZEROES, flags, offsetBytes, lengthBytes, null);
  }

  /**
   * Soft disconnect (proto.md "Terminating the transmission phase"): refuse new requests, wait
   * for those in flight ("SHOULD wait until there are no inflight requests first"), send
   * NBD_CMD_DISC, and wait for the server to close.
   */
  async disconnect(): Promise<void> {
    if (this.disconnecting) return this.closedPromise;
    this.disconnecting = true;
    if (this.pending.size > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (this.failure === null) {
      const disc = Buffer.allocUnsafe(NBD_REQUEST_HEADER_BYTES);
      writeRequestHeader(disc, 0, { commandFlags: 0, type: NBD_CMD_DISC, cookieHigh: 0, cookieLow: 0, offsetBytes: 0, lengthBytes: 0 });
      this.socket.end(disc);
      const timer = setTimeout(() => this.socket.destroy(), disconnectGraceMs);
      await this.closedPromise;
      clearTimeout(timer);
    }
    this.socket.destroy();
    await this.closedPromise;
  }

  private fuaFlag(fua: boolean | undefined): number {
    if (!fua) return 0;
    this.require(this.canFua, 'NBD_CMD_FLAG_FUA');
    return NBD_CMD_FLAG_FUA;
  }

  /** "The client MUST NOT use a feature documented as 'exposed' by a flag unless that flag was set." */
  private require(advertised: boolean, feature: string): void {
    if (!advertised) throw new Error(`${describeTarget(this.target)} does not support ${feature}`);
  }

  private submit(type: number, flags: number, offsetBytes: number, lengthBytes: number, data: Buffer | null): Promise<Buffer | null> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.disconnecting) return Promise.reject(new Error(`NBD client for ${describeTarget(this.target)} is disconnecting`));
    const invalid = this.invalidRequest(type, offsetBytes, lengthBytes);
    if (invalid !== null) return Promise.reject(new RangeError(invalid));
    const cookie = this.allocateCookie();
    return new Promise((resolve, reject) => {
      this.pending.set(cookie, { type, offsetBytes, lengthBytes, resolve, reject });
      this.sendRequest(type, flags, cookie, offsetBytes, lengthBytes, data);
    });
  }

  /** Local checks of what the client MUST honour (proto.md "Size constraints"). */
  private invalidRequest(type: number, offsetBytes: number, lengthBytes: number): string | null {
    const what = `${nbdCommandName(type)} of ${lengthBytes} bytes at ${offsetBytes}`;
    if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || !Number.isInteger(lengthBytes)
      || lengthBytes < 0 || lengthBytes > 0xffffffff) {
      return `invalid NBD ${what}`;
    }
    // Having asked for NBD_INFO_BLOCK_SIZE in NBD_OPT_GO, we "MUST abide by the size constraints".
    const { minimumBytes, maximumBytes } = this.blockSize;
    if (offsetBytes % minimumBytes !== 0 || lengthBytes % minimumBytes !== 0) {
      return `NBD ${what} is not aligned to the server's ${minimumBytes}-byte minimum block`;
    }
    if ((type === NBD_CMD_READ || type === NBD_CMD_WRITE) && lengthBytes > maximumBytes) {
      return `NBD ${what} exceeds the server's ${maximumBytes}-byte maximum payload`;
    }
    return null;
  }

  private allocateCookie(): number {
    // Cookies need only be distinct among requests in flight (proto.md "Transmission").
    while (this.pending.has(this.nextCookie)) this.nextCookie = (this.nextCookie + 1) >>> 0;
    const cookie = this.nextCookie;
    this.nextCookie = (this.nextCookie + 1) >>> 0;
    return cookie;
  }

  private sendRequest(type: number, flags: number, cookie: number, offsetBytes: number, lengthBytes: number, data: Buffer | null): void {
    this.corkUntilNextTick();
    const header = { commandFlags: flags, type, cookieHigh: 0, cookieLow: cookie, offsetBytes, lengthBytes };
    if (data !== null && data.length > copyPayloadLimitBytes) {
      const head = Buffer.allocUnsafe(NBD_REQUEST_HEADER_BYTES);
      writeRequestHeader(head, 0, header);
      this.socket.write(head);
      this.socket.write(data);
      return;
    }
    const message = Buffer.allocUnsafe(NBD_REQUEST_HEADER_BYTES + (data?.length ?? 0));
    writeRequestHeader(message, 0, header);
    data?.copy(message, NBD_REQUEST_HEADER_BYTES);
    this.socket.write(message);
  }

  /** Requests issued in the same tick leave in one writev (see the server's twin). */
  private corkUntilNextTick(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    process.nextTick(() => {
      this.corked = false;
      this.socket.uncork();
    });
  }

  private replyPayloadBytes(cookieHigh: number, cookieLow: number): number | undefined {
    if (cookieHigh !== 0) return undefined;
    const pending = this.pending.get(cookieLow);
    if (pending === undefined) return undefined;
    return pending.type === NBD_CMD_READ ? pending.lengthBytes : 0;
  }

  private pump(): void {
    try {
      for (let message = this.decoder.next(); message !== null; message = this.decoder.next()) {
        if (message.kind !== 'simpleReply') {
          throw new NbdProtocolError('bad-reply-magic', `unexpected ${message.kind} during transmission`);
        }
        this.settle(message);
      }
    } catch (err) {
      if (!(err instanceof NbdProtocolError)) throw err;
      // A server that breaks the protocol cannot be trusted with further requests: hard
      // disconnect (proto.md "Terminating the transmission phase").
      this.fail(new Error(`NBD server ${describeTarget(this.target)} broke the protocol: ${err.message}`));
      this.socket.destroy();
    }
  }

  private settle(reply: NbdSimpleReply): void {
    const pending = this.pending.get(reply.cookieLow) as Pending;
    this.pending.delete(reply.cookieLow);
    if (reply.errorValue === 0) {
      pending.resolve(pending.type === NBD_CMD_READ ? (reply.data ?? Buffer.alloc(0)) : null);
    } else {
      const errno = nbdErrnoName(reply.errorValue);
      pending.reject(new NbdReplyError(errno, reply.errorValue,
        `NBD ${nbdCommandName(pending.type)} of ${pending.lengthBytes} bytes at ${pending.offsetBytes} on ${describeTarget(this.target)} failed: ${errno}`));
    }
    if (this.pending.size === 0) this.wakeIdleWaiters();
  }

  /** The connection is gone: reject everything in flight and everything after. */
  private fail(err: Error): void {
    if (this.failure === null) this.failure = err;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(this.failure);
    this.wakeIdleWaiters();
  }

  private wakeIdleWaiters(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }
}

/** TCP connect with Nagle off (proto.md "Protocol phases"), bounded by the handshake timeout. */
function openSocket(target: NbdTarget, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: target.host, port: target.port });
    socket.setNoDelay(true);
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new Error(`cannot connect to ${describeTarget(target)}: ${err.code === 'ECONNREFUSED' ? 'connection refused' : err.message}`));
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

interface Negotiated {
  sizeBytes: number;
  transmissionFlags: number;
  blockSize: NbdBlockSize;
}

/** Pulls decoded handshake messages, waiting for socket data as needed. */
function handshakeReader(socket: net.Socket, decoder: NbdClientDecoder): { next(): Promise<NbdServerMessage>; detach(): void } {
  let wake: (() => void) | null = null;
  let ended: Error | null = null;
  const onData = (chunk: Buffer): void => { decoder.feed(chunk); wake?.(); };
  const onEnd = (err?: Error): void => {
    ended ??= new Error(err ? err.message : 'server closed the connection');
    wake?.();
  };
  const onClose = (): void => onEnd();
  socket.on('data', onData);
  socket.on('error', onEnd);
  socket.on('close', onClose);
  return {
    async next(): Promise<NbdServerMessage> {
      for (;;) {
        const message = decoder.next();
        if (message !== null) return message;
        if (ended) throw ended;
        await new Promise<void>((resolve) => { wake = resolve; });
        wake = null;
      }
    },
    detach(): void {
      socket.off('data', onData);
      socket.off('error', onEnd);
      socket.off('close', onClose);
    },
  };
}

async function negotiate(socket: net.Socket, decoder: NbdClientDecoder, target: NbdTarget): Promise<Negotiated> {
  const reader = handshakeReader(socket, decoder);
  try {
    const greeting = await reader.next();
    if (greeting.kind !== 'greeting') throw new Error('expected the server greeting');
    const fixed = (greeting.handshakeFlags & NBD_FLAG_FIXED_NEWSTYLE) !== 0;
    const noZeroes = fixed && (greeting.handshakeFlags & NBD_FLAG_NO_ZEROES) !== 0;
    // Set only flags the server advertised (proto.md "Client flags").
    socket.write(encodeClientFlags((fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0)));
    const viaGo = fixed ? await negotiateGo(socket, decoder, reader.next, target) : null;
    return viaGo ?? await negotiateExportName(socket, decoder, reader.next, target, noZeroes);
  } finally {
    reader.detach();
  }
}

/** NBD_OPT_GO asking for block sizes; null when the server answers NBD_REP_ERR_UNSUP. */
async function negotiateGo(
  socket: net.Socket, decoder: NbdClientDecoder, next: () => Promise<NbdServerMessage>, target: NbdTarget,
): Promise<Negotiated | null> {
  socket.write(encodeOption(NBD_OPT_GO, encodeInfoRequestData(target.exportName, [NBD_INFO_BLOCK_SIZE])));
  let exportInfo: { sizeBytes: number; transmissionFlags: number } | null = null;
  let blockSize = defaultBlockSize;
  for (;;) {
    const reply = await next();
    if (reply.kind !== 'optionReply' || reply.option !== NBD_OPT_GO) throw new Error(`unexpected ${reply.kind} answering NBD_OPT_GO`);
    if (reply.replyType === NBD_REP_INFO) {
      const info = parseInfoReplyData(reply.data);
      if (info.infoType === 'export') exportInfo = info;
      if (info.infoType === 'blockSize') blockSize = checkedBlockSize(info);
    } else if (reply.replyType === NBD_REP_ACK) {
      if (exportInfo === null) throw new Error('server acknowledged NBD_OPT_GO without NBD_INFO_EXPORT');
      decoder.startTransmission();
      return { ...exportInfo, blockSize };
    } else if (reply.replyType === NBD_REP_ERR_UNSUP) {
      return null;
    } else if ((reply.replyType & NBD_REP_FLAG_ERROR) !== 0) {
      const message = reply.data.toString('utf8');
      throw new Error(`server refused export ${JSON.stringify(target.exportName)} (error 0x${reply.replyType.toString(16)})${message ? `: ${message}` : ''}`);
    } else {
      throw new Error(`unexpected option reply type ${reply.replyType} to NBD_OPT_GO`);
    }
  }
}

function checkedBlockSize(info: NbdBlockSize): NbdBlockSize {
  const { minimumBytes, preferredBytes, maximumBytes } = info;
  const powerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
  // proto.md "Size constraints": minimum a power of 2 up to 64 KiB, maximum at least the preferred.
  if (!powerOfTwo(minimumBytes) || minimumBytes > 65536 || maximumBytes < minimumBytes) {
    throw new Error(`server sent invalid block sizes ${minimumBytes}/${preferredBytes}/${maximumBytes}`);
  }
  return { minimumBytes, preferredBytes, maximumBytes: Math.min(maximumBytes, NBD_MAX_PAYLOAD_BYTES) };
}

async function negotiateExportName(
  socket: net.Socket, decoder: NbdClientDecoder, next: () => Promise<NbdServerMessage>, target: NbdTarget, noZeroes: boolean,
): Promise<Negotiated> {
  socket.write(encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from(target.exportName, 'utf8')));
  decoder.expectExportNameReply(noZeroes);
  let reply: NbdServerMessage;
  try {
    reply = await next();
  } catch (err) {
    // The server cannot answer EXPORT_NAME with an error; it closes instead.
    throw new Error(`server closed the connection after NBD_OPT_EXPORT_NAME (no export ${JSON.stringify(target.exportName)}?): ${(err as Error).message}`);
  }
  if (reply.kind !== 'exportNameReply') throw new Error(`unexpected ${reply.kind} answering NBD_OPT_EXPORT_NAME`);
  return { sizeBytes: reply.sizeBytes, transmissionFlags: reply.transmissionFlags, blockSize: defaultBlockSize };
}
