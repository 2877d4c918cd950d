// A mirrored pair (or a volume of more nodes, issue 12) as real node processes, for the benchmarks: fixed ports per node (a
// restarted node comes back on the same NBD, admin and link ports), one config file per node in
// the pair's own directory, every JSON log line of every run kept with the time we received it
// (the resync benchmark reads "resync ... started" / "resync complete" lines), and the waits a
// benchmark needs: both in-sync, both hardened.
//
// Deliberately separate from test/helpers/failover-pair.ts: tests change with the code they test;
// the benchmark's own pair should not move under a benchmark run.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { freePort, pollNodes, startNode, type ConfigSpec, type NodeEntry, type NodeProcess } from '../test/helpers/node-process.js';

/** 'a', 'b', and 'c'... in a volume of more nodes ('a' starts primary). */
export type NodeName = string;

export interface PeerView {
  node: string;
  connected: boolean;
  state: 'connecting' | 'resyncing' | 'in-sync' | 'degraded' | 'split-brain';
  unitedTracks: number;
  outOfSyncTracks: number;
  sync: { totalBytes: number; doneBytes: number; rateBytesPerSec: number; full?: boolean } | null;
}

export interface BenchStatus {
  node: string;
  role: 'primary' | 'secondary';
  epoch: number;
  pid: number;
  cache: { dirtyTracks: number; hardeningTracks?: number; [key: string]: unknown };
  exposure: { unhardenedBytes: number; [key: string]: unknown };
  counters: { writes: number; resyncBytesSent: number; syncBytesSent: number; syncBytesReceived: number; linkBytesSent: number; [key: string]: unknown };
  peers: PeerView[];
}

/** One JSON log line of a node, with when we read it (ms since epoch) and which start of the node. */
export type LogLine = Record<string, unknown> & { msg?: string; receivedAtMs: number; run: number };

export interface BenchPairOptions {
  /** The pair's own directory (configs, and metadata beside the stores). */
  dir: string;
  /** One store per node: two for a pair, more for a larger volume. */
  stores: Record<NodeName, string>;
  /** Top-level config keys besides these, e.g. { ack: 'quorum' }. */
  extra?: Record<string, unknown>;
  size: string;
  cache: string;
  flush: 'memory' | 'disk';
  /** Resync and initial-sync bandwidth limit (config syntax); default: the node's default. */
  syncRate?: string;
  heartbeatTimeoutMs?: number;
  /** Extra node(1) flags per node, e.g. --cpu-prof. */
  nodeArgs?: Partial<Record<NodeName, string[]>>;
}

interface Ports { nbd: number; admin: number; link: number }

const addr = (port: number): string => `127.0.0.1:${port}`;

export class BenchPair {
  /** The volume's nodes, in config order ('a' first). */
  readonly names: NodeName[];
  readonly nodes: Record<NodeName, NodeProcess | null> = {};
  readonly logs: Record<NodeName, LogLine[]> = {};
  /** Date.now() just before each node's latest spawn (lines a --cpu-prof profile up with our clock). */
  readonly spawnedAtMs: Record<NodeName, number> = {};
  private readonly runs: Record<NodeName, number> = {};

  private constructor(readonly opts: BenchPairOptions, readonly ports: Record<NodeName, Ports>) {
    this.names = Object.keys(opts.stores);
    for (const n of this.names) {
      this.nodes[n] = null;
      this.logs[n] = [];
      this.spawnedAtMs[n] = 0;
      this.runs[n] = 0;
    }
  }

  /** Start the acceptors first, a (primary, the dialer) last; does not wait for the initial sync. */
  static async start(opts: BenchPairOptions): Promise<BenchPair> {
    mkdirSync(opts.dir, { recursive: true });
    const names = Object.keys(opts.stores);
    const used = new Set<number>();
    while (used.size < 3 * names.length) used.add(await freePort());
    const free = [...used];
    const ports: Record<NodeName, Ports> = {};
    names.forEach((n, i) => { ports[n] = { nbd: free[3 * i]!, admin: free[3 * i + 1]!, link: free[3 * i + 2]! }; });
    const pair = new BenchPair(opts, ports);
    for (const n of [...names].reverse()) await pair.startNode(n);
    return pair;
  }

  config(): ConfigSpec {
    const o = this.opts;
    const entry = (n: NodeName): NodeEntry & { link: string } => ({
      nbd: addr(this.ports[n]!.nbd), admin: addr(this.ports[n]!.admin), link: addr(this.ports[n]!.link), store: o.stores[n]!, cache: o.cache,
    });
    const nodes: Record<string, NodeEntry> = {};
    for (const n of this.names) nodes[n] = entry(n);
    return {
      volume: 'vol0',
      size: o.size,
      flush: o.flush,
      ...(o.syncRate === undefined ? {} : { syncRate: o.syncRate }),
      ...(o.heartbeatTimeoutMs === undefined ? {} : { heartbeatTimeoutMs: o.heartbeatTimeoutMs }),
      secret: 'twinblock benchmark pair secret',
      primary: 'a',
      nodes,
      ...o.extra,
    };
  }

  /** Start (or restart) one node with the pair's config. */
  async startNode(name: NodeName): Promise<NodeProcess> {
    const current = this.nodes[name] ?? null;
    if (current !== null && !current.hasExited) throw new Error(`node ${name} still runs (pid ${current.pid})`);
    this.spawnedAtMs[name] = Date.now();
    const node = await startNode({
      config: this.config(), nodeName: name, dir: this.opts.dir, startTimeoutMs: 30_000, nodeArgs: this.opts.nodeArgs?.[name] ?? [],
    });
    this.nodes[name] = node;
    this.attachLog(name, node);
    return node;
  }

  private attachLog(name: NodeName, node: NodeProcess): void {
    const run = (this.runs[name] = (this.runs[name] ?? 0) + 1);
    let partial = '';
    const feed = (text: string): void => {
      const parts = (partial + text).split('\n');
      partial = parts.pop() ?? '';
      const now = Date.now();
      for (const line of parts) {
        if (!line.startsWith('{')) continue;
        try {
          this.logs[name]!.push({ ...(JSON.parse(line) as Record<string, unknown>), receivedAtMs: now, run });
        } catch {
          // not a JSON log line
        }
      }
    };
    feed(node.stderr); // what it printed before startNode returned
    node.child.stderr?.on('data', (chunk: string | Buffer) => feed(String(chunk)));
  }

  node(name: NodeName): NodeProcess {
    const n = this.nodes[name] ?? null;
    if (n === null) throw new Error(`node ${name} never started`);
    return n;
  }

  uri(name: NodeName): string {
    return `nbd://127.0.0.1:${this.ports[name]!.nbd}/vol0`;
  }

  adminUrl(name: NodeName): string {
    return `http://127.0.0.1:${this.ports[name]!.admin}`;
  }

  async status(name: NodeName): Promise<BenchStatus> {
    const res = await fetch(`${this.adminUrl(name)}/status`, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new Error(`GET ${name}/status: HTTP ${res.status}`);
    return (await res.json()) as BenchStatus;
  }

  async post(name: NodeName, action: 'promote' | 'demote'): Promise<{ status: number; text: string }> {
    const res = await fetch(`${this.adminUrl(name)}/${action}`, { method: 'POST', signal: AbortSignal.timeout(30_000) });
    return { status: res.status, text: await res.text() };
  }

  /** Log lines of one node with this msg, from index `since` of its log on. */
  lines(name: NodeName, msg: string, since = 0): LogLine[] {
    return this.logs[name]!.slice(since).filter((l) => l.msg === msg);
  }

  /**
   * Poll until check() is ok; throws with its last detail and the log tails on timeout, or at once
   * if a node that was running when the wait began exits (one killed before it is not watched).
   */
  waitFor(what: string, check: () => Promise<{ ok: boolean; detail: string }>, timeoutMs: number, pollMs = 20): Promise<number> {
    const running = this.running().map((n) => this.nodes[n]!);
    return pollNodes(what, running, check, () => this.names.map((n) => `--- ${n}\n${this.tail(n)}`).join('\n'), timeoutMs, pollMs);
  }

  /** The nodes running now. */
  private running(): NodeName[] {
    return this.names.filter((n) => this.nodes[n] !== null && !this.nodes[n]!.hasExited);
  }

  tail(name: NodeName, count = 15): string {
    return this.logs[name]!.slice(-count).map((l) => {
      const { level: _l, time: _t, pid: _p, hostname: _h, receivedAtMs: _r, ...rest } = l;
      return JSON.stringify(rest);
    }).join('\n');
  }

  /**
   * Every node connected to and in sync with the primary (two secondaries of a larger volume have
   * no relation to keep); returns how long it took from the call.
   */
  waitInSync(timeoutMs = 120_000, pollMs = 20): Promise<number> {
    return this.waitFor('every node in-sync', async () => {
      const all = await Promise.all(this.names.map((n) => this.status(n)));
      const ok = all.filter((s) => s.role === 'primary').length === 1 && mirrorRelations(all).every((p) => p.connected && p.state === 'in-sync');
      return { ok, detail: all.map(describe).join(' | ') };
    }, timeoutMs, pollMs);
  }

  /** Nothing unhardened on the running nodes, and their records of the primary, or of its peers, empty. */
  waitHardened(timeoutMs = 120_000): Promise<number> {
    return this.waitFor('every node hardened', async () => {
      const all = await Promise.all(this.running().map((n) => this.status(n)));
      const ok = all.every((s) => s.exposure.unhardenedBytes === 0) && mirrorRelations(all).every((p) => p.unitedTracks === 0);
      return { ok, detail: all.map(describe).join(' | ') };
    }, timeoutMs, 100);
  }

  /** SIGTERM every node (clean: each hardens first). */
  async stop(): Promise<void> {
    await Promise.all(this.names.map(async (n) => {
      const node = this.nodes[n] ?? null;
      if (node === null || node.hasExited) return;
      const code = await node.stop({ timeoutMs: 300_000 });
      if (code !== 0) console.error(`warning: node ${n} exited ${code}; stderr tail:\n${node.stderr.slice(-3000)}`);
    }));
  }
}

/**
 * The peer relations that mirror: every peer of the primary, and each secondary's of the primary
 * (two secondaries of a larger volume leave each other alone). A pair: both of them.
 */
function mirrorRelations(all: BenchStatus[]): PeerView[] {
  const roleOf = new Map(all.map((s) => [s.node, s.role]));
  return all.flatMap((s) => s.peers.filter((p) => s.role === 'primary' || roleOf.get(p.node) !== 'secondary'));
}

export function describe(s: BenchStatus): string {
  const p = s.peers[0];
  const peer = p === undefined ? 'no peer' : `peer ${p.state}${p.connected ? '' : ' (not connected)'} united=${p.unitedTracks} outOfSync=${p.outOfSyncTracks}${p.sync ? ` sync ${p.sync.doneBytes}/${p.sync.totalBytes}` : ''}`;
  return `${s.node} ${s.role} epoch ${s.epoch}: ${peer}, dirty=${s.cache.dirtyTracks}`;
}

/** Where a volume's files go: DIR/<label>/{a,b,...}.img. */
export function pairPaths(dir: string, label: string, names: NodeName[] = ['a', 'b']): { dir: string; stores: Record<NodeName, string> } {
  const d = path.join(dir, label);
  return { dir: d, stores: Object.fromEntries(names.map((n) => [n, path.join(d, `${n}.img`)])) };
}
