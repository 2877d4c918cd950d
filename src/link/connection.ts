// One replication link connection over a TCP socket: handshake, authentication, heartbeats,
// framed messages (issue 4 item 1; DESIGN.md "Write path": the link is one ordered stream per
// direction, and every correctness argument leans on that FIFO property).
//
// Theory of operation:
//   hello   Both sides send hello at once: protocol version, volume identity (volume id, size,
//           trackSize, rangeTracks), node name, role, epoch and a fresh 32-byte nonce. On the
//           peer's hello each side compares the identity with its own; any difference is refused
//           with a reason naming the field and both values, and the connection closes.
//   auth    Each side then proves it knows the config secret without sending it:
//           auth.mac = HMAC-SHA256(secret, "twinblock-link-v1" | peerNonce | ownNonce | ownNode).
//           The verifier's own fresh nonce defeats replay; the order of the nonces and the
//           sender's name defeat reflecting a node's own MAC back at it. A wrong MAC is refused
//           with "authentication failed".
//   ready   Once the peer's MAC checks out, volume data may flow both ways. Before that, the
//           decoder refuses any frame other than hello/auth/refuse at its header, so a peer with a
//           wrong secret never gets a byte of volume data applied (and we never send it any:
//           send() throws for data before authentication).
//   alive   Every heartbeatIntervalMs a heartbeat goes out and the peer echoes it (RTT); if
//           nothing at all arrives for heartbeatTimeoutMs the connection is dead (DESIGN.md
//           "Failures": a node notices a dead link by heartbeat timeout or reset).
//   limits  Until the peer is authenticated, the whole handshake must finish within
//           handshakeTimeoutMs of the connection's start, however the bytes trickle in: a
//           deadline that restarted with every byte let four slow clients hold the acceptor's
//           pending slots for good (issue 9). Nothing the peer says before that point is its
//           word: a refuse frame it sends then is reported as coming from its address, escaped
//           and cut to CLIENT_TEXT_MAX_BYTES.
//   errors  A frame that fails its CRC or any protocol check closes the connection: the decoder
//           stays failed, so nothing from or after the corrupt frame is delivered.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { acquirePayload } from '../nbd/payload-pool.js';
import type net from 'node:net';
import { clientText } from '../log.js';
import {
  LINK_MAX_STRING_BYTES, LINK_NONCE_BYTES, LinkDecoder, LinkProtocolError, encode, linkMessageTypes,
  type HelloMessage, type LinkMessage, type LinkMessageType, type LinkRole,
} from '../core/link-codec.js';

/** What must match between the two nodes of a volume for them to mirror it. */
export interface LinkIdentity {
  protocolVersion: number;
  volumeId: string;
  sizeBytes: number;
  trackSizeBytes: number;
  rangeTracks: number;
}

export interface RoleAndEpoch {
  role: LinkRole;
  epoch: number;
}

export interface LinkConnectionOptions {
  socket: net.Socket;
  /** Our node name. */
  node: string;
  /** The peer's node name, which its hello must carry; null accepts any name but ours. */
  expectedPeer: string | null;
  secret: string;
  identity: LinkIdentity;
  /** Sent in our hello; read once, when the connection starts. */
  roleAndEpoch: RoleAndEpoch;
  heartbeatIntervalMs?: number;
  heartbeatTimeoutMs?: number;
  /** Hello and auth must both be done this long after the start (default: handshakeTimeoutFor). */
  handshakeTimeoutMs?: number;
  /** send() returns false while the socket holds more than this (default 4 MiB). */
  highWaterMarkBytes?: number;
  /** Monotonic clock for heartbeats and RTT; default performance.now. */
  nowMs?: () => number;
}

export type LinkConnectionState = 'hello' | 'auth' | 'ready' | 'closed';

export interface LinkCloseInfo {
  /** The handshake refused the peer (or the peer refused us): mismatch, authentication. */
  refused: boolean;
  /** The other side sent the refusal (before authentication: anyone's word, not our verdict). */
  byRemote: boolean;
  /** The connection had been authenticated (it was up). */
  wasReady: boolean;
}

/**
 * The total time a handshake may take: twice the heartbeat timeout, and at least a second, so a
 * briefly stalled event loop on either side costs a redial rather than a refused peer.
 */
export function handshakeTimeoutFor(heartbeatTimeoutMs: number): number {
  return Math.max(1000, 2 * heartbeatTimeoutMs);
}

const authLabel = Buffer.from('twinblock-link-v1', 'utf8');
const handshakeTypes: LinkMessageType[] = ['hello', 'auth', 'refuse'];
const afterHandshakeTypes = linkMessageTypes.filter((t) => t !== 'hello' && t !== 'auth');
const volumeDataTypes = new Set<LinkMessageType>(['write', 'zero', 'syncStart', 'syncData', 'syncZero', 'syncDone']);
const defaultHighWaterMarkBytes = 4 * 1024 * 1024;

/** HMAC-SHA256(secret, "twinblock-link-v1" | peerNonce | ownNonce | ownNode): what a node sends to prove the secret. */
export function computeAuthMac(secret: string, peerNonce: Uint8Array, ownNonce: Uint8Array, ownNode: string): Buffer {
  return createHmac('sha256', secret)
    .update(authLabel).update(peerNonce).update(ownNonce).update(Buffer.from(ownNode, 'utf8'))
    .digest();
}

/** Why two identities cannot mirror one volume, or null when they match. */
export function identityMismatch(ours: LinkIdentity, peer: HelloMessage): string | null {
  // The hello is not authenticated yet: its strings are the connecting side's, not ours to trust.
  const node = clientText(peer.node);
  if (ours.protocolVersion !== peer.protocolVersion) {
    return `protocol mismatch: protocolVersion ${ours.protocolVersion} here, ${peer.protocolVersion} on peer ${node}`;
  }
  for (const field of ['volumeId', 'sizeBytes', 'trackSizeBytes', 'rangeTracks'] as const) {
    if (ours[field] !== peer[field]) {
      const theirs = typeof peer[field] === 'string' ? clientText(peer[field]) : peer[field];
      return `volume mismatch: ${field} ${ours[field]} here, ${theirs} on peer ${node}`;
    }
  }
  return null;
}

function zeroCounts(): Record<LinkMessageType, number> {
  return Object.fromEntries(linkMessageTypes.map((t) => [t, 0])) as Record<LinkMessageType, number>;
}

export class LinkConnection {
  /** A message from an authenticated peer (never hello/auth/refuse/heartbeat*). */
  onMessage: (msg: LinkMessage) => void = () => {};
  /** Called once, with the reason (logged by the node) and whether the handshake refused. */
  onClose: (reason: string, info: LinkCloseInfo) => void = () => {};
  /** Both sides are authenticated: volume data may flow. */
  onReady: () => void = () => {};
  /** The socket's buffer drained after send() returned false. */
  onDrain: () => void = () => {};
  onRtt: (rttMs: number) => void = () => {};

  readonly node: string;
  private stateValue: LinkConnectionState = 'hello';
  private closeReason: string | null = null;
  /** The peer's hello, once received and accepted. */
  peerHello: HelloMessage | null = null;
  lastRttMs: number | null = null;

  bytesSent = 0;
  bytesReceived = 0;
  readonly sentBytesByType = zeroCounts();
  readonly receivedBytesByType = zeroCounts();

  private readonly socket: net.Socket;
  // Frame bodies come from the payload pool: a 1 MiB write or sync chunk in fresh memory cost more
  // in page faults than in copying (docs/benchmarks.md). The node gives them back once applied.
  private readonly decoder = new LinkDecoder(acquirePayload);
  private readonly nonce = randomBytes(LINK_NONCE_BYTES);
  private readonly nowMs: () => number;
  private readonly heartbeatIntervalMs: number;
  private readonly heartbeatTimeoutMs: number;
  private readonly handshakeDeadlineMs: number;
  private readonly highWaterMarkBytes: number;
  private lastReceivedAtMs: number;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private deadlineTimer: NodeJS.Timeout | null = null;
  private deadlineGeneration = 0;
  private receivingPaused = false;
  private nextHeartbeatId = 0;
  private corked = false;
  private corruptNext: { type: LinkMessageType | null } | null = null;
  private readonly uncork = (): void => { this.corked = false; this.socket.uncork(); };

  constructor(private readonly opts: LinkConnectionOptions) {
    this.node = opts.node;
    this.socket = opts.socket;
    this.nowMs = opts.nowMs ?? (() => performance.now());
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 250;
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? 1000;
    this.highWaterMarkBytes = opts.highWaterMarkBytes ?? defaultHighWaterMarkBytes;
    this.lastReceivedAtMs = this.nowMs();
    this.handshakeDeadlineMs = this.lastReceivedAtMs + (opts.handshakeTimeoutMs ?? handshakeTimeoutFor(this.heartbeatTimeoutMs));
    // Latency is the point of the design (seed Fig. 4: the host waits for the peer's ack), so
    // frames go out at once instead of waiting for Nagle's algorithm to fill a segment.
    this.socket.setNoDelay(true);
    this.decoder.restrictTypes(['hello', 'refuse'], 'before hello');
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('drain', () => { if (this.stateValue !== 'closed') this.onDrain(); });
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.close(`socket error: ${err.code ?? err.message}`));
    this.socket.on('end', () => this.close('connection closed by peer'));
    this.socket.on('close', () => this.close('connection closed'));
    this.armDeadline(this.handshakeDeadlineMs - this.nowMs());
    const { role, epoch } = opts.roleAndEpoch;
    this.send({ type: 'hello', node: opts.node, ...opts.identity, nonce: this.nonce, role, epoch });
  }

  get state(): LinkConnectionState {
    return this.stateValue;
  }

  /** Authenticated and open: volume data may be sent. */
  get ready(): boolean {
    return this.stateValue === 'ready';
  }

  get peerNode(): string | null {
    return this.peerHello?.node ?? null;
  }

  /** Why the connection closed (null while open). */
  get reason(): string | null {
    return this.closeReason;
  }

  get remoteAddress(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
  }

  /** Bytes handed to the socket and not yet written to the kernel. */
  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  /**
   * Queue one message. Returns false when the socket buffer is over the high-water mark (the
   * message is still queued, as with socket.write; wait for onDrain before sending more bulk
   * data), and false when the connection is closed (the message is dropped: the node learns of
   * the loss from onClose). Volume data before authentication is a bug and throws.
   */
  send(msg: LinkMessage): boolean {
    if (this.stateValue === 'closed') return false;
    if (this.stateValue !== 'ready' && !handshakeTypes.includes(msg.type)) {
      throw new Error(`link: cannot send ${msg.type} before the peer is authenticated`);
    }
    let pieces = encode(msg);
    if (this.corruptNext !== null && (this.corruptNext.type === null || this.corruptNext.type === msg.type)) {
      this.corruptNext = null;
      pieces = corruptBody(pieces);
    }
    this.write(msg.type, pieces);
    return this.socket.writableLength < this.highWaterMarkBytes;
  }

  private write(type: LinkMessageType, pieces: Buffer[]): void {
    if (!this.corked) {
      // Frames sent in one event-loop turn leave in one writev: a burst of 4 KiB writes, or the
      // acks for every write frame read in this turn, cost one syscall. setImmediate, not
      // nextTick: it runs right after the poll phase that delivered the socket data (no extra
      // wait), but after *all* of that phase's data events, where nextTick uncorked after each
      // one. On 4 KiB QD32 this took socket sends from 0.36 to 0.21 per host write on the primary
      // and from 0.27 to 0.11 on the secondary (perf stat; docs/benchmarks.md).
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncork);
    }
    let frameBytes = 0;
    for (const piece of pieces) {
      this.socket.write(piece);
      frameBytes += piece.length;
    }
    this.bytesSent += frameBytes;
    this.sentBytesByType[type] += frameBytes;
  }

  /**
   * Test hook (issue 4: "a corrupted frame on the link is detected and nothing corrupt lands"):
   * the next frame sent (of the given type, if any) gets one body bit flipped after its CRC was
   * computed, in a private copy so the caller's data is untouched.
   */
  corruptNextFrame(type: LinkMessageType | null = null): void {
    this.corruptNext = { type };
  }

  /** Close now (idempotent). */
  close(reason: string, refused = false, byRemote = false): void {
    if (this.stateValue === 'closed') return;
    const wasReady = this.stateValue === 'ready';
    this.stateValue = 'closed';
    this.closeReason = reason;
    this.stopTimers();
    // Frames queued earlier in this event-loop turn go out first, as they did when the cork
    // lasted only until the end of the tick.
    if (this.corked) this.uncork();
    this.socket.destroy();
    this.onClose(reason, { refused, wasReady, byRemote });
  }

  /**
   * Tell the peer why (so its log says it too), then close. The socket ends gracefully so the
   * refuse frame is flushed; a peer that never closes its side is cut off after a timeout.
   */
  refuse(reason: string, refused = true): void {
    if (this.stateValue === 'closed') return;
    const wasReady = this.stateValue === 'ready';
    const shortReason = truncateUtf8(reason, LINK_MAX_STRING_BYTES);
    this.write('refuse', encode({ type: 'refuse', reason: shortReason }));
    this.stateValue = 'closed';
    this.closeReason = reason;
    this.stopTimers();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), this.heartbeatTimeoutMs).unref();
    this.onClose(reason, { refused, wasReady, byRemote: false });
  }

  private onData(chunk: Buffer): void {
    if (this.stateValue === 'closed') return;
    this.bytesReceived += chunk.length;
    this.lastReceivedAtMs = this.nowMs();
    this.decoder.feed(chunk);
    try {
      for (;;) {
        const msg = this.decoder.next();
        if (msg === null) return;
        this.receivedBytesByType[msg.type] += this.decoder.lastFrameBytes;
        this.dispatch(msg);
        // A handler may have closed us; nothing more from this socket is delivered then.
        if (this.state === 'closed') return;
      }
    } catch (err) {
      if (!(err instanceof LinkProtocolError)) throw err;
      // The stream cannot be resynchronised after a bad frame: drop the connection.
      this.refuse(`protocol error: ${err.message}`, false);
    }
  }

  private dispatch(msg: LinkMessage): void {
    switch (msg.type) {
      case 'hello': return this.onHello(msg);
      case 'auth': return this.onAuth(msg.mac);
      case 'refuse': {
        if (this.stateValue === 'ready') return this.close(`${this.peerNode ?? 'peer'} closed the link: ${clientText(msg.reason)}`);
        // Not yet the peer's word: anyone can connect and send this (issue 9 item 6).
        return this.close(`refused by ${this.remoteAddress} before authentication: ${clientText(msg.reason)}`, true, true);
      }
      case 'heartbeat':
        this.send({ type: 'heartbeatAck', id: msg.id, sentAtMs: msg.sentAtMs });
        return;
      case 'heartbeatAck': {
        const rttMs = this.nowMs() - msg.sentAtMs;
        if (rttMs < 0) return;
        this.lastRttMs = rttMs;
        this.onRtt(rttMs);
        return;
      }
      default:
        // The decoder already refuses these before authentication; this is the second lock.
        if (this.stateValue !== 'ready' && volumeDataTypes.has(msg.type)) {
          throw new LinkProtocolError('unexpected-type', `${msg.type} before authentication`);
        }
        this.onMessage(msg);
    }
  }

  private onHello(peer: HelloMessage): void {
    const reason = this.helloProblem(peer);
    if (reason !== null) return this.refuse(reason);
    this.peerHello = peer;
    this.stateValue = 'auth';
    this.decoder.restrictTypes(['auth', 'refuse'], 'before authentication');
    this.send({ type: 'auth', mac: computeAuthMac(this.opts.secret, peer.nonce, this.nonce, this.node) });
  }

  private helloProblem(peer: HelloMessage): string | null {
    if (peer.node === this.node) return `peer node name "${peer.node}" is the same as ours`;
    if (this.opts.expectedPeer !== null && peer.node !== this.opts.expectedPeer) {
      return `unexpected peer node "${clientText(peer.node)}" (expected "${this.opts.expectedPeer}")`;
    }
    if (timingSafeEqual(peer.nonce, this.nonce)) return 'peer echoed our nonce';
    return identityMismatch(this.opts.identity, peer);
  }

  private onAuth(mac: Uint8Array): void {
    const peer = this.peerHello!;
    const expected = computeAuthMac(this.opts.secret, this.nonce, peer.nonce, peer.node);
    if (!timingSafeEqual(mac, expected)) return this.refuse('authentication failed');
    this.stateValue = 'ready';
    this.decoder.restrictTypes(afterHandshakeTypes, 'after the handshake');
    // From here on liveness is silence-based: restart the deadline as a heartbeat deadline.
    this.lastReceivedAtMs = this.nowMs();
    this.armDeadline(this.heartbeatTimeoutMs);
    this.heartbeatTimer = setInterval(() => this.sendHeartbeat(), this.heartbeatIntervalMs);
    this.onReady();
  }

  private sendHeartbeat(): void {
    this.nextHeartbeatId = (this.nextHeartbeatId + 1) >>> 0;
    this.send({ type: 'heartbeat', id: this.nextHeartbeatId, sentAtMs: this.nowMs() });
  }

  /**
   * The liveness deadline is checked from a timer, and the verdict is taken in setImmediate:
   * after an event-loop stall the timer fires before the poll phase has read the data waiting
   * in the socket, and that data proves the peer alive.
   */
  private armDeadline(delayMs: number): void {
    // One deadline at a time: re-arming (at authentication) retires a check already on its way.
    if (this.deadlineTimer !== null) clearTimeout(this.deadlineTimer);
    const generation = ++this.deadlineGeneration;
    this.deadlineTimer = setTimeout(() => setImmediate(() => {
      if (generation === this.deadlineGeneration) this.checkDeadline();
    }), Math.max(1, delayMs));
  }

  /**
   * Receive-side flow control: the node stops reading while its cache is full (the primary's
   * socket then fills and its sends report back-pressure). The liveness deadline is suspended
   * meanwhile: silence we chose is not a dead peer.
   */
  pauseReceiving(): void {
    if (this.receivingPaused || this.stateValue === 'closed') return;
    this.receivingPaused = true;
    this.socket.pause();
  }

  resumeReceiving(): void {
    if (!this.receivingPaused || this.stateValue === 'closed') return;
    this.receivingPaused = false;
    this.lastReceivedAtMs = this.nowMs();
    this.socket.resume();
  }

  private checkDeadline(): void {
    if (this.stateValue === 'closed') return;
    const nowMs = this.nowMs();
    if (this.stateValue !== 'ready') {
      // A fixed total: bytes arriving do not extend it (see "limits" above).
      const leftMs = this.handshakeDeadlineMs - nowMs;
      if (leftMs <= 0) return this.close('handshake timeout', false);
      return this.armDeadline(leftMs);
    }
    if (this.receivingPaused) this.lastReceivedAtMs = nowMs;
    const silentMs = nowMs - this.lastReceivedAtMs;
    if (silentMs < this.heartbeatTimeoutMs) return this.armDeadline(this.heartbeatTimeoutMs - silentMs);
    this.close('heartbeat timeout', false);
  }

  private stopTimers(): void {
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    if (this.deadlineTimer !== null) clearTimeout(this.deadlineTimer);
    this.heartbeatTimer = null;
    this.deadlineTimer = null;
  }
}

/** Flip one bit in the body (or, for an empty body, the body CRC) of an encoded frame, in a copy. */
function corruptBody(pieces: Buffer[]): Buffer[] {
  if (pieces.length === 3) {
    const data = Buffer.from(pieces[1]!);
    data[data.length >>> 1]! ^= 0x10;
    return [pieces[0]!, data, pieces[2]!];
  }
  const frame = Buffer.from(pieces[0]!);
  const headerBytes = 16;
  const bodyBytes = frame.length - headerBytes - 4;
  frame[bodyBytes > 0 ? headerBytes + (bodyBytes >>> 1) : frame.length - 1]! ^= 0x10;
  return [frame];
}

function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  let cut = text.slice(0, maxBytes);
  while (Buffer.byteLength(cut, 'utf8') > maxBytes) cut = cut.slice(0, -1);
  return cut;
}
