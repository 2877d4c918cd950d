// Usage metering (issue 14 item 7): the pure meter (src/core/usage.ts), then a real node process
// metered while a real client (qemu-io) writes and reads: /usage, `twinblock usage`, the
// Prometheus counters, the CloudEvents usage log, /usage?since, and totals that survive a restart.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { sumUsage, UsageMeter, zeroUsage } from '../src/core/usage.js';
import { cleanupAll, cliMainPath, makeTempDir, qemuIo, qemuIoProblem, run, startNode, type ConfigSpec } from './helpers/node-process.js';
import { ensureTools } from './helpers/tools.js';

after(cleanupAll);
const GiB = 1024 ** 3;
const sample = (write: number, read = 0) => ({ hostReadBytes: read, hostReadOps: read > 0 ? 1 : 0, hostWriteBytes: write, hostWriteOps: write > 0 ? 1 : 0, mirroredBytes: write, resyncBytes: 0 });

describe('usage meter (pure)', () => {
  it('charges counter growth and time to the role of each interval; totals carry over a restart', () => {
    const meter = new UsageMeter(2 * GiB, null, 0);
    const first = meter.tick(sample(4096), 'primary', false, 3_600_000);
    assert.equal(first.usage.hostWriteBytes, 4096);
    assert.equal(first.usage.primarySeconds, 3600);
    assert.equal(first.usage.provisionedGiBHours, 2, '2 GiB for one hour');
    const second = meter.tick(sample(6144), 'primary', true, 3_660_000);
    assert.equal(second.usage.hostWriteBytes, 2048, 'the growth since the last tick, not the run total');
    assert.equal(second.usage.degradedSeconds, 60);
    meter.tick(sample(6144), 'secondary', false, 3_720_000);
    assert.deepEqual([meter.state.totals.primarySeconds, meter.state.totals.secondarySeconds, meter.state.totals.degradedSeconds], [3660, 60, 60]);
    const peeked = meter.peek(sample(8192), 'secondary', false, 3_780_000);
    assert.equal(peeked.hostWriteBytes, 8192);
    assert.equal(meter.state.totals.hostWriteBytes, 6144, 'peek takes no tick');
    // A restart: the run's counters start again from zero; the totals go on.
    const again = new UsageMeter(2 * GiB, JSON.parse(JSON.stringify(meter.state)), 4_000_000);
    again.tick(sample(100), 'secondary', false, 4_010_000);
    assert.equal(again.state.totals.hostWriteBytes, 6244);
    assert.equal(again.state.sinceMs, 0);
    assert.deepEqual(sumUsage([zeroUsage(), first.usage, second.usage]).hostWriteBytes, 6144);
  });
});

describe('usage metering with a real node and qemu-io', () => {
  it('reports host I/O and time, logs CloudEvents, answers since a time, and keeps its totals across a restart', { timeout: 90_000 }, async () => {
    ensureTools(['qemu-io']);
    const dir = makeTempDir('twinblock-usage-');
    const config: ConfigSpec = {
      size: '64MiB', usageLog: path.join(dir, 'usage.log'), usageIntervalMs: 200,
      nodes: { a: { store: path.join(dir, 'a.img'), cache: '16MiB' } },
    };
    const startedAt = new Date().toISOString();
    let node = await startNode({ config, dir });
    const get = async (q = ''): Promise<{ status: number; body: Record<string, unknown> }> => {
      const res = await fetch(`${node.adminUrl}/usage${q}`);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    assert.equal(qemuIoProblem(await qemuIo(node.uri, ['write -P 0x33 0 1M', 'read -P 0x33 0 512k'])), null);
    await new Promise((r) => setTimeout(r, 500));
    const now = await get();
    assert.equal(now.status, 200);
    const usage = now.body['usage'] as Record<string, number>;
    assert.ok(usage['hostWriteBytes']! >= 1024 * 1024, JSON.stringify(usage));
    assert.ok(usage['hostReadBytes']! >= 512 * 1024, JSON.stringify(usage));
    assert.ok(usage['primarySeconds']! > 0 && usage['provisionedGiBHours']! > 0);

    const table = await run(process.execPath, [cliMainPath, 'usage', '--admin', node.adminUrl]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /usage of volume vol0 on node a/);
    assert.match(table.stdout, /host writes +\d+ ops, 1(\.\d+)?MiB/);

    const metrics = await node.metrics();
    assert.match(metrics, /^twinblock_usage_host_write_bytes_total\{[^}]*\} (\d+)/m);
    const primarySeconds = /^twinblock_usage_role_seconds_total\{[^}]*role="primary"[^}]*\} (\S+)$/m.exec(metrics)?.[1];
    assert.ok(Number(primarySeconds) > 0, `primary seconds on /metrics: ${primarySeconds}`);

    const events = readFileSync(config['usageLog'] as string, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(events.length >= 2, `one line per interval: ${events.length}`);
    for (const e of events) {
      assert.equal(e['specversion'], '1.0');
      assert.equal(e['type'], 'io.twinblock.usage.v1');
      assert.equal(e['source'], 'twinblock://vol0/a');
      assert.ok(typeof e['id'] === 'string' && typeof e['time'] === 'string' && e['datacontenttype'] === 'application/json');
    }
    const since = await get(`?since=${encodeURIComponent(startedAt)}`);
    assert.equal(since.status, 200);
    assert.equal((since.body['usage'] as Record<string, number>)['hostWriteBytes'], usage['hostWriteBytes'], 'the log sums to the totals');
    const bad = await get('?since=yesterday');
    assert.equal(bad.status, 400);
    assert.match(String(bad.body['error']), /is not a time/);

    const before = (await get()).body;
    assert.equal(await node.stop(), 0);
    node = await startNode({ config, dir });
    const after2 = (await get()).body;
    assert.equal(after2['since'], before['since'], 'metering began once');
    assert.ok((after2['usage'] as Record<string, number>)['hostWriteBytes']! >= usage['hostWriteBytes']!, 'totals survive the restart');
    await node.stop();
  });
});
