// The link session as a pure state machine (issue 10 item 2), driven with time passed in: no
// sockets, no timers. Two sessions are wired back to back (each one's 'send' outputs encoded and
// fed to the other), or one session is fed hand-made frames as a raw peer would send them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LINK_PROTOCOL_VERSION, encode, linkMessageTypes, type HelloMessage, type LinkMessage, type WriteMessage,
} from '../src/core/link-codec.js';
import { typeCodes } from '../src/core/link-messages.js';
import { crc32c } from '../src/core/crc32c.js';
import {
  LinkSession, computeAuthMac, frameEvent, linkSessionTransitions, nextLinkState,
  type LinkIdentity, type LinkSessionConfig, type LinkSessionEvent, type LinkSessionOutput, type LinkSessionState,
} from '../src/core/link-session.js';

const identity: LinkIdentity = {
  protocolVersion: LINK_PROTOCOL_VERSION, volumeId: 'vol0', sizeBytes: 64 * 1024 * 1024, trackSizeBytes: 65536, rangeTracks: 64,
};
const remote = '10.0.0.9:4242';
const nonceOf = (node: string): Buffer => Buffer.alloc(32, node.charCodeAt(0));

function session(node: string, peer: string | null, overrides: Partial<LinkSessionConfig> = {}): LinkSession {
  return new LinkSession({
    node, expectedPeer: peer, secret: 'sesame', identity, roleAndEpoch: { role: node === 'a' ? 'primary' : 'secondary', epoch: 3 },
    nonce: nonceOf(node), nowMs: 0, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 1000, handshakeTimeoutMs: 1000,
    remoteAddress: () => remote, ...overrides,
  });
}

function drain(s: LinkSession): LinkSessionOutput[] {
  const outs: LinkSessionOutput[] = [];
  for (let o = s.poll(); o !== null; o = s.poll()) outs.push(o);
  return outs;
}

const sends = (outs: LinkSessionOutput[]): LinkMessage[] => outs.flatMap((o) => (o.kind === 'send' ? [o.msg] : []));
const kinds = (outs: LinkSessionOutput[]): string[] => outs.map((o) => (o.kind === 'send' ? `send ${o.msg.type}` : o.kind));
const bytes = (...msgs: LinkMessage[]): Buffer => Buffer.concat(msgs.flatMap((m) => encode(m)));
const closedOf = (outs: LinkSessionOutput[]) => outs.find((o) => o.kind === 'closed');
const reasonOf = (outs: LinkSessionOutput[]): string | undefined => {
  const closed = closedOf(outs);
  return closed?.kind === 'closed' ? closed.reason : undefined;
};

/** Run two sessions against each other at nowMs until neither has anything to say. */
function pump(x: LinkSession, y: LinkSession, nowMs = 0): { x: LinkSessionOutput[]; y: LinkSessionOutput[] } {
  const all = { x: [] as LinkSessionOutput[], y: [] as LinkSessionOutput[] };
  for (;;) {
    const ox = drain(x);
    const oy = drain(y);
    if (ox.length === 0 && oy.length === 0) return all;
    all.x.push(...ox);
    all.y.push(...oy);
    for (const m of sends(ox)) y.receive(bytes(m), nowMs);
    for (const m of sends(oy)) x.receive(bytes(m), nowMs);
  }
}

function readyPair(): { a: LinkSession; b: LinkSession } {
  const a = session('a', 'b');
  const b = session('b', 'a');
  pump(a, b);
  assert.equal(a.state, 'ready');
  assert.equal(b.state, 'ready');
  return { a, b };
}

function write(seq: number): WriteMessage {
  return { type: 'write', seq, heldSeq: 0, offsetBytes: seq * 4096, data: Buffer.alloc(4096, seq) };
}

/** A frame header of this type with an empty body: the decoder judges the type before the body. */
function typeCodeFrame(type: LinkMessage['type']): Buffer {
  const frame = bytes({ type: 'syncDone' });
  frame[5] = typeCodes[type];
  frame.writeUInt32BE(crc32c(frame.subarray(0, 12)), 12);
  return frame;
}

function rawHello(node: string, fields: Partial<HelloMessage> = {}): HelloMessage {
  return { type: 'hello', node, ...identity, nonce: nonceOf(node), role: 'primary', epoch: 1, ...fields };
}

test('two sessions handshake: hello, auth, ready on both, with the peer\'s hello kept', () => {
  const a = session('a', 'b');
  const b = session('b', 'a');
  const { x, y } = pump(a, b);
  assert.deepEqual(kinds(x), ['send hello', 'send auth', 'ready']);
  assert.deepEqual(kinds(y), ['send hello', 'send auth', 'ready']);
  assert.equal(a.peerHello?.node, 'b');
  assert.equal(a.peerHello?.role, 'secondary');
  assert.equal(b.peerHello?.epoch, 3);
  // The MAC a sent is the one b computes for a: HMAC over b's nonce, a's nonce and a's name.
  const authFromA = sends(x).find((m) => m.type === 'auth');
  assert.ok(authFromA?.type === 'auth' && Buffer.from(authFromA.mac).equals(computeAuthMac('sesame', nonceOf('b'), nonceOf('a'), 'a')));
  // Volume data now flows, and is delivered as it was sent.
  assert.equal(a.send(write(1)), true);
  b.receive(bytes(write(1)), 5);
  const delivered = drain(b);
  assert.equal(delivered.length, 1);
  assert.ok(delivered[0]!.kind === 'deliver' && delivered[0]!.msg.type === 'write' && delivered[0]!.msg.seq === 1);
  assert.ok(b.receivedBytesByType.write > 4096);
});

test('a protocol version mismatch is refused on both sides with a reason naming the field and both values', () => {
  const a = session('a', 'b');
  const b = session('b', 'a', { identity: { ...identity, protocolVersion: LINK_PROTOCOL_VERSION + 1 } });
  const { x, y } = pump(a, b);
  const closedA = closedOf(x);
  assert.deepEqual(closedA, {
    kind: 'closed', reason: `protocol mismatch: protocolVersion ${LINK_PROTOCOL_VERSION} here, ${LINK_PROTOCOL_VERSION + 1} on peer b`,
    info: { refused: true, byRemote: false, wasReady: false }, graceful: true,
  });
  assert.deepEqual(kinds(x), ['send hello', 'send refuse', 'closed']);
  assert.equal(reasonOf(y), `protocol mismatch: protocolVersion ${LINK_PROTOCOL_VERSION + 1} here, ${LINK_PROTOCOL_VERSION} on peer a`);
  assert.equal(a.state, 'closed');
  assert.equal(a.nextDeadlineMs(), null);
});

test('hello identity checks refuse with reasons naming the field, escaping the peer\'s text', () => {
  const cases: Array<[HelloMessage, string | RegExp]> = [
    [rawHello('a', { volumeId: 'v\nx' }), 'volume mismatch: volumeId vol0 here, v\\u000ax on peer a'],
    [rawHello('a', { trackSizeBytes: 4096 }), 'volume mismatch: trackSizeBytes 65536 here, 4096 on peer a'],
    [rawHello('a', { rangeTracks: 8 }), 'volume mismatch: rangeTracks 64 here, 8 on peer a'],
    [rawHello('c'), 'unexpected peer node "c" (expected "a")'],
    [rawHello('b'), 'peer node name "b" is the same as ours'],
    [rawHello('a', { nonce: nonceOf('b') }), 'peer echoed our nonce'],
  ];
  for (const [hello, reason] of cases) {
    const b = session('b', 'a');
    b.receive(bytes(hello), 1);
    const outs = drain(b);
    assert.deepEqual(kinds(outs), ['send hello', 'send refuse', 'closed'], String(reason));
    assert.deepEqual(sends(outs)[1], { type: 'refuse', reason });
    assert.deepEqual(closedOf(outs), { kind: 'closed', reason, info: { refused: true, byRemote: false, wasReady: false }, graceful: true });
  }
});

test('a node of a larger volume accepts any of the peers it expects, and only those (issue 12)', () => {
  const stranger = session('c', null, { expectedPeer: ['a', 'b'] });
  stranger.receive(bytes(rawHello('d')), 1);
  const reason = 'unexpected peer node "d" (expected one of "a", "b")';
  assert.deepEqual(sends(drain(stranger))[1], { type: 'refuse', reason });
  for (const peer of ['a', 'b']) {
    const { x, y } = pump(session(peer, 'c'), session('c', null, { expectedPeer: ['a', 'b'] }));
    assert.ok(kinds(x).includes('ready') && kinds(y).includes('ready'), `${peer} authenticates with c`);
  }
});

test('a wrong MAC is refused with "authentication failed", and a write pipelined after it is never delivered', () => {
  const b = session('b', 'a');
  b.receive(bytes(rawHello('a'), { type: 'auth', mac: new Uint8Array(32) }, write(1)), 1);
  const outs = drain(b);
  assert.deepEqual(kinds(outs), ['send hello', 'send auth', 'send refuse', 'closed']);
  assert.deepEqual(sends(outs)[2], { type: 'refuse', reason: 'authentication failed' });
  assert.deepEqual(closedOf(outs), {
    kind: 'closed', reason: 'authentication failed', info: { refused: true, byRemote: false, wasReady: false }, graceful: true,
  });
  // Two real sessions with different secrets refuse each other the same way.
  const { x, y } = pump(session('a', 'b'), session('b', 'a', { secret: 'wrong' }));
  assert.equal(reasonOf(x), 'authentication failed');
  assert.equal(reasonOf(y), 'authentication failed');
});

test('volume data or auth before their time is a protocol error refused at the frame header', () => {
  const early = session('b', 'a');
  early.receive(bytes(rawHello('a'), write(1)), 1);
  const outs = drain(early);
  assert.ok(!outs.some((o) => o.kind === 'deliver'));
  assert.deepEqual(closedOf(outs), {
    kind: 'closed', reason: 'protocol error: unexpected write frame before authentication',
    info: { refused: false, byRemote: false, wasReady: false }, graceful: true,
  });
  const authFirst = session('b', 'a');
  authFirst.receive(bytes({ type: 'auth', mac: new Uint8Array(32) }), 1);
  assert.equal(reasonOf(drain(authFirst)), 'protocol error: unexpected auth frame before hello');
});

test('a refuse before authentication is reported with the remote address, escaped, as the remote\'s word', () => {
  const b = session('b', 'a');
  b.receive(bytes({ type: 'refuse', reason: 'go\naway' }), 1);
  const outs = drain(b);
  // No refuse goes back, and the verdict is marked as the remote's.
  assert.deepEqual(kinds(outs), ['send hello', 'closed']);
  assert.deepEqual(closedOf(outs), {
    kind: 'closed', reason: `refused by ${remote} before authentication: go\\u000aaway`,
    info: { refused: true, byRemote: true, wasReady: false }, graceful: false,
  });
  // After authentication a refuse is the peer's own word, and not a refusal of the handshake.
  const { a, b: up } = readyPair();
  up.receive(bytes({ type: 'refuse', reason: 'shutting down' }), 2);
  assert.deepEqual(closedOf(drain(up)), {
    kind: 'closed', reason: 'a closed the link: shutting down', info: { refused: false, byRemote: false, wasReady: true }, graceful: false,
  });
  assert.equal(a.state, 'ready');
});

test('the handshake deadline is a fixed total that trickled input does not extend', () => {
  const b = session('b', 'a', { nowMs: 5000, handshakeTimeoutMs: 1000 });
  drain(b);
  assert.equal(b.nextDeadlineMs(), 6000);
  const hello = bytes(rawHello('a'));
  // One byte every 10 ms, never completing the hello before the deadline.
  assert.ok(hello.length < 100);
  for (let i = 0; i < hello.length - 1; i++) {
    b.receive(hello.subarray(i, i + 1), 5000 + 10 * i);
    assert.deepEqual(drain(b), []);
    assert.equal(b.nextDeadlineMs(), 6000);
  }
  b.tick(5999);
  assert.deepEqual(drain(b), []);
  b.tick(6000);
  assert.deepEqual(drain(b), [{
    kind: 'closed', reason: 'handshake timeout', info: { refused: false, byRemote: false, wasReady: false }, graceful: false,
  }]);
  // Without handshakeTimeoutMs the deadline is handshakeTimeoutFor(heartbeatTimeoutMs): 2 x 1000 ms.
  const byDefault = session('b', 'a', { handshakeTimeoutMs: undefined, nowMs: 100 });
  assert.equal(byDefault.nextDeadlineMs(), 2100);
});

test('heartbeats go out every interval, are echoed, and give an RTT measured with the passed-in time', () => {
  const { a, b } = readyPair();
  assert.equal(a.nextDeadlineMs(), 100);
  a.tick(99);
  assert.deepEqual(drain(a), []);
  a.tick(100);
  const beat = drain(a);
  assert.deepEqual(sends(beat), [{ type: 'heartbeat', id: 1, sentAtMs: 100 }]);
  assert.equal(a.nextDeadlineMs(), 200);
  b.receive(bytes(sends(beat)[0]!), 103);
  const echo = drain(b);
  assert.deepEqual(sends(echo), [{ type: 'heartbeatAck', id: 1, sentAtMs: 100 }]);
  a.receive(bytes(sends(echo)[0]!), 107);
  assert.deepEqual(drain(a), [{ kind: 'rtt', rttMs: 7 }]);
  assert.equal(a.lastRttMs, 7);
  a.tick(200);
  assert.deepEqual(sends(drain(a)), [{ type: 'heartbeat', id: 2, sentAtMs: 200 }]);
});

test('a silent peer is declared dead at the heartbeat timeout after the last bytes received', () => {
  const { a, b } = readyPair();
  // b hears from a at 500 ms: the deadline moves to 1500.
  b.receive(bytes({ type: 'heartbeat', id: 9, sentAtMs: 500 }), 500);
  drain(b);
  for (let nowMs = 100; nowMs < 1500; nowMs += 100) {
    b.tick(nowMs);
    assert.equal(closedOf(drain(b)), undefined, `closed at ${nowMs} ms`);
  }
  b.tick(1499);
  assert.equal(b.state, 'ready');
  b.tick(1500);
  assert.deepEqual(drain(b), [{
    kind: 'closed', reason: 'heartbeat timeout', info: { refused: false, byRemote: false, wasReady: true }, graceful: false,
  }]);
  // The one that heard nothing at all since authentication (at 0) is dead at 1000.
  assert.equal(a.nextDeadlineMs(), 100);
  a.tick(1000);
  assert.equal(reasonOf(drain(a)), 'heartbeat timeout');
});

test('pausing receive suspends the dead-peer deadline; resuming restarts it', () => {
  const { a } = readyPair();
  assert.equal(a.pauseReceiving(), true);
  assert.equal(a.pauseReceiving(), false, 'already paused');
  // Only heartbeats are due while paused.
  assert.equal(a.nextDeadlineMs(), 100);
  a.tick(5000);
  assert.deepEqual(kinds(drain(a)), ['send heartbeat']);
  assert.equal(a.state, 'ready');
  assert.equal(a.resumeReceiving(6000), true);
  assert.equal(a.resumeReceiving(6000), false, 'not paused');
  assert.equal(a.nextDeadlineMs(), 5100);
  a.tick(6999);
  drain(a);
  assert.equal(a.state, 'ready');
  a.tick(7000);
  assert.equal(reasonOf(drain(a)), 'heartbeat timeout');
  assert.equal(a.pauseReceiving(), false, 'closed');
});

test('a corrupt frame closes the session and nothing from or after it is delivered', () => {
  const { b } = readyPair();
  const bad = bytes(write(1));
  bad[bad.length - 100]! ^= 0x10;
  b.receive(Buffer.concat([bytes(write(0)), bad, bytes(write(2))]), 1);
  const outs = drain(b);
  assert.deepEqual(kinds(outs), ['deliver', 'send refuse', 'closed']);
  assert.deepEqual(closedOf(outs), {
    kind: 'closed', reason: 'protocol error: write frame body checksum mismatch',
    info: { refused: false, byRemote: false, wasReady: true }, graceful: true,
  });
});

test('closing while handling a delivery stops delivery; close is idempotent and a closed session is inert', () => {
  const { b } = readyPair();
  b.receive(bytes(write(1), write(2)), 1);
  const first = b.poll();
  assert.equal(first?.kind, 'deliver');
  b.close('node shutting down');
  b.close('again');
  assert.deepEqual(drain(b), [{
    kind: 'closed', reason: 'node shutting down', info: { refused: false, byRemote: false, wasReady: true }, graceful: false,
  }]);
  b.refuse('too late');
  b.tick(1e9);
  b.receive(bytes(write(3)), 2);
  assert.deepEqual(drain(b), []);
  assert.equal(b.send(write(4)), false);
  assert.equal(b.closeReason, 'node shutting down');
});

test('illegal transitions assert, and the decoder accepts exactly what the table allows', () => {
  assert.throws(() => nextLinkState('hello', 'peerAuth'), /assertion failed: link session: event peerAuth is illegal in state hello/);
  assert.throws(() => nextLinkState('auth', 'sendData'), /assertion failed/);
  assert.throws(() => nextLinkState('ready', 'handshakeTimeout'), /assertion failed/);
  const events: LinkSessionEvent[] = [
    'peerHello', 'peerAuth', 'peerRefuse', 'peerHeartbeat', 'peerData', 'sendData', 'heartbeatDue', 'handshakeTimeout', 'deadPeer', 'refuse', 'close',
  ];
  for (const event of events) assert.throws(() => nextLinkState('closed', event), /illegal in state closed/, event);
  for (const state of Object.keys(linkSessionTransitions) as LinkSessionState[]) {
    for (const event of events) {
      const next = linkSessionTransitions[state][event];
      if (next !== undefined) assert.equal(nextLinkState(state, event), next);
    }
  }
  // Local misuse: data before authentication, or the session's own frames, cannot be sent.
  const s = session('a', 'b');
  assert.throws(() => s.send(write(1)), /cannot send write before the peer is authenticated/);
  assert.throws(() => s.send({ type: 'heartbeat', id: 1, sentAtMs: 0 }), /the session's own/);
  const { a } = readyPair();
  assert.throws(() => a.send(rawHello('a')), /the session's own/);
  // The decoder's type filter follows the table: a data frame of every type is refused at its
  // header in the auth state, and delivered once ready.
  for (const type of linkMessageTypes) {
    if (frameEvent(type) !== 'peerData') continue;
    const waiting = session('b', 'a');
    waiting.receive(bytes(rawHello('a')), 1);
    drain(waiting);
    waiting.receive(typeCodeFrame(type), 2);
    assert.equal(reasonOf(drain(waiting)), `protocol error: unexpected ${type} frame before authentication`);
  }
});
