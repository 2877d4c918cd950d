// The hand-counted NBD request histogram (src/admin/request-histogram.ts) must write exactly what
// prom-client's Histogram wrote for the same observations: prom-client is the oracle here.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import { RequestHistogram } from '../src/admin/request-histogram.js';

const name = 'twinblock_nbd_request_duration_seconds';
const help = 'Time from receiving an NBD request to sending its reply';
const buckets = [20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 200e-3, 500e-3, 1, 2];

async function both(defaultLabels: Record<string, string>, observations: Array<[string, number]>): Promise<{ ours: string; theirs: string }> {
  const registry = new Registry();
  registry.setDefaultLabels(defaultLabels);
  const reference = new Histogram({ name, help, labelNames: ['command'], buckets, registers: [registry] });
  const ours = new RequestHistogram(name, help, 'command', buckets);
  for (const [command, seconds] of observations) {
    reference.observe({ command }, seconds);
    ours.observe(command, seconds);
  }
  return { ours: ours.text(defaultLabels), theirs: await registry.metrics() };
}

describe('RequestHistogram', () => {
  it('writes what prom-client writes: bucket edges (a value on an edge counts in it), +Inf, sum, count, label order', async () => {
    const observations: Array<[string, number]> = [
      ['write', 0.00001], ['write', 20e-6], ['write', 0.000021], ['write', 0.0003], ['write', 3], ['read', 0.0015],
      ['flush', 1], ['write', 0.0001], ['read', 2], ['write', 0.07],
    ];
    const { ours, theirs } = await both({ node: 'a', volume: 'vol0' }, observations);
    assert.equal(ours, theirs);
    assert.match(ours, /_bucket\{le="0\.00002",node="a",volume="vol0",command="write"\} 2\n/, 'the value on the edge counted in it');
    assert.match(ours, /_bucket\{le="\+Inf",node="a",volume="vol0",command="write"\} 7\n/);
  });

  it('escapes label values as prom-client does, and writes HELP and TYPE alone before any observation', async () => {
    const labels = { node: 'a"b\\c', volume: 'line\nbreak' };
    const { ours, theirs } = await both(labels, [['write', 0.001]]);
    assert.equal(ours, theirs);
    const empty = await both({}, []);
    assert.equal(empty.ours, empty.theirs);
  });
});
