// The NBD server: sockets around the pure codec. One NbdConnection per client runs the fixed
// newstyle handshake (proto.md "Fixed newstyle negotiation"), then serves requests with many in
// flight, answering each as it completes (proto.md "Transmission": replies need not be in
// request order). A protocol violation closes that one connection; a failed request never does.
//
// Bad and slow clients (issue 9) must not hurt the others: a connection holds at most
// maxHeldBytesPerConnection for its client (a client that never reads its replies stops being
// read), the server holds at most maxConnections, a client must reach the transmission phase
// within handshakeTimeoutMs of connecting, a client that shuts its sending side still gets every
// reply it is owed, and the warnings a client can trigger are rate limited.
import net from 'node:net';
import tls from 'node:tls';
import {
  NBD_CMD_DISC, NBD_CMD_FLAG_FUA, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM,
  NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES, NBD_MAX_PAYLOAD_BYTES,
  NBD_SIMPLE_REPLY_HEADER_BYTES, NbdProtocolError, NbdServerDecoder, encodeGreeting, nbdCommandName,
  nbdErrnoValue, writeSimpleReplyHeader, type NbdClientMessage, type NbdRequest,
} from './codec.js';
import { NbdRequestError, type NbdErrno, type NbdExport, type NbdRequestObserver } from './export.js';
import { acquirePayload, releasePayload } from './payload-pool.js';
import { RateLimitedLog } from './rate-limited-log.js';
import { noBusyPoll, type BusyPoll } from '../node/busy-poll.js';
import { WriteBatch } from '../node/write-batch.js';
import { adoptReusingMemory, onSocketBytes } from '../node/socket-input.js';
import {
  NBD_MIN_BLOCK_BYTES, NbdHandshake, transmissionFlagsOf, type NbdHandshakeConnection, type NbdLog, type NbdTlsPolicy,
} from './server-handshake.js';

/** How often a batch held by the export's replyGate asks again. */
const REPLY_GATE_RETRY_MS = 5;

export { NBD_MIN_BLOCK_BYTES, NBD_PREFERRED_BLOCK_BYTES, transmissionFlagsOf, type NbdLog } from './server-handshake.js';

export interface NbdServerOptions {
  host: string;
  /** 0 picks an ephemeral port; the handle reports the one bound. */
  port: number;
  export: NbdExport;
  observer?: NbdRequestObserver;
  log: NbdLog;
  /** Client connections open at once (handshake or transmission); one more is closed at accept. Default 1024. */
  maxConnections?: number;
  /** From accept to the transmission phase; a client still negotiating then is dropped. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** NBD_OPT_STARTTLS with this certificate, offered ('on') or required; null or absent: NOTLS. */
  tls?: { context: tls.SecureContext; mode: Exclude<NbdTlsPolicy, 'off'> } | null;
  /** Polls for the next request after a reply at low depth (src/node/busy-poll.ts); absent: never. */
  busyPoll?: BusyPoll;
}

export interface NbdServerHandle {
  readonly port: number;
  /** Stop accepting, let in-flight requests finish (answering new ones ESHUTDOWN), then close. */
  close(): Promise<void>;
  /** Open client connections, in handshake or transmission. */
  connections(): number;
}

/** Requests in flight per connection before we stop reading from it (backpressure). */
const maxInFlightPerConnection = 256;
/**
 * Memory one connection may hold for its client before we stop taking its requests and reading
 * its socket (issue 9: a client that never reads its replies must not pin unbounded memory):
 * READ buffers being filled, WRITE payloads being applied, replies not yet written out, and
 * received bytes not yet decoded. Twice the largest request, so a client streaming maximum-size
 * READs keeps one being read while the previous one is sent.
 */
const maxHeldBytesPerConnection = 2 * NBD_MAX_PAYLOAD_BYTES;
/** READ replies up to this size are copied behind their header (one small write beats two). */
const copyReplyLimitBytes = 16 * 1024;
/** How long close() waits for in-flight requests before cutting connections. */
const shutdownGraceMs = 10_000;
/** Defaults of NbdServerOptions (the node passes the config's nbdMaxConnections, nbdHandshakeTimeoutMs). */
const defaultMaxConnections = 1024;
const defaultHandshakeTimeoutMs = 10_000;

/**
 * Command flags valid per command (proto.md "Command flags"). FUA is accepted on every command
 * because we advertise SEND_FUA ("the server MUST accept all commands with this bit set").
 * FAST_ZERO is absent: we do not advertise SEND_FAST_ZERO, so it answers EINVAL (proto.md
 * "NBD_CMD_WRITE_ZEROES": "SHOULD fail with NBD_EINVAL if the NBD_CMD_FLAG_FAST_ZERO flag was set").
 */
const validFlagsByCommand = new Map<number, number>([
  [NBD_CMD_READ, NBD_CMD_FLAG_FUA],
  [NBD_CMD_WRITE, NBD_CMD_FLAG_FUA],
  [NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA],
  [NBD_CMD_TRIM, NBD_CMD_FLAG_FUA],
  [NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE],
]);

/** What a request in flight holds: the READ buffer being filled, or the WRITE payload. */
function costOf(request: NbdRequest): number {
  return request.type === NBD_CMD_READ || request.type === NBD_CMD_WRITE ? request.lengthBytes : 0;
}

export function startNbdServer(opts: NbdServerOptions): Promise<NbdServerHandle> {
  const connections = new Set<NbdConnection>();
  const warnings = new RateLimitedLog(opts.log);
  const maxConnections = opts.maxConnections ?? defaultMaxConnections;
  // allowHalfOpen: a client that shuts its sending side still gets every reply it is owed (issue 9).
  // pauseOnConnect: nothing is read before the connection reads into memory of its own (src/node/socket-input.ts).
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
    if (connections.size >= maxConnections) {
      // Before the greeting: a client that cannot even start negotiating has nothing to be told.
      warnings.warn('nbd: too many connections, refusing', { remote: remoteOf(socket), maxConnections });
      socket.destroy();
      return;
    }
    const connection = new NbdConnection(adoptReusingMemory(socket, true), opts, warnings, () => connections.delete(connection));
    connections.add(connection);
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE'
        ? new Error(`NBD address ${opts.host}:${opts.port} is already in use`)
        : new Error(`NBD server cannot listen on ${opts.host}:${opts.port}: ${err.message}`));
    });
    server.listen(opts.port, opts.host, () => {
      server.on('error', (err) => opts.log('warn', 'nbd: server error', { error: err.message }));
      const port = (server.address() as net.AddressInfo).port;
      opts.log('info', 'nbd: listening', { host: opts.host, port, export: opts.export.name });
      resolve({
        port,
        connections: () => connections.size,
        close: () => closeServer(server, connections),
      });
    });
  });
}

function remoteOf(socket: net.Socket): string {
  return `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
}

async function closeServer(server: net.Server, connections: Set<NbdConnection>): Promise<void> {
  const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
  const drained = Promise.all([...connections].map((c) => c.shutdown()));
  let timer: NodeJS.Timeout | undefined;
  const grace = new Promise<void>((resolve) => { timer = setTimeout(resolve, shutdownGraceMs); });
  await Promise.race([drained, grace]);
  clearTimeout(timer);
  for (const connection of connections) connection.destroy('server shutdown grace expired');
  await stopped;
}

class NbdConnection implements NbdHandshakeConnection {
  private readonly decoder = new NbdServerDecoder(acquirePayload);
  readonly remote: string;
  private readonly handshake: NbdHandshake;
  private readonly closed: Promise<void>;
  private inTransmission = false;
  private inFlight = 0;
  /** READ lengths and WRITE payloads of the requests in flight. */
  private requestBytes = 0;
  /** No more messages are taken from the decoder: after DISC, ABORT, or a fatal error. */
  private stopped = false;
  /** DISC received: close once in-flight requests are answered (proto.md "NBD_CMD_DISC"). */
  private disconnecting = false;
  /** The client shut its sending side: answer what it sent, then close. */
  private inputEnded = false;
  private shuttingDown = false;
  private corked = false;
  /** The corked batch holds a write's (or FLUSH's) acknowledgement: it waits for the export's replyGate. */
  private corkedAcks = false;
  /** Replies of this turn, written at uncork (src/node/write-batch.ts). */
  private readonly replies = new WriteBatch((bytes, written) => { if (!this.socket.destroyed) this.socket.write(bytes, written); });
  private closeReason = 'client closed the connection';
  /** Until the transmission phase: a fixed deadline from accept, never extended by trickled bytes. */
  private handshakeTimer: NodeJS.Timeout | null;
  /** The client's socket; after STARTTLS, the TLS socket over the TCP one (`tcp`). */
  socket: net.Socket;
  private readonly busyPoll: BusyPoll;

  constructor(
    private readonly tcp: net.Socket,
    private readonly opts: NbdServerOptions,
    private readonly warnings: RateLimitedLog,
    onClosed: () => void,
  ) {
    this.socket = tcp;
    this.busyPoll = opts.busyPoll ?? noBusyPoll;
    const socket = tcp;
    this.remote = remoteOf(socket);
    this.handshake = new NbdHandshake(this, opts.export, transmissionFlagsOf(opts.export), opts.log, opts.tls?.mode ?? 'off');
    const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? defaultHandshakeTimeoutMs;
    this.handshakeTimer = setTimeout(() => this.handshakeExpired(handshakeTimeoutMs), handshakeTimeoutMs);
    // proto.md "Protocol phases": both sides SHOULD disable Nagle.
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    opts.observer?.connectionOpened();
    opts.log('debug', 'nbd: connection opened', { remote: this.remote });
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.clearHandshakeTimer();
      onClosed();
      opts.observer?.connectionClosed(this.closeReason);
      opts.log('debug', 'nbd: connection closed', { remote: this.remote, reason: this.closeReason });
      resolve();
    }));
    this.attach(socket);
    socket.write(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
  }

  /** Read from, and answer on, `socket`: the TCP socket, then the TLS one after STARTTLS. */
  private attach(socket: net.Socket): void {
    socket.on('error', (err) => this.opts.log('debug', 'nbd: socket error', { remote: this.remote, error: err.message }));
    onSocketBytes(socket, (bytes, transient) => {
      this.decoder.feed(bytes, transient);
      try {
        this.pump();
      } finally {
        this.decoder.retain();
      }
    });
    socket.on('drain', () => this.pump());
    socket.on('end', () => {
      this.inputEnded = true;
      this.pump();
    });
  }

  startTls(ack: Buffer): boolean {
    const policy = this.opts.tls!;
    if (this.decoder.bufferedBytes > 0) {
      // Bytes sent after STARTTLS in clear would be taken as if they came over TLS: an attacker's
      // injection (the STARTTLS flaw of SMTP, CVE-2011-0411; nbdkit's CVE-2021-3716).
      this.warn('nbd: client sent data after STARTTLS before TLS began: closing', { bytes: this.decoder.bufferedBytes });
      this.destroy('data after STARTTLS before the TLS handshake');
      return false;
    }
    this.tcp.write(ack);
    const secure = new tls.TLSSocket(this.tcp, { isServer: true, secureContext: policy.context, requestCert: false });
    this.socket = secure;
    this.attach(secure);
    // The connection's life is the TCP socket's (its 'close' ends the connection): end it with TLS's.
    secure.once('close', () => this.tcp.destroy());
    secure.once('secure', () => this.opts.log('debug', 'nbd: TLS started', { remote: this.remote, protocol: secure.getProtocol() }));
    // A failed handshake (a client that distrusts our certificate, or speaks no TLS) ends the session.
    secure.once('error', (err) => {
      this.warn('nbd: TLS handshake failed, closing', { error: err.message });
      this.destroy(`TLS: ${err.message}`);
    });
    return true;
  }

  /** Server shutdown: drop a negotiating client, let a transmitting one finish in-flight work. */
  shutdown(): Promise<void> {
    if (!this.inTransmission) {
      this.destroy('server shutdown');
    } else {
      this.shuttingDown = true;
      this.finishIfIdle();
    }
    return this.closed;
  }

  warn(msg: string, fields: Record<string, unknown>): void {
    this.warnings.warn(msg, { remote: this.remote, ...fields });
  }

  destroy(reason: string): void {
    if (this.socket.destroyed && this.tcp.destroyed) return;
    this.closeReason = reason;
    this.stopped = true;
    this.socket.destroy();
    this.tcp.destroy();
  }

  /**
   * Take decoded messages until input runs dry or the next one does not fit, then read the
   * socket only if there is room for more. A request completing and the reply queue draining
   * call this again, so a paused connection always resumes once its client reads.
   */
  private pump(): void {
    let blocked = false;
    try {
      while (!this.stopped) {
        if (!this.mayTake()) {
          blocked = true;
          break;
        }
        const message = this.decoder.next();
        if (message === null) break;
        this.handle(message);
      }
    } catch (err) {
      if (!(err instanceof NbdProtocolError)) throw err;
      this.warn('nbd: protocol violation, closing connection', { reason: err.reason, error: err.message });
      this.destroy(`protocol violation: ${err.reason}`);
      return;
    }
    if (!this.stopped && !blocked && this.mayRead()) this.socket.resume();
    else this.socket.pause();
    // Every complete message is taken: what is left is at most part of one, which never comes.
    if (this.inputEnded && !this.stopped && !blocked) this.finishIfIdle();
  }

  /** All this connection holds for its client (maxHeldBytesPerConnection). */
  private heldBytes(): number {
    return this.requestBytes + this.socket.writableLength + this.decoder.bufferedBytes;
  }

  /**
   * Nothing in flight and no 'drain' event to wait for (the reply queue is under the socket's
   * high-water mark): one request is always taken, however large, or nothing would ever wake
   * this connection again.
   */
  private idle(): boolean {
    return this.requestBytes === 0 && this.socket.writableLength < this.socket.writableHighWaterMark;
  }

  private mayTake(): boolean {
    if (this.inFlight >= maxInFlightPerConnection) return false;
    return this.idle() || this.heldBytes() + this.decoder.nextReadBytes() <= maxHeldBytesPerConnection;
  }

  private mayRead(): boolean {
    return this.idle() || this.heldBytes() < maxHeldBytesPerConnection;
  }

  private handle(message: NbdClientMessage): void {
    if (message.kind === 'request') this.handleRequest(message);
    else this.handshake.handle(message);
  }

  private handshakeExpired(handshakeTimeoutMs: number): void {
    this.handshakeTimer = null;
    // A client that sent ABORT and is being closed anyway is not worth a warning.
    if (!this.stopped) this.warn('nbd: handshake not finished in time, closing', { handshakeTimeoutMs });
    this.destroy(`handshake not finished within ${handshakeTimeoutMs} ms`);
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  enterTransmission(via: string): void {
    this.clearHandshakeTimer();
    this.inTransmission = true;
    this.decoder.startTransmission();
    this.opts.log('debug', 'nbd: transmission phase', { remote: this.remote, via });
  }

  abort(ack: Buffer): void {
    this.stopped = true;
    this.closeReason = 'client aborted negotiation';
    this.endGracefully(ack);
  }

  // ---- transmission ----------------------------------------------------------------------

  private handleRequest(request: NbdRequest): void {
    if (request.type === NBD_CMD_DISC) {
      // No reply; handle all outstanding requests, then close (proto.md "NBD_CMD_DISC").
      this.stopped = true;
      this.disconnecting = true;
      this.closeReason = 'client disconnected (NBD_CMD_DISC)';
      this.finishIfIdle();
      return;
    }
    const errno = this.shuttingDown ? 'ESHUTDOWN' : this.rejection(request);
    if (errno !== null) {
      this.sendReply(request, errno, null, performance.now());
      return;
    }
    if (request.lengthBytes === 0 && request.type !== NBD_CMD_FLUSH) {
      // Zero-length READ/WRITE/TRIM/WRITE_ZEROES: unspecified behaviour, "SHOULD NOT disconnect"
      // (proto.md "Request types"); a successful no-op is the least surprising answer.
      this.sendReply(request, null, request.type === NBD_CMD_READ ? Buffer.alloc(0) : null, performance.now());
      return;
    }
    this.dispatch(request);
  }

  /** The errno a request is refused with before reaching the export, or null (proto.md "Error values"). */
  private rejection(request: NbdRequest): NbdErrno | null {
    const validFlags = validFlagsByCommand.get(request.type);
    // Unknown commands, and known ones we do not advertise (CACHE, BLOCK_STATUS): EINVAL.
    if (validFlags === undefined) return 'EINVAL';
    if ((request.commandFlags & ~validFlags) !== 0) return 'EINVAL';
    const { type, offsetBytes, lengthBytes } = request;
    const writes = type === NBD_CMD_WRITE || type === NBD_CMD_TRIM || type === NBD_CMD_WRITE_ZEROES;
    if (writes && this.opts.export.readOnly) return 'EPERM';
    // "For a flush request, length and offset are reserved, and MUST be set to all-zero."
    if (type === NBD_CMD_FLUSH) return offsetBytes === 0 && lengthBytes === 0 ? null : 'EINVAL';
    // A simple READ reply cannot carry more than the maximum payload (proto.md "Size constraints").
    if (type === NBD_CMD_READ && lengthBytes > NBD_MAX_PAYLOAD_BYTES) return 'EINVAL';
    const sizeBytes = this.opts.export.sizeBytes;
    if (offsetBytes > sizeBytes || lengthBytes > sizeBytes - offsetBytes) {
      return type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES ? 'ENOSPC' : 'EINVAL';
    }
    if (offsetBytes % NBD_MIN_BLOCK_BYTES !== 0 || lengthBytes % NBD_MIN_BLOCK_BYTES !== 0) return 'EINVAL';
    return null;
  }

  private dispatch(request: NbdRequest): void {
    const startedMs = performance.now();
    this.inFlight += 1;
    if (this.inFlight > 1) this.busyPoll.hostQueued();
    this.requestBytes += costOf(request);
    let operation: Promise<Buffer | void>;
    try {
      operation = this.callExport(request);
    } catch (err) {
      operation = Promise.reject(err);
    }
    operation.then(
      (data) => this.complete(request, null, data ?? null, startedMs),
      (err: unknown) => this.complete(request, this.errnoOf(request, err), null, startedMs),
    );
  }

  private callExport(request: NbdRequest): Promise<Buffer | void> {
    const nbdExport = this.opts.export;
    const fua = (request.commandFlags & NBD_CMD_FLAG_FUA) !== 0;
    const { offsetBytes, lengthBytes } = request;
    switch (request.type) {
      case NBD_CMD_READ:
        return nbdExport.read(offsetBytes, lengthBytes).then((data) => {
          // A short buffer would desynchronise the stream (the client expects exactly length bytes).
          if (data.length !== lengthBytes) {
            throw new Error(`export returned ${data.length} bytes for a ${lengthBytes}-byte read`);
          }
          return data;
        });
      case NBD_CMD_WRITE:
        return nbdExport.write(offsetBytes, request.data as Buffer, fua);
      case NBD_CMD_FLUSH:
        return nbdExport.flush();
      case NBD_CMD_TRIM:
        return nbdExport.trim(offsetBytes, lengthBytes, fua);
      default:
        return nbdExport.writeZeroes(offsetBytes, lengthBytes, fua);
    }
  }

  private errnoOf(request: NbdRequest, err: unknown): NbdErrno {
    if (err instanceof NbdRequestError) return err.errno;
    this.opts.log('warn', 'nbd: export failed a request', {
      remote: this.remote, command: nbdCommandName(request.type), offsetBytes: request.offsetBytes,
      lengthBytes: request.lengthBytes, error: err instanceof Error ? err.message : String(err),
    });
    return 'EIO';
  }

  private complete(request: NbdRequest, errno: NbdErrno | null, data: Buffer | null, startedMs: number): void {
    this.inFlight -= 1;
    this.requestBytes -= costOf(request);
    this.sendReply(request, errno, request.type === NBD_CMD_READ ? data : null, startedMs);
    // Answered: the export (cache, link) is done with the payload; its buffer can be reused.
    if (request.type === NBD_CMD_WRITE) releasePayload(request.data);
    if (this.disconnecting || this.shuttingDown) this.finishIfIdle();
    else this.pump();
  }

  /** One simple reply (proto.md "Simple reply message"); READ data follows only on success. */
  private sendReply(request: NbdRequest, errno: NbdErrno | null, data: Buffer | null, startedMs: number): void {
    const socket = this.socket;
    if (socket.destroyed || socket.writableEnded) return;
    this.corkUntilNextTick();
    if (errno === null && request.type !== NBD_CMD_READ) this.corkedAcks = true;
    const errorValue = errno === null ? 0 : nbdErrnoValue[errno];
    const payload = errno === null ? data : null;
    if (payload !== null && payload.length > copyReplyLimitBytes) {
      this.replies.flush(); // the replies before it go first
      const header = Buffer.allocUnsafe(NBD_SIMPLE_REPLY_HEADER_BYTES);
      writeSimpleReplyHeader(header, 0, errorValue, request.cookieHigh, request.cookieLow);
      socket.write(header);
      socket.write(payload);
    } else {
      const lengthBytes = NBD_SIMPLE_REPLY_HEADER_BYTES + (payload?.length ?? 0);
      const at = this.replies.reserve(lengthBytes);
      const batch = this.replies.target;
      writeSimpleReplyHeader(batch, at, errorValue, request.cookieHigh, request.cookieLow);
      payload?.copy(batch, at + NBD_SIMPLE_REPLY_HEADER_BYTES);
    }
    const bytes = errno === null && (request.type === NBD_CMD_READ || request.type === NBD_CMD_WRITE) ? request.lengthBytes : 0;
    this.opts.observer?.requestDone(nbdCommandName(request.type), bytes, (performance.now() - startedMs) / 1000, errno);
  }

  /**
   * Replies completed in the same event-loop turn leave in one writev: at queue depth 32 many
   * requests finish together (store reads complete one callback each, so nextTick would uncork
   * after every one), and one syscall for all of them is much cheaper than one each.
   */
  private corkUntilNextTick(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    setImmediate(() => this.uncorkWhenAllowed());
  }

  /** Writes the batch, once the export lets its acknowledgements go (NbdExport.replyGate). */
  private uncorkWhenAllowed(): void {
    const gate = this.corkedAcks ? this.opts.export.replyGate?.() ?? 'open' : 'open';
    if (gate === 'wait' && !this.socket.destroyed) {
      setTimeout(() => this.uncorkWhenAllowed(), REPLY_GATE_RETRY_MS);
      return;
    }
    this.corked = false;
    this.corkedAcks = false;
    if (gate !== 'never') this.replies.flush();
    if (gate === 'never') {
      this.closeReason = 'this node may no longer acknowledge writes (it is not primary)';
      this.socket.destroy();
      return;
    }
    this.socket.uncork();
    if (this.inFlight === 0) this.busyPoll.hostIdle();
  }

  private finishIfIdle(): void {
    if (this.inFlight > 0) return;
    if (this.shuttingDown && !this.disconnecting) this.closeReason = 'server shutdown';
    this.endGracefully();
  }

  /**
   * Flush what is queued, send FIN, then close. We stop reading before this, so we would never
   * see the client's FIN; destroying once our side is flushed keeps connections() honest.
   */
  private endGracefully(lastBytes?: Buffer): void {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    this.replies.flush();
    this.socket.once('finish', () => this.socket.destroy());
    if (lastBytes) this.socket.end(lastBytes);
    else this.socket.end();
  }
}
