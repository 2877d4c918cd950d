// One replication link connection over a TCP socket (or TLS over it, issue 14 item 1) (issue 4 item 1; DESIGN.md "Write path": the
// link is one ordered stream per direction, and every correctness argument leans on that FIFO
// property). This is the thin shell around the pure LinkSession (src/core/link-session.ts, which
// explains the handshake, authentication, heartbeats and deadlines, issue 10 item 2): it moves
// bytes between the socket and the session, draws the nonce, reads the clock, keeps the one timer
// armed from session.nextDeadlineMs(), batches writes per event-loop turn, and pauses the socket
// when the node stops receiving.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { acquirePayload, holdPayloadOf, releasePayload } from '../nbd/payload-pool.js';
import { noBusyPoll, type BusyPoll } from '../node/busy-poll.js';
import { onSocketBytes } from '../node/socket-input.js';
import { describeTlsError } from '../node/tls.js';
import { BATCHED_FRAME_MAX_BYTES, WriteBatch } from '../node/write-batch.js';
import {
  LINK_NONCE_BYTES, encode, linkMessageTypes, type HelloMessage, type LinkMessage, type LinkMessageType,
} from '../core/link-codec.js';
import {
  LinkSession, type LinkCloseInfo, type LinkIdentity, type LinkSessionOutput, type LinkSessionState, type RoleAndEpoch,
} from '../core/link-session.js';

// The handshake's pure parts live in the core; these names are part of this module's interface.
export { computeAuthMac, handshakeTimeoutFor, identityMismatch } from '../core/link-session.js';
export type { LinkCloseInfo, LinkIdentity, RoleAndEpoch } from '../core/link-session.js';
export type LinkConnectionState = LinkSessionState;

export interface LinkConnectionOptions {
  socket: net.Socket;
  /** Our node name. */
  node: string;
  /** The peer's node name, which its hello must carry; null accepts any name but ours. */
  expectedPeer: string | readonly string[] | null;
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
  /** Polls for the answer to frames sent while the host is at low depth (src/node/busy-poll.ts); absent: never. */
  busyPoll?: BusyPoll;
}

const defaultHighWaterMarkBytes = 4 * 1024 * 1024;

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
  bytesSent = 0;
  readonly sentBytesByType = zeroCounts();

  private readonly socket: net.Socket;
  private readonly session: LinkSession;
  private readonly nowMs: () => number;
  private readonly heartbeatTimeoutMs: number;
  private readonly highWaterMarkBytes: number;
  /** The one timer, and the deadline it was armed for (null: none armed). */
  private timer: NodeJS.Timeout | null = null;
  private timerForMs: number | null = null;
  private timerGeneration = 0;
  private corked = false;
  /** Small frames of this turn, written at uncork (src/node/write-batch.ts). */
  private readonly batch = new WriteBatch((bytes, written) => this.socket.write(bytes, written));
  private readonly busyPoll: BusyPoll;
  private readonly uncork = (): void => {
    this.corked = false;
    this.batch.flush();
    this.socket.uncork();
    this.busyPoll.linkSent();
  };

  constructor(opts: LinkConnectionOptions) {
    this.node = opts.node;
    this.socket = opts.socket;
    this.busyPoll = opts.busyPoll ?? noBusyPoll;
    this.nowMs = opts.nowMs ?? (() => performance.now());
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? 1000;
    this.highWaterMarkBytes = opts.highWaterMarkBytes ?? defaultHighWaterMarkBytes;
    this.session = new LinkSession({
      node: opts.node, expectedPeer: opts.expectedPeer, secret: opts.secret, identity: opts.identity,
      roleAndEpoch: opts.roleAndEpoch, nonce: randomBytes(LINK_NONCE_BYTES), nowMs: this.nowMs(),
      heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 250, heartbeatTimeoutMs: this.heartbeatTimeoutMs,
      handshakeTimeoutMs: opts.handshakeTimeoutMs, remoteAddress: () => this.remoteAddress,
      // Frame bodies come from the payload pool: a 1 MiB write or sync chunk in fresh memory cost
      // more in page faults than in copying (docs/benchmarks.md). The node gives them back once applied.
      allocate: acquirePayload,
    });
    // Latency is the point of the design (seed Fig. 4: the host waits for the peer's ack), so
    // frames go out at once instead of waiting for Nagle's algorithm to fill a segment.
    this.socket.setNoDelay(true);
    onSocketBytes(this.socket, (bytes, transient) => this.onData(bytes, transient));
    this.socket.on('drain', () => { if (this.session.state !== 'closed') this.onDrain(); });
    this.socket.on('error', (err: NodeJS.ErrnoException) => {
      // A failed TLS handshake (certificate expired, wrong CA, wrong name, a peer without TLS) is a
      // verdict on the peer's configuration, reported as a refusal like a failed HMAC (issue 14 item 1).
      const tlsFailure = describeTlsError(err);
      if (tlsFailure !== null) this.close(tlsFailure, true);
      else this.close(`socket error: ${err.code ?? err.message}`);
    });
    this.socket.on('end', () => this.close('connection closed by peer'));
    this.socket.on('close', () => this.close('connection closed'));
    this.flush();
  }

  get state(): LinkConnectionState {
    return this.session.state;
  }

  /** Authenticated and open: volume data may be sent. */
  get ready(): boolean {
    return this.session.state === 'ready';
  }

  /** The peer's hello, once received and accepted. */
  get peerHello(): HelloMessage | null {
    return this.session.peerHello;
  }

  get peerNode(): string | null {
    return this.session.peerHello?.node ?? null;
  }

  get lastRttMs(): number | null {
    return this.session.lastRttMs;
  }

  get bytesReceived(): number {
    return this.session.bytesReceived;
  }

  get receivedBytesByType(): Readonly<Record<LinkMessageType, number>> {
    return this.session.receivedBytesByType;
  }

  /** Why the connection closed (null while open). */
  get reason(): string | null {
    return this.session.closeReason;
  }

  get remoteAddress(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
  }

  /** Bytes handed to the socket and not yet written to the kernel. */
  get bufferedBytes(): number {
    return this.socket.writableLength + this.batch.bytes;
  }

  /**
   * Queue one message. Returns false when the socket buffer is over the high-water mark (the
   * message is still queued, as with socket.write; wait for onDrain before sending more bulk
   * data), and false when the connection is closed (the message is dropped: the node learns of
   * the loss from onClose). Volume data before authentication is a bug and throws.
   */
  send(msg: LinkMessage): boolean {
    if (!this.session.send(msg)) return false;
    this.write(msg);
    return this.bufferedBytes < this.highWaterMarkBytes;
  }

  /** Close now (idempotent); refused: a verdict on the peer (see LinkSession.close). */
  close(reason: string, refused = false): void {
    this.session.close(reason, refused);
    this.flush();
  }

  /**
   * Tell the peer why (so its log says it too), then close. The socket ends gracefully so the
   * refuse frame is flushed; a peer that never closes its side is cut off after a timeout.
   */
  refuse(reason: string, refused = true): void {
    this.session.refuse(reason, refused);
    this.flush();
  }

  /**
   * Receive-side flow control: the node stops reading while its cache is full (the primary's
   * socket then fills and its sends report back-pressure). The session suspends the liveness
   * deadline meanwhile: silence we chose is not a dead peer.
   */
  pauseReceiving(): void {
    if (this.session.pauseReceiving()) this.socket.pause();
    this.flush();
  }

  resumeReceiving(): void {
    if (this.session.resumeReceiving(this.nowMs())) this.socket.resume();
    this.flush();
  }

  private onData(chunk: Buffer, transient: boolean): void {
    this.session.receive(chunk, this.nowMs(), transient);
    try {
      this.flush();
    } finally {
      this.session.retainInput();
    }
  }

  /**
   * Carry out everything the session asks for, in order, then keep the timer armed for its next
   * deadline. A handler may call back in (send, close): the session keeps the order, and once it
   * is closed it yields nothing more from this socket.
   */
  private flush(): void {
    for (let out = this.session.poll(); out !== null; out = this.session.poll()) this.carryOut(out);
    this.armTimer();
  }

  private carryOut(out: LinkSessionOutput): void {
    switch (out.kind) {
      case 'send': return this.write(out.msg);
      case 'deliver': return this.onMessage(out.msg);
      case 'ready': return this.onReady();
      case 'rtt': return this.onRtt(out.rttMs);
      case 'closed': {
        this.stopTimer();
        if (out.graceful) {
          // The refuse frame just written must reach the peer: end, and cut off a peer that
          // never closes its side.
          this.batch.flush();
          this.socket.end();
          setTimeout(() => this.socket.destroy(), this.heartbeatTimeoutMs).unref();
        } else {
          // Frames queued earlier in this event-loop turn go out first.
          if (this.corked) this.uncork();
          this.socket.destroy();
        }
        return this.onClose(out.reason, out.info);
      }
    }
  }

  private write(msg: LinkMessage): void {
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
    const pieces = encode(msg);
    let frameBytes = 0;
    for (const piece of pieces) frameBytes += piece.length;
    this.bytesSent += frameBytes;
    this.sentBytesByType[msg.type] += frameBytes;
    if (frameBytes <= BATCHED_FRAME_MAX_BYTES) return this.batch.add(pieces, frameBytes);
    this.batch.flush(); // the frames before it go first
    // A big write's data goes out as a view of the host's payload: the pool must not reuse that
    // buffer before the socket has taken the bytes, although the write may be answered first
    // (`ack: quorum`, a slower peer). The frame holds it until its write completes.
    const held = pieces.length > 1 && msg.type === 'write' ? holdPayloadOf(msg.data) : null;
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i]!;
      // The last piece's callback: the stream writes in order, so the data before it has gone too.
      if (held !== null && i === pieces.length - 1) this.socket.write(piece, () => releasePayload(held));
      else this.socket.write(piece);
    }
  }

  /**
   * Keep one timer armed for the session's next deadline. Deadlines mostly move later (every
   * chunk received pushes the liveness deadline out), so a timer armed for an earlier one is left
   * alone: it fires, ticks the session, and re-arms for the deadline as it is then. The tick runs
   * in setImmediate: after an event-loop stall the timer fires before the poll phase has read the
   * data waiting in the socket, and that data proves the peer alive.
   */
  private armTimer(): void {
    const deadlineMs = this.session.nextDeadlineMs();
    if (deadlineMs === null) return this.stopTimer();
    if (this.timerForMs !== null && this.timerForMs <= deadlineMs) return;
    this.stopTimer();
    const generation = ++this.timerGeneration;
    this.timerForMs = deadlineMs;
    this.timer = setTimeout(() => setImmediate(() => {
      if (generation !== this.timerGeneration) return;
      this.timer = null;
      this.timerForMs = null;
      this.session.tick(this.nowMs());
      this.flush();
    }), Math.max(1, deadlineMs - this.nowMs()));
  }

  private stopTimer(): void {
    // A check already on its way through setImmediate is retired by the generation.
    this.timerGeneration++;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerForMs = null;
  }
}
