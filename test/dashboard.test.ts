// The dashboard's parts without a browser (issue 15): the word-at-a-time bitmap counts and the heat
// map against a track-by-track count, the host-write window's figures, and the dashboard's routes
// and event stream on a real admin server, with one peer down and one answering as another node.
// dashboard-browser.test.ts drives the page itself.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { Dashboard } from '../src/admin/dashboard.js';
import type { DashboardEvent, DashboardState } from '../src/admin/dashboard-types.js';
import { NodeMetrics, type CacheStats } from '../src/admin/metrics.js';
import { startAdminServer, type AdminServer } from '../src/admin/server.js';
import { TrackBitmap } from '../src/core/bitmap.js';
import { heatMap } from '../src/core/heat-map.js';
import { PeerUnhardenedRecord } from '../src/core/peer-record.js';
import { HostWriteWindow } from '../src/core/write-window.js';
import { createLogger } from '../src/log.js';
import { freePort } from './helpers/node-process.js';

const log = createLogger({ level: 'silent' });
const noCache = (): CacheStats => ({ dirtyBytes: 0, dirtyTracks: 0, cachedTracks: 0, capacityBytes: 0, oldestDirtyAgeMs: 0, waitingWrites: 0 });

describe('bitmap counts and the heat map', () => {
  it('countSpan and countUnionSpan count what has() sees, over any span', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 300 }), fc.array(fc.nat(), { maxLength: 80 }), fc.array(fc.nat(), { maxLength: 80 }), fc.nat(), fc.nat(),
      (trackCount, xs, ys, s1, s2) => {
        const a = new TrackBitmap(trackCount);
        const b = new TrackBitmap(trackCount);
        for (const x of xs) a.set(x % trackCount);
        for (const y of ys) b.set(y % trackCount);
        const [first, end] = [s1 % (trackCount + 1), s2 % (trackCount + 1)].sort((p, q) => p - q) as [number, number];
        let one = 0;
        let union = 0;
        for (let t = first; t < end; t++) {
          if (a.has(t)) one++;
          if (a.has(t) || b.has(t)) union++;
        }
        assert.equal(a.countSpan(first, end), one);
        assert.equal(a.countUnionSpan(b, first, end), union);
      }));
  });

  it('each cell holds the counts of its ranges: current, old, united, out of sync', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat(999), fc.boolean()), { maxLength: 200 }), fc.array(fc.nat(999), { maxLength: 50 }), (marks, lacking) => {
      // 1000 tracks in ranges of 10: 100 ranges, two to a cell of 64 at most.
      const record = new PeerUnhardenedRecord(1000, 10);
      const outOfSync = new TrackBitmap(1000);
      for (const [track, toggleFirst] of marks) {
        if (toggleFirst) record.saveCurrentAsOld(record.rangeOf(track));
        record.mark(track);
      }
      for (const t of lacking) outOfSync.set(t);
      const map = heatMap(record, outOfSync, 64);
      assert.equal(map.rangesPerCell, 2);
      assert.equal(map.united.length, 50);
      for (let cell = 0; cell < 50; cell++) {
        const expected = { current: 0, old: 0, united: 0, outOfSync: 0 };
        for (let t = cell * 20; t < cell * 20 + 20; t++) {
          if (record.isCurrent(t)) expected.current++;
          if (record.isOld(t)) expected.old++;
          if (record.isUnited(t)) expected.united++;
          if (outOfSync.has(t)) expected.outOfSync++;
        }
        assert.deepEqual({ current: map.current[cell], old: map.old[cell], united: map.united[cell], outOfSync: map.outOfSync[cell] }, expected, `cell ${cell}`);
      }
    }));
  });

  it('a volume of fewer ranges than cells gets a cell per range; zero cells is an error', () => {
    const map = heatMap(new PeerUnhardenedRecord(100, 64), new TrackBitmap(100), 64);
    assert.equal(map.rangesPerCell, 1);
    assert.equal(map.united.length, 2);
    assert.throws(() => heatMap(new PeerUnhardenedRecord(100, 64), new TrackBitmap(100), 0), /at least one cell/);
  });
});

describe('host write window', () => {
  it('gives the last closed interval: IOPS, p50 and p99 of its writes', () => {
    const w = new HostWriteWindow(0);
    for (let i = 1; i <= 200; i++) w.record(i / 2);
    assert.deepEqual(w.read(500), { iops: 0, p50Ms: null, p99Ms: null, intervalMs: 0 }, 'no interval closed yet');
    assert.deepEqual(w.read(2000), { iops: 100, p50Ms: 50, p99Ms: 99, intervalMs: 2000 });
    w.record(7);
    assert.deepEqual(w.read(2500), { iops: 100, p50Ms: 50, p99Ms: 99, intervalMs: 2000 }, 'still the last closed one');
    assert.deepEqual(w.read(3000), { iops: 1, p50Ms: 7, p99Ms: 7, intervalMs: 1000 });
    assert.deepEqual(w.read(4000), { iops: 0, p50Ms: null, p99Ms: null, intervalMs: 1000 });
  });

  it('keeps the latest writes for its percentiles when more come than it holds', () => {
    const w = new HostWriteWindow(0, { capacity: 10 });
    for (let i = 0; i < 100; i++) w.record(i < 90 ? 1000 : 1);
    assert.deepEqual(w.read(1000), { iops: 100, p50Ms: 1, p99Ms: 1, intervalMs: 1000 });
  });
});

/** A node's state as the dashboard serves it; only what the feed reads is filled in. */
function stateOf(node: string): DashboardState {
  const status = { node, role: 'primary', peers: [], exposure: { unhardenedBytes: 65536, oldestDirtyAgeMs: 12, maxDirtyAgeMs: 5000 }, hostWrites: { iops: 3, p50Ms: 0.1, p99Ms: 0.2, intervalMs: 1000 } };
  return { status: status as unknown as DashboardState['status'], heat: [] };
}

/** Reads server-sent events until `done` says so; returns them all. */
async function readEvents(url: string, done: (events: DashboardEvent[]) => boolean): Promise<DashboardEvent[]> {
  const res = await fetch(url, { signal: AbortSignal.timeout(20_000) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const events: DashboardEvent[] = [];
  const decoder = new TextDecoder();
  let text = '';
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    text += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = text.indexOf('\n\n')) >= 0) {
      const frame = text.slice(0, end);
      text = text.slice(end + 2);
      if (frame.startsWith('data: ')) events.push(JSON.parse(frame.slice(6)) as DashboardEvent);
    }
    if (done(events)) break;
  }
  return events;
}

describe('dashboard routes and stream', () => {
  let server: AdminServer;
  let impostor: AdminServer;
  let dashboard: Dashboard;
  let base: string;

  before(async () => {
    const deadPort = await freePort();
    // Another node's admin port that answers, but as node x.
    const impostorDash = new Dashboard({ volume: 'v', self: 'x', nodes: [], getState: () => stateOf('x'), log });
    impostor = await startAdminServer({ host: '127.0.0.1', port: 0, log, metrics: new NodeMetrics(noCache, { processMetrics: false }), getStatus: () => ({}), pages: (q, s, p) => impostorDash.handle(q, s, p) });
    dashboard = new Dashboard({
      volume: 'v', self: 'a', intervalMs: 50, getState: () => stateOf('a'), log,
      nodes: [{ name: 'a', admin: { host: '127.0.0.1', port: 0 } }, { name: 'b', admin: { host: '127.0.0.1', port: deadPort } }, { name: 'c', admin: { host: '127.0.0.1', port: impostor.port } }],
    });
    server = await startAdminServer({
      host: '127.0.0.1', port: 0, log, metrics: new NodeMetrics(noCache, { processMetrics: false }), getStatus: () => ({ node: 'a' }),
      // Short request limits: a stream must outlive them (they bound receiving requests, not answers).
      limits: { headersTimeoutMs: 100, requestTimeoutMs: 200 },
      pages: (q, s, p) => dashboard.handle(q, s, p),
    });
    base = `http://127.0.0.1:${server.port}`;
  });

  after(async () => {
    dashboard.close();
    await server.close();
    await impostor.close();
  });

  it('serves the page, its script without a source map reference, and a favicon', async () => {
    const page = await fetch(`${base}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(await page.text(), /<script type="module" src="\/dashboard.js">/);
    const script = await fetch(`${base}/dashboard.js`);
    assert.match(script.headers.get('content-type') ?? '', /^text\/javascript/);
    const text = await script.text();
    assert.match(text, /new EventSource\('\/dashboard\/events'\)/);
    assert.doesNotMatch(text, /sourceMappingURL/);
    for (const icon of ['/favicon.ico', '/favicon.svg']) {
      const res = await fetch(`${base}${icon}`);
      assert.equal(res.status, 200, icon);
      assert.equal(res.headers.get('content-type'), 'image/svg+xml');
    }
  });

  it('answers other methods with 405 and leaves the other routes alone', async () => {
    const post = await fetch(`${base}/`, { method: 'POST', body: '{}' });
    assert.equal(post.status, 405);
    assert.deepEqual(await post.json(), { error: 'method not allowed (use GET)' });
    assert.deepEqual(await (await fetch(`${base}/status`)).json(), { node: 'a' });
    assert.equal((await fetch(`${base}/nothing`)).status, 404);
    const state = await (await fetch(`${base}/dashboard/state`)).json() as DashboardState;
    assert.equal(state.status.node, 'a');
  });

  it('streams every node: itself, one down, one answering as another node, past the request limits', async () => {
    const started = Date.now();
    const events = await readEvents(`${base}/dashboard/events`, (es) => {
      const lastEvent = es.at(-1);
      const b = lastEvent?.nodes.find((n) => n.name === 'b');
      const c = lastEvent?.nodes.find((n) => n.name === 'c');
      // Past twice the request timeout, with both peers judged.
      return Date.now() - started > 500 && b?.reachable === false && c?.reachable === false;
    });
    assert.equal(events[0]!.full, true);
    assert.ok(events.slice(1).every((e) => !e.full), 'later events carry only new samples');
    const lastEvent = events.at(-1)!;
    assert.deepEqual(lastEvent.nodes.map((n) => [n.name, n.self, n.reachable]), [['a', true, true], ['b', false, false], ['c', false, false]]);
    assert.match(lastEvent.nodes[1]!.error ?? '', /connection refused/);
    assert.match(lastEvent.nodes[2]!.error ?? '', /answers as node x, not c/);
    assert.equal(lastEvent.nodes[0]!.state?.status.node, 'a');
    const samples = events.flatMap((e) => e.nodes[0]!.samples);
    assert.ok(samples.length >= events.length, 'a sample of this node in every event');
    assert.deepEqual({ ...samples[0], atMs: 0 }, { atMs: 0, unhardenedBytes: 65536, oldestDirtyAgeMs: 12, iops: 3, p50Ms: 0.1, p99Ms: 0.2 });
  });
});
