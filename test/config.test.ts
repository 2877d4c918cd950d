// Config parsing: defaults, sizes, and that every mistake becomes one line naming the key path.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ConfigError, demoConfig, formatSize, loadConfig, nodeByName, parseAddress, parseConfigText, parseSize, peersOf,
} from '../src/config/config.js';

const oneNode = `
volume: vol0
size: 1GiB
nodes:
  a:
    nbd: 127.0.0.1:10809
    admin: 127.0.0.1:8801
    store: data/a.img
`;

const pair = `
volume: vol0
size: 1GiB
secret: 0123456789abcdef
nodes:
  a: { nbd: "127.0.0.1:10809", link: "127.0.0.1:7001", admin: "127.0.0.1:8801", store: a.img }
  b: { nbd: "127.0.0.1:10810", link: "127.0.0.1:7002", admin: "127.0.0.1:8802", store: "nbd://disk.example:10900/b" }
`;

/** Replace or add top-level lines ("key: value") in the one-node config. */
function withTop(extra: string, base = oneNode): string {
  return `${extra}\n${base}`;
}

function configError(text: string): string {
  try {
    parseConfigText(text, '/etc/tb', 'tb.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.ok(!err.message.includes('\n'), `message must be one line: ${err.message}`);
    return err.message;
  }
  assert.fail('expected a ConfigError');
}

describe('config defaults', () => {
  it('fills every default for a standalone node', () => {
    const c = parseConfigText(oneNode, '/etc/tb');
    assert.equal(c.volume, 'vol0');
    assert.equal(c.sizeBytes, 1024 ** 3);
    assert.equal(c.trackSizeBytes, 64 * 1024);
    assert.equal(c.rangeTracks, 64);
    assert.equal(c.rangeDirtyThresholdTracks, 64);
    assert.equal(c.tracker, 'destage-scan');
    assert.equal(c.flush, 'memory');
    assert.equal(c.maxDirtyAgeMs, 5000);
    assert.equal(c.destageIntervalMs, 1000);
    assert.equal(c.degraded, 'write-through');
    assert.equal(c.secret, null);
    assert.equal(c.primary, 'a');
    assert.equal(c.nodes.length, 1);
    const a = c.nodes[0]!;
    assert.deepEqual(a.nbd, { host: '127.0.0.1', port: 10809 });
    assert.deepEqual(a.admin, { host: '127.0.0.1', port: 8801 });
    assert.equal(a.link, null);
    assert.equal(a.cacheBytes, 256 * 1024 * 1024);
    assert.deepEqual(a.store, { kind: 'file', path: '/etc/tb/data/a.img' });
  });

  it('threshold defaults to the whole range', () => {
    assert.equal(parseConfigText(withTop('rangeTracks: 8'), '/').rangeDirtyThresholdTracks, 8);
    assert.equal(parseConfigText(withTop('rangeTracks: 1'), '/').rangeDirtyThresholdTracks, 1);
  });

  it('parses a pair with an nbd:// store and keeps file order', () => {
    const c = parseConfigText(pair, '/srv');
    assert.deepEqual(c.nodes.map((n) => n.name), ['a', 'b']);
    assert.equal(c.primary, 'a');
    assert.deepEqual(c.nodes[1]!.store, { kind: 'nbd', host: 'disk.example', port: 10900, exportName: 'b', uri: 'nbd://disk.example:10900/b' });
    assert.deepEqual(nodeByName(c, 'b').link, { host: '127.0.0.1', port: 7002 });
    assert.deepEqual(peersOf(c, 'a').map((n) => n.name), ['b']);
    assert.throws(() => nodeByName(c, 'z'), /unknown node "z".*a, b/);
  });

  it('takes explicit values', () => {
    const c = parseConfigText(withTop('tracker: selective\nflush: disk\ndegraded: write-back\ntrackSize: 4KiB\nmaxDirtyAgeMs: 100', pair.replace('secret:', 'primary: b\nsecret:')), '/');
    assert.equal(c.tracker, 'selective');
    assert.equal(c.flush, 'disk');
    assert.equal(c.degraded, 'write-back');
    assert.equal(c.trackSizeBytes, 4096);
    assert.equal(c.maxDirtyAgeMs, 100);
    assert.equal(c.primary, 'b');
  });

  it('loadConfig resolves relative store paths against the file directory', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tb-config-'));
    const file = path.join(dir, 'tb.yaml');
    writeFileSync(file, oneNode);
    const c = loadConfig(file);
    assert.equal(c.sourcePath, file);
    assert.deepEqual(c.nodes[0]!.store, { kind: 'file', path: path.join(dir, 'data/a.img') });
    assert.match(errorOf(() => loadConfig(path.join(dir, 'missing.yaml'))), /^config .*missing\.yaml: cannot read: no such file$/);
  });

  it('demoConfig is a valid local pair: primary a, secondary b', () => {
    const c = demoConfig('/tmp/demo', 64 * 1024 * 1024, 'a-demo-secret-of-enough-length');
    assert.equal(c.sizeBytes, 64 * 1024 * 1024);
    assert.equal(c.primary, 'a');
    assert.deepEqual(c.nodes.map((n) => n.name), ['a', 'b']);
    assert.deepEqual(c.nodes[0]!.nbd, { host: '127.0.0.1', port: 10809 });
    assert.deepEqual(c.nodes[0]!.admin, { host: '127.0.0.1', port: 8801 });
    assert.deepEqual(c.nodes[1]!.nbd, { host: '127.0.0.1', port: 10810 });
    assert.deepEqual(c.nodes[0]!.store, { kind: 'file', path: '/tmp/demo/a.img' });
    assert.deepEqual(c.nodes[1]!.store, { kind: 'file', path: '/tmp/demo/b.img' });
    assert.equal(c.nodes[0]!.cacheBytes, 256 * 1024 * 1024);
    assert.throws(() => demoConfig('/tmp/demo', 1000, 'a-demo-secret-of-enough-length'), /size: must be a positive multiple of 512/);
  });

  it('syncRate and heartbeatTimeoutMs have defaults and are validated', () => {
    const base = 'volume: v\nsize: 1MiB\nnodes:\n  a: { nbd: "127.0.0.1:1", admin: "127.0.0.1:2", store: /tmp/x.img }\n';
    const c = parseConfigText(base, '/tmp');
    assert.equal(c.syncRateBytesPerSec, 200 * 1024 * 1024);
    assert.equal(c.heartbeatTimeoutMs, 1000);
    assert.equal(parseConfigText(`${base}syncRate: 50MiB\n`, '/tmp').syncRateBytesPerSec, 50 * 1024 * 1024);
    assert.match(errorOf(() => parseConfigText(`${base}syncRate: 1KiB\n`, '/tmp')), /syncRate: must be at least/);
    assert.match(errorOf(() => parseConfigText(`${base}heartbeatTimeoutMs: 5\n`, '/tmp')), /heartbeatTimeoutMs: must be at least 100/);
  });

  it('arbiter (issue 13): defaults, and every mistake named', () => {
    assert.equal(parseConfigText(pair, '/tmp').arbiter, null);
    const a = parseConfigText(withTop('arbiter: { etcd: ["http://10.0.0.5:2379", "http://10.0.0.6:2379/"] }', pair), '/tmp').arbiter;
    assert.deepEqual(a, { etcd: ['http://10.0.0.5:2379', 'http://10.0.0.6:2379/'], leaseTtlMs: 2000, prefix: '/twinblock', autoFailover: true });
    assert.equal(parseConfigText(withTop('arbiter: { etcd: ["http://e:2379"], leaseTtlMs: 5000, autoFailover: false }', pair), '/tmp').arbiter?.leaseTtlMs, 5000);
    assert.match(configError(withTop('arbiter: { etcd: ["10.0.0.5:2379"] }', pair)), /arbiter\.etcd\[0\]: "10\.0\.0\.5:2379" is not an etcd client URL/);
    assert.match(configError(withTop('arbiter: { etcd: [] }', pair)), /arbiter\.etcd/);
    assert.match(configError(withTop('arbiter: { etcd: ["http://e:2379"], leaseTtlMs: 1500 }', pair)), /arbiter\.leaseTtlMs: must be at least 2000/);
    assert.match(configError(withTop('arbiter: { etcd: ["http://e:2379"], leaseTtlMs: 2500 }', pair)), /arbiter\.leaseTtlMs: 2500 is not a whole number of seconds/);
    assert.match(configError(withTop('arbiter: { etcd: ["http://e:2379"], prefix: tb }', pair)), /arbiter\.prefix: "tb" must start with \//);
    assert.match(configError(withTop('arbiter: { etcd: ["http://e:2379"], lease: 3 }', pair)), /arbiter/);
    assert.match(configError(withTop('arbiter: { etcd: ["http://e:2379"] }')), /arbiter: needs two or more nodes/);
  });

  it('adminToken (issue 14 item 3): from the config or a file; required once an admin address leaves loopback', () => {
    assert.equal(parseConfigText(pair, '/tmp').adminToken, null);
    assert.equal(parseConfigText(withTop('adminToken: tb-0123456789abcdef', pair), '/tmp').adminToken, 'tb-0123456789abcdef');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tb-token-'));
    writeFileSync(path.join(dir, 'token'), 'from-a-file-0123456789\nignored second line\n');
    assert.equal(parseConfigText(withTop('adminTokenFile: token', pair), dir).adminToken, 'from-a-file-0123456789');
    const open = pair.replace('admin: "127.0.0.1:8802"', 'admin: "0.0.0.0:8802"');
    assert.match(configError(open), /nodes\.b\.admin: 0\.0\.0\.0:8802 is not on loopback: set adminToken/);
    assert.equal(parseConfigText(withTop('adminToken: tb-0123456789abcdef', open), '/tmp').adminToken, 'tb-0123456789abcdef');
    assert.equal(parseConfigText(pair.replace('admin: "127.0.0.1:8802"', 'admin: "[::1]:8802"'), '/tmp').adminToken, null, '::1 is loopback');
    assert.match(configError(withTop('adminToken: short', pair)), /adminToken: too short/);
    assert.match(configError(withTop('adminToken: "has a space 0123456789"', pair)), /adminToken: use printable ASCII without spaces/);
    assert.match(configError(withTop('adminTokenFile: /nonexistent/token', pair)), /adminTokenFile: cannot read \/nonexistent\/token: ENOENT/);
    assert.match(configError(withTop('adminToken: tb-0123456789abcdef\nadminTokenFile: x', pair)), /adminTokenFile: give adminToken or adminTokenFile, not both/);
  });

  it('tls and nbdTls (issue 14 items 1-2): top level or per node, all nodes or none', () => {
    const top = parseConfigText(withTop('tls: { cert: c.pem, key: k.pem, ca: ca.pem }', pair), '/etc/tb');
    assert.deepEqual(top.nodes.map((n) => n.tls), [0, 1].map(() => ({ cert: '/etc/tb/c.pem', key: '/etc/tb/k.pem', ca: '/etc/tb/ca.pem' })));
    assert.equal(top.nbdTls, 'off');
    const own = pair.replace('store: a.img }', 'store: a.img, tls: { cert: a.pem, key: a.key, ca: ca.pem } }');
    const mixed = parseConfigText(withTop('tls: { cert: c.pem, key: k.pem, ca: ca.pem }\nnbdTls: require', own), '/etc/tb');
    assert.equal(mixed.nodes[0]!.tls!.cert, '/etc/tb/a.pem', "a node's own tls wins");
    assert.equal(mixed.nodes[1]!.tls!.cert, '/etc/tb/c.pem');
    assert.equal(mixed.nbdTls, 'require');
    assert.equal(parseConfigText(pair, '/tmp').nodes[0]!.tls, null);
    assert.match(configError(own), /nodes\.b\.tls: missing: node a links with TLS, so every node needs tls/);
    assert.match(configError(withTop('nbdTls: on', pair)), /nbdTls: on needs tls: \{cert, key, ca\}/);
    assert.match(configError(withTop('nbdTls: yes', pair)), /nbdTls: must be one of off, on, require/);
    assert.match(configError(withTop('tls: { cert: c.pem, key: k.pem }', pair)), /tls\.ca: missing/);
    assert.match(configError(withTop('tls: { cert: c.pem, key: k.pem, ca: ca.pem, crl: x }', pair)), /tls\.crl: unknown key \(known keys here: cert, key, ca\)/);
  });

  it('syncMinRate (issue 14 item 6): the floor a resync yields to, at most syncRate', () => {
    assert.equal(parseConfigText(pair, '/tmp').syncMinRateBytesPerSec, 4 * 1024 * 1024);
    assert.equal(parseConfigText(withTop('syncRate: 2MiB', pair), '/tmp').syncMinRateBytesPerSec, 2 * 1024 * 1024, 'the default floor never exceeds syncRate');
    assert.equal(parseConfigText(withTop('syncMinRate: 200MiB', pair), '/tmp').syncMinRateBytesPerSec, 200 * 1024 * 1024);
    assert.match(configError(withTop('syncMinRate: 300MiB', pair)), /syncMinRate: 300 ?MiB exceeds syncRate \(200 ?MiB\)/);
    assert.match(configError(withTop('syncMinRate: 1KiB', pair)), /syncMinRate: must be at least 65536/);
  });

  it('usageLog and usageIntervalMs (issue 14 item 7)', () => {
    const c = parseConfigText(pair, '/etc/tb');
    assert.deepEqual([c.usageLog, c.usageIntervalMs], [null, 60_000]);
    const d = parseConfigText(withTop('usageLog: usage/vol0.log\nusageIntervalMs: 5000', pair), '/etc/tb');
    assert.deepEqual([d.usageLog, d.usageIntervalMs], ['/etc/tb/usage/vol0.log', 5000]);
    assert.match(configError(withTop('usageIntervalMs: 10', pair)), /usageIntervalMs: must be at least 100/);
  });

  it('nbdMaxConnections and nbdHandshakeTimeoutMs have defaults and are validated', () => {
    const base = 'volume: v\nsize: 1MiB\nnodes:\n  a: { nbd: "127.0.0.1:1", admin: "127.0.0.1:2", store: /tmp/x.img }\n';
    const c = parseConfigText(base, '/tmp');
    assert.equal(c.nbdMaxConnections, 1024);
    assert.equal(c.nbdHandshakeTimeoutMs, 10_000);
    const set = parseConfigText(`${base}nbdMaxConnections: 3\nnbdHandshakeTimeoutMs: 1500\n`, '/tmp');
    assert.deepEqual([set.nbdMaxConnections, set.nbdHandshakeTimeoutMs], [3, 1500]);
    assert.match(errorOf(() => parseConfigText(`${base}nbdMaxConnections: 0\n`, '/tmp')), /nbdMaxConnections: must be at least 1 \(got 0\)/);
    assert.match(errorOf(() => parseConfigText(`${base}nbdMaxConnections: lots\n`, '/tmp')), /nbdMaxConnections: expected a number/);
    assert.match(errorOf(() => parseConfigText(`${base}nbdHandshakeTimeoutMs: 50\n`, '/tmp')), /nbdHandshakeTimeoutMs: must be at least 100/);
  });

  it('busyPollUs defaults to 100 (0 with flush: disk), 0 turns it off, and it is bounded', () => {
    const base = 'volume: v\nsize: 1MiB\nnodes:\n  a: { nbd: "127.0.0.1:1", admin: "127.0.0.1:2", store: /tmp/x.img }\n';
    assert.equal(parseConfigText(base, '/tmp').busyPollUs, 100);
    assert.equal(parseConfigText(`${base}flush: disk\n`, '/tmp').busyPollUs, 0);
    assert.equal(parseConfigText(`${base}flush: disk\nbusyPollUs: 50\n`, '/tmp').busyPollUs, 50);
    assert.equal(parseConfigText(`${base}busyPollUs: 0\n`, '/tmp').busyPollUs, 0);
    assert.match(errorOf(() => parseConfigText(`${base}busyPollUs: -5\n`, '/tmp')), /busyPollUs: must be at least 0 \(got -5\)/);
    assert.match(errorOf(() => parseConfigText(`${base}busyPollUs: 20000\n`, '/tmp')), /busyPollUs: must be at most 10000 \(got 20000\)/);
    assert.match(errorOf(() => parseConfigText(`${base}busyPollUs: 2.5\n`, '/tmp')), /busyPollUs: /);
  });
});

function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    return (err as Error).message;
  }
  return '(no error)';
}

describe('sizes', () => {
  it('parses binary units, one-letter forms and plain bytes', () => {
    assert.equal(parseSize('64KiB'), 65536);
    assert.equal(parseSize('1GiB'), 1024 ** 3);
    assert.equal(parseSize('512MiB'), 512 * 1024 ** 2);
    assert.equal(parseSize('2TiB'), 2 * 1024 ** 4);
    assert.equal(parseSize('64k'), 65536);
    assert.equal(parseSize('1G'), 1024 ** 3);
    assert.equal(parseSize('4096'), 4096);
    assert.equal(parseSize('4096B'), 4096);
    assert.equal(parseSize(' 64 KiB '), 65536);
    assert.equal(parseSize(8192), 8192);
  });

  it('accepts a decimal only when it names whole bytes (1.5GiB yes, 1.3KiB no)', () => {
    assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
    assert.equal(parseSize('0.5KiB'), 512);
    assert.throws(() => parseSize('1.3KiB'), /bad size "1.3KiB": not a whole number of bytes/);
  });

  it('rejects garbage, negative and ambiguous decimal units', () => {
    assert.throws(() => parseSize('12XB'), /bad size "12XB" \(use e.g. 64KiB, 1GiB\)/);
    assert.throws(() => parseSize('-1GiB'), /bad size/);
    assert.throws(() => parseSize(''), /bad size/);
    assert.throws(() => parseSize('1e9'), /bad size/);
    assert.throws(() => parseSize('10MB'), /MB is ambiguous, use MiB/);
    assert.throws(() => parseSize(1.5), /non-negative integer/);
    assert.throws(() => parseSize('99999999TiB'), /too large/);
  });

  it('formatSize picks the largest unit and round-trips', () => {
    assert.equal(formatSize(0), '0B');
    assert.equal(formatSize(512), '512B');
    assert.equal(formatSize(65536), '64KiB');
    assert.equal(formatSize(1.5 * 1024 ** 3), '1.5GiB');
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.constantFrom(1, 1024, 1024 ** 2, 1024 ** 3), (n, unit) => {
      const bytes = Math.floor(n / unit) * unit;
      // Exact when the value is whole hundredths of its display unit; otherwise rounded (display only).
      if (Number.isInteger((bytes / unitOf(bytes)) * 100)) assert.equal(parseSize(formatSize(bytes)), bytes);
      else assert.match(formatSize(bytes), /^\d+(\.\d{1,2})?[KMGT]iB$/);
    }));
  });
});

function unitOf(bytes: number): number {
  return [1024 ** 4, 1024 ** 3, 1024 ** 2, 1024].find((u) => bytes >= u) ?? 1;
}

describe('config errors are one line naming the key path', () => {
  it('unknown top-level key', () => {
    assert.match(configError(withTop('maxDirtyAgeMS: 100')), /^config tb\.yaml: maxDirtyAgeMS: unknown key \(known keys here: volume, size,/);
  });

  it('unknown node key, even when a required key is missing too', () => {
    const text = oneNode.replace('    store: data/a.img', '    stor: data/a.img');
    assert.match(configError(text), /^config tb\.yaml: nodes\.a\.stor: unknown key \(known keys here: nbd, link, admin, store, cache, metadata, tls\)$/);
  });

  it('bad size names the key and suggests a form', () => {
    assert.equal(configError(`${oneNode}    cache: 12XB\n`), 'config tb.yaml: nodes.a.cache: bad size "12XB" (use e.g. 64KiB, 1GiB)');
    assert.match(configError(oneNode.replace('size: 1GiB', 'size: 1000')), /^config tb\.yaml: size: must be a positive multiple of 512/);
    assert.match(configError(oneNode.replace('size: 1GiB', 'size: 0')), /size: must be a positive multiple of 512/);
  });

  it('a final partial track is fine, but trackSize must be a power of two within limits', () => {
    assert.equal(parseConfigText(oneNode.replace('size: 1GiB', 'size: 66048'), '/').sizeBytes, 66048);
    assert.match(configError(withTop('trackSize: 48KiB')), /trackSize: must be a power of two from 4KiB to 16MiB/);
    assert.match(configError(withTop('trackSize: 2KiB')), /trackSize: must be a power of two/);
    assert.match(configError(withTop('trackSize: 32MiB')), /trackSize: must be a power of two/);
  });

  it('cache must hold at least 4 tracks', () => {
    assert.match(configError(`${withTop('trackSize: 1MiB')}    cache: 3MiB\n`), /nodes\.a\.cache: 3MiB is too small: at least 4 tracks \(4MiB\)/);
  });

  it('ack, quorum and onNoQuorum: defaults for a pair, explicit values, bad values (issue 12)', () => {
    const d = parseConfigText(withTop('', pair), '/');
    assert.deepEqual([d.ack, d.quorum, d.onNoQuorum], ['all', 'off', 'suspend-io'], 'a pair keeps serving when one side is lost unless asked');
    const c = parseConfigText(withTop('ack: quorum\nquorum: majority\nonNoQuorum: io-error', pair), '/');
    assert.deepEqual([c.ack, c.quorum, c.onNoQuorum], ['quorum', 'majority', 'io-error']);
    assert.match(configError(withTop('quorum: most')), /quorum: must be one of off, majority \(got "most"\)/);
    assert.match(configError(withTop('onNoQuorum: panic')), /onNoQuorum: must be one of suspend-io, io-error/);
    assert.match(configError(withTop('ack: some')), /ack: must be one of all, quorum/);
  });

  it('bad tracker, flush, degraded', () => {
    assert.equal(configError(withTop('tracker: lru')), 'config tb.yaml: tracker: must be one of destage-scan, toggle-counter, selective (got "lru")');
    assert.match(configError(withTop('flush: never')), /^config tb\.yaml: flush: must be one of memory, disk/);
    assert.match(configError(withTop('degraded: yolo')), /degraded: must be one of write-through, write-back/);
  });

  it('primary must be one of the nodes', () => {
    assert.equal(configError(withTop('primary: b')), 'config tb.yaml: primary: "b" is not one of the nodes (a)');
  });

  it('numbers: type, integer and minimum', () => {
    assert.match(configError(withTop('rangeTracks: 0')), /rangeTracks: must be at least 1 \(got 0\)/);
    assert.match(configError(withTop('rangeTracks: many')), /rangeTracks: expected a number, got "many"/);
    assert.match(configError(withTop('maxDirtyAgeMs: 2.5')), /maxDirtyAgeMs: expected an integer/);
    assert.match(configError(withTop('maxDirtyAgeMs: 5')), /maxDirtyAgeMs: must be at least 10/);
    assert.match(configError(withTop('rangeTracks: 8\nrangeDirtyThresholdTracks: 9')), /rangeDirtyThresholdTracks: must not exceed rangeTracks \(8\)/);
  });

  it('mirrored rules: secret required and long enough, a link on every node, 3 to 8 nodes with majority quorum by default', () => {
    assert.match(configError(pair.replace('secret: 0123456789abcdef\n', '')), /^config tb\.yaml: secret: missing \(required when there are 2 or more nodes/);
    assert.match(configError(pair.replace('0123456789abcdef', 'short')), /secret: too short: at least 16 characters/);
    assert.match(configError(pair.replace('link: "127.0.0.1:7002", ', '')), /nodes\.b\.link: missing \(required when there are 2 or more nodes\)/);
    const nodeLine = (i: number): string => `  n${i}: { nbd: "127.0.0.1:${10810 + i}", link: "127.0.0.1:${7010 + i}", admin: "127.0.0.1:${8810 + i}", store: n${i}.img }\n`;
    const three = `${pair}${nodeLine(3)}`;
    const config = parseConfigText(three, '/tmp', 'tb.yaml');
    assert.deepEqual(config.nodes.map((n) => n.name), ['a', 'b', 'n3']);
    assert.equal(config.quorum, 'majority', 'three nodes: majority by default');
    assert.match(configError(three.replace('link: "127.0.0.1:7013", ', '')), /nodes\.n3\.link: missing/);
    const nine = `${pair}${[3, 4, 5, 6, 7, 8, 9].map(nodeLine).join('')}`;
    assert.match(configError(nine), /nodes: at most 8 nodes are supported \(got 9\)/);
    assert.match(configError(pair.replace('"127.0.0.1:8802"', '"127.0.0.1:8801"')), /nodes\.b\.admin: 127\.0\.0\.1:8801 is already used by nodes\.a\.admin/);
  });

  it('shape errors: missing keys, wrong types, bad names, bad addresses, bad YAML', () => {
    assert.match(configError(oneNode.replace('size: 1GiB\n', '')), /^config tb\.yaml: size: missing \(required\)$/);
    assert.match(configError(oneNode.replace('volume: vol0', 'volume: 12')), /volume: expected a string, got number 12 \(quote it\)/);
    assert.match(configError(oneNode.replace('volume: vol0', 'volume: "my vol"')), /volume: "my vol" is not a valid export name/);
    assert.match(configError(oneNode.replace('10809', '99999')), /nodes\.a\.nbd: bad address "127\.0\.0\.1:99999"/);
    assert.match(configError(oneNode.replace('127.0.0.1:8801', 'localhost')), /nodes\.a\.admin: bad address "localhost" \(use host:port/);
    assert.match(configError('volume: a\nvolume: b\n'), /^config tb\.yaml: bad YAML: Map keys must be unique/);
    assert.match(configError(''), /expected a YAML mapping at the top level/);
    assert.match(configError('volume: v\nsize: 1GiB\nnodes: {}\n'), /nodes: at least one node is required/);
  });
});

describe('addresses', () => {
  it('parses host:port and [ipv6]:port', () => {
    assert.deepEqual(parseAddress('0.0.0.0:0'), { host: '0.0.0.0', port: 0 });
    assert.deepEqual(parseAddress('[::1]:10809'), { host: '::1', port: 10809 });
    assert.deepEqual(parseAddress('node-a.lan:8801'), { host: 'node-a.lan', port: 8801 });
    assert.throws(() => parseAddress('::1:10809'), /bad address/);
  });
});
