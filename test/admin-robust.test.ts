// Issue 9, admin part: concurrent scrapes of a real pair's node expose sane values (item 3 saw
// bad answers under 500 concurrent GET /metrics).
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, type NodeProcess } from './helpers/node-process.js';
import { pairLogs, startPair, type Pair } from './helpers/pair-process.js';

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

function logLines(node: NodeProcess): LogLine[] {
  return node.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
}

/** No line at error level or above, and no stack anywhere in the node's log. */
function assertCleanLog(node: NodeProcess): void {
  const bad = logLines(node).filter((l) => l.level >= 50 || JSON.stringify(l).includes('"stack"'));
  assert.deepEqual(bad, [], `node ${node.name} logged errors or stacks:\n${bad.map((l) => JSON.stringify(l)).join('\n')}`);
}

async function role(node: NodeProcess): Promise<string> {
  return (await node.status()).role;
}

/** GET path with a fresh connection (no keep-alive pool), full body. */
function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

describe('admin HTTP of a real pair: bad and slow clients (issue 9)', () => {
  let pair: Pair;
  let a: NodeProcess;

  before(async () => {
    pair = await startPair({ size: '16MiB', cache: '8MiB' });
    a = pair.a;
    assert.equal(await role(a), 'primary');
  });

  after(() => cleanupAll());

  it('500 concurrent GET /metrics all answer 200 with sane event-loop values', async () => {
    const answers = await Promise.all(Array.from({ length: 500 }, () => httpGet(a.adminPort, '/metrics')));
    for (const [i, answer] of answers.entries()) {
      assert.equal(answer.status, 200, `scrape ${i}: ${answer.body.slice(0, 300)}`);
      const value = (name: string): number => {
        const m = new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(answer.body);
        assert.ok(m !== null, `scrape ${i} has no ${name}`);
        return Number(m[1]);
      };
      const min = value('nodejs_eventloop_lag_min_seconds');
      const max = value('nodejs_eventloop_lag_max_seconds');
      const mean = value('nodejs_eventloop_lag_mean_seconds');
      // An empty delay histogram shows as min 9223372036.85 s, max 0 and mean "Nan".
      assert.ok(Number.isFinite(mean) && min <= mean && mean <= max && max < 60, `scrape ${i}: lag min ${min} mean ${mean} max ${max}`);
    }
    assertCleanLog(a);
  });

  it('after all of it both nodes answer /status, a is still primary, and no log has an error or a stack', async () => {
    assert.equal(await role(a), 'primary');
    assert.equal(await role(pair.b), 'secondary');
    const status = await httpGet(pair.ports.b.admin, '/status');
    assert.equal(status.status, 200, status.body);
    assertCleanLog(a);
    assertCleanLog(pair.b);
    assert.ok(!pair.a.hasExited && !pair.b.hasExited, pairLogs(pair));
  });
});
