// Issue 9, admin part: bad HTTP clients against a real pair of node processes. A request the
// server cannot parse is a 4xx with a one-line JSON error (never a 500), paths match exactly (so
// "POST //x/demote" demotes nothing), an aborted POST is one log line without a stack, and
// concurrent scrapes expose sane values. Malformed request lines go over raw sockets: fetch would
// refuse or normalise them.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, type NodeProcess } from './helpers/node-process.js';
import { pairLogs, startPair, type Pair } from './helpers/pair-process.js';

/** What a raw exchange got back: the status line's code, head, body, and whether the server closed. */
interface RawAnswer {
  status: number | null;
  head: string;
  body: string;
  raw: string;
}

/**
 * Write bytes on a fresh connection and read until the server closes it (every request here says
 * Connection: close, and a request node:http cannot parse is answered and closed), at most waitMs.
 */
function rawExchange(port: number, bytes: string | Buffer, waitMs = 10_000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`server kept the connection open for ${waitMs} ms after ${JSON.stringify(String(bytes).slice(0, 80))}; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1').slice(0, 300))}`));
    }, waitMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined); // a reset after the answer is still an answer
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(parseAnswer(Buffer.concat(chunks).toString('utf8')));
    });
    socket.write(bytes);
  });
}

function parseAnswer(raw: string): RawAnswer {
  const split = raw.indexOf('\r\n\r\n');
  const head = split < 0 ? raw : raw.slice(0, split);
  const status = /^HTTP\/1\.[01] (\d{3}) /.exec(head);
  return { status: status === null ? null : Number(status[1]), head, body: split < 0 ? '' : raw.slice(split + 4), raw };
}

/** A request line plus Host and Connection: close, and any extra header lines. */
function request(line: string, ...headers: string[]): string {
  return `${line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`;
}

/** The answer is `status` with a one-line JSON body {"error": "<non-empty>"} and a JSON content type. */
function assertJsonError(answer: RawAnswer, status: number, what: string): void {
  assert.equal(answer.status, status, `${what}: wanted ${status}, got:\n${answer.raw.slice(0, 600)}`);
  assert.match(answer.head, /^content-type: application\/json/im, `${what}: not JSON:\n${answer.raw.slice(0, 600)}`);
  assert.ok(answer.body.endsWith('\n') && !answer.body.slice(0, -1).includes('\n'), `${what}: body is not one line: ${JSON.stringify(answer.body)}`);
  const parsed = JSON.parse(answer.body) as Record<string, unknown>;
  assert.deepEqual(Object.keys(parsed), ['error'], `${what}: ${answer.body}`);
  assert.ok(typeof parsed['error'] === 'string' && parsed['error'] !== '', `${what}: ${answer.body}`);
}

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

  it('request targets it cannot parse are 400 with a one-line JSON error, never 500', async () => {
    const badQueryDemote = await rawExchange(a.adminPort, request('POST /demote?force=% HTTP/1.1', 'Content-Length: 0'));
    assert.equal(await role(a), 'primary', `POST /demote?force=% reached the demote action: ${badQueryDemote.raw.slice(0, 200)}`);
    assertJsonError(badQueryDemote, 400, 'POST /demote?force=%');
    for (const line of [
      'GET //% HTTP/1.1', 'GET http://[/ HTTP/1.1', 'GET http://127.0.0.1/status HTTP/1.1', 'GET * HTTP/1.1', 'OPTIONS * HTTP/1.1',
      'GET /status% HTTP/1.1', 'GET /status?x=%zz HTTP/1.1', 'GET /metrics?x=% HTTP/1.1', 'POST /promote?force=% HTTP/1.1',
    ]) {
      assertJsonError(await rawExchange(a.adminPort, request(line, 'Content-Length: 0')), 400, line);
    }
  });

  it('paths match exactly: //status, /status/ and //x/demote are 404 and nothing is demoted', async () => {
    // new URL() read "//x/demote" as host "x", path "/demote".
    const hostLike = await rawExchange(a.adminPort, request('POST //x/demote HTTP/1.1', 'Content-Length: 0'));
    assert.equal(await role(a), 'primary', `POST //x/demote demoted the primary: ${hostLike.raw.slice(0, 200)}`);
    assertJsonError(hostLike, 404, 'POST //x/demote');
    for (const line of [
      'GET //status HTTP/1.1', 'GET /status/ HTTP/1.1', 'GET //metrics HTTP/1.1', 'GET /STATUS HTTP/1.1', 'GET /st%61tus HTTP/1.1',
      'POST //demote HTTP/1.1', 'POST /x/demote HTTP/1.1', 'POST /demote/ HTTP/1.1', 'POST /toString HTTP/1.1',
    ]) {
      assertJsonError(await rawExchange(a.adminPort, request(line, 'Content-Length: 0')), 404, line);
    }
    assert.equal(await role(a), 'primary', 'POST //x/demote (or a cousin) demoted the primary');
  });

  it('requests node:http cannot parse are answered in JSON too (400, 405, 417, 431)', async () => {
    const cases: Array<[string, number, string]> = [
      ['unknown method', 400, request('FOO /status HTTP/1.1')],
      ['not HTTP at all', 400, 'hello there\r\n\r\n'],
      ['a 20 KiB header', 431, request('GET /status HTTP/1.1', `X-Big: ${'a'.repeat(20 * 1024)}`)],
      ['Content-Length with Transfer-Encoding', 400, request('POST /demote HTTP/1.1', 'Content-Length: 2', 'Transfer-Encoding: chunked')],
      ['a space in a header name', 400, request('GET /status HTTP/1.1', 'Bad Header: x')],
      ['a control character in the path', 400, request('GET /sta\x01tus HTTP/1.1')],
      ['HTTP/9.9', 400, request('GET /status HTTP/9.9')],
      ['the HTTP/2 preface', 400, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
      ['a bad chunk size', 400, `${request('POST /demote HTTP/1.1', 'Transfer-Encoding: chunked')}zz\r\n`],
      ['HTTP/1.1 without Host', 400, 'GET /status HTTP/1.1\r\nConnection: close\r\n\r\n'],
      ['an unknown Expect', 417, request('GET /status HTTP/1.1', 'Expect: telepathy')],
      ['CONNECT', 405, request('CONNECT 127.0.0.1:22 HTTP/1.1')],
    ];
    for (const [what, status, bytes] of cases) assertJsonError(await rawExchange(a.adminPort, bytes), status, what);
    assert.equal(await role(a), 'primary');
  });

  it('wrong methods, HEAD and bad bodies are one-line JSON 4xx', async () => {
    const json = (body: string): string => `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const post = (path: string, body: string): string => `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${json(body)}`;
    const cases: Array<[string, number, string]> = [
      ['DELETE /status', 405, request('DELETE /status HTTP/1.1')],
      ['GET /demote', 405, request('GET /demote HTTP/1.1')],
      ['a body that is not JSON', 400, post('/demote', 'demote please')],
      ['a JSON array body', 400, post('/demote', '[]')],
      ['a JSON null body', 400, post('/demote', 'null')],
      ['a declared 1 MiB body', 413, request('POST /demote HTTP/1.1', `Content-Length: ${1024 * 1024}`)],
    ];
    for (const [what, status, bytes] of cases) assertJsonError(await rawExchange(a.adminPort, bytes), status, what);
    // HEAD has no body by definition: the status and headers only.
    const headAction = await rawExchange(a.adminPort, request('HEAD /promote HTTP/1.1'));
    assert.equal(headAction.status, 405, headAction.raw);
    assert.equal(headAction.body, '');
    const headStatus = await rawExchange(a.adminPort, request('HEAD /status HTTP/1.1'));
    assert.equal(headStatus.status, 200, headStatus.raw);
    assert.equal(headStatus.body, '');
    assert.equal(await role(a), 'primary');
  });

  it('an aborted POST is one info line without a stack, and its action does not run', async () => {
    const linesBefore = logLines(a).length;
    await new Promise<void>((resolve) => {
      const socket = net.connect(a.adminPort, '127.0.0.1', () => {
        socket.write('POST /demote HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"reason": "mainte');
        // Let the server read the head and start on the body, then reset the connection.
        setTimeout(() => socket.resetAndDestroy(), 200);
      });
      socket.on('error', () => undefined);
      socket.on('close', () => resolve());
    });
    // The server logs the request, then what became of it: wait for that second line.
    let lines: LogLine[] = [];
    for (let i = 0; i < 100; i++) {
      lines = logLines(a).slice(linesBefore).filter((l) => l['action'] === 'demote');
      if (lines.length >= 2) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(lines.length, 2, `expected "requested" and one line about the abort, got:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`);
    const aborted = lines[1]!;
    assert.equal(aborted.level, 30, JSON.stringify(aborted));
    assert.ok(!JSON.stringify(aborted).includes('stack'), JSON.stringify(aborted));
    assert.match(aborted.msg, /client went away/);
    assertCleanLog(a);
    assert.equal(await role(a), 'primary', 'the aborted demote ran');
  });

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
