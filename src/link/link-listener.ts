// LinkListener: a node's one listening socket for replication links, shared by its PeerLinks (one
// per other node: a pair has one, a volume of N nodes N-1, issue 12). It takes incoming
// connections, runs their handshake, and hands each authenticated connection to the PeerLink of
// the node its hello names. Which side dials is PeerLink's rule (the lower name): a peer that this
// node dials is not accepted here, and a node that accepts from no one turns every connection away
// at once, as a dialing node of a pair always has.
//
// With `tls` (issue 14 item 1) the listener is a TLS server that demands a client certificate
// signed by the CA, and the dialer checks the acceptor's the same way: mutual TLS, under the
// link's own HMAC handshake, which stays as a second check. A certificate must also name the node
// it speaks for (DNS subjectAltName, or CN without one): the dialer checks the peer it dialed, the
// acceptor admits only a hello from a node the certificate names. A peer without TLS, or with a
// certificate that fails any check, is refused, and the reason is logged.
import net from 'node:net';
import tls from 'node:tls';
import { encode } from '../core/link-codec.js';
import { clientText } from '../log.js';
import { handshakeTimeoutFor, LinkConnection, type LinkIdentity, type RoleAndEpoch } from './connection.js';
import type { BusyPoll } from '../node/busy-poll.js';
import { adoptReusingMemory, connectReusingMemory } from '../node/socket-input.js';
import { certificateNames, describeCertificate, describeTlsError, serverCredentials, type TlsMaterial } from '../node/tls.js';
import type { LinkLogLevel } from './peer-link.js';

export interface LinkListenerOptions {
  node: string;
  listen: { host: string; port: number };
  secret: string;
  identity: LinkIdentity;
  /** Read for every new connection's hello. */
  getRoleAndEpoch(): RoleAndEpoch;
  heartbeatIntervalMs?: number;
  heartbeatTimeoutMs?: number;
  highWaterMarkBytes?: number;
  /** Mutual TLS under the link's handshake; null or absent: plain TCP. */
  tls?: TlsMaterial | null;
  /** Shared with the node's NBD server (src/node/busy-poll.ts); absent: never poll. */
  busyPoll?: BusyPoll;
  log(level: LinkLogLevel, msg: string, fields?: Record<string, unknown>): void;
}

/** A socket to `peer`: TLS that checks the peer's certificate names it, or plain TCP into reused memory. */
export function dialLink(opts: LinkListenerOptions, peer: { name: string; host: string; port: number }): net.Socket {
  const material = opts.tls ?? null;
  if (material === null) return connectReusingMemory({ host: peer.host, port: peer.port });
  return tls.connect({
    host: peer.host, port: peer.port, secureContext: material.context, minVersion: 'TLSv1.2',
    // The peer proves it is the node we dial, whatever address it is reached at.
    checkServerIdentity: (_host, cert) => tls.checkServerIdentity(peer.name, cert),
  });
}

/** A connection over `socket` with the link's settings, whose handshake accepts only `expectedPeer`. */
export function linkConnection(opts: LinkListenerOptions, socket: net.Socket, expectedPeer: string | readonly string[]): LinkConnection {
  return new LinkConnection({
    socket,
    node: opts.node,
    expectedPeer,
    secret: opts.secret,
    identity: opts.identity,
    roleAndEpoch: opts.getRoleAndEpoch(),
    heartbeatIntervalMs: opts.heartbeatIntervalMs,
    heartbeatTimeoutMs: opts.heartbeatTimeoutMs,
    highWaterMarkBytes: opts.highWaterMarkBytes,
    busyPoll: opts.busyPoll,
  });
}

/** What a PeerLink that accepts its peer's connections gives the listener. */
export interface LinkAcceptor {
  /** An authenticated connection from this peer. */
  accepted(connection: LinkConnection): void;
  /** This node refused the peer's handshake (a mismatch, failed authentication): the reason, for its refused event. */
  refused(connection: LinkConnection, reason: string): void;
}

/**
 * Pending (not yet authenticated) incoming connections held at once. One more evicts the oldest,
 * so a configured peer's redial always gets in (issue 9 item 1): its handshake takes one round
 * trip, and anyone else's holds a slot no longer than the handshake deadline.
 */
const maxPendingAccepts = 8;

export class LinkListener {
  private server: net.Server | null = null;
  private readonly pending = new Set<LinkConnection>();
  private readonly acceptors = new Map<string, LinkAcceptor>();
  private closed = false;
  private lastTlsRefusal = { reason: '', atMs: 0 };
  /** The port actually listened on (differs from listen.port when that is 0). */
  listenPort = 0;

  constructor(private readonly opts: LinkListenerOptions) {}

  /** Connections from `peer` go to `acceptor` from now on. */
  register(peer: string, acceptor: LinkAcceptor): void {
    if (peer === this.opts.node) throw new Error(`link: node and peer are both named "${peer}"`);
    this.acceptors.set(peer, acceptor);
  }

  /** Listen. Rejects with a one-line message if the address is taken. */
  async start(): Promise<void> {
    const { host, port } = this.opts.listen;
    // pauseOnConnect: nothing is read before the connection reads into memory of its own (src/node/socket-input.ts).
    const material = this.opts.tls ?? null;
    const server = material === null
      ? net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket))
      : tls.createServer({
        ...serverCredentials(material), requestCert: true, rejectUnauthorized: true,
        handshakeTimeout: handshakeTimeoutFor(this.opts.heartbeatTimeoutMs ?? 1000),
      }, (socket) => this.accept(socket));
    if (material !== null) server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => this.tlsRefused(err, socket));
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
  }

  /** Stop listening and drop every connection still in its handshake. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const connection of this.pending) connection.close('link closed');
    this.pending.clear();
    const server = this.server;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    const from = `${socket.remoteAddress}:${socket.remotePort}`;
    if (this.closed || this.acceptors.size === 0) {
      // A node that dials every peer takes no incoming link: two connections would break the FIFO order.
      const reason = this.closed ? 'link closed' : `node ${this.opts.node} dials its peer and accepts no link connections`;
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
    let names = [...this.acceptors.keys()];
    let refusal: string | null = null;
    if (socket instanceof tls.TLSSocket) {
      // Only a hello from a node the certificate names gets through (the session checks the name).
      const cert = socket.getPeerCertificate();
      const named = names.filter((name) => certificateNames(cert, name));
      if (named.length === 0) refusal = `TLS: the peer's certificate (${describeCertificate(cert)}) names none of ${names.join(', ')}`;
      else names = named;
    }
    // A TLS socket reads through OpenSSL: it keeps Node's own chunks (socket-input.ts is for TCP).
    const input = socket instanceof tls.TLSSocket ? socket : adoptReusingMemory(socket);
    const connection = linkConnection(this.opts, input, names.length === 1 ? names[0]! : names);
    this.pending.add(connection);
    connection.onReady = () => {
      this.pending.delete(connection);
      // The handshake checked the name against the acceptors' (expectedPeer).
      this.acceptors.get(connection.peerHello!.node)!.accepted(connection);
    };
    connection.onClose = (reason, info) => {
      this.pending.delete(connection);
      // Our own verdict on a hello or MAC (mismatch, authentication failed) is reported as a
      // refusal: that is how an operator learns the peer is misconfigured. With one acceptor it
      // is that peer's; with several, the peer whose name the hello gave, if any.
      const ourVerdict = info.refused && !info.byRemote;
      const acceptor = names.length === 1 ? this.acceptors.get(names[0]!) : this.acceptors.get(connection.peerHello?.node ?? '');
      if (ourVerdict && acceptor !== undefined && !this.closed) return acceptor.refused(connection, reason);
      // Anything else that ends an incoming connection before it authenticated (its own refuse
      // frame, a timeout, eviction, garbage) is logged with its address, never as a configured
      // peer's word (issue 9 item 6).
      this.opts.log(ourVerdict ? 'warn' : 'info', ourVerdict ? 'link: connection refused' : 'link: unauthenticated connection dropped', { from, reason: clientText(reason) });
    };
    if (refusal !== null) connection.refuse(refusal);
  }

  /**
   * A TLS handshake that failed here: no certificate, one our CA did not sign, expired, or a peer
   * speaking plain TCP. Logged as a refusal; a peer retrying with the same fault is logged once a
   * minute, not on every redial.
   */
  private tlsRefused(err: NodeJS.ErrnoException, socket: tls.TLSSocket): void {
    // A client certificate that fails verification is dropped by Node after the handshake, with
    // only "socket hang up" as the error: the verdict itself is in authorizationError.
    const verdict = (socket as { authorizationError?: Error | string | null }).authorizationError;
    const code = verdict == null ? undefined : String((verdict as NodeJS.ErrnoException).code ?? verdict);
    const reason = (code === undefined ? null : describeTlsError(Object.assign(new Error(code), { code })))
      ?? describeTlsError(err) ?? `TLS: ${err.message}`;
    // Unknown once Node has dropped the socket (the log line then has no `from`).
    const from = socket.remoteAddress === undefined ? undefined : `${socket.remoteAddress}:${socket.remotePort}`;
    const nowMs = performance.now();
    const repeated = reason === this.lastTlsRefusal.reason && nowMs - this.lastTlsRefusal.atMs < 60_000;
    if (!repeated) this.lastTlsRefusal = { reason, atMs: nowMs };
    this.opts.log(repeated ? 'debug' : 'warn', 'link: connection refused', { from, reason });
    socket.destroy();
  }
}
