// Busy polling at low queue depth (src/node/busy-poll.ts): when the window opens and closes, and
// that the NBD server and the replication link report depth as the rule says, driven by qemu-io
// (a client we did not write) and by two real PeerLinks.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { BusyPoll } from '../src/node/busy-poll.js';
import { startNbdServer } from '../src/nbd/server.js';
import type { NbdExport } from '../src/nbd/export.js';
import { PeerLink, type PeerLinkOptions } from '../src/link/peer-link.js';
import type { LinkConnection } from '../src/link/connection.js';
import { LINK_PROTOCOL_VERSION } from '../src/core/link-codec.js';
import { qemuIo, qemuIoProblem } from './helpers/node-process.js';
import { ensureTools } from './helpers/tools.js';

ensureTools(['qemu-io']);

/** Counts what the server and links report, and polls as the real one does. */
class CountingBusyPoll extends BusyPoll {
  idle = 0;
  queued = 0;
  linkSends = 0;
  override hostIdle(): void { this.idle++; super.hostIdle(); }
  override hostQueued(): void { this.queued++; super.hostQueued(); }
  override linkSent(): void { this.linkSends++; super.linkSent(); }
}

describe('BusyPoll', () => {
  /** A fake clock; whatever a test asserts, its polling chain ends after it, so the process can exit. */
  async function withClock(run: (clock: { nowMs: number }) => Promise<void>): Promise<void> {
    const clock = { nowMs: 0 };
    try {
      await run(clock);
    } finally {
      clock.nowMs = 1e9;
    }
  }

  it('keeps the loop polling for its window after the host goes idle, then stops', () => withClock(async (clock) => {
    const poll = new BusyPoll(100, () => clock.nowMs);
    assert.equal(poll.active, false);
    poll.hostIdle();
    assert.equal(poll.active, false, 'one reply that left its connection empty is not yet low depth');
    poll.hostIdle();
    assert.equal(poll.active, true);
    for (let i = 0; i < 5; i++) await nextTurn();
    assert.equal(poll.active, true, 'still inside the 100 µs window: the clock has not moved');
    clock.nowMs = 0.099;
    await nextTurn();
    assert.equal(poll.active, true);
    clock.nowMs = 0.1;
    await nextTurn();
    await nextTurn();
    assert.equal(poll.active, false, 'the window ended');
  }));

  it('polls for a link answer only while the host is at low depth', () => withClock(async (clock) => {
    const poll = new BusyPoll(100, () => clock.nowMs);
    poll.linkSent();
    assert.equal(poll.active, false, 'no host has gone idle yet');
    poll.hostIdle();
    poll.hostIdle();
    clock.nowMs = 1;
    await nextTurn();
    await nextTurn();
    assert.equal(poll.active, false);
    poll.linkSent();
    assert.equal(poll.active, true, 'low depth: a frame sent opens the window');
    clock.nowMs = 2;
    await nextTurn();
    await nextTurn();
    poll.hostQueued();
    poll.linkSent();
    assert.equal(poll.active, false, 'several requests in flight: no polling');
  }));

  it('a second request in flight ends an open window at its next turn, and low depth must be shown again', () => withClock(async (clock) => {
    const poll = new BusyPoll(100, () => clock.nowMs);
    poll.hostIdle();
    poll.hostIdle();
    await nextTurn();
    assert.equal(poll.active, true);
    poll.hostQueued();
    await nextTurn();
    await nextTurn();
    assert.equal(poll.active, false, 'the window ended although its 100 µs had not passed');
    poll.hostIdle();
    assert.equal(poll.active, false, 'one empty reply after a queue (QD32 now and then) opens no window');
    poll.hostIdle();
    assert.equal(poll.active, true);
  }));

  it('a window of 0 never polls; a negative one is refused', () => {
    const poll = new BusyPoll(0);
    poll.hostIdle();
    poll.hostIdle();
    poll.linkSent();
    assert.equal(poll.active, false);
    assert.throws(() => new BusyPoll(-1), /busy poll window must be 0 or more µs \(got -1\)/);
  });
});

/** A RAM export whose writes take a while, so that concurrent requests overlap. */
function slowMemoryExport(sizeBytes: number, writeDelayMs: number): NbdExport {
  const bytes = Buffer.alloc(sizeBytes);
  return {
    name: 'vol', description: 'in-memory test export', sizeBytes, readOnly: false,
    async read(offsetBytes, lengthBytes) { return Buffer.from(bytes.subarray(offsetBytes, offsetBytes + lengthBytes)); },
    async write(offsetBytes, data) { await sleep(writeDelayMs); data.copy(bytes, offsetBytes); },
    async flush() {},
    async trim() {},
    async writeZeroes(offsetBytes, lengthBytes) { bytes.fill(0, offsetBytes, offsetBytes + lengthBytes); },
  };
}

describe('the NBD server reports the host depth (qemu-io)', () => {
  it('one request at a time: every reply leaves the connection idle; overlapping requests are queued', async () => {
    const busyPoll = new CountingBusyPoll(100);
    const server = await startNbdServer({ host: '127.0.0.1', port: 0, export: slowMemoryExport(1 << 20, 5), busyPoll, log: () => {} });
    try {
      const uri = `nbd://127.0.0.1:${server.port}/vol`;
      // qemu-io runs -c commands one after another: QD1.
      const sequential = await qemuIo(uri, ['write -P 0x11 0 4k', 'write -P 0x22 4k 4k', 'write -P 0x33 8k 4k', 'read -P 0x22 4k 4k']);
      assert.equal(qemuIoProblem(sequential), null);
      assert.ok(busyPoll.idle >= 4, `each of the 4 requests left the connection idle (hostIdle ${busyPoll.idle})`);
      assert.equal(busyPoll.queued, 0, 'never more than one request in flight');

      // aio_write returns at once: eight writes in flight together, each held 5 ms by the export.
      const aio = Array.from({ length: 8 }, (_, i) => `aio_write -P 0x${(0x40 + i).toString(16)} ${i * 4}k 4k`);
      const concurrent = await qemuIo(uri, [...aio, 'aio_flush', 'read -P 0x47 28k 4k']);
      assert.equal(qemuIoProblem(concurrent), null);
      assert.ok(busyPoll.queued > 0, 'overlapping writes were seen as queued');
    } finally {
      await server.close();
    }
  });
});

describe('the replication link polls for acks at low depth', () => {
  const identity = { protocolVersion: LINK_PROTOCOL_VERSION, volumeId: 'vol0', sizeBytes: 64 * 1024 * 1024, trackSizeBytes: 65536, rangeTracks: 64 };
  function options(node: string, peer: string, peerPort: number, busyPoll: BusyPoll): PeerLinkOptions {
    return {
      node, listen: { host: '127.0.0.1', port: 0 }, peer: { name: peer, host: '127.0.0.1', port: peerPort }, secret: 'sesame', identity,
      getRoleAndEpoch: () => ({ role: node === 'a' ? 'primary' : 'secondary', epoch: 1 }),
      heartbeatIntervalMs: 1000, heartbeatTimeoutMs: 5000, backoff: { initialMs: 20, maxMs: 200 }, random: () => 0.5, busyPoll, log: () => {},
    };
  }

  it('frames sent open the window only after the host went idle', async () => {
    const pollA = new CountingBusyPoll(100);
    const b = new PeerLink(options('b', 'a', 1, new CountingBusyPoll(100)));
    await b.start();
    const a = new PeerLink(options('a', 'b', b.listenPort, pollA));
    try {
      const up = once(a, 'up');
      await a.start();
      const [conn] = await up as [LinkConnection];
      b.on('message', (msg, c) => { if (msg.type === 'write') c.send({ type: 'writeAck', seq: msg.seq }); });
      const acked = (seq: number) => new Promise<void>((resolve) => a.on('message', (m) => { if (m.type === 'writeAck' && m.seq === seq) resolve(); }));

      const first = acked(1);
      conn.send({ type: 'write', seq: 1, heldSeq: 0, offsetBytes: 0, data: Buffer.alloc(4096, 1) });
      await first;
      assert.ok(pollA.linkSends > 0, 'the uncork after a send reported it');
      assert.equal(pollA.active, false, 'no host went idle: the send opened no window');

      pollA.hostIdle();
      pollA.hostIdle();
      await sleep(1); // past the 100 µs window
      const second = acked(2);
      conn.send({ type: 'write', seq: 2, heldSeq: 0, offsetBytes: 4096, data: Buffer.alloc(4096, 2) });
      await nextTurn();
      assert.equal(pollA.active, true, 'low depth: the frame sent opened the window for its ack');
      await second;
    } finally {
      await a.close();
      await b.close();
    }
  });
});
