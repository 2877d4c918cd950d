// One replication link session as a pure state machine (issue 10 item 2): hello, version and
// identity checks, HMAC challenge/response, heartbeats and the dead-peer deadline. No sockets, no
// timers, no clock, no randomness: the shell (src/link/connection.ts) passes received bytes, the
// time and the nonce in, writes the frames it is told to, and calls tick() by nextDeadlineMs().
// The style is quinn-proto's: events go in through methods, outputs come out of poll().
//
// Theory of operation (DESIGN.md "Write path": one ordered stream per direction; "Failures": a
// node notices a dead link by heartbeat timeout or reset):
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
//           decoder refuses any frame the table below does not accept in the current state at its
//           header, so a peer with a wrong secret never gets a byte of volume data applied (and we
//           never send it any: send() throws for data before authentication).
//   alive   Every heartbeatIntervalMs a heartbeat goes out and the peer echoes it (RTT); if
//           nothing at all arrives for heartbeatTimeoutMs the connection is dead. While the node
//           has paused receiving, that deadline is suspended: silence we chose is not a dead peer.
//   limits  Until the peer is authenticated, the whole handshake must finish within
//           handshakeTimeoutMs of the session's start, however the bytes trickle in: a deadline
//           that restarted with every byte let four slow clients hold the acceptor's pending
//           slots for good (issue 9). Nothing the peer says before that point is its word: a
//           refuse frame it sends then is reported as coming from its address, escaped and cut.
//   errors  A frame that fails its CRC or any protocol check closes the session: the decoder
//           stays failed, so nothing from or after the corrupt frame is delivered.
//
// node:crypto is allowed here (eslint.config.js restricts I/O modules only): an HMAC is a pure
// function of its inputs. The nonce, which is randomness, comes in from the shell.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { assert } from './assert.js';
import { clientText } from './client-text.js';
import {
  LINK_MAX_STRING_BYTES, LinkDecoder, LinkProtocolError, linkMessageTypes,
  type HelloMessage, type LinkMessage, type LinkMessageType, type LinkRole,
} from './link-codec.js';

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

export type LinkSessionState = 'hello' | 'auth' | 'ready' | 'closed';

export interface LinkCloseInfo {
  /** The handshake refused the peer (or the peer refused us): mismatch, authentication. */
  refused: boolean;
  /** The other side sent the refusal (before authentication: anyone's word, not our verdict). */
  byRemote: boolean;
  /** The connection had been authenticated (it was up). */
  wasReady: boolean;
}

/**
 * What the shell must do, in order. 'closed' with graceful set follows the refuse frame it must
 * flush: end the socket rather than reset it, so the peer can log our reason.
 */
export type LinkSessionOutput =
  | { kind: 'send'; msg: LinkMessage }
  | { kind: 'deliver'; msg: LinkMessage }
  | { kind: 'ready' }
  | { kind: 'rtt'; rttMs: number }
  | { kind: 'closed'; reason: string; info: LinkCloseInfo; graceful: boolean };

/**
 * Every event that can move the session. A received frame is one of the peer* events (by type,
 * see frameEvent); the rest come from the shell (tick, close) or from the session's own verdicts.
 */
export type LinkSessionEvent =
  | 'peerHello' | 'peerAuth' | 'peerRefuse' | 'peerHeartbeat' | 'peerData'
  | 'sendData' | 'heartbeatDue' | 'handshakeTimeout' | 'deadPeer' | 'refuse' | 'close';

/**
 * The state machine as data (h11's _state.py style): state x event -> next state. An event with
 * no entry is illegal in that state. For a received frame that is the peer's protocol error (the
 * decoder rejects its type at the header, see receivableTypes); for anything else it is a bug
 * here and asserts. closed has no exits: a closed session ignores everything.
 */
export const linkSessionTransitions: Readonly<Record<LinkSessionState, Readonly<Partial<Record<LinkSessionEvent, LinkSessionState>>>>> = {
  hello: { peerHello: 'auth', peerRefuse: 'closed', handshakeTimeout: 'closed', refuse: 'closed', close: 'closed' },
  auth: { peerAuth: 'ready', peerRefuse: 'closed', handshakeTimeout: 'closed', refuse: 'closed', close: 'closed' },
  ready: {
    peerHeartbeat: 'ready', peerData: 'ready', peerRefuse: 'closed', sendData: 'ready', heartbeatDue: 'ready',
    deadPeer: 'closed', refuse: 'closed', close: 'closed',
  },
  closed: {},
};

/** The next state, asserting that the event is legal in this state. */
export function nextLinkState(state: LinkSessionState, event: LinkSessionEvent): LinkSessionState {
  const next = linkSessionTransitions[state][event];
  assert(next !== undefined, `link session: event ${event} is illegal in state ${state}`);
  return next;
}

/** Which event a received frame of this type is. */
export function frameEvent(type: LinkMessageType): LinkSessionEvent {
  switch (type) {
    case 'hello': return 'peerHello';
    case 'auth': return 'peerAuth';
    case 'refuse': return 'peerRefuse';
    case 'heartbeat':
    case 'heartbeatAck': return 'peerHeartbeat';
    default: return 'peerData';
  }
}

/** Frame types the decoder lets through in each state: those the table has a transition for. */
const receivableTypes = Object.fromEntries(
  (Object.keys(linkSessionTransitions) as LinkSessionState[]).map((state) => [
    state, linkMessageTypes.filter((t) => linkSessionTransitions[state][frameEvent(t)] !== undefined),
  ]),
) as Record<LinkSessionState, LinkMessageType[]>;

/** Completes "unexpected X frame ..." in the decoder's error for a type refused in that state. */
const refusedWhy: Record<LinkSessionState, string> = {
  hello: 'before hello', auth: 'before authentication', ready: 'after the handshake', closed: 'after close',
};

/**
 * The total time a handshake may take: twice the heartbeat timeout, and at least a second, so a
 * briefly stalled event loop on either side costs a redial rather than a refused peer.
 */
export function handshakeTimeoutFor(heartbeatTimeoutMs: number): number {
  return Math.max(1000, 2 * heartbeatTimeoutMs);
}

const authLabel = Buffer.from('twinblock-link-v1', 'utf8');

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

export interface LinkSessionConfig {
  /** Our node name. */
  node: string;
  /**
   * The peer's node name, which its hello must carry: one name (a dialed peer), any of several
   * (an accepting node of a larger volume), or null for any name but ours.
   */
  expectedPeer: string | readonly string[] | null;
  secret: string;
  identity: LinkIdentity;
  /** Sent in our hello. */
  roleAndEpoch: RoleAndEpoch;
  /** Our fresh LINK_NONCE_BYTES-byte nonce (the shell draws it: randomness is not the core's). */
  nonce: Uint8Array;
  /** When the session starts; the handshake deadline counts from here. */
  nowMs: number;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  /** Hello and auth must both be done this long after the start (default: handshakeTimeoutFor). */
  handshakeTimeoutMs?: number;
  /** The peer's address for reasons (read when needed: a dialing socket learns it on connect). */
  remoteAddress: () => string;
  /** Buffers for frames that span chunks (the shell passes its payload pool). */
  allocate?: (lengthBytes: number) => Buffer;
}

function zeroCounts(): Record<LinkMessageType, number> {
  return Object.fromEntries(linkMessageTypes.map((t) => [t, 0])) as Record<LinkMessageType, number>;
}

function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  let cut = text.slice(0, maxBytes);
  while (Buffer.byteLength(cut, 'utf8') > maxBytes) cut = cut.slice(0, -1);
  return cut;
}

export class LinkSession {
  /** The peer's hello, once received and accepted. */
  peerHello: HelloMessage | null = null;
  lastRttMs: number | null = null;
  closeReason: string | null = null;
  bytesReceived = 0;
  readonly receivedBytesByType = zeroCounts();

  private stateValue: LinkSessionState = 'hello';
  private readonly decoder: LinkDecoder;
  private readonly outputs: LinkSessionOutput[] = [];
  private readonly handshakeDeadlineMs: number;
  /** When the bytes being decoded arrived: RTTs and liveness are measured against it. */
  private receivedAtMs: number;
  private lastReceivedAtMs: number;
  private nextHeartbeatAtMs = Infinity;
  private nextHeartbeatId = 0;
  private receivingPaused = false;

  constructor(private readonly cfg: LinkSessionConfig) {
    this.decoder = new LinkDecoder(cfg.allocate);
    this.receivedAtMs = cfg.nowMs;
    this.lastReceivedAtMs = cfg.nowMs;
    this.handshakeDeadlineMs = cfg.nowMs + (cfg.handshakeTimeoutMs ?? handshakeTimeoutFor(cfg.heartbeatTimeoutMs));
    this.enter('hello');
    const { role, epoch } = cfg.roleAndEpoch;
    this.outputs.push({ kind: 'send', msg: { type: 'hello', node: cfg.node, ...cfg.identity, nonce: cfg.nonce, role, epoch } });
  }

  get state(): LinkSessionState {
    return this.stateValue;
  }

  get paused(): boolean {
    return this.receivingPaused;
  }

  // ---- events in ---------------------------------------------------------------------------

  /**
   * Bytes from the peer, arrived at nowMs. Frames are decoded one at a time by poll(). A
   * transient chunk's memory is reused by the shell: it calls retainInput() before that.
   */
  receive(chunk: Buffer, nowMs: number, transient = false): void {
    if (this.stateValue === 'closed') return;
    this.bytesReceived += chunk.length;
    this.receivedAtMs = nowMs;
    this.lastReceivedAtMs = nowMs;
    this.decoder.feed(chunk, transient);
  }

  /** Keep what poll() has not decoded yet of a transient chunk (src/core/byte-queue.ts). */
  retainInput(): void {
    this.decoder.retain();
  }

  /**
   * May the shell send this message now? False when closed (the message is dropped: the node
   * learns of the loss from the closed output). Volume data before authentication is a bug and
   * throws; handshake and heartbeat frames are the session's own.
   */
  send(msg: LinkMessage): boolean {
    if (this.stateValue === 'closed') return false;
    if (frameEvent(msg.type) !== 'peerData') throw new Error(`link: ${msg.type} frames are the session's own to send`);
    if (linkSessionTransitions[this.stateValue].sendData === undefined) {
      throw new Error(`link: cannot send ${msg.type} before the peer is authenticated`);
    }
    return true;
  }

  /** The time has come (the shell calls this at nextDeadlineMs(), or later). */
  tick(nowMs: number): void {
    if (this.stateValue === 'closed') return;
    if (this.stateValue !== 'ready') {
      // A fixed total: bytes arriving do not extend it (see "limits" above).
      if (nowMs >= this.handshakeDeadlineMs) this.finish('handshakeTimeout', 'handshake timeout', false, false);
      return;
    }
    if (this.receivingPaused) this.lastReceivedAtMs = nowMs;
    if (nowMs - this.lastReceivedAtMs >= this.cfg.heartbeatTimeoutMs) {
      return this.finish('deadPeer', 'heartbeat timeout', false, false);
    }
    if (nowMs >= this.nextHeartbeatAtMs) {
      this.fire('heartbeatDue');
      this.nextHeartbeatId = (this.nextHeartbeatId + 1) >>> 0;
      this.nextHeartbeatAtMs = nowMs + this.cfg.heartbeatIntervalMs;
      this.outputs.push({ kind: 'send', msg: { type: 'heartbeat', id: this.nextHeartbeatId, sentAtMs: nowMs } });
    }
  }

  /** When tick() must run next; null once closed. */
  nextDeadlineMs(): number | null {
    switch (this.stateValue) {
      case 'closed': return null;
      case 'ready':
        if (this.receivingPaused) return this.nextHeartbeatAtMs;
        return Math.min(this.nextHeartbeatAtMs, this.lastReceivedAtMs + this.cfg.heartbeatTimeoutMs);
      default: return this.handshakeDeadlineMs;
    }
  }

  /** Receive-side flow control; true when the shell should stop reading (it was not paused). */
  pauseReceiving(): boolean {
    if (this.receivingPaused || this.stateValue === 'closed') return false;
    this.receivingPaused = true;
    return true;
  }

  /** True when the shell should read again; the liveness deadline restarts from nowMs. */
  resumeReceiving(nowMs: number): boolean {
    if (!this.receivingPaused || this.stateValue === 'closed') return false;
    this.receivingPaused = false;
    this.lastReceivedAtMs = nowMs;
    return true;
  }

  /** Close now, without a word to the peer (idempotent: a closed session ignores it). */
  /** refused: the close is a verdict on the peer (a TLS certificate the shell would not accept). */
  close(reason: string, refused = false): void {
    if (this.stateValue === 'closed') return;
    this.finish('close', reason, refused, false);
  }

  /**
   * Tell the peer why (so its log says it too), then close. refused says whether this is a
   * verdict on the peer's handshake (mismatch, authentication) rather than, say, a protocol error.
   */
  refuse(reason: string, refused = true): void {
    if (this.stateValue === 'closed') return;
    this.outputs.push({ kind: 'send', msg: { type: 'refuse', reason: truncateUtf8(reason, LINK_MAX_STRING_BYTES) } });
    this.finish('refuse', reason, refused, false, true);
  }

  // ---- outputs -----------------------------------------------------------------------------

  /**
   * The next thing to do, or null when there is nothing until the next event. Frames are decoded
   * here, one per call, so when a handler closes the session nothing after it is delivered.
   */
  poll(): LinkSessionOutput | null {
    for (;;) {
      const queued = this.outputs.shift();
      if (queued !== undefined) return queued;
      if (this.stateValue === 'closed') return null;
      try {
        const msg = this.decoder.next();
        if (msg === null) return null;
        this.receivedBytesByType[msg.type] += this.decoder.lastFrameBytes;
        const out = this.onFrame(msg);
        if (out !== null) return out;
      } catch (err) {
        if (!(err instanceof LinkProtocolError)) throw err;
        // The stream cannot be resynchronised after a bad frame: drop the connection.
        this.refuse(`protocol error: ${err.message}`, false);
      }
    }
  }

  // ---- transitions -------------------------------------------------------------------------

  private fire(event: LinkSessionEvent): void {
    const next = nextLinkState(this.stateValue, event);
    if (next !== this.stateValue) this.enter(next);
  }

  private enter(state: LinkSessionState): void {
    this.stateValue = state;
    if (state !== 'closed') this.decoder.restrictTypes(receivableTypes[state], refusedWhy[state]);
  }

  private finish(event: LinkSessionEvent, reason: string, refused: boolean, byRemote: boolean, graceful = false): void {
    const wasReady = this.stateValue === 'ready';
    this.fire(event);
    this.closeReason = reason;
    this.outputs.push({ kind: 'closed', reason, info: { refused, byRemote, wasReady }, graceful });
  }

  private onFrame(msg: LinkMessage): LinkSessionOutput | null {
    const event = frameEvent(msg.type);
    // The decoder already refuses these at the header; this is the second lock.
    if (linkSessionTransitions[this.stateValue][event] === undefined) {
      throw new LinkProtocolError('unexpected-type', `${msg.type} ${refusedWhy[this.stateValue]}`);
    }
    switch (msg.type) {
      case 'hello': return this.onHello(msg);
      case 'auth': return this.onAuth(msg.mac);
      case 'refuse':
        if (this.stateValue === 'ready') {
          this.finish(event, `${this.peerHello?.node ?? 'peer'} closed the link: ${clientText(msg.reason)}`, false, false);
        } else {
          // Not yet the peer's word: anyone can connect and send this (issue 9 item 6).
          this.finish(event, `refused by ${this.cfg.remoteAddress()} before authentication: ${clientText(msg.reason)}`, true, true);
        }
        return null;
      case 'heartbeat':
        this.fire(event);
        return { kind: 'send', msg: { type: 'heartbeatAck', id: msg.id, sentAtMs: msg.sentAtMs } };
      case 'heartbeatAck': {
        this.fire(event);
        const rttMs = this.receivedAtMs - msg.sentAtMs;
        if (rttMs < 0) return null;
        this.lastRttMs = rttMs;
        return { kind: 'rtt', rttMs };
      }
      default:
        this.fire(event);
        return { kind: 'deliver', msg };
    }
  }

  private onHello(peer: HelloMessage): null {
    const reason = this.helloProblem(peer);
    if (reason !== null) {
      this.refuse(reason);
      return null;
    }
    this.peerHello = peer;
    this.fire('peerHello');
    this.outputs.push({ kind: 'send', msg: { type: 'auth', mac: computeAuthMac(this.cfg.secret, peer.nonce, this.cfg.nonce, this.cfg.node) } });
    return null;
  }

  private helloProblem(peer: HelloMessage): string | null {
    if (peer.node === this.cfg.node) return `peer node name "${peer.node}" is the same as ours`;
    const expected = this.cfg.expectedPeer;
    if (typeof expected === 'string' && peer.node !== expected) return `unexpected peer node "${clientText(peer.node)}" (expected "${expected}")`;
    if (typeof expected === 'object' && expected !== null && !expected.includes(peer.node)) {
      return `unexpected peer node "${clientText(peer.node)}" (expected one of ${expected.map((n) => `"${n}"`).join(', ')})`;
    }
    if (timingSafeEqual(peer.nonce, this.cfg.nonce)) return 'peer echoed our nonce';
    return identityMismatch(this.cfg.identity, peer);
  }

  private onAuth(mac: Uint8Array): LinkSessionOutput | null {
    const peer = this.peerHello!;
    const expected = computeAuthMac(this.cfg.secret, this.cfg.nonce, peer.nonce, peer.node);
    if (!timingSafeEqual(mac, expected)) {
      this.refuse('authentication failed');
      return null;
    }
    this.fire('peerAuth');
    // From here on liveness is silence-based: the deadline restarts as a heartbeat deadline.
    this.lastReceivedAtMs = this.receivedAtMs;
    this.nextHeartbeatAtMs = this.receivedAtMs + this.cfg.heartbeatIntervalMs;
    return { kind: 'ready' };
  }
}
