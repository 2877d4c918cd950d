// PeerLink: the one replication link between this node and one peer (issue 4 item 1; a volume of N
// nodes has one per other node, issue 12). It owns the dialing, reconnects with backoff, and hands
// the node one authenticated LinkConnection at a time. Incoming connections come through a
// LinkListener (link-listener.ts): the node's shared one, or one of its own on `listen`.
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
import type { LinkMessage } from '../core/link-codec.js';
import { crc32cImplementation } from '../core/crc32c.js';
import { LinkConnection } from './connection.js';
import { dialLink, LinkListener, linkConnection, type LinkListenerOptions } from './link-listener.js';

export type LinkLogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * The connection settings are the listener's (link-listener.ts); `listen` is where this node
 * listens: a listener of its own is made there, unless `listener` (the node's shared one) is given.
 */
export interface PeerLinkOptions extends LinkListenerOptions {
  listener?: LinkListener;
  peer: { name: string; host: string; port: number };
  /** Reconnect delays: initialMs doubling up to maxMs (defaults 100 and 5000). */
  backoff?: { initialMs: number; maxMs: number };
  /** Jitter source in [0, 1); default Math.random. Injected so tests can pin delays. */
  random?: () => number;
}

export interface PeerLinkEvents {
  up: [connection: LinkConnection];
  down: [reason: string];
  refused: [reason: string, repeated: boolean];
  message: [msg: LinkMessage, connection: LinkConnection];
  rtt: [rttMs: number];
  drain: [];
}

export class PeerLink extends EventEmitter<PeerLinkEvents> {
  /** Incoming connections; null when shared (the node starts and closes it). */
  private readonly ownListener: LinkListener | null;
  private readonly listener: LinkListener;
  private current: LinkConnection | null = null;
  private dialing: LinkConnection | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private closed = false;
  private lastRefusal: string | null = null;

  constructor(private readonly opts: PeerLinkOptions) {
    super();
    if (opts.node === opts.peer.name) throw new Error(`link: node and peer are both named "${opts.node}"`);
    this.ownListener = opts.listener === undefined ? new LinkListener(opts) : null;
    this.listener = opts.listener ?? this.ownListener!;
    // The lower name dials; the other side accepts this peer's connections through the listener.
    if (!this.dials) this.listener.register(opts.peer.name, { accepted: (c) => this.accepted(c), refused: (c, reason) => this.ended(c, reason, true, false) });
  }

  /** The port actually listened on (differs from listen.port when that is 0). */
  get listenPort(): number {
    return this.listener.listenPort;
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

  /**
   * Listen (on a listener of its own), then, if this node dials, connect. Rejects with a one-line
   * message if the address is taken.
   */
  async start(): Promise<void> {
    await this.ownListener?.start();
    const crc = crc32cImplementation;
    this.opts.log('info', 'link: listening', { host: this.opts.listen.host, port: this.listenPort, dials: this.dials, peer: this.opts.peer.name, crc32c: crc.kind });
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
    for (const connection of [this.current, this.dialing]) connection?.close('link closed');
    this.current = null;
    this.dialing = null;
    await this.ownListener?.close();
  }

  private dial(): void {
    this.reconnectTimer = null;
    if (this.closed || this.current !== null) return;
    const { host, port } = this.opts.peer;
    const connection = linkConnection(this.opts, dialLink(this.opts, { name: this.opts.peer.name, host, port }), this.opts.peer.name);
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

  /** The listener authenticated a connection from the peer. */
  private accepted(connection: LinkConnection): void {
    if (this.closed) return connection.close('link closed');
    // The dialer only dials after it has given its previous connection up (it restarted, or its
    // side saw the link die first), so an old one is dead even if our heartbeat has not noticed.
    const old = this.current;
    if (old !== null) {
      this.current = null;
      old.close('replaced by a new connection from the peer');
    }
    connection.onClose = (reason, info) => this.ended(connection, reason, info.refused, info.wasReady);
    this.becomeUp(connection);
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
