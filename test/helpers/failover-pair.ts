// A mirrored pair as two real node processes that a fault test can crash, restart, cut off and
// re-role (issue 5 item 9), plus a host writer that knows exactly which writes were acknowledged.
//
// The pair: one temp dir, fixed ports per node picked once (a restarted node comes back on the
// same NBD, admin and link ports), one config file per node written afresh at every start — so
// a's view of b's link address can be a FaultProxy, or b can be started alone with its peer
// pointed at a dead port. Every log line of every run of a node is kept (NodeProcess keeps only
// the last 64 KiB of stderr), so a test can ask "did any run of b log a full resync?".
//
// The writer (AckedWriter) drives our own NBD client with many writes in flight, each with a
// unique random payload, never two at once on the same 4 KiB block. A block's model is the last
// acknowledged payload plus the payloads whose fate is unknown (in flight when the connection
// died); a read-back must match one of them, byte for byte.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import { NbdClient, NbdReplyError } from '../../src/nbd/client.js';
import {
  cliMainPath, freePort, makeTempDir, run, startNode, type ConfigSpec, type NodeEntry, type NodeProcess, type RunResult,
} from './node-process.js';
import { FaultProxy } from './fault-proxy.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const BLOCK_BYTES = 4 * KiB;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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
        // may take the port in between. Start over with new ports (the stores are untouched).
        if (attempt >= 3 || !/already in use/.test((err as Error).message)) throw err;
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
  async waitFor(what: string, check: () => Promise<{ ok: boolean; detail: string }>, timeoutMs = 30_000, pollMs = 50): Promise<number> {
    const started = Date.now();
    let last = 'not checked yet';
    const running = (['a', 'b'] as const).filter((n) => this.nodes[n] !== null && !this.nodes[n]!.hasExited);
    while (Date.now() - started < timeoutMs) {
      for (const n of running) {
        const node = this.nodes[n]!;
        if (node.hasExited) {
          const { code, signal } = await node.waitExit();
          throw new Error(`waiting for ${what}: node ${n} exited (code ${code}, signal ${signal})\n${this.tail()}`);
        }
      }
      try {
        const r = await check();
        if (r.ok) return Date.now() - started;
        last = r.detail;
      } catch (err) {
        last = `check failed: ${(err as Error).message}`;
      }
      await sleep(pollMs);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last}\n${this.tail()}`);
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

// ------------------------------------------------------------------------------------ block model

/** What each 4 KiB block of the volume may hold. */
export class BlockModel {
  /** Last acknowledged payload per block (null: never written, reads as zeros). */
  readonly acked: (Buffer | null)[];
  /** Payloads whose write was in flight when its connection died: they may or may not have landed. */
  readonly uncertain: Buffer[][];
  /** Blocks with a write in flight right now (the writer never overlaps two writes). */
  readonly busy: Uint8Array;

  constructor(readonly volumeBytes: number) {
    const blocks = volumeBytes / BLOCK_BYTES;
    this.acked = new Array<Buffer | null>(blocks).fill(null);
    this.uncertain = Array.from({ length: blocks }, () => []);
    this.busy = new Uint8Array(blocks);
  }

  get blockCount(): number {
    return this.acked.length;
  }

  /** Blocks ever written or attempted. */
  touchedBlocks(): number[] {
    const out: number[] = [];
    for (let b = 0; b < this.blockCount; b++) if (this.acked[b] !== null || this.uncertain[b]!.length > 0) out.push(b);
    return out;
  }

  /** Tracks (of trackBytes) holding any written or attempted block. */
  touchedTracks(trackBytes: number): Set<number> {
    return new Set(this.touchedBlocks().map((b) => Math.floor((b * BLOCK_BYTES) / trackBytes)));
  }

  /**
   * Compare bytes read at offset with the model. Returns a description of each mismatching block
   * (up to `limit`), and the blocks whose content is one of their uncertain payloads.
   */
  check(offset: number, bytes: Buffer, limit = 10): { mismatches: string[]; mismatchCount: number; landedUncertain: number; checkedBlocks: number } {
    const zeros = Buffer.alloc(BLOCK_BYTES);
    const mismatches: string[] = [];
    let mismatchCount = 0;
    let landedUncertain = 0;
    let checkedBlocks = 0;
    for (let at = 0; at + BLOCK_BYTES <= bytes.length; at += BLOCK_BYTES) {
      const block = (offset + at) / BLOCK_BYTES;
      const got = bytes.subarray(at, at + BLOCK_BYTES);
      const expected = this.acked[block] ?? zeros;
      checkedBlocks++;
      if (got.equals(expected)) continue;
      if (this.uncertain[block]!.some((u) => got.equals(u))) {
        landedUncertain++;
        continue;
      }
      mismatchCount++;
      if (mismatches.length < limit) {
        const what = this.acked[block] === null ? 'never acknowledged (expected zeros)' : 'expected its last acknowledged write';
        const isZero = got.equals(zeros);
        mismatches.push(`block ${block} (offset ${block * BLOCK_BYTES}): ${what}, ${this.uncertain[block]!.length} uncertain; got ${isZero ? 'zeros' : got.subarray(0, 16).toString('hex') + '…'}`);
      }
    }
    return { mismatches, mismatchCount, landedUncertain, checkedBlocks };
  }

  /** After a check: what the survivor holds is now the truth (uncertain payloads are settled). */
  settle(offset: number, bytes: Buffer): void {
    for (let at = 0; at + BLOCK_BYTES <= bytes.length; at += BLOCK_BYTES) {
      const block = (offset + at) / BLOCK_BYTES;
      if (this.uncertain[block]!.length === 0) continue;
      const got = Buffer.from(bytes.subarray(at, at + BLOCK_BYTES));
      this.acked[block] = got.equals(Buffer.alloc(BLOCK_BYTES)) && this.acked[block] === null ? null : got;
      this.uncertain[block] = [];
    }
  }

  get uncertainBlocks(): number {
    return this.uncertain.reduce((n, u) => n + (u.length > 0 ? 1 : 0), 0);
  }
}

/** Read the whole volume through NBD (1 MiB reads, 8 in flight) and check it against the model. */
export async function verifyVolume(uri: string, model: BlockModel, opts: { settle?: boolean } = {}): Promise<{ mismatches: string[]; mismatchCount: number; landedUncertain: number; checkedBlocks: number }> {
  const client = await NbdClient.connect(uri);
  const total = { mismatches: [] as string[], mismatchCount: 0, landedUncertain: 0, checkedBlocks: 0 };
  try {
    const offsets: number[] = [];
    for (let off = 0; off < model.volumeBytes; off += MiB) offsets.push(off);
    const worker = async (): Promise<void> => {
      for (let off = offsets.shift(); off !== undefined; off = offsets.shift()) {
        const bytes = await client.read(off, Math.min(MiB, model.volumeBytes - off));
        const r = model.check(off, bytes);
        total.mismatches.push(...r.mismatches.slice(0, Math.max(0, 10 - total.mismatches.length)));
        total.mismatchCount += r.mismatchCount;
        total.landedUncertain += r.landedUncertain;
        total.checkedBlocks += r.checkedBlocks;
        if (opts.settle === true) model.settle(off, bytes);
      }
    };
    await Promise.all(Array.from({ length: 8 }, () => worker()));
  } finally {
    await client.disconnect().catch(() => undefined);
  }
  return total;
}

/** Check a store file (after a clean stop) against the model; every block must be exact. */
export function verifyStoreFile(file: string, model: BlockModel): { mismatches: string[]; mismatchCount: number } {
  const fd = openSync(file, 'r');
  const out = { mismatches: [] as string[], mismatchCount: 0 };
  try {
    const buf = Buffer.alloc(MiB);
    for (let off = 0; off < model.volumeBytes; off += MiB) {
      const n = readSync(fd, buf, 0, MiB, off);
      const r = model.check(off, buf.subarray(0, n));
      out.mismatchCount += r.mismatchCount + r.landedUncertain;
      if (r.landedUncertain > 0 && out.mismatches.length < 10) out.mismatches.push(`${r.landedUncertain} blocks near ${off} hold an unsettled uncertain payload`);
      out.mismatches.push(...r.mismatches.slice(0, Math.max(0, 10 - out.mismatches.length)));
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

/** Null when the two files are byte-identical, else where they first differ and how many 4 KiB blocks differ. */
export function compareStores(fileA: string, fileB: string): string | null {
  const fa = openSync(fileA, 'r');
  const fb = openSync(fileB, 'r');
  try {
    const x = Buffer.alloc(MiB);
    const y = Buffer.alloc(MiB);
    let first = -1;
    let differingBlocks = 0;
    for (let off = 0; ; off += MiB) {
      const nx = readSync(fa, x, 0, MiB, off);
      const ny = readSync(fb, y, 0, MiB, off);
      if (nx !== ny) return `${fileA} and ${fileB} differ in length (at ${off + Math.min(nx, ny)})`;
      if (nx === 0) break;
      if (x.subarray(0, nx).equals(y.subarray(0, ny))) continue;
      for (let at = 0; at < nx; at += BLOCK_BYTES) {
        if (!x.subarray(at, at + BLOCK_BYTES).equals(y.subarray(at, at + BLOCK_BYTES))) {
          differingBlocks++;
          if (first < 0) first = off + at;
        }
      }
    }
    return first < 0 ? null : `${path.basename(fileA)} and ${path.basename(fileB)} differ in ${differingBlocks} blocks of 4 KiB, first at byte ${first}`;
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

// ------------------------------------------------------------------------------------ writer

export interface WriterOptions {
  /** Writes in flight at once. */
  depth?: number;
  /** [start, end) byte range the writer stays in (4 KiB aligned). */
  region?: [number, number];
  /** Largest write, in 4 KiB blocks (each write is 1..maxBlocks blocks). */
  maxBlocks?: number;
  /** Stop issuing after this many writes were issued. */
  maxWrites?: number;
}

export interface WriterStats {
  issued: number;
  acked: number;
  ackedBytes: number;
  /** Writes that failed with an NBD error reply on a live connection (the writer stops at the first). */
  errors: string[];
  errnos: string[];
  /** Writes whose connection died under them. */
  lost: number;
  connectionDied: boolean;
  /** Date.now() of the first and last acknowledgement. */
  firstAckAt: number | null;
  lastAckAt: number | null;
}

/**
 * Many concurrent writes with unique payloads through one NBD connection. A write counts as
 * acknowledged only when its promise resolves; if the connection dies, every write still in flight
 * becomes an uncertain payload for its blocks and the writer stops issuing.
 */
export class AckedWriter {
  readonly stats: WriterStats = { issued: 0, acked: 0, ackedBytes: 0, errors: [], errnos: [], lost: 0, connectionDied: false, firstAckAt: null, lastAckAt: null };
  private running = false;
  /** Tracks (of trackBytes) written by acknowledged writes. */
  readonly ackedTracks = new Set<number>();
  private readonly depth: number;
  private readonly region: [number, number];
  private readonly maxBlocks: number;
  private readonly maxWrites: number;
  private loops: Promise<void>[] = [];
  /** Acknowledgement times (ms since start) — for "writes kept being served while degraded". */
  readonly ackTimes: number[] = [];
  readonly startedAt = Date.now();

  constructor(readonly client: NbdClient, readonly model: BlockModel, opts: WriterOptions = {}, private readonly trackBytes = 64 * KiB) {
    this.depth = opts.depth ?? 16;
    this.region = opts.region ?? [0, model.volumeBytes];
    this.maxBlocks = opts.maxBlocks ?? 4;
    this.maxWrites = opts.maxWrites ?? Number.POSITIVE_INFINITY;
  }

  static async open(uri: string, model: BlockModel, opts: WriterOptions = {}): Promise<AckedWriter> {
    return new AckedWriter(await NbdClient.connect(uri), model, opts);
  }

  start(): this {
    this.running = true;
    this.loops = Array.from({ length: this.depth }, () => this.loop());
    return this;
  }

  /** Stop issuing and wait for every write in flight to settle; returns the stats. */
  async stop(): Promise<WriterStats> {
    this.running = false;
    await Promise.all(this.loops);
    return this.stats;
  }

  /** Stop issuing, wait, and disconnect (a live connection only). */
  async close(): Promise<WriterStats> {
    const stats = await this.stop();
    if (!stats.connectionDied) await this.client.disconnect().catch(() => undefined);
    return stats;
  }

  /** Acknowledgements in [fromMs, toMs) of Date.now(). */
  acksBetween(fromMs: number, toMs: number): number {
    return this.ackTimes.filter((t) => t + this.startedAt >= fromMs && t + this.startedAt < toMs).length;
  }

  /** Resolves once `count` more writes were acknowledged after now (or rejects after timeoutMs). */
  async waitAcks(count: number, timeoutMs = 20_000): Promise<void> {
    const target = this.stats.acked + count;
    const deadline = Date.now() + timeoutMs;
    while (this.stats.acked < target) {
      if (Date.now() > deadline) throw new Error(`writer: only ${this.stats.acked - (target - count)} of ${count} acknowledgements within ${timeoutMs} ms (errors: ${this.stats.errors.slice(0, 3).join('; ')}, connectionDied ${this.stats.connectionDied})`);
      if (!this.running || this.stats.connectionDied) throw new Error(`writer stopped before enough acknowledgements (errors: ${this.stats.errors.slice(0, 3).join('; ')}, connectionDied ${this.stats.connectionDied})`);
      await sleep(10);
    }
  }

  private pickBlocks(): [number, number] | null {
    const [from, to] = this.region;
    const firstBlock = from / BLOCK_BYTES;
    const blocks = (to - from) / BLOCK_BYTES;
    for (let tries = 0; tries < 20; tries++) {
      const n = 1 + Math.floor(Math.random() * this.maxBlocks);
      if (n > blocks) continue;
      const start = firstBlock + Math.floor(Math.random() * (blocks - n + 1));
      let free = true;
      for (let b = start; b < start + n; b++) if (this.model.busy[b] !== 0) free = false;
      if (free) return [start, n];
    }
    return null;
  }

  private async loop(): Promise<void> {
    while (this.running && !this.stats.connectionDied && this.stats.issued < this.maxWrites) {
      const pick = this.pickBlocks();
      if (pick === null) {
        await sleep(1);
        continue;
      }
      const [start, n] = pick;
      const data = randomBytes(n * BLOCK_BYTES);
      for (let b = start; b < start + n; b++) this.model.busy[b] = 1;
      this.stats.issued++;
      try {
        await this.client.write(start * BLOCK_BYTES, data);
        for (let i = 0; i < n; i++) {
          this.model.acked[start + i] = data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES);
          this.model.uncertain[start + i] = [];
        }
        this.stats.acked++;
        for (let t = Math.floor((start * BLOCK_BYTES) / this.trackBytes); t <= Math.floor(((start + n) * BLOCK_BYTES - 1) / this.trackBytes); t++) this.ackedTracks.add(t);
        this.stats.ackedBytes += data.length;
        const now = Date.now();
        this.stats.firstAckAt ??= now;
        this.stats.lastAckAt = now;
        this.ackTimes.push(now - this.startedAt);
      } catch (err) {
        // Refused before it was applied (EPERM: not primary; ESHUTDOWN: stopping): it must never
        // show up. Any other failure may or may not have landed.
        const refused = err instanceof NbdReplyError && (err.errno === 'EPERM' || err.errno === 'ESHUTDOWN');
        if (!refused) for (let i = 0; i < n; i++) this.model.uncertain[start + i]!.push(data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES));
        if (err instanceof NbdReplyError) {
          this.stats.errors.push(`write ${start * BLOCK_BYTES}+${data.length}: ${err.errno}: ${err.message}`);
          this.stats.errnos.push(err.errno);
          this.running = false; // an error reply ends the run: the test decides whether it was expected
        } else {
          this.stats.lost++;
          this.stats.connectionDied = true;
        }
      } finally {
        for (let b = start; b < start + n; b++) this.model.busy[b] = 0;
      }
    }
  }
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
