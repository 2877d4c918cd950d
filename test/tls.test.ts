// TLS everywhere (issue 14 items 1-3, 9): mutual TLS on the replication link, NBD STARTTLS for
// hosts (qemu-io and nbdinfo, clients we did not write), HTTPS on the admin port (curl), with the
// certificates made by openssl here. Bad input: a peer's certificate from another CA, expired, or
// naming another node; a peer without TLS; a client that skips STARTTLS or sends data before TLS
// begins; an admin token that differs in one byte.
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { clientCertDir, makeCa, makeCert, type CertFiles } from './helpers/certs.js';
import { cleanupAll, cliMainPath, makeTempDir, run, serveExpectingFailure, type ConfigSpec, type NodeEntry } from './helpers/node-process.js';
import { infoData, OPT, option, Raw, REP_ACK, u32 } from './helpers/nbd-raw.js';
import { logLines, pairLogs, startPair, waitInSync, type Pair } from './helpers/pair-process.js';
import { ensureTools } from './helpers/tools.js';
import { sleep } from './helpers/acked-writer.js';

const ERR_TLS_REQD = 0x80000005;
const TOKEN = 'tls-test-admin-token-0123456789';

function withTls(files: { a: CertFiles; b: CertFiles }, extra: Record<string, unknown> = {}): (c: ConfigSpec) => ConfigSpec {
  return (c) => {
    const nodes = c.nodes as unknown as Record<string, Record<string, unknown>>;
    nodes['a']!['tls'] = files.a;
    nodes['b']!['tls'] = files.b;
    return { ...c, ...extra };
  };
}

/** qemu-io over NBD with TLS: the client checks our certificate against the CA in `certDir`. */
function qemuIoTls(port: number, certDir: string, commands: string[], readOnly = false): ReturnType<typeof run> {
  const image = `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=vol0,tls-creds=tls0`;
  return run('qemu-io', [
    '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${certDir}`, ...(readOnly ? ['-r'] : []),
    '--image-opts', image, ...commands.flatMap((c) => ['-c', c]),
  ], { timeoutMs: 60_000 });
}

async function waitForLog(pair: Pair, node: 'a' | 'b', what: RegExp, timeoutMs = 15_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const line = logLines(pair[node]).find((l) => what.test(JSON.stringify(l)));
    if (line !== undefined) return line;
    await sleep(100);
  }
  throw new Error(`no log line matching ${what} on ${node}\n${pairLogs(pair)}`);
}

describe('TLS (issue 14)', () => {
  let dir: string;
  let ca: ReturnType<typeof makeCa>;
  let good: { a: CertFiles; b: CertFiles };

  before(() => {
    ensureTools(['openssl', 'qemu-io', 'nbdinfo', 'curl']);
    dir = makeTempDir('twinblock-tls-');
    ca = makeCa(dir);
    good = { a: makeCert(ca, 'a'), b: makeCert(ca, 'b') };
  });
  after(() => cleanupAll());

  test('a pair over mutual TLS, hosts over NBD STARTTLS (required), admin over HTTPS', async () => {
    const pair = await startPair({ configFor: { a: withTls(good, { nbdTls: 'require', adminToken: TOKEN }), b: withTls(good, { nbdTls: 'require', adminToken: TOKEN }) } });
    try {
      await waitInSync(pair);
      const status = await pair.a.status();
      assert.match(status.nbd.uri, /^nbds:\/\//, 'status names the TLS scheme');
      assert.ok(logLines(pair.a).some((l) => l.msg === 'tls: link is mutual TLS, admin is HTTPS'), pairLogs(pair));
      const certDir = clientCertDir(path.join(dir, 'client'), ca.crt);

      // qemu-io writes through the primary over TLS; the secondary returns the bytes over TLS too,
      // so they crossed the TLS link.
      const write = await qemuIoTls(pair.a.nbdPort, certDir, ['write -P 0xa7 1M 2M', 'flush']);
      assert.equal(write.code, 0, `qemu-io write over TLS: ${write.stderr}${write.stdout}`);
      const read = await qemuIoTls(pair.b.nbdPort, certDir, ['read -P 0xa7 1M 2M'], true);
      assert.equal(read.code, 0, `qemu-io read on the secondary over TLS: ${read.stderr}${read.stdout}`);
      assert.doesNotMatch(read.stdout, /Pattern verification failed/);

      const img = await run('qemu-img', ['info', '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${certDir}`, '--image-opts',
        `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${pair.a.nbdPort},export=vol0,tls-creds=tls0`]);
      assert.equal(img.code, 0, `qemu-img info over TLS: ${img.stderr}`);
      assert.match(img.stdout, /virtual size: 64 MiB/);
      const info = await run('nbdinfo', ['--json', `nbds://127.0.0.1:${pair.a.nbdPort}/vol0?tls-certificates=${certDir}`]);
      assert.equal(info.code, 0, `nbdinfo nbds://: ${info.stderr}`);
      assert.equal((JSON.parse(info.stdout) as { exports: Array<{ 'export-size': number }> }).exports[0]!['export-size'], 64 * 1024 * 1024);
      // A client that does not start TLS is told TLS is required (libnbd reports the server's reply).
      const plain = await run('nbdinfo', [`nbd://127.0.0.1:${pair.a.nbdPort}/vol0`], { env: { ...process.env, LIBNBD_DEBUG: '1' } });
      assert.notEqual(plain.code, 0, 'plain nbdinfo against nbdTls: require must fail');
      assert.match(plain.stderr, /TLS_REQD|requires TLS/i, plain.stderr.slice(-2000));

      await rawStartTlsChecks(pair.a.nbdPort);
      // After all of that, hosts still work.
      const again = await qemuIoTls(pair.a.nbdPort, certDir, ['read -P 0xa7 1M 2M'], true);
      assert.equal(again.code, 0, again.stderr);

      await adminHttpsChecks(pair);
    } finally {
      await pair.kill();
    }
  });

  test('nbdTls: on offers TLS but does not require it', async () => {
    const pair = await startPair({ configFor: { a: withTls(good, { nbdTls: 'on' }), b: withTls(good, { nbdTls: 'on' }) } });
    try {
      const certDir = clientCertDir(path.join(dir, 'client-on'), ca.crt);
      const plain = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${pair.a.nbdPort}/vol0`]);
      assert.equal(plain.code, 0, plain.stderr);
      const secure = await run('nbdinfo', ['--size', `nbds://127.0.0.1:${pair.a.nbdPort}/vol0?tls-certificates=${certDir}`]);
      assert.equal(secure.code, 0, secure.stderr);
      assert.equal(secure.stdout.trim(), String(64 * 1024 * 1024));
    } finally {
      await pair.kill();
    }
  });

  test('the link refuses a peer certificate from another CA, one naming another node, and a peer without TLS', async () => {
    const otherCa = makeCa(dir, 'other-ca');
    const cases: Array<{ what: string; b: CertFiles; aSays: RegExp }> = [
      { what: 'another CA', b: makeCert(otherCa, 'b'), aSays: /not signed by our CA/ },
      { what: 'another name', b: makeCert(ca, 'b', { file: 'b-named-c', names: ['DNS:c', 'IP:127.0.0.1'] }), aSays: /does not name it/ },
    ];
    for (const c of cases) {
      const pair = await startPair({ configFor: { a: withTls({ a: good.a, b: c.b }), b: withTls({ a: good.a, b: c.b }) } });
      try {
        const line = await waitForLog(pair, 'a', /link refused/);
        assert.match(String(line['reason']), c.aSays, `${c.what}: ${JSON.stringify(line)}`);
        const s = await pair.a.status();
        assert.equal((s['peers'] as Array<{ connected: boolean }>)[0]!.connected, false, `${c.what}: the link must stay down`);
      } finally {
        await pair.kill();
      }
    }
    // b's side accepts: a peer speaking plain TCP, and a TLS client whose certificate expired,
    // are refused there with the reason logged.
    const pair = await startPair({ configFor: { a: withTls(good), b: withTls(good) } });
    try {
      await waitInSync(pair);
      const plain = net.connect(pair.ports.b.link, '127.0.0.1');
      plain.on('error', () => {});
      plain.write(Buffer.alloc(64, 1));
      const plainLine = await waitForLog(pair, 'b', /speak TLS/);
      assert.equal(plainLine['msg'], 'link: connection refused');
      plain.destroy();
      const expired = makeCert(ca, 'a', { file: 'a-expired', days: -1 });
      const client = tls.connect({ host: '127.0.0.1', port: pair.ports.b.link, cert: readFileSync(expired.cert), key: readFileSync(expired.key), ca: readFileSync(ca.crt), checkServerIdentity: () => undefined });
      client.on('error', () => {});
      const expiredLine = await waitForLog(pair, 'b', /expired/);
      assert.equal(expiredLine['msg'], 'link: connection refused', JSON.stringify(expiredLine));
      client.destroy();
      const s = await pair.a.status();
      assert.equal((s['peers'] as Array<{ connected: boolean }>)[0]!.connected, true, 'the real peer keeps its link');
    } finally {
      await pair.kill();
    }
  });

  test('a node refuses to start with an expired certificate, a key that is not its own, or TLS on only some nodes', async () => {
    const expired = makeCert(ca, 'a', { file: 'a-expired-start', days: -1 });
    const base = (aTls: Record<string, string>, bTls?: Record<string, string>): ConfigSpec => ({
      size: '16MiB', secret: 'twinblock tls test secret', nodes: {
        a: { store: path.join(dir, 'refused-a.img'), link: '127.0.0.1:0', tls: aTls } as NodeEntry,
        b: { store: path.join(dir, 'refused-b.img'), link: '127.0.0.1:0', ...(bTls === undefined ? {} : { tls: bTls }) } as NodeEntry,
      },
    });
    const cases: Array<[string, ConfigSpec, RegExp]> = [
      ['expired', base({ ...expired }, { ...good.b }), /tls: certificate .*a-expired-start\.crt expired on/],
      ['wrong key', base({ ...good.a, key: good.b.key }, { ...good.b }), /tls: cannot use .*a\.crt with .*b\.key/],
      ['tls on one node', base({ ...good.a }), /nodes\.b\.tls: missing/],
    ];
    for (const [what, config, message] of cases) {
      const r = await serveExpectingFailure(config);
      assert.equal(r.code, 1, `${what}: exit 1 (${r.stderr})`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${what}: one line, got ${r.stderr}`);
      assert.match(lines[0]!, message, what);
    }
  });
});

/** Raw NBD clients against nbdTls: require (proto.md "FORCEDTLS mode"). */
async function rawStartTlsChecks(port: number): Promise<void> {
  // Every option before STARTTLS but ABORT is answered NBD_REP_ERR_TLS_REQD.
  const raw = await Raw.connect(port);
  await raw.read(18);
  raw.send(u32(3), option(OPT.INFO, infoData('vol0')));
  const info = await raw.optionReply();
  assert.equal(info.type, ERR_TLS_REQD, 'INFO before STARTTLS');
  raw.send(option(OPT.LIST));
  assert.equal((await raw.optionReply()).type, ERR_TLS_REQD, 'LIST before STARTTLS');
  // EXPORT_NAME cannot be answered with an error: the server closes.
  raw.send(option(OPT.EXPORT_NAME, Buffer.from('vol0')));
  await raw.expectClosed();

  // STARTTLS with bytes behind it in clear (an injection): closed, and no ACK sent.
  const injected = await Raw.connect(port);
  await injected.read(18);
  injected.send(u32(3), option(OPT.STARTTLS), option(OPT.GO, infoData('vol0')));
  const before = await injected.expectClosed();
  assert.equal(before.length, 0, 'no ACK for a STARTTLS followed by cleartext data');

  // A well-behaved STARTTLS gets its ACK.
  const ok = await Raw.connect(port);
  await ok.read(18);
  ok.send(u32(3), option(OPT.STARTTLS));
  const ack = await ok.optionReply();
  assert.equal(ack.type, REP_ACK);
  ok.close();
}

/** HTTPS on the admin port with the node's certificate; the bearer token checked as before. */
async function adminHttpsChecks(pair: Pair): Promise<void> {
  const url = `https://127.0.0.1:${pair.ports.a.admin}`;
  const caFile = (pair.a.config.nodes['a'] as unknown as { tls: CertFiles }).tls.ca;
  const get = await run('curl', ['-sS', '--cacert', caFile, `${url}/status`]);
  assert.equal(get.code, 0, get.stderr);
  assert.equal((JSON.parse(get.stdout) as { node: string }).node, 'a');
  const wrongToken = `${TOKEN.slice(0, -1)}X`;
  const post = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', caFile, '-X', 'POST', '-H', `Authorization: Bearer ${wrongToken}`, `${url}/demote`]);
  assert.equal(post.stdout, '401', `one byte off: ${post.stderr}`);
  // Without the CA, curl refuses our certificate; plain HTTP to the HTTPS port gets no answer.
  const untrusted = await run('curl', ['-sS', `${url}/status`]);
  assert.notEqual(untrusted.code, 0);
  const plainHttp = await run('curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${pair.ports.a.admin}/status`]);
  assert.ok(plainHttp.code !== 0 || !plainHttp.stdout.includes('"node"'), 'no status over plain HTTP');
  // The dashboard over HTTPS: its feed reaches the other node over HTTPS too (trusting the CA).
  const page = await run('curl', ['-sS', '--cacert', caFile, `${url}/`]);
  assert.equal(page.code, 0, page.stderr);
  assert.match(page.stdout, /<html/i);
  const events = await run('curl', ['-sS', '-N', '--max-time', '3', '--cacert', caFile, `${url}/dashboard/events`]);
  const views = events.stdout.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)) as { nodes: Array<{ name: string; reachable: boolean | null; error: string | null }> });
  assert.ok(views.some((v) => v.nodes.some((n) => n.name === 'b' && n.reachable === true)), `b reached over HTTPS: ${events.stdout.slice(-1500)}`);
  // The CLI finds the CA in --ca, and the role did not change.
  const cli = await run(process.execPath, [cliMainPath, 'status', '--admin', url, '--ca', caFile, '--json']);
  assert.equal(cli.code, 0, cli.stderr);
  assert.equal((JSON.parse(cli.stdout) as { role: string }).role, 'primary');
  const noCa = await run(process.execPath, [cliMainPath, 'status', '--admin', url]);
  assert.equal(noCa.code, 1);
  assert.match(noCa.stderr, /^twinblock: cannot reach admin at https:.*not signed by our CA.*--ca FILE/m, noCa.stderr);
}
