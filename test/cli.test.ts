// The `twinblock` command as an operator meets it: a real child process, its exit code, and the
// exact lines on stdout and stderr.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { NodeMetrics } from '../src/admin/metrics.js';
import { startAdminServer, type AdminServer } from '../src/admin/server.js';
import { formatDurationMs, formatStatus } from '../src/cli/status-format.js';
import { createLogger } from '../src/log.js';
import { ensureTools } from './helpers/tools.js';

const mainJs = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI asynchronously (tests host servers in this process, so never block the loop). */
function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [mainJs, ...args], { env: { ...process.env, TWINBLOCK_DEBUG: '', ...env }, timeout: 20_000 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      });
  });
}

function assertOneLineError(result: CliResult, pattern: RegExp): void {
  assert.equal(result.code, 1, `exit code; stderr: ${result.stderr}`);
  assert.equal(result.stdout, '');
  const lines = result.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `exactly one line on stderr, got:\n${result.stderr}`);
  assert.match(lines[0]!, /^twinblock: /);
  assert.match(lines[0]!, pattern);
}

/** A port nothing listens on: bind one, then release it. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('twinblock serve: startup errors', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tb-cli-'));
  const write = (name: string, text: string): string => {
    const file = path.join(dir, name);
    writeFileSync(file, text);
    return file;
  };
  const good = 'volume: v\nsize: 1GiB\nnodes:\n  a: { nbd: "127.0.0.1:0", admin: "127.0.0.1:0", store: a.img }\n';

  it('missing config file', async () => {
    assertOneLineError(await runCli(['serve', '--config', path.join(dir, 'nope.yaml'), '--node', 'a']),
      /config .*nope\.yaml: cannot read: no such file$/);
  });

  it('unknown key', async () => {
    const file = write('bad.yaml', good.replace('size: 1GiB', 'size: 1GiB\ntrackSzie: 4KiB'));
    assertOneLineError(await runCli(['serve', '--config', file, '--node', 'a']), /bad\.yaml: trackSzie: unknown key/);
  });

  it('bad size', async () => {
    const file = write('size.yaml', good.replace('size: 1GiB', 'size: 12XB'));
    assertOneLineError(await runCli(['serve', '--config', file, '--node', 'a']), /size\.yaml: size: bad size "12XB"/);
  });

  it('unknown node name', async () => {
    const file = write('good.yaml', good);
    assertOneLineError(await runCli(['serve', '--config', file, '--node', 'b']), /unknown node "b": .*good\.yaml has a$/);
  });

  it('missing required option and bad log level', async () => {
    assertOneLineError(await runCli(['serve', '--node', 'a']), /required option '--config <file>' not specified/);
    assertOneLineError(await runCli(['serve', '--config', 'x', '--node', 'a', '--log-level', 'loud']), /'loud' is invalid/);
  });

  it('demo with a bad --size or --nodes', async () => {
    assertOneLineError(await runCli(['demo', '--dir', dir, '--size', '1000']), /size: must be a positive multiple of 512/);
    assertOneLineError(await runCli(['demo', '--dir', dir, '--size', 'lots']), /^twinblock: --size: bad size "lots"/);
    assertOneLineError(await runCli(['demo', '--dir', dir, '--nodes', '1']), /^twinblock: --nodes: must be a whole number from 2 to 8 \(got "1"\)$/);
    assertOneLineError(await runCli(['demo', '--dir', dir, '--nodes', '9']), /--nodes: must be a whole number from 2 to 8/);
    // Without etcd on PATH, --arbiter says what to install (issue 13 item 8).
    assertOneLineError(await runCli(['demo', '--dir', dir, '--arbiter'], { PATH: '/nonexistent' }), /^twinblock: --arbiter: no etcd on PATH: install it \(Debian: apt-get install etcd-server\)/);
  });
});

describe('twinblock demo --nodes 3 (issue 12 item 7)', () => {
  it('starts primary a and secondaries b and c, prints every URI, mirrors into both, and stops cleanly on Ctrl-C', { timeout: 60_000 }, async () => {
    const demoDir = mkdtempSync(path.join(os.tmpdir(), 'twinblock-demo3-'));
    const child = spawn(process.execPath, [mainJs, 'demo', '--dir', demoDir, '--size', '64MiB', '--nodes', '3', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += String(d); });
    child.stderr.on('data', (d: Buffer) => { stderr += String(d); });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      let peers: { node: string; state: string }[] = [];
      for (let i = 0; i < 200 && !(peers.length === 2 && peers.every((p) => p.state === 'in-sync')); i++) {
        await new Promise((r) => setTimeout(r, 100));
        try {
          const res = await fetch('http://127.0.0.1:8801/status', { signal: AbortSignal.timeout(2000) });
          peers = ((await res.json()) as { peers: { node: string; state: string }[] }).peers;
        } catch {
          // not up yet
        }
      }
      assert.deepEqual(peers.map((p) => [p.node, p.state]), [['b', 'in-sync'], ['c', 'in-sync']], `a mirrors b and c; stderr:\n${stderr.slice(-2000)}`);
      assert.match(stdout, /3 mirrored nodes \(ack: all, quorum: majority\)/);
      for (const [node, port] of [['a', 10809], ['b', 10810], ['c', 10811]] as const) assert.match(stdout, new RegExp(`node ${node}, .*\\n\\s+NBD:\\s+nbd://127\\.0\\.0\\.1:${port}/demo`));
    } finally {
      child.kill('SIGINT');
      assert.equal(await exited, 0, `the demo stops cleanly; stderr:\n${stderr.slice(-2000)}`);
    }
  });
});

describe('twinblock demo --arbiter (issue 13 item 8)', () => {
  it('starts its own etcd, a holds the lease, a demote hands over to b with no one else, Ctrl-C stops nodes and etcd', { timeout: 90_000 }, async () => {
    ensureTools(['etcd']);
    const demoDir = mkdtempSync(path.join(os.tmpdir(), 'twinblock-demo-arbiter-'));
    const child = spawn(process.execPath, [mainJs, 'demo', '--arbiter', '--dir', demoDir, '--size', '64MiB', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += String(d); });
    child.stderr.on('data', (d: Buffer) => { stderr += String(d); });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const status = async (port: number): Promise<{ role: string; arbiter: { leader: string | null; connected: boolean } | null } | null> => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/status`, { signal: AbortSignal.timeout(2000) });
        return (await res.json()) as { role: string; arbiter: { leader: string | null; connected: boolean } | null };
      } catch {
        return null;
      }
    };
    const waitFor = async (what: string, ok: () => Promise<boolean>): Promise<void> => {
      for (let i = 0; i < 300; i++) {
        if (await ok()) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.fail(`${what}; stderr:\n${stderr.slice(-2000)}`);
    };
    try {
      await waitFor('a holds the lease', async () => (await status(8801))?.arbiter?.leader === 'a');
      assert.match(stdout, /arbiter: etcd at http:\/\/127\.0\.0\.1:\d+ \(data in .*etcd\): a holds the leader lease/);
      const printed = await runCli(['status', '--admin', 'http://127.0.0.1:8801']);
      assert.match(printed.stdout, /arbiter: etcd connected, leader a, epoch 1/);
      const demoted = await runCli(['demote', '--admin', 'http://127.0.0.1:8801']);
      assert.equal(demoted.code, 0, demoted.stderr);
      await waitFor('b took over on its own', async () => (await status(8802))?.role === 'primary' && (await status(8802))?.arbiter?.leader === 'b');
    } finally {
      child.kill('SIGINT');
      assert.equal(await exited, 0, `the demo stops cleanly; stderr:\n${stderr.slice(-2000)}`);
    }
    const etcdLeft = await new Promise<boolean>((resolve) => execFile('pgrep', ['-f', `etcd --name demo --data-dir ${demoDir}`], (err) => resolve(err === null)));
    assert.equal(etcdLeft, false, 'the demo stops its etcd');
  });
});

/** Start `serve` and wait for its "serving" log line; returns the child and the ports it logged. */
async function startServe(configFile: string): Promise<{ child: ReturnType<typeof spawn>; adminPort: number; stderr: () => string }> {
  const child = spawn(process.execPath, [mainJs, 'serve', '--config', configFile, '--node', 'a'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const adminPort = await new Promise<number>((resolve, reject) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const serving = stderr.split('\n').find((l) => l.includes('"msg":"serving"'));
      if (serving !== undefined) resolve((JSON.parse(serving) as { adminPort: number }).adminPort);
    });
    child.on('exit', (code) => reject(new Error(`serve exited ${code} before serving: ${stderr}`)));
  });
  return { child, adminPort, stderr: () => stderr };
}

describe('twinblock serve: running', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tb-serve-'));

  it('serves status, then stops cleanly on SIGTERM with exit 0', async () => {
    const file = path.join(dir, 'c.yaml');
    writeFileSync(file, 'volume: v\nsize: 4MiB\ntrackSize: 4KiB\nnodes:\n  a: { nbd: "127.0.0.1:0", admin: "127.0.0.1:0", store: a.img, cache: 1MiB }\n');
    const { child, adminPort, stderr } = await startServe(file);
    const status = await runCli(['status', '--admin', `127.0.0.1:${adminPort}`, '--json']);
    assert.equal(status.code, 0, status.stderr);
    assert.equal((JSON.parse(status.stdout) as { node: string }).node, 'a');
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr());
    assert.match(stderr(), /"msg":"stopped cleanly"/);
  });

  it('adminToken (issue 14 item 3): the CLI sends it from --token, TWINBLOCK_ADMIN_TOKEN or --config; curl without it gets 401', async () => {
    const token = 'tb-cli-token-0123456789';
    const file = path.join(dir, 'token.yaml');
    writeFileSync(file, `volume: v\nsize: 4MiB\ntrackSize: 4KiB\nadminToken: ${token}\nnodes:\n  a: { nbd: "127.0.0.1:0", admin: "127.0.0.1:0", store: t.img, cache: 1MiB }\n`);
    const { child, adminPort, stderr } = await startServe(file);
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const admin = `http://127.0.0.1:${adminPort}`;
      assertOneLineError(await runCli(['demote', '--admin', admin]), /demote refused by .*: unauthorized: this node needs an admin token/);
      assertOneLineError(await runCli(['demote', '--admin', admin, '--token', `${token}x`]), /unauthorized: wrong admin token/);
      // Past the token, the action itself answers: a standalone node has no role to give up.
      for (const [args, env] of [[['--token', token], {}], [[], { TWINBLOCK_ADMIN_TOKEN: token }], [['--config', file], {}]] as const) {
        const r = await runCli(['demote', '--admin', admin, ...args], env);
        assert.doesNotMatch(r.stderr, /unauthorized/, `${args.join(' ')} ${JSON.stringify(env)}: ${r.stderr}`);
      }
      const curl = await new Promise<string>((resolve) => execFile('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', `${admin}/demote`], (_e, out) => resolve(String(out))));
      assert.equal(curl, '401');
      const curlOk = await new Promise<string>((resolve) => execFile('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `${admin}/status`], (_e, out) => resolve(String(out))));
      assert.equal(curlOk, '200', 'status needs no token');
      assert.match(stderr(), /"msg":"admin action refused: not authorized"/);
    } finally {
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr());
    }
  });

  it('an admin address off loopback without a token: serve refuses in one line', async () => {
    const file = path.join(dir, 'open.yaml');
    writeFileSync(file, 'volume: v\nsize: 4MiB\nnodes:\n  a: { nbd: "127.0.0.1:0", admin: "0.0.0.0:0", store: o.img }\n');
    assertOneLineError(await runCli(['serve', '--config', file, '--node', 'a']), /nodes\.a\.admin: 0\.0\.0\.0:0 is not on loopback: set adminToken/);
  });

  it('an NBD port in use is one line and exit 1', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const file = path.join(dir, 'busy.yaml');
      writeFileSync(file, `volume: v\nsize: 4MiB\nnodes:\n  a: { nbd: "127.0.0.1:${port}", admin: "127.0.0.1:0", store: b.img }\n`);
      const result = await runCli(['serve', '--config', file, '--node', 'a', '--log-level', 'error']);
      assertOneLineError(result, new RegExp(`127\\.0\\.0\\.1:${port} is already in use`));
    } finally {
      blocker.close();
    }
  });
});

describe('twinblock status', () => {
  let server: AdminServer;
  const sample = { node: 'a', role: 'primary', epoch: 1, volume: 'v', cache: { dirtyBytes: 0 }, peers: [] };

  before(async () => {
    const metrics = new NodeMetrics(() => ({ dirtyBytes: 0, dirtyTracks: 0, cachedTracks: 0, capacityBytes: 0, oldestDirtyAgeMs: 0, waitingWrites: 0 }), { processMetrics: false });
    server = await startAdminServer({ host: '127.0.0.1', port: 0, metrics, log: createLogger({ level: 'silent' }), getStatus: () => sample });
  });
  after(() => server.close());

  it('an unreachable admin URL is one line and exit 1', async () => {
    const port = await closedPort();
    assertOneLineError(await runCli(['status', '--admin', `http://127.0.0.1:${port}`]),
      new RegExp(`cannot reach admin at http://127\\.0\\.0\\.1:${port}: connection refused`));
  });

  it('prints the summary, or the raw JSON with --json', async () => {
    const human = await runCli(['status', '--admin', `127.0.0.1:${server.port}`]);
    assert.equal(human.code, 0, human.stderr);
    assert.equal(human.stdout, formatStatus(sample));
    const json = await runCli(['status', '--admin', `http://127.0.0.1:${server.port}/`, '--json']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), sample);
  });
});

describe('status formatting', () => {
  it('formats a pair with exposure, counters and peers', () => {
    const text = formatStatus({
      node: 'a', role: 'primary', epoch: 3, pid: 42, volume: 'vol0', sizeBytes: 1024 ** 3,
      cache: { dirtyBytes: 196608, dirtyTracks: 3, cachedTracks: 10, capacityBytes: 256 * 1024 ** 2, oldestDirtyAgeMs: 1500, waitingWrites: 0 },
      counters: { writes: 10, hardenedBytes: 131072, hardenWrites: 2, hardenRuns: { threshold: 1, scan: 0, age: 4 }, linkBytesSent: 655360, resyncBytesSent: 0 },
      nbd: { connections: 1 },
      peers: [{ node: 'b', connected: true, state: 'in-sync', unitedTracks: 12, outOfSyncTracks: 0 }],
    });
    assert.equal(text, [
      'vol0 node:a role:primary epoch:3 size:1GiB pid:42',
      '  cache: 192KiB dirty (3 tracks) of 256MiB, 10 tracks cached',
      '  exposure: 192KiB unhardened, oldest dirty 1.5s ago',
      '  hardening: 128KiB hardened in 2 store writes; runs: threshold 1, age 4',
      '  traffic: writes 10, link sent 640KiB, resync sent 0B',
      '  nbd: 1 connection',
      '  peer b connected:yes state:in-sync united:12 tracks out-of-sync:0 tracks',
      '',
    ].join('\n'));
  });

  it("formats the node's NodeStatus shape (exposure object, store, mode)", () => {
    const text = formatStatus({
      node: 'a', volume: 'v', role: 'primary', mode: 'standalone', epoch: 0, pid: 7, sizeBytes: 64 * 1024 ** 2,
      tracker: 'destage-scan', flush: 'disk', store: '/tmp/a.img', nbd: { uri: 'nbd://127.0.0.1:10809/v', connections: 2 },
      cache: { capacityBytes: 256 * 1024 ** 2, chargedBytes: 0, cachedTracks: 5, dirtyTracks: 2, hardeningTracks: 0, waitingWrites: 0 },
      exposure: { unhardenedBytes: 8192, oldestDirtyAgeMs: 850, maxDirtyAgeMs: 5000 },
      counters: { writes: 3, writtenBytes: 12288, hardenedBytes: 4096, hardenWrites: 1, linkBytesSent: 0, resyncBytesSent: 0 },
      peers: [],
    });
    assert.equal(text, [
      'v node:a role:primary epoch:0 size:64MiB mode:standalone pid:7',
      '  store: /tmp/a.img (tracker destage-scan, flush disk)',
      '  cache: 8KiB dirty (2 tracks) of 256MiB, 5 tracks cached',
      '  exposure: 8KiB unhardened, oldest dirty 850ms ago (limit 5s)',
      '  hardening: 4KiB hardened in 1 store write',
      '  traffic: writes 3, link sent 0B, resync sent 0B',
      '  nbd: 2 connections',
      '  peers: none (standalone)',
      '',
    ].join('\n'));
  });

  it('a degraded peer and writes waiting for space', () => {
    const text = formatStatus({
      node: 'b', role: 'primary', volume: 'vol0',
      cache: { dirtyBytes: 65536, dirtyTracks: 1, cachedTracks: 1, capacityBytes: 262144, oldestDirtyAgeMs: 125_000, waitingWrites: 1 },
      peers: [{ node: 'a', connected: false, state: 'degraded', unitedTracks: 1, outOfSyncTracks: 7 }],
    });
    assert.match(text, /cache: 64KiB dirty \(1 track\) of 256KiB, 1 track cached, 1 write waiting for space/);
    assert.match(text, /exposure: 64KiB unhardened, oldest dirty 2m05s ago/);
    assert.match(text, /peer a connected:no state:degraded united:1 track out-of-sync:7 tracks/);
  });

  it('host writes over the last interval (issue 15), none, and nothing before an interval closed', () => {
    const line = (hostWrites: Record<string, unknown>): string | undefined => formatStatus({ node: 'a', hostWrites }).split('\n').find((l) => l.includes('host writes'));
    assert.equal(line({ iops: 1234.4, p50Ms: 0.2134, p99Ms: 1.5, intervalMs: 1000 }), '  host writes: 1234 IOPS, p50 0.21ms, p99 1.50ms over the last 1s');
    assert.equal(line({ iops: 0, p50Ms: null, p99Ms: null, intervalMs: 2500 }), '  host writes: none over the last 2.5s');
    assert.equal(line({ iops: 0, p50Ms: null, p99Ms: null, intervalMs: 0 }), undefined);
  });

  it('quorum: off, ok, and lost with each onNoQuorum (issue 12)', () => {
    const line = (ack: string, quorum: Record<string, unknown>): string => formatStatus({ node: 'a', volume: 'v', ack, quorum }).split('\n')[1]!;
    assert.equal(line('all', { policy: 'off', have: 2, need: 1, ok: true, onNoQuorum: 'suspend-io' }), '  quorum: off (ack all, reaches 2 nodes)');
    assert.equal(line('quorum', { policy: 'majority', have: 2, need: 2, ok: true, onNoQuorum: 'suspend-io' }), '  quorum: ok (ack quorum, majority: reaches 2 of the 2 nodes needed)');
    assert.equal(line('all', { policy: 'majority', have: 1, need: 2, ok: false, onNoQuorum: 'suspend-io' }), '  quorum: LOST: writes wait (ack all, majority: reaches 1 of the 2 nodes needed)');
    assert.equal(line('all', { policy: 'majority', have: 1, need: 2, ok: false, onNoQuorum: 'io-error' }), '  quorum: LOST: writes fail with EIO (ack all, majority: reaches 1 of the 2 nodes needed)');
  });

  it('a resync in progress, a split brain', () => {
    const resyncing = formatStatus({
      node: 'a', role: 'primary', volume: 'vol0',
      peers: [{ node: 'b', connected: true, state: 'resyncing', unitedTracks: 3, outOfSyncTracks: 40, rttMs: 0.25,
        sync: { totalBytes: 4194304, doneBytes: 1048576, tracksLeft: 48, rateBytesPerSec: 1048576, etaSeconds: 3, full: false } }],
    });
    assert.match(resyncing, /peer b connected:yes state:resyncing united:3 tracks out-of-sync:40 tracks rtt:0\.25ms/);
    assert.match(resyncing, /resync: 1MiB of 4MiB \(25%\), 48 tracks left, 1MiB\/s, ETA 3s/);
    const split = formatStatus({ node: 'a', peers: [{ node: 'b', connected: true, state: 'split-brain' }] });
    assert.match(split, /SPLIT BRAIN: both nodes were primary; run `twinblock resolve --discard-local` on the side to overwrite/);
  });

  it('tolerates missing fields and non-objects', () => {
    assert.equal(formatStatus({ node: 'a' }), '(volume ?) node:a role:?\n');
    assert.match(formatStatus({ cache: { dirtyBytes: 0 }, peers: [] }), /exposure: none \(everything hardened\)\n {2}peers: none \(standalone\)/);
    assert.match(formatStatus([1]), /unexpected status/);
  });

  it('durations', () => {
    assert.equal(formatDurationMs(850), '850ms');
    assert.equal(formatDurationMs(1500), '1.5s');
    assert.equal(formatDurationMs(125_000), '2m05s');
    assert.equal(formatDurationMs(7_260_000), '2h01m');
  });
});
