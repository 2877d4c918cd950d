// Unauthenticated clients on the link port (issue 9 items 1 and 6), against real node processes:
// connections that trickle a hello never keep the configured peer off the link, the handshake
// deadline is a fixed total that trickled bytes do not extend, and nothing an unauthenticated
// connection says reaches the node's log as the peer's word.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { encode } from '../src/core/link-codec.js';
import { cleanupAll, qemuIo, qemuIoProblem } from './helpers/node-process.js';
import {
  logLines, pairLogs, pairStatus, qemuIoReadOnly, startPair, summarize, waitForPair, waitInSync, type Pair,
} from './helpers/pair-process.js';

after(cleanupAll);

/** A valid link frame header announcing a 2,109-byte hello body (the reproduction). */
const helloHeader = Buffer.from('54424c4b010100000000083dd0ce3cf9', 'hex');

/** A raw connection that sends the header, then one byte every intervalMs until stopped or closed. */
class Trickler {
  readonly socket: net.Socket;
  readonly closed: Promise<number>;
  private timer: NodeJS.Timeout | null = null;
  private readonly openedAtMs = performance.now();

  constructor(readonly port: number, readonly intervalMs: number) {
    this.socket = net.connect({ host: '127.0.0.1', port });
    this.socket.on('error', () => {});
    this.socket.resume();
    this.closed = new Promise((resolve) => this.socket.on('close', () => {
      // A trickler the node dropped must not leave its interval behind: it would keep the test
      // process alive after every test has passed.
      if (this.timer !== null) clearInterval(this.timer);
      resolve(performance.now() - this.openedAtMs);
    }));
    this.socket.once('connect', () => {
      this.socket.write(helloHeader);
      this.timer = setInterval(() => { if (!this.socket.destroyed) this.socket.write(Buffer.of(0)); }, intervalMs);
    });
  }

  get isClosed(): boolean {
    return this.socket.destroyed;
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.socket.destroy();
  }
}

/** Tricklers that reconnect as soon as they are dropped: the attacker always holds `count` slots. */
class TrickleSwarm {
  private readonly live = new Set<Trickler>();
  private stopped = false;
  opened = 0;

  constructor(private readonly port: number, count: number, private readonly intervalMs: number) {
    for (let i = 0; i < count; i++) this.open();
  }

  private open(): void {
    if (this.stopped) return;
    const t = new Trickler(this.port, this.intervalMs);
    this.opened++;
    this.live.add(t);
    void t.closed.then(() => { this.live.delete(t); this.open(); });
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.live) t.stop();
  }
}

/** A wait that fails the test instead of hanging it. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The peer entry's connected/state on both nodes. */
async function bothConnected(pair: Pair): Promise<{ ok: boolean; detail: string }> {
  const [sa, sb] = await Promise.all([pairStatus(pair.a), pairStatus(pair.b)]);
  const ok = [sa, sb].every((s) => s.peers[0]?.connected === true);
  return { ok, detail: `${summarize(sa)} | ${summarize(sb)}` };
}

test('trickling connections that reconnect at once do not keep the real peer off the link after it stalls', async () => {
  const pair = await startPair({ heartbeatTimeoutMs: 1000 });
  let swarm: TrickleSwarm | null = null;
  try {
    await waitInSync(pair);
    // b sorts after a, so b accepts and a dials. Hold every pending-handshake slot of b (8) and
    // retake each one the moment b drops it at its handshake deadline: only eviction of the
    // oldest lets the real peer in.
    swarm = new TrickleSwarm(pair.ports.b.link, 8, 500);
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Stop the dialer long enough for both sides to declare the link dead, then let it redial.
    process.kill(pair.a.pid, 'SIGSTOP');
    await new Promise((resolve) => setTimeout(resolve, 2500));
    process.kill(pair.a.pid, 'SIGCONT');
    await waitForPair(pair, 'link down after the stall', async () => {
      const lines = logLines(pair.a).concat(logLines(pair.b));
      return { ok: lines.some((l) => l.msg === 'link down'), detail: 'no "link down" line yet' };
    }, 10_000);
    // While every trickler keeps sending, the real peer must get back in and resync.
    await waitForPair(pair, 'the pair reconnected while the tricklers trickle', () => bothConnected(pair), 8_000);
    await waitInSync(pair, 15_000);
    const busy = logLines(pair.a).filter((l) => /busy/.test(String(l['reason'] ?? '')));
    assert.deepEqual(busy, [], `the dialer was turned away as busy:\n${pairLogs(pair)}`);
    // The situation happened: b dropped tricklers at their deadline and they came back.
    assert.ok(swarm.opened > 8, `the tricklers never had to reconnect (${swarm.opened} opened)`);
    // Mirroring works: a write acknowledged by the primary reads back on the secondary.
    const w = await qemuIo(pair.a.uri, ['write -P 0x5a 1M 64k']);
    assert.equal(qemuIoProblem(w), null);
    const r = await qemuIoReadOnly(pair.b.uri, ['read -P 0x5a 1M 64k']);
    assert.equal(qemuIoProblem(r), null, r.stdout + r.stderr);
  } finally {
    swarm?.stop();
    try { process.kill(pair.a.pid, 'SIGCONT'); } catch { /* already gone */ }
    await pair.kill();
  }
});

test('an unauthenticated link connection is dropped at a fixed deadline however it trickles', async () => {
  const pair = await startPair({ heartbeatTimeoutMs: 1000 });
  const trickler = new Trickler(pair.ports.b.link, 200);
  try {
    await waitInSync(pair);
    // A deadline reset by every byte would hold this connection for as long as it trickles.
    const heldMs = await Promise.race([trickler.closed, new Promise<number>((resolve) => setTimeout(() => resolve(-1), 6000))]);
    assert.ok(heldMs >= 0, `a trickling unauthenticated connection was still open after 6 s\n${pairLogs(pair)}`);
    assert.ok(heldMs < 4000, `held for ${Math.round(heldMs)} ms; the handshake deadline is 1 s`);
    const droppedLines = () => logLines(pair.b).filter((l) => l.msg === 'link: unauthenticated connection dropped');
    // The line reaches us through b's stderr pipe, a moment after the socket closed.
    await waitForPair(pair, 'a log line for the dropped connection', async () => ({ ok: droppedLines().length >= 1, detail: 'none yet' }), 5000);
    assert.match(String(droppedLines()[0]!['reason']), /handshake timeout/);
  } finally {
    trickler.stop();
    await pair.kill();
  }
});

test('a refuse frame from an unauthenticated connection is not logged as the peer\'s word', async () => {
  const pair = await startPair({ heartbeatTimeoutMs: 1000 });
  try {
    await waitInSync(pair);
    const forged = 'FORGED\n{"level":50,"msg":"fake line"} '.padEnd(900, 'x');
    for (const port of [pair.ports.a.link, pair.ports.b.link]) {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.on('error', () => {});
      socket.resume();
      await within(new Promise((resolve) => socket.once('connect', resolve)), 5000, `connect to link port ${port}`);
      socket.write(Buffer.concat(encode({ type: 'refuse', reason: forged })));
      try {
        await within(new Promise((resolve) => socket.once('close', resolve)), 5000, `link port ${port} to close a connection that refused it`);
      } finally {
        socket.destroy();
      }
    }
    // Both nodes still mirror, and their logs carry none of the forged text at warn or above.
    const s = await pairStatus(pair.a);
    assert.equal(s.peers[0]?.state, 'in-sync', summarize(s));
    for (const node of [pair.a, pair.b]) {
      const loud = logLines(node).filter((l) => (l.level ?? 0) >= 40 && /FORGED/.test(JSON.stringify(l)));
      assert.deepEqual(loud, [], `node ${node.name} logged forged text at warn or above`);
      assert.doesNotMatch(node.stderr, /FORGED\\n\{/, `node ${node.name} logged the forged text unescaped`);
      assert.ok(!node.stderr.includes('x'.repeat(300)), `node ${node.name} logged more than 256 bytes of it`);
    }
  } finally {
    await pair.kill();
  }
});
