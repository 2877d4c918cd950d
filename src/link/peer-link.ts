// PeerLink: the one replication link between this node and its peer (issue 4 item 1). It owns
// the listening socket, the dialing, reconnects with backoff, and hands the node one
// authenticated LinkConnection at a time.
//
// One connection, never two: the FIFO property of the link (DESIGN.md "Write path": the
// secondary applies writes in the primary's order) holds only within one stream, so the two
// nodes must never mirror over two connections at once. The node whose name sorts lower (by
// UTF-16 code units, as JS compares strings) dials; the other only accepts. An acceptor that
// is still holding an old connection when a new one authenticates replaces the old one: the
// dialer only dials after it has given its previous connection up (it restarted, or its side
// saw the link die first), so the old one is dead even if our heartbeat has not noticed yet.
//
// Events: up(connection) after an authenticated handshake; message(msg, connection);
// down(reason) when an up connection ends; refused(reason, repeated) when a handshake is refused
// by either side (volume mismatch, authentication failed: the reason says which field or why;
// repeated is true when the previous refusal had the same reason, so the node can log a
// misconfigured peer once rather than on every retry); rtt(ms) and drain() from the current
// connection. After close() nothing is emitted. The node logs up, down and refused for people;
// PeerLink's own log lines about them are debug-level detail.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { LinkMessage } from '../core/link-codec.js';
import { encode } from '../core/link-codec.js';
import { crc32cImplementation } from '../core/crc32c.js';
import { clientText } from '../log.js';
import { LinkConnection, type LinkIdentity, type RoleAndEpoch } from './connection.js';
import { adoptReusingMemory, connectReusingMemory } from '../node/socket-input.js';

export type LinkLogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface PeerLinkOptions {
  node: string;
  listen: { host: string; port: number };
  peer: { name: string; host: string; port: number };
  secret: string;
  identity: LinkIdentity;
  /** Read for every new connection's hello. */
  getRoleAndEpoch(): RoleAndEpoch;
  heartbeatIntervalMs?: number;
  heartbeatTimeoutMs?: number;
  highWaterMarkBytes?: number;
  /** Reconnect delays: initialMs doubling up to maxMs (defaults 100 and 5000). */
  backoff?: { initialMs: number; maxMs: number };
  /** Jitter source in [0, 1); default Math.random. Injected so tests can pin delays. */
  random?: () => number;
  log(level: LinkLogLevel, msg: string, fields?: Record<string, unknown>): void;
}

export interface PeerLinkEvents {
  up: [connection: LinkConnection];
  down: [reason: string];
  refused: [reason: string, repeated: boolean];
  message: [msg: LinkMessage, connection: LinkConnection];
  rtt: [rttMs: number];
  drain: [];
}

/**
 * Pending (not yet authenticated) incoming connections we hold at once. One more evicts the
 * oldest, so the configured peer's redial always gets in (issue 9 item 1): its handshake takes
 * one round trip, and anyone else's holds a slot no longer than the handshake deadline.
 */
const maxPendingAccepts = 8;

export class PeerLink extends EventEmitter<PeerLinkEvents> {
  private server: net.Server | null = null;
  private current: LinkConnection | null = null;
  private dialing: LinkConnection | null = null;
  private readonly pending = new Set<LinkConnection>();
  private reconnectTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private closed = false;
  private lastRefusal: string | null = null;
  /** The port actually listened on (differs from listen.port when that is 0). */
  listenPort = 0;

  constructor(private readonly opts: PeerLinkOptions) {
    super();
    if (opts.node === opts.peer.name) throw new Error(`link: node and peer are both named "${opts.node}"`);
  }

  /** This node dials; its peer accepts (the lower name dials). */
  get dials(): boolean {
    return this.opts.node < this.opts.peer.name;
  }

  /** The current authenticated connection, or null. */
  get connection(): LinkConnection | null {
    return this.current;
  }

  get connected(): boolean {
    return this.current !== null;
  }

  /** Send on the current connection; false when there is none or its buffer is full. */
  send(msg: LinkMessage): boolean {
    return this.current?.send(msg) ?? false;
  }

  /** Listen, then (if this node dials) connect. Rejects with a one-line message if the address is taken. */
  async start(): Promise<void> {
    const { host, port } = this.opts.listen;
    // pauseOnConnect: nothing is read before the connection reads into memory of its own (src/node/socket-input.ts).
    const server = net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(err.code === 'EADDRINUSE'
          ? new Error(`link address ${host}:${port} is already in use`)
          : new Error(`link cannot listen on ${host}:${port}: ${err.message}`));
      });
      server.listen(port, host, () => resolve());
    });
    server.on('error', (err) => this.opts.log('warn', 'link: server error', { error: err.message }));
    this.server = server;
    this.listenPort = (server.address() as net.AddressInfo).port;
    const crc = crc32cImplementation;
    this.opts.log('info', 'link: listening', { host, port: this.listenPort, dials: this.dials, peer: this.opts.peer.name, crc32c: crc.kind });
    // Several times slower per byte: say so once, with the reason, rather than run slow unnoticed.
    if (crc.loadError !== null) this.opts.log('warn', 'link: native CRC32C (@node-rs/crc32) did not load; using the JavaScript one', { error: crc.loadError });
    if (this.closed) return;
    if (this.dials) this.dial();
  }

  /** Stop listening, dialing and every connection. No events are emitted afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    for (const connection of [this.current, this.dialing, ...this.pending]) connection?.close('link closed');
    this.current = null;
    this.dialing = null;
    this.pending.clear();
    const server = this.server;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private newConnection(socket: net.Socket): LinkConnection {
    return new LinkConnection({
      socket,
      node: this.opts.node,
      expectedPeer: this.opts.peer.name,
      secret: this.opts.secret,
      identity: this.opts.identity,
      roleAndEpoch: this.opts.getRoleAndEpoch(),
      heartbeatIntervalMs: this.opts.heartbeatIntervalMs,
      heartbeatTimeoutMs: this.opts.heartbeatTimeoutMs,
      highWaterMarkBytes: this.opts.highWaterMarkBytes,
    });
  }

  private dial(): void {
    this.reconnectTimer = null;
    if (this.closed || this.current !== null) return;
    const { host, port } = this.opts.peer;
    const connection = this.newConnection(connectReusingMemory({ host, port }));
    this.dialing = connection;
    connection.onReady = () => {
      this.dialing = null;
      this.becomeUp(connection);
    };
    connection.onClose = (reason, info) => {
      if (this.dialing === connection) this.dialing = null;
      this.ended(connection, reason, info.refused, info.wasReady);
      this.scheduleDial();
    };
  }

  private scheduleDial(): void {
    if (this.closed || !this.dials || this.reconnectTimer !== null) return;
    const { initialMs, maxMs } = this.opts.backoff ?? { initialMs: 100, maxMs: 5000 };
    const random = this.opts.random ?? Math.random;
    // Equal jitter: half fixed, half random, so two restarts of the pair do not retry in lockstep.
    const ceilingMs = Math.min(maxMs, initialMs * 2 ** Math.min(this.attempt, 30));
    const delayMs = Math.round(ceilingMs * (0.5 + 0.5 * random()));
    this.attempt++;
    this.opts.log('debug', 'link: reconnecting', { peer: this.opts.peer.name, inMs: delayMs });
    this.reconnectTimer = setTimeout(() => this.dial(), delayMs);
  }

  private accept(socket: net.Socket): void {
    const from = `${socket.remoteAddress}:${socket.remotePort}`;
    if (this.closed || this.dials) {
      // A dialing node takes no incoming link: two connections would break the FIFO order.
      const reason = this.dials ? `node ${this.opts.node} dials its peer and accepts no link connections` : 'link closed';
      this.opts.log('debug', 'link: incoming connection turned away', { from, reason });
      socket.on('error', () => {});
      // Read and discard, so the peer's FIN is seen and the socket closes (server.close waits for it).
      socket.resume();
      socket.end(Buffer.concat(encode({ type: 'refuse', reason })));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    if (this.pending.size >= maxPendingAccepts) {
      const oldest = this.pending.values().next().value!;
      oldest.refuse(`too many unauthenticated link connections; this one, the oldest, was dropped`, false);
    }
    const connection = this.newConnection(adoptReusingMemory(socket));
    this.pending.add(connection);
    connection.onReady = () => {
      this.pending.delete(connection);
      const old = this.current;
      if (old !== null) {
        this.current = null;
        old.close('replaced by a new connection from the peer');
      }
      this.becomeUp(connection);
    };
    connection.onClose = (reason, info) => {
      this.pending.delete(connection);
      // Our own verdict on a hello or MAC (mismatch, authentication failed) is reported as a
      // refusal: that is how an operator learns the peer is misconfigured.
      const ourVerdict = info.refused && !info.byRemote;
      if (info.wasReady || ourVerdict || this.closed) return this.ended(connection, reason, info.refused, info.wasReady);
      // Anything else that ends an incoming connection before it authenticated (its own refuse
      // frame, a timeout, eviction, garbage) is logged with its address, never as the configured
      // peer's word (issue 9 item 6).
      this.opts.log('info', 'link: unauthenticated connection dropped', { from, reason: clientText(reason) });
    };
  }

  private becomeUp(connection: LinkConnection): void {
    if (this.closed) return connection.close('link closed');
    this.current = connection;
    this.attempt = 0;
    this.lastRefusal = null;
    connection.onMessage = (msg) => this.emit('message', msg, connection);
    connection.onRtt = (rttMs) => this.emit('rtt', rttMs);
    connection.onDrain = () => this.emit('drain');
    const peer = connection.peerHello!;
    this.opts.log('debug', 'link: up', {
      peer: peer.node, remote: connection.remoteAddress, peerRole: peer.role, peerEpoch: peer.epoch,
    });
    this.emit('up', connection);
  }

  private ended(connection: LinkConnection, reason: string, refused: boolean, wasReady: boolean): void {
    if (this.closed) return;
    if (wasReady) {
      if (this.current === connection) this.current = null;
      this.opts.log('debug', 'link: down', { peer: this.opts.peer.name, reason });
      this.emit('down', reason);
    } else if (refused) {
      const repeated = reason === this.lastRefusal;
      this.lastRefusal = reason;
      this.opts.log('debug', 'link: refused', { peer: this.opts.peer.name, reason, repeated });
      this.emit('refused', reason, repeated);
    } else {
      this.opts.log('debug', 'link: connection failed', { peer: this.opts.peer.name, reason });
    }
  }
}
