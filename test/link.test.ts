// Replication link over real loopback sockets (issue 4 item 1): two PeerLinks connect and carry
// writes and acks in order; a wrong secret or a mismatched volume is refused with the reason on
// both sides and no volume data crosses; a corrupt frame drops the link, is never delivered, and
// the link comes back; a silent peer is declared dead by heartbeat timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import {
  LINK_PROTOCOL_VERSION, LinkDecoder, encode, type HelloMessage, type LinkMessage, type WriteMessage,
} from '../src/core/link-codec.js';
import { LinkConnection, computeAuthMac, type LinkIdentity } from '../src/link/connection.js';
import { PeerLink, type LinkLogLevel, type PeerLinkOptions } from '../src/link/peer-link.js';
import { LinkProxy } from './helpers/pair-process.js';

// ---- helpers -------------------------------------------------------------------------------

const identity: LinkIdentity = {
  protocolVersion: LINK_PROTOCOL_VERSION, volumeId: 'vol0', sizeBytes: 64 * 1024 * 1024, trackSizeBytes: 65536, rangeTracks: 64,
};

interface LogLine { level: LinkLogLevel; msg: string; fields: Record<string, unknown> }

function linkOptions(node: string, peer: string, peerPort: number, overrides: Partial<PeerLinkOptions> = {}, logs: LogLine[] = []): PeerLinkOptions {
  return {
    node,
    listen: { host: '127.0.0.1', port: 0 },
    peer: { name: peer, host: '127.0.0.1', port: peerPort },
    secret: 'sesame',
    identity,
    getRoleAndEpoch: () => ({ role: node === 'a' ? 'primary' : 'secondary', epoch: 1 }),
    heartbeatIntervalMs: 20,
    // Generous: a stalled test runner must not look like a dead peer (the timeout test sets its own).
    heartbeatTimeoutMs: 1000,
    backoff: { initialMs: 20, maxMs: 200 },
    random: () => 0.5,
    log: (level, msg, fields = {}) => logs.push({ level, msg, fields }),
    ...overrides,
  };
}

/** Start b (the acceptor: "b" sorts after "a"), then a, which dials b. */
async function startPair(aOverrides: Partial<PeerLinkOptions> = {}, bOverrides: Partial<PeerLinkOptions> = {}) {
  const logsA: LogLine[] = [];
  const logsB: LogLine[] = [];
  const b = new PeerLink(linkOptions('b', 'a', 1, bOverrides, logsB));
  await b.start();
  const a = new PeerLink(linkOptions('a', 'b', b.listenPort, aOverrides, logsA));
  return { a, b, logsA, logsB, startA: () => a.start() };
}

function write(seq: number, data: Uint8Array): WriteMessage {
  return { type: 'write', seq, heldSeq: 0, offsetBytes: seq * 4096, data };
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A hand-driven peer over a raw socket, speaking the codec directly. */
class RawPeer {
  readonly socket: net.Socket;
  readonly received: LinkMessage[] = [];
  readonly nonce = randomBytes(32);
  private readonly decoder = new LinkDecoder();
  private waiters: Array<() => void> = [];
  readonly closed: Promise<void>;

  constructor(port: number) {
    this.socket = net.connect({ host: '127.0.0.1', port });
    this.socket.on('error', () => {});
    this.socket.on('data', (chunk: Buffer) => {
      this.decoder.feed(chunk);
      for (let m = this.decoder.next(); m !== null; m = this.decoder.next()) this.received.push(m);
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.closed = new Promise((resolve) => this.socket.on('close', () => resolve()));
  }

  send(...messages: LinkMessage[]): void {
    for (const m of messages) for (const piece of encode(m)) this.socket.write(piece);
  }

  hello(node: string, fields: Partial<HelloMessage> = {}): HelloMessage {
    return { type: 'hello', node, ...identity, nonce: this.nonce, role: 'primary', epoch: 1, ...fields };
  }

  async waitFor(type: LinkMessage['type']): Promise<LinkMessage> {
    for (;;) {
      const found = this.received.find((m) => m.type === type);
      if (found) return found;
      await withTimeout(new Promise<void>((resolve) => this.waiters.push(resolve)), 2000, type);
    }
  }

  /** Complete an honest handshake as node `node` with the given secret. */
  async handshake(node: string, secret: string): Promise<HelloMessage> {
    this.send(this.hello(node));
    const peerHello = await this.waitFor('hello') as HelloMessage;
    this.send({ type: 'auth', mac: computeAuthMac(secret, peerHello.nonce, this.nonce, node) });
    await this.waitFor('auth');
    return peerHello;
  }
}

// ---- tests ---------------------------------------------------------------------------------

test('two PeerLinks connect, carry writes in order with acks, measure RTT and count bytes by type', async () => {
  const { a, b, startA } = await startPair();
  try {
    const upA = once(a, 'up');
    const upB = once(b, 'up');
    await startA();
    const [connA] = await withTimeout(upA, 2000, 'a up') as [LinkConnection];
    await withTimeout(upB, 2000, 'b up');
    assert.equal(a.dials, true);
    assert.equal(b.dials, false);
    assert.equal(connA.peerHello?.role, 'secondary');
    assert.equal(b.connection?.peerHello?.role, 'primary');

    // b plays the secondary of Fig. 4: it "caches" each write and acks it.
    const seen: WriteMessage[] = [];
    b.on('message', (msg, conn) => {
      if (msg.type !== 'write') return;
      seen.push({ ...msg, data: Buffer.from(msg.data) });
      conn.send({ type: 'writeAck', seq: msg.seq });
    });
    const acked: number[] = [];
    const allAcked = new Promise<void>((resolve) => a.on('message', (msg) => {
      if (msg.type === 'writeAck') acked.push(msg.seq);
      if (acked.length === 40) resolve();
    }));
    const sent: WriteMessage[] = [];
    for (let seq = 1; seq <= 40; seq++) {
      // A mix of small inline frames and large ones sent as pieces, 1 MiB among them.
      const sizeBytes = seq % 10 === 0 ? 1 << 20 : seq % 3 === 0 ? 70_000 : 4096;
      const m = write(seq, randomBytes(sizeBytes));
      sent.push(m);
      a.send(m);
    }
    const noticeSeen = new Promise<void>((resolve) => b.on('message', (msg) => { if (msg.type === 'notice') resolve(); }));
    a.send({ type: 'notice', op: 'save', ranges: [1, 2, 3] });
    await withTimeout(Promise.all([allAcked, noticeSeen]), 5000, 'acks and notice');
    assert.deepEqual(acked, sent.map((m) => m.seq));
    assert.deepEqual(seen.map((m) => m.seq), sent.map((m) => m.seq));
    for (let i = 0; i < sent.length; i++) assert.ok(Buffer.from(sent[i]!.data).equals(seen[i]!.data), `write ${i + 1} intact`);

    await withTimeout(once(a, 'rtt'), 2000, 'rtt');
    assert.ok(connA.lastRttMs !== null && connA.lastRttMs >= 0);
    assert.ok(connA.sentBytesByType.write > 40 * 4096);
    assert.ok(connA.sentBytesByType.notice > 0);
    assert.equal(b.connection!.receivedBytesByType.write, connA.sentBytesByType.write);
    assert.equal(b.connection!.receivedBytesByType.notice, connA.sentBytesByType.notice);
    assert.ok(connA.bytesSent >= connA.sentBytesByType.write + connA.sentBytesByType.notice);
  } finally {
    await a.close();
    await b.close();
  }
});

test('bursts of small frames packed into batch buffers arrive whole and in order, burst after burst', async () => {
  const { a, b, startA } = await startPair();
  try {
    const upA = once(a, 'up');
    await startA();
    await withTimeout(upA, 2000, 'a up');
    await withTimeout(once(b, 'up'), 2000, 'b up');
    const seen: WriteMessage[] = [];
    let wake: (() => void) | null = null;
    b.on('message', (msg) => {
      if (msg.type !== 'write') return;
      seen.push({ ...msg, data: Buffer.from(msg.data) });
      wake?.();
    });
    const sent: WriteMessage[] = [];
    // Three bursts of 150 frames, each sent in one event-loop turn: sizes up to 16 KiB fill and
    // start several 64 KiB batches per burst, and a later burst reuses the buffers of an earlier one.
    for (let burst = 0; burst < 3; burst++) {
      for (let i = 0; i < 150; i++) {
        const seq = sent.length + 1;
        const m = write(seq, randomBytes(512 * (1 + ((seq * 7) % 31))));
        sent.push(m);
        a.send(m);
      }
      await withTimeout(new Promise<void>((resolve) => {
        wake = () => { if (seen.length === sent.length) resolve(); };
        wake();
      }), 5000, `burst ${burst}`);
    }
    assert.deepEqual(seen.map((m) => m.seq), sent.map((m) => m.seq));
    for (let i = 0; i < sent.length; i++) assert.ok(Buffer.from(sent[i]!.data).equals(seen[i]!.data), `write ${i + 1} intact`);
  } finally {
    await a.close();
    await b.close();
  }
});

test('a wrong secret is refused on both sides with "authentication failed"', async () => {
  const { a, b, startA, logsA, logsB } = await startPair({ secret: 'wrong' });
  const messages: LinkMessage[] = [];
  b.on('message', (m) => messages.push(m));
  a.on('up', () => assert.fail('a must not come up'));
  b.on('up', () => assert.fail('b must not come up'));
  try {
    const refusedA = once(a, 'refused');
    const refusedB = once(b, 'refused');
    await startA();
    const [reasonA] = await withTimeout(refusedA, 2000, 'a refused') as [string];
    const [reasonB] = await withTimeout(refusedB, 2000, 'b refused') as [string];
    assert.match(reasonA, /authentication failed/);
    assert.match(reasonB, /authentication failed/);
    assert.ok(logsA.some((l) => l.msg === 'link: refused' && /authentication failed/.test(String(l.fields['reason']))));
    assert.ok(logsB.some((l) => l.msg === 'link: refused' && /authentication failed/.test(String(l.fields['reason']))));
    assert.equal(messages.length, 0);
  } finally {
    await a.close();
    await b.close();
  }
});

test('a peer with a wrong secret that pipelines a write gets it refused unread, and is sent no volume data', async () => {
  const { a, b } = await startPair();
  await a.close();
  const messages: LinkMessage[] = [];
  b.on('message', (m) => messages.push(m));
  const refused = once(b, 'refused');
  const raw = new RawPeer(b.listenPort);
  try {
    // hello, a forged MAC and a write, all at once: the write must never reach the node.
    raw.send(raw.hello('a'), { type: 'auth', mac: new Uint8Array(32) }, write(1, Buffer.from('evil')));
    const [reason] = await withTimeout(refused, 2000, 'refused') as [string];
    assert.match(reason, /authentication failed/);
    await withTimeout(raw.closed, 2000, 'raw socket closed');
    assert.equal(messages.length, 0);
    // Everything b sent to the unauthenticated peer was handshake.
    assert.deepEqual(raw.received.map((m) => m.type), ['hello', 'auth', 'refuse']);
    assert.deepEqual(raw.received[2], { type: 'refuse', reason: 'authentication failed' });
  } finally {
    raw.socket.destroy();
    await b.close();
  }
});

test('volume data before authentication is a protocol error and cannot be sent', async () => {
  const { a, b } = await startPair();
  await a.close();
  const messages: LinkMessage[] = [];
  b.on('message', (m) => messages.push(m));
  const raw = new RawPeer(b.listenPort);
  try {
    raw.send(raw.hello('a'), write(1, Buffer.from('early')));
    await withTimeout(raw.closed, 2000, 'raw socket closed');
    assert.equal(messages.length, 0);
    const refuse = raw.received.find((m) => m.type === 'refuse');
    assert.ok(refuse && refuse.type === 'refuse' && /protocol error: unexpected write frame before authentication/.test(refuse.reason), JSON.stringify(refuse));
  } finally {
    raw.socket.destroy();
    await b.close();
  }
  // Our own side: send() of volume data before the handshake is a bug, and throws.
  const server = net.createServer(() => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = net.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port });
  const conn = new LinkConnection({
    socket, node: 'a', expectedPeer: 'b', secret: 's', identity, roleAndEpoch: { role: 'primary', epoch: 1 },
  });
  try {
    assert.throws(() => conn.send(write(1, Buffer.from('x'))), /before the peer is authenticated/);
  } finally {
    conn.close('test done');
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('a mismatched volume size is refused with a reason naming sizeBytes and both values', async () => {
  const { a, b, startA, logsA } = await startPair({}, { identity: { ...identity, sizeBytes: 128 * 1024 * 1024 } });
  try {
    const refusedA = once(a, 'refused');
    const refusedB = once(b, 'refused');
    await startA();
    const [reasonA] = await withTimeout(refusedA, 2000, 'a refused') as [string];
    const [reasonB] = await withTimeout(refusedB, 2000, 'b refused') as [string];
    assert.equal(reasonA, 'volume mismatch: sizeBytes 67108864 here, 134217728 on peer b');
    assert.equal(reasonB, 'volume mismatch: sizeBytes 134217728 here, 67108864 on peer a');
    assert.ok(logsA.some((l) => l.msg === 'link: refused' && l.fields['reason'] === reasonA));
    // Retries keep being refused; repeats are flagged so the node can log the reason once.
    const [again, repeated] = await withTimeout(once(a, 'refused'), 2000, 'second refusal') as [string, boolean];
    assert.equal(again, reasonA);
    assert.equal(repeated, true);
  } finally {
    await a.close();
    await b.close();
  }
});

test('a corrupt frame drops the link, is never delivered, and the link comes back', async () => {
  // The corruption happens in transit, as a bad cable or NIC would do it: a proxy between the
  // dialer a and the acceptor b flips a byte in the data of one write after both CRCs were computed.
  const proxy = new LinkProxy();
  await proxy.start();
  const { a, b, startA } = await startPair({ peer: { name: 'b', host: '127.0.0.1', port: proxy.port } });
  proxy.targetPort = b.listenPort;
  const delivered: number[] = [];
  b.on('message', (m) => { if (m.type === 'write') delivered.push(m.seq); });
  try {
    const upA = once(a, 'up');
    await startA();
    await withTimeout(upA, 2000, 'up');
    a.send(write(1, randomBytes(4096)));
    // Only write 2 is big enough to be picked.
    const corrupted = proxy.arm(50_000);
    const downB = once(b, 'down');
    const downA = once(a, 'down');
    const upAgainA = once(a, 'up');
    const upAgainB = once(b, 'up');
    a.send(write(2, randomBytes(100_000)));
    a.send(write(3, randomBytes(4096)));
    const corruption = await withTimeout(corrupted, 2000, 'the proxy corrupting write 2');
    assert.equal(corruption.writeOffset, 2 * 4096);
    const [reasonB] = await withTimeout(downB, 2000, 'b down') as [string];
    assert.match(reasonB, /protocol error: write frame body checksum mismatch/);
    const [reasonA] = await withTimeout(downA, 2000, 'a down') as [string];
    assert.match(reasonA, /checksum mismatch|closed/);
    await withTimeout(Promise.all([upAgainA, upAgainB]), 3000, 'up again');
    const four = once(b, 'message');
    a.send(write(4, randomBytes(512)));
    await withTimeout(four, 2000, 'write 4');
    assert.deepEqual(delivered, [1, 4]);
    assert.equal(proxy.parseError, null);
  } finally {
    await a.close();
    await b.close();
    await proxy.close();
  }
});

test('a peer that stops responding is declared dead by heartbeat timeout', async () => {
  const { a, b } = await startPair({}, { heartbeatIntervalMs: 20, heartbeatTimeoutMs: 150 });
  await a.close();
  const raw = new RawPeer(b.listenPort);
  try {
    const up = once(b, 'up');
    await raw.handshake('a', 'sesame');
    await withTimeout(up, 2000, 'up');
    await withTimeout(raw.waitFor('heartbeat'), 2000, 'a heartbeat');
    // The raw peer answers nothing and sends nothing: as if its process were stopped.
    const startedMs = performance.now();
    const [reason] = await withTimeout(once(b, 'down'), 2000, 'down') as [string];
    assert.equal(reason, 'heartbeat timeout');
    const elapsedMs = performance.now() - startedMs;
    assert.ok(elapsedMs < 1500, `declared dead after ${elapsedMs} ms`);
    assert.equal(b.connected, false);
  } finally {
    raw.socket.destroy();
    await b.close();
  }
});

test('a new authenticated connection from the peer replaces a stale one on the acceptor', async () => {
  const { a, b, startA } = await startPair({}, { heartbeatTimeoutMs: 5000 });
  const raw = new RawPeer(b.listenPort);
  try {
    const firstUp = once(b, 'up');
    await raw.handshake('a', 'sesame');
    await withTimeout(firstUp, 2000, 'first up');
    // The "old a" goes silent without closing; the restarted a dials in.
    const down = once(b, 'down');
    const secondUp = once(b, 'up');
    await startA();
    const [reason] = await withTimeout(down, 2000, 'down') as [string];
    assert.match(reason, /replaced by a new connection/);
    await withTimeout(secondUp, 2000, 'second up');
    assert.ok(b.connected);
    await withTimeout(raw.closed, 2000, 'old connection closed');
  } finally {
    raw.socket.destroy();
    await a.close();
    await b.close();
  }
});

test('the dialer retries with backoff until the acceptor starts', async () => {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const logsA: LogLine[] = [];
  const a = new PeerLink(linkOptions('a', 'b', port, { random: () => 0 }, logsA));
  const b = new PeerLink(linkOptions('b', 'a', 1, { listen: { host: '127.0.0.1', port } }));
  try {
    await a.start();
    const reconnects = () => logsA.filter((l) => l.msg === 'link: reconnecting').map((l) => l.fields['inMs']);
    for (let waitedMs = 0; reconnects().length < 3 && waitedMs < 3000; waitedMs += 10) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const delays = reconnects();
    // random() = 0 gives half of each ceiling: 20, 40, 80... ms.
    assert.deepEqual(delays.slice(0, 3), [10, 20, 40]);
    const up = once(a, 'up');
    await b.start();
    await withTimeout(up, 3000, 'up after b starts');
  } finally {
    await a.close();
    await b.close();
  }
});

test('a taken link address rejects start() with a one-line message naming it', async () => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = (blocker.address() as net.AddressInfo).port;
  const link = new PeerLink(linkOptions('b', 'a', 1, { listen: { host: '127.0.0.1', port } }));
  try {
    await assert.rejects(link.start(), { message: `link address 127.0.0.1:${port} is already in use` });
  } finally {
    await link.close();
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
  }
});

test('the dialing node turns incoming connections away with a reason', async () => {
  const a = new PeerLink(linkOptions('a', 'b', 1, { backoff: { initialMs: 5000, maxMs: 5000 } }));
  await a.start();
  const raw = new RawPeer(a.listenPort);
  try {
    raw.send(raw.hello('b'));
    const refuse = await raw.waitFor('refuse');
    assert.deepEqual(refuse, { type: 'refuse', reason: 'node a dials its peer and accepts no link connections' });
  } finally {
    raw.socket.destroy();
    await a.close();
  }
});
