// Admin HTTP and metrics: the routes, status codes and content types that operators and
// Prometheus depend on.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { NodeMetrics, type CacheStats } from '../src/admin/metrics.js';
import { AdminActionError, startAdminServer, type AdminServer } from '../src/admin/server.js';
import { createLogger } from '../src/log.js';

const log = createLogger({ level: 'silent' });

function cacheStats(): CacheStats {
  return { dirtyBytes: 3 * 65536, dirtyTracks: 3, cachedTracks: 10, capacityBytes: 256 * 1024 * 1024, oldestDirtyAgeMs: 1500, waitingWrites: 2 };
}

describe('admin server', () => {
  const metrics = new NodeMetrics(cacheStats, { defaultLabels: { node: 'a' } });
  let server: AdminServer;
  let base: string;
  let promotions = 0;

  before(async () => {
    server = await startAdminServer({
      host: '127.0.0.1', port: 0, log, metrics,
      getStatus: () => ({ node: 'a', role: 'primary', peers: [] }),
      actions: {
        promote: async () => ({ promoted: ++promotions }),
        demote: async () => {
          throw new AdminActionError(409, 'already secondary');
        },
        crash: async () => {
          throw new Error('boom');
        },
      },
    });
    base = `http://127.0.0.1:${server.port}`;
  });

  after(() => server.close());

  it('GET /status returns the status object as JSON', async () => {
    const res = await fetch(`${base}/status`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(await res.json(), { node: 'a', role: 'primary', peers: [] });
  });

  it('GET /metrics has the Prometheus content type and every twinblock metric', async () => {
    metrics.connectionOpened();
    metrics.requestDone('write', 4096, 0.00012, null);
    metrics.requestDone('read', 512, 0.00003, 'EIO');
    metrics.hardenDone(131072, 2, 0.004, 'threshold');
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const name of [
      'twinblock_nbd_requests_total', 'twinblock_nbd_bytes_total', 'twinblock_nbd_request_duration_seconds_bucket',
      'twinblock_nbd_connections', 'twinblock_harden_bytes_total', 'twinblock_harden_writes_total',
      'twinblock_harden_duration_seconds_bucket', 'twinblock_harden_runs_total', 'twinblock_cache_dirty_bytes',
      'twinblock_cache_dirty_tracks', 'twinblock_cache_cached_tracks', 'twinblock_cache_capacity_bytes',
      'twinblock_cache_oldest_dirty_age_seconds', 'twinblock_cache_waiting_writes', 'process_cpu_seconds_total',
    ]) {
      assert.ok(text.includes(name), `missing ${name}`);
    }
    assert.match(text, /twinblock_nbd_requests_total\{command="write",result="ok",node="a"\} 1/);
    assert.match(text, /twinblock_nbd_requests_total\{command="read",result="EIO",node="a"\} 1/);
    assert.match(text, /twinblock_nbd_bytes_total\{command="write",node="a"\} 4096/);
    assert.doesNotMatch(text, /twinblock_nbd_bytes_total\{command="read"/, 'failed requests move no bytes');
    // 30 µs: above the 20 µs bucket, inside the 50 µs one (label order is prom-client's choice).
    assert.match(text, /twinblock_nbd_request_duration_seconds_bucket\{le="0.00002",[^}]*command="read"[^}]*\} 0/);
    assert.match(text, /twinblock_nbd_request_duration_seconds_bucket\{le="0.00005",[^}]*command="read"[^}]*\} 1/);
    assert.match(text, /twinblock_nbd_connections\{node="a"\} 1/);
    assert.match(text, /twinblock_harden_runs_total\{reason="threshold",node="a"\} 1/);
    assert.match(text, /twinblock_harden_runs_total\{reason="shutdown",node="a"\} 0/);
    assert.match(text, /twinblock_cache_dirty_bytes\{node="a"\} 196608/);
    assert.match(text, /twinblock_cache_oldest_dirty_age_seconds\{node="a"\} 1\.5/);
  });

  it('POST /<action> runs the action; refusals and failures come back as JSON errors', async () => {
    const ok = await fetch(`${base}/promote`, { method: 'POST' });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { promoted: 1 });
    const refused = await fetch(`${base}/demote`, { method: 'POST' });
    assert.equal(refused.status, 409);
    assert.deepEqual(await refused.json(), { error: 'already secondary' });
    const failed = await fetch(`${base}/crash`, { method: 'POST' });
    assert.equal(failed.status, 500);
    assert.deepEqual(await failed.json(), { error: 'boom' });
  });

  it("a browser page from another origin may not act (CSRF); this port's own page and clients without Origin may", async () => {
    const before = promotions;
    for (const origin of ['http://evil.example', 'null', `http://127.0.0.1:${server.port + 1}`]) {
      const res = await fetch(`${base}/promote`, { method: 'POST', headers: { origin } });
      assert.equal(res.status, 403, origin);
      assert.match(((await res.json()) as { error: string }).error, /may not act on this node/);
    }
    assert.equal(promotions, before, 'no cross-site action ran');
    const own = await fetch(`${base}/promote`, { method: 'POST', headers: { origin: base } });
    assert.equal(own.status, 200, "the dashboard's own page");
    assert.equal(promotions, before + 1);
  });

  it('unknown paths are 404 JSON, wrong methods 405 with Allow', async () => {
    for (const [method, url] of [['GET', '/nope'], ['POST', '/nope'], ['POST', '/toString'], ['GET', '/']]) {
      const res = await fetch(`${base}${url}`, { method });
      assert.equal(res.status, 404, `${method} ${url}`);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
      assert.ok(typeof ((await res.json()) as { error?: unknown }).error === 'string');
    }
    for (const [method, url, allow] of [['POST', '/status', 'GET'], ['DELETE', '/metrics', 'GET'], ['GET', '/promote', 'POST']]) {
      const res = await fetch(`${base}${url}`, { method });
      assert.equal(res.status, 405, `${method} ${url}`);
      assert.equal(res.headers.get('allow'), allow);
      await res.text();
    }
  });

  it('a second server on the same port fails with one line naming the address', async () => {
    await assert.rejects(
      startAdminServer({ host: '127.0.0.1', port: server.port, log, metrics, getStatus: () => ({}) }),
      (err: Error) => err.message === `admin address 127.0.0.1:${server.port} is already in use`,
    );
  });
});

describe('admin token (issue 14 item 3)', () => {
  const metrics = new NodeMetrics(cacheStats, { defaultLabels: { node: 't' } });
  const token = 'tb-admin-0123456789abcdef';
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done): void {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const tokenLog = createLogger({ level: 'info', format: 'json', destination: sink });
  let server: AdminServer;
  let base: string;
  let demotes = 0;

  before(async () => {
    server = await startAdminServer({
      host: '127.0.0.1', port: 0, log: tokenLog, metrics, adminToken: token,
      getStatus: () => ({ node: 't' }),
      actions: { demote: async () => ({ demoted: ++demotes }) },
    });
    base = `http://127.0.0.1:${server.port}`;
  });

  after(() => server.close());

  const demote = (authorization?: string): Promise<Response> => fetch(`${base}/demote`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json', ...(authorization === undefined ? {} : { authorization }) } });

  it('an action without the token, with a token one byte off, or not as Bearer, is a 401 and a log line; nothing runs', async () => {
    const oneOff = `${token.slice(0, -1)}${token.endsWith('f') ? 'e' : 'f'}`;
    for (const [authorization, why] of [[undefined, /needs an admin token/], [`Bearer ${oneOff}`, /wrong admin token/], [`Bearer ${token}x`, /wrong admin token/], [`Basic ${token}`, /not "Bearer <token>"/]] as const) {
      const res = await demote(authorization);
      assert.equal(res.status, 401, String(authorization));
      assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
      assert.match(((await res.json()) as { error: string }).error, why);
    }
    assert.equal(demotes, 0, 'no refused action ran');
    const refusals = lines.filter((l) => l['msg'] === 'admin action refused: not authorized');
    assert.equal(refusals.length, 4);
    assert.ok(refusals.every((l) => !JSON.stringify(l).includes(token.slice(4))), 'the log never carries the token');
  });

  it('the right token runs the action; reads need none', async () => {
    const res = await demote(`Bearer ${token}`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { demoted: 1 });
    assert.equal((await fetch(`${base}/status`)).status, 200);
    assert.equal((await fetch(`${base}/metrics`)).status, 200);
  });
});

describe('node metrics', () => {
  it('two nodes in one process keep separate registries', async () => {
    const a = new NodeMetrics(cacheStats, { processMetrics: false });
    const b = new NodeMetrics(cacheStats, { processMetrics: false });
    a.requestDone('flush', 0, 0.001, null);
    assert.match(await a.metricsText(), /twinblock_nbd_requests_total\{command="flush",result="ok"\} 1/);
    assert.doesNotMatch(await b.metricsText(), /command="flush"/);
    assert.doesNotMatch(await b.metricsText(), /process_cpu/);
  });

  it('connection gauge follows opens and closes', async () => {
    const m = new NodeMetrics(cacheStats, { processMetrics: false });
    m.connectionOpened();
    m.connectionOpened();
    m.connectionClosed('client disconnected');
    assert.match(await m.metricsText(), /^twinblock_nbd_connections 1$/m);
  });
});
