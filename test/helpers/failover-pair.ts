// A mirrored pair as two real node processes that a fault test can crash, restart, cut off and
// re-role (issue 5 item 9).
//
// The pair: one temp dir, fixed ports per node picked once (a restarted node comes back on the
// same NBD, admin and link ports), one config file per node written afresh at every start — so
// a's view of b's link address can be a FaultProxy, or b can be started alone with its peer
// pointed at a dead port. Every log line of every run of a node is kept (NodeProcess keeps only
// the last 64 KiB of stderr), so a test can ask "did any run of b log a full resync?".
//
// The writer and its block model are in acked-writer.ts (re-exported here).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  cliMainPath, freePort, makeTempDir, pollNodes, run, startNode, type ConfigSpec, type NodeEntry, type NodeProcess, type RunResult,
} from './node-process.js';
import { FaultProxy } from './fault-proxy.js';

export * from './acked-writer.js';

// ------------------------------------------------------------------------------------ status

export type PeerState = 'connecting' | 'resyncing' | 'in-sync' | 'degraded' | 'split-brain';

export interface SyncProgress {
  totalBytes: number;
  doneBytes: number;
  rateBytesPerSec: number;
  etaSeconds: number | null;
  full?: boolean;
}

export interface PairStatus {
  node: string;
  role: 'primary' | 'secondary';
  epoch: number;
  epochHistory: { epoch: number; node: string }[];
  pid: number;
  cache: { dirtyTracks: number; [key: string]: unknown };
  nbd: { uri: string; readOnly: boolean; connections: number };
  counters: { writes: number; resyncBytesSent: number; syncBytesSent: number; syncBytesReceived: number; [key: string]: unknown };
  peers: Array<{
    node: string;
    connected: boolean;
    state: PeerState;
    unitedTracks: number;
    outOfSyncTracks: number;
    sync: SyncProgress | null;
    [key: string]: unknown;
  }>;
  [key: string]: unknown;
}

export function describeStatus(s: PairStatus): string {
  const p = s.peers[0];
  const peer = p === undefined ? 'no peer' : `peer connected=${p.connected} state=${p.state} united=${p.unitedTracks} outOfSync=${p.outOfSyncTracks}${p.sync ? ` sync=${p.sync.doneBytes}/${p.sync.totalBytes}` : ''}`;
  return `${s.node} ${s.role} epoch ${s.epoch}: ${peer}, dirty=${s.cache.dirtyTracks}`;
}

// ------------------------------------------------------------------------------------ logs

/** One JSON log line; `run` counts the node's starts (1 = first), `seq` its lines over all runs. */
export type LogLine = Record<string, unknown> & { msg?: string; level?: number; run: number; seq: number };

/** Keeps every JSON log line of every run of one node. */
class LogBook {
  readonly lines: LogLine[] = [];
  private partial = '';
  runs = 0;

  attach(node: NodeProcess): void {
    const run = ++this.runs;
    this.partial = '';
    // Lines the node printed before startNode returned are in its (bounded) stderr already.
    this.feed(node.stderr, run);
    node.child.stderr?.on('data', (chunk: string | Buffer) => this.feed(String(chunk), run));
  }

  private feed(text: string, run: number): void {
    const all = this.partial + text;
    const parts = all.split('\n');
    this.partial = parts.pop() ?? '';
    for (const part of parts) {
      if (!part.startsWith('{')) continue;
      try {
        this.lines.push({ ...(JSON.parse(part) as Record<string, unknown>), run, seq: this.lines.length });
      } catch {
        // not a log line
      }
    }
  }
}

// ------------------------------------------------------------------------------------ pair

export type NodeName = 'a' | 'b';

export interface FailoverPairOptions {
  size?: string;
  trackSize?: string;
  cache?: string;
  heartbeatTimeoutMs?: number;
  degraded?: 'write-through' | 'write-back';
  syncRate?: string;
  maxDirtyAgeMs?: number;
  destageIntervalMs?: number;
  /** Put a FaultProxy between a (the dialer) and b's link listener. */
  proxy?: boolean;
  /** Start both nodes now (default true). */
  start?: boolean;
}

interface Ports { nbd: number; admin: number; link: number }

const addr = (port: number): string => `127.0.0.1:${port}`;

export class FailoverPair {
  readonly nodes: Record<NodeName, NodeProcess | null> = { a: null, b: null };
  readonly logs: Record<NodeName, LogBook> = { a: new LogBook(), b: new LogBook() };
  proxy: FaultProxy | null = null;

  private constructor(
    readonly dir: string,
    readonly ports: Record<NodeName, Ports>,
    readonly stores: Record<NodeName, string>,
    readonly opts: FailoverPairOptions,
  ) {}

  static async create(opts: FailoverPairOptions = {}): Promise<FailoverPair> {
    const dir = makeTempDir('twinblock-failover-');
    for (let attempt = 1; ; attempt++) {
      const ports = await freePorts();
      const pair = new FailoverPair(dir, ports, { a: path.join(dir, 'a.img'), b: path.join(dir, 'b.img') }, opts);
      if (opts.proxy === true) {
        pair.proxy = new FaultProxy(ports.b.link);
        await pair.proxy.start();
      }
      if (opts.start === false) return pair;
      try {
        // b (the acceptor) first: a dials at once instead of backing off while b starts.
        await pair.start('b');
        await pair.start('a');
        return pair;
      } catch (err) {
        await pair.kill();
        await pair.proxy?.close();
        // freePort() closes its probe before the node binds: on a busy runner another process
        // may take the port in between, or the proxy's own ephemeral port may be one we probed
        // (the config then names one port twice). Start over with new ports (the stores are
        // untouched).
        if (attempt >= 3 || !/already in use|is already used by/.test((err as Error).message)) throw err;
      }
    }
  }

  /** The config node `name` reads; `peerLinkPort` overrides where it thinks its peer's link is. */
  configFor(name: NodeName, peerLinkPort?: number, overrides: Record<string, unknown> = {}): ConfigSpec {
    const o = this.opts;
    const entry = (n: NodeName): NodeEntry & { link: string } => {
      let linkPort = this.ports[n].link;
      if (n !== name) linkPort = peerLinkPort ?? (name === 'a' && this.proxy !== null ? this.proxy.port : linkPort);
      return { nbd: addr(this.ports[n].nbd), admin: addr(this.ports[n].admin), link: addr(linkPort), store: this.stores[n], cache: o.cache ?? '32MiB' };
    };
    return {
      volume: 'vol0',
      size: o.size ?? '64MiB',
      trackSize: o.trackSize ?? '64KiB',
      rangeTracks: 64,
      maxDirtyAgeMs: o.maxDirtyAgeMs ?? 2000,
      destageIntervalMs: o.destageIntervalMs ?? 500,
      flush: 'memory',
      degraded: o.degraded ?? 'write-through',
      heartbeatTimeoutMs: o.heartbeatTimeoutMs ?? 500,
      ...(o.syncRate === undefined ? {} : { syncRate: o.syncRate }),
      secret: 'twinblock failover test secret',
      primary: 'a',
      nodes: { a: entry('a'), b: entry('b') },
      ...overrides,
    };
  }

  /**
   * Start (or restart) one node; its config file is written afresh. peerLinkPort: where it looks
   * for its peer's link; overrides: top-level config keys for this run only (e.g. syncRate).
   */
  async start(name: NodeName, opts: { peerLinkPort?: number; overrides?: Record<string, unknown> } = {}): Promise<NodeProcess> {
    const current = this.nodes[name];
    if (current !== null && !current.hasExited) throw new Error(`node ${name} is still running (pid ${current.pid})`);
    const node = await startNode({ config: this.configFor(name, opts.peerLinkPort, opts.overrides), nodeName: name, dir: this.dir, startTimeoutMs: 20_000 });
    this.nodes[name] = node;
    this.logs[name].attach(node);
    return node;
  }

  node(name: NodeName): NodeProcess {
    const n = this.nodes[name];
    if (n === null) throw new Error(`node ${name} was never started`);
    return n;
  }

  adminUrl(name: NodeName): string {
    return `http://127.0.0.1:${this.ports[name].admin}`;
  }

  uri(name: NodeName): string {
    return `nbd://127.0.0.1:${this.ports[name].nbd}/vol0`;
  }

  /** kill -9: the process dies at once, nothing is hardened. */
  async kill9(name: NodeName): Promise<void> {
    await this.nodes[name]?.kill9();
  }

  /** SIGTERM, wait for the exit; returns the exit code. */
  async stop(name: NodeName): Promise<number | null> {
    const n = this.nodes[name];
    if (n === null || n.hasExited) return n === null ? null : (await n.waitExit()).code;
    return n.stop({ timeoutMs: 30_000 });
  }

  /** kill -9 whatever runs and close the proxy (finally blocks). */
  async kill(): Promise<void> {
    await Promise.all([this.nodes.a?.kill9(), this.nodes.b?.kill9()]);
    await this.proxy?.close();
  }

  async status(name: NodeName): Promise<PairStatus> {
    const res = await fetch(`${this.adminUrl(name)}/status`, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`GET ${name}/status: HTTP ${res.status}`);
    return (await res.json()) as PairStatus;
  }

  /** POST an admin action; resolves to the HTTP status and JSON answer (never throws on 409). */
  async admin(name: NodeName, action: 'promote' | 'demote' | 'resolve', body: Record<string, unknown> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${this.adminUrl(name)}/${action}`, {
      method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    let parsed: Record<string, unknown> = {};
    try {
      parsed = JSON.parse(text) as Record<string, unknown>;
    } catch {
      parsed = { raw: text };
    }
    return { status: res.status, body: parsed };
  }

  /** The CLI, as an operator runs it: `twinblock <args> --admin <name's admin URL>`. */
  cli(name: NodeName, args: string[]): Promise<RunResult> {
    return run(process.execPath, [cliMainPath, ...args, '--admin', this.adminUrl(name)], { timeoutMs: 30_000 });
  }

  /** Log lines of node `name` with this exact msg (or matching), from line `since` on (see mark()). */
  lines(name: NodeName, msg: string | RegExp, since = 0): LogLine[] {
    return this.logs[name].lines.filter((l) => l.seq >= since && typeof l.msg === 'string' && (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg)));
  }

  /** A point in a node's log: lines(name, msg, mark) sees only what came after. */
  mark(name: NodeName): number {
    return this.logs[name].lines.length;
  }

  /** The last log lines of both nodes, for assertion messages. */
  tail(count = 25): string {
    const show = (n: NodeName): string => this.logs[n].lines.slice(-count).map((l) => {
      const { level: _l, time: _t, pid: _p, hostname: _h, ...rest } = l;
      return JSON.stringify(rest);
    }).join('\n');
    return `--- a (last ${count} log lines)\n${show('a')}\n--- b\n${show('b')}`;
  }

  /**
   * Poll until check() says ok; on timeout throw with its last detail and both logs. A node that
   * exits while we wait fails at once.
   */
  waitFor(what: string, check: () => Promise<{ ok: boolean; detail: string }>, timeoutMs = 30_000, pollMs = 50): Promise<number> {
    const running = (['a', 'b'] as const).flatMap((n) => (this.nodes[n] !== null && !this.nodes[n]!.hasExited ? [this.nodes[n]!] : []));
    return pollNodes(what, running, check, () => this.tail(), timeoutMs, pollMs);
  }

  /** Wait until one node's peer state is `state` (and, for in-sync, connected). */
  waitPeerState(name: NodeName, state: PeerState, timeoutMs = 30_000): Promise<number> {
    return this.waitFor(`${name} peer state ${state}`, async () => {
      const s = await this.status(name);
      const p = s.peers[0];
      return { ok: p?.state === state && (state !== 'in-sync' || p.connected), detail: describeStatus(s) };
    }, timeoutMs);
  }

  /** Both nodes connected and in-sync. */
  waitInSync(timeoutMs = 30_000): Promise<number> {
    return this.waitFor('both nodes in-sync', async () => {
      const [sa, sb] = await Promise.all([this.status('a'), this.status('b')]);
      const ok = [sa, sb].every((s) => s.peers[0]?.connected === true && s.peers[0].state === 'in-sync');
      return { ok, detail: `${describeStatus(sa)} | ${describeStatus(sb)}` };
    }, timeoutMs);
  }

  /**
   * Both nodes hardened everything and hold no peer marks. Until then a secondary may hold the
   * initial sync only in RAM, and its crash puts any track out of sync: a delta resync after it
   * could not be told from a full one.
   */
  waitDrained(timeoutMs = 30_000): Promise<number> {
    return this.waitFor('a and b drained', async () => {
      const [sa, sb] = await Promise.all([this.status('a'), this.status('b')]);
      const ok = [sa, sb].every((s) => s.peers[0]?.unitedTracks === 0 && s.cache.dirtyTracks === 0);
      return { ok, detail: `${describeStatus(sa)} | ${describeStatus(sb)}` };
    }, timeoutMs);
  }
}

async function freePorts(): Promise<Record<NodeName, Ports>> {
  const ports = new Set<number>();
  while (ports.size < 6) ports.add(await freePort());
  const [an, aa, al, bn, ba, bl] = [...ports] as [number, number, number, number, number, number];
  return { a: { nbd: an, admin: aa, link: al }, b: { nbd: bn, admin: ba, link: bl } };
}

/** A port nothing listens on (bound once, then closed). */
export function deadPort(): Promise<number> {
  return freePort();
}

// ------------------------------------------------------------------------------------ metadata

export interface MetadataView {
  history: { epoch: number; node: string }[];
  role: string;
  cleanShutdown: boolean;
  diverging: boolean;
  /** Tracks set in the persisted out-of-sync bitmap (null: none persisted). */
  outOfSyncTracks: number | null;
  outOfSync: Set<number> | null;
  raw: Record<string, unknown>;
}

/** The node metadata beside a file store (`<store>.twinblock-meta.json`), decoded. */
export function readMetadata(store: string): MetadataView {
  const raw = JSON.parse(readFileSync(`${store}.twinblock-meta.json`, 'utf8')) as Record<string, unknown>;
  let outOfSync: Set<number> | null = null;
  if (typeof raw['outOfSync'] === 'string') {
    outOfSync = new Set();
    const bytes = Buffer.from(raw['outOfSync'], 'base64');
    for (let i = 0; i < bytes.length * 8; i++) if ((bytes[i >> 3]! & (1 << (i & 7))) !== 0) outOfSync.add(i);
  }
  return {
    history: raw['history'] as MetadataView['history'], role: String(raw['role']), cleanShutdown: raw['cleanShutdown'] === true,
    diverging: raw['diverging'] === true, outOfSyncTracks: outOfSync?.size ?? null, outOfSync, raw,
  };
}
