// Issue 14 items 4-5 with two real node processes: online verify (`twinblock verify`) finds a byte
// changed behind the secondary's back in its store file while hosts keep writing, reports no track
// those writes touched, and with --resync repairs it; a checksum resync into a store that already
// holds most of the data sends only the tracks that differ.
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { after, describe, it, type TestContext } from 'node:test';
import { AckedWriter, BlockModel, compareStores, FailoverPair, KiB, MiB, type NodeName } from './helpers/failover-pair.js';
import { cleanupAll, describeRun, qemuIo, qemuIoProblem } from './helpers/node-process.js';
import { ensureTools } from './helpers/tools.js';

after(cleanupAll);

const VOLUME_BYTES = 32 * MiB;
const TRACK_BYTES = 64 * KiB;

interface VerifyStatus {
  id: number;
  peer: string;
  state: 'running' | 'done' | 'aborted';
  differingTracks: number;
  differingOffsets: number[];
  unverifiedTracks: number;
  doneBytes: number;
  totalBytes: number;
  resync: boolean;
  reason: string | null;
}

async function verifyOf(pair: FailoverPair, name: NodeName): Promise<VerifyStatus | null> {
  return ((await pair.status(name)) as unknown as { verify: VerifyStatus | null }).verify;
}

/** Flips one byte of a store file in place (another process: the node does not know). */
function flipByte(file: string, offset: number): void {
  const fd = openSync(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, offset);
    byte[0] = byte[0]! ^ 0xff;
    writeSync(fd, byte, 0, 1, offset);
  } finally {
    closeSync(fd);
  }
}

/** A pair whose nodes both read `overrides` (top-level config keys), in sync. */
async function pairInSync(opts: { size: string; cache: string }, overrides: Record<string, unknown>): Promise<FailoverPair> {
  const pair = await FailoverPair.create({ ...opts, start: false });
  try {
    await pair.start('b', { overrides });
    await pair.start('a', { overrides });
    await pair.waitInSync();
    return pair;
  } catch (err) {
    await pair.kill();
    throw err;
  }
}

async function write(pair: FailoverPair, commands: string[]): Promise<void> {
  const r = await qemuIo(pair.uri('a'), commands);
  assert.equal(qemuIoProblem(r), null, describeRun('qemu-io write on a', r));
}

describe('online verify and checksum resync, two processes (issue 14 items 4-5)', { timeout: 300_000 }, () => {
  it('verify finds bytes changed in the secondary\'s store behind its back while hosts write; --resync repairs them', async (t: TestContext) => {
    ensureTools(['qemu-io']);
    // 4 MiB/s: the 32 MiB verify takes ~8 s, with a writer running all along.
    const overrides = { verifyRate: '4MiB' };
    const pair = await pairInSync({ size: '32MiB', cache: '16MiB' }, overrides);
    try {
      await write(pair, ['write -P 0x5a 0 8M', 'write -P 0xa5 20M 1M']);
      await pair.waitDrained();
      // b restarts cleanly: its cache then holds no track, so what it reads is its store file.
      assert.equal(await pair.stop('b'), 0);
      await pair.start('b', { overrides });
      await pair.waitInSync();
      const corrupt = [5 * TRACK_BYTES + 100, 20 * MiB + 3 * TRACK_BYTES + 7, 30 * MiB + 1]; // data, data, zeros
      for (const offset of corrupt) flipByte(pair.stores.b, offset);
      const expected = corrupt.map((o) => Math.floor(o / TRACK_BYTES) * TRACK_BYTES);

      // Hosts keep writing during the verify, in [8 MiB, 16 MiB): none of those tracks may be reported.
      const model = new BlockModel(VOLUME_BYTES);
      const writer = (await AckedWriter.open(pair.uri('a'), model, { depth: 8, region: [8 * MiB, 16 * MiB], maxBlocks: 4 })).start();
      await writer.waitAcks(50);
      const mark = pair.mark('a');
      const startedMs = Date.now();
      const cli = await pair.cli('a', ['verify']);
      const endedMs = Date.now();
      const acksDuring = writer.acksBetween(startedMs, endedMs);
      const stats = await writer.close();
      assert.equal(cli.code, 0, describeRun('twinblock verify', cli));
      t.diagnostic(`twinblock verify (${endedMs - startedMs} ms, ${acksDuring} host writes acknowledged meanwhile):\n${cli.stdout}`);
      assert.deepEqual(stats.errors, [], 'host writes during the verify');
      assert.ok(acksDuring > 100, `hosts wrote during the verify: ${acksDuring} acknowledged writes`);
      assert.match(cli.stdout, /differing tracks: 3\n/);
      for (const offset of expected) assert.match(cli.stdout, new RegExp(`track ${offset / TRACK_BYTES} at byte offset ${offset}\\n`));
      const v = await verifyOf(pair, 'a');
      assert.equal(v?.state, 'done');
      assert.deepEqual(v.differingOffsets, expected, 'exactly the changed tracks, none the writer touched');
      assert.equal(v.differingTracks, 3);
      assert.equal(v.doneBytes, VOLUME_BYTES);
      const found = pair.lines('a', 'online verify found tracks that differ', mark);
      assert.equal(found.length, 1, pair.tail());
      assert.deepEqual(found[0]!['offsets'], expected);
      // The store files still differ there: verify alone changes nothing.
      assert.notEqual(compareStores(pair.stores.a, pair.stores.b), null);

      // --resync: the same tracks become out of sync for b and are resent.
      const repair = await pair.cli('a', ['verify', '--resync']);
      assert.equal(repair.code, 0, describeRun('twinblock verify --resync', repair));
      assert.match(repair.stdout, /differing tracks: 3\n/);
      assert.match(repair.stdout, /being resent/);
      await pair.waitFor('the resync of the differing tracks ended', async () => {
        const s = await pair.status('a');
        return { ok: s.peers[0]?.state === 'in-sync' && pair.lines('a', 'resync complete: in-sync', mark).length === 1, detail: JSON.stringify(s.peers[0]) };
      });
      const resent = pair.lines('a', 'resync of the out-of-sync tracks started', mark);
      assert.equal(resent.length, 1, pair.tail());
      assert.equal(resent[0]!['tracks'], 3);
      // Read back from b (its read-only export): the bytes a holds.
      const back = await qemuIo(pair.uri('b'), ['read -P 0x5a 0 8M', 'read -P 0xa5 20M 1M', 'read -P 0 30M 1M'], { readOnly: true });
      assert.equal(qemuIoProblem(back), null, describeRun('qemu-io read on b after the repair', back));
      const again = await pair.cli('a', ['verify']);
      assert.equal(again.code, 0, describeRun('twinblock verify after the repair', again));
      assert.match(again.stdout, /differing tracks: 0\n/);
      assert.equal(await pair.stop('a'), 0);
      assert.equal(await pair.stop('b'), 0);
      assert.equal(compareStores(pair.stores.a, pair.stores.b), null, 'the stores are identical after the repair');
    } finally {
      await pair.kill();
    }
  });

  it('verify refuses on a secondary and for an unknown peer; a wrong admin token is refused', async () => {
    const overrides = { adminToken: 'verify-test-token-0123456789' };
    const pair = await pairInSync({ size: '8MiB', cache: '8MiB' }, overrides);
    try {
      const onSecondary = await pair.cli('b', ['verify', '--token', overrides.adminToken]);
      assert.equal(onSecondary.code, 1, describeRun('verify on the secondary', onSecondary));
      assert.match(onSecondary.stderr, /twinblock: verify refused by .*: verify runs on the primary/);
      const unknown = await pair.cli('a', ['verify', '--peer', 'zz', '--token', overrides.adminToken]);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /no peer named zz/);
      const noToken = await pair.cli('a', ['verify']);
      assert.equal(noToken.code, 1);
      assert.match(noToken.stderr, /unauthorized/);
      const wrong = await pair.cli('a', ['verify', '--token', `${overrides.adminToken.slice(0, -1)}8`]);
      assert.match(wrong.stderr, /wrong admin token/);
      assert.equal(await verifyOf(pair, 'a'), null, 'no verify ran');
      const ok = await pair.cli('a', ['verify', '--token', overrides.adminToken, '--peer', 'b']);
      assert.equal(ok.code, 0, describeRun('verify with the token', ok));
      assert.match(ok.stdout, /differing tracks: 0\n/);
    } finally {
      await pair.kill();
    }
  });

  it('checksum resync: a peer whose store already holds most of the data is sent only the tracks that differ', async (t: TestContext) => {
    ensureTools(['qemu-io']);
    const pair = await FailoverPair.create({ size: '32MiB', cache: '16MiB' });
    try {
      await pair.waitInSync();
      await write(pair, ['write -P 0x11 0 12M', 'write -P 0x22 16M 12M']);
      await pair.waitDrained();
      assert.equal(await pair.stop('b'), 0);
      // b's metadata goes away: its store may hold anything as far as the pair knows (the case of a
      // new store that already holds data). a writes 1 MiB meanwhile.
      rmSync(`${pair.stores.b}.twinblock-meta.json`);
      await write(pair, ['write -P 0x33 4M 1M']);
      const mark = pair.mark('a');
      await pair.start('b');
      await pair.waitInSync();
      const started = pair.lines('a', /^(initial sync of a new peer|full resync of the peer) started$/, mark);
      assert.equal(started.length, 1, pair.tail());
      assert.equal(started[0]!['checksums'], true, `a checksum resync: ${JSON.stringify(started[0])}`);
      assert.equal(started[0]!['bytes'], VOLUME_BYTES);
      const compared = pair.lines('a', 'checksums compared: sending the tracks that differ', mark);
      assert.equal(compared.length, 1, pair.tail());
      t.diagnostic(`compared: ${JSON.stringify(compared[0])}`);
      const s = await pair.status('a');
      const peer = s.peers[0]! as unknown as { resyncBytesSent: number; resyncBytesCompared: number };
      t.diagnostic(`a's status: resyncBytesCompared ${peer.resyncBytesCompared}, resyncBytesSent ${peer.resyncBytesSent}`);
      assert.equal(peer.resyncBytesCompared, VOLUME_BYTES);
      // The 1 MiB written while b was away (16 tracks), nothing more: no host wrote meanwhile.
      assert.equal(compared[0]!['tracks'], 16);
      assert.equal(peer.resyncBytesSent, 1 * MiB, 'only the tracks that differ were sent');
      assert.ok(peer.resyncBytesSent < VOLUME_BYTES / 16);
      const back = await qemuIo(pair.uri('b'), ['read -P 0x11 0 4M', 'read -P 0x33 4M 1M', 'read -P 0x11 5M 7M', 'read -P 0x22 16M 12M'], { readOnly: true });
      assert.equal(qemuIoProblem(back), null, describeRun('qemu-io read on b after the checksum resync', back));
      assert.equal(await pair.stop('a'), 0);
      assert.equal(await pair.stop('b'), 0);
      assert.equal(compareStores(pair.stores.a, pair.stores.b), null, 'the stores are identical after the checksum resync');
    } finally {
      await pair.kill();
    }
  });
});
