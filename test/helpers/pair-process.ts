// Runs a mirrored pair as two real node processes (issue 4 item 10): one YAML config file per
// node in one temp dir, ports picked free, and the waits a pair test needs (both in-sync, both
// bitmaps drained), log-line parsing, and a TCP proxy that can flip one byte of a link frame.
//
// Built on node-process.ts: every process and temp dir started here is tracked there, so an
// after(cleanupAll) in the test file removes them even when a test fails half-way.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  describeRun, freePort, makeTempDir, pollNodes, startNode, type ConfigSpec, type NodeEntry, type NodeProcess, type NodeStatus, type RunResult,
} from './node-process.js';


// ------------------------------------------------------------------------------------ status

/** The parts of /status a pair test reads (node-process.ts types the standalone parts). */
export interface PeerStatus {
  node: string;
  connected: boolean;
  state: 'connecting' | 'resyncing' | 'in-sync' | 'degraded';
  unitedTracks: number;
  outOfSyncTracks: number;
  sync: { totalBytes: number; doneBytes: number } | null;
  [key: string]: unknown;
}

export interface PairNodeStatus extends NodeStatus {
  peers: PeerStatus[];
  counters: NodeStatus['counters'] & {
    linkBytesSent: number;
    linkBytesReceived: number;
    noticeBytesSent: number;
    resyncBytesSent: number;
    [key: string]: unknown;
  };
}

export async function pairStatus(node: NodeProcess): Promise<PairNodeStatus> {
  return (await node.status()) as PairNodeStatus;
}

/** One line for assertion messages: role, peer state, bitmaps, dirty tracks. */
export function summarize(s: PairNodeStatus): string {
  const p = s.peers[0];
  const peer = p === undefined ? 'no peer' : `peer ${p.node} connected=${p.connected} state=${p.state} united=${p.unitedTracks} outOfSync=${p.outOfSyncTracks}`;
  return `${s.node} (${s.role}): ${peer}, dirtyTracks=${s.cache.dirtyTracks}, writes=${s.counters.writes}`;
}

// ------------------------------------------------------------------------------------ pair

export interface PairOptions {
  /** Default: a fresh temp dir (stores and configs go here). */
  dir?: string;
  size?: string;
  tracker?: 'destage-scan' | 'toggle-counter' | 'selective';
  flush?: 'memory' | 'disk';
  maxDirtyAgeMs?: number;
  destageIntervalMs?: number;
  rangeTracks?: number;
  heartbeatTimeoutMs?: number;
  secret?: string;
  cache?: string;
  /** Store per node: a path or nbd:// URI. Default: DIR/a.img and DIR/b.img (created sparse by the node). */
  stores?: { a?: string; b?: string };
  /**
   * Change the config one node reads (both nodes normally read the same content, each from its own
   * file): e.g. a different secret for b, or b's link address pointed at a proxy in a's file.
   */
  configFor?: { a?: (config: ConfigSpec) => ConfigSpec; b?: (config: ConfigSpec) => ConfigSpec };
  startTimeoutMs?: number;
}

/** Addresses of one node of a pair, all on 127.0.0.1. */
export interface PairPorts {
  nbd: number;
  admin: number;
  link: number;
}

export interface Pair {
  dir: string;
  /** The primary ("a", the dialer). */
  a: NodeProcess;
  /** The secondary ("b"). */
  b: NodeProcess;
  ports: { a: PairPorts; b: PairPorts };
  /** The config both nodes would read without configFor. */
  config: ConfigSpec;
  /** Store paths or URIs. */
  stores: { a: string; b: string };
  /** SIGTERM both at once (the clean stop); resolves to both exit codes. */
  stop(timeoutMs?: number): Promise<{ a: number | null; b: number | null }>;
  /** kill -9 whatever still runs (finally blocks). */
  kill(): Promise<void>;
}

/** Six distinct ports that were free a moment ago (bind(0) may hand out a port twice in a row). */
async function freePairPorts(): Promise<{ a: PairPorts; b: PairPorts }> {
  const ports = new Set<number>();
  while (ports.size < 6) ports.add(await freePort());
  const [an, aa, al, bn, ba, bl] = [...ports] as [number, number, number, number, number, number];
  return { a: { nbd: an, admin: aa, link: al }, b: { nbd: bn, admin: ba, link: bl } };
}

/** Attempts at starting a pair when a port we picked was taken meanwhile. */
const PORT_RETRIES = 3;

const addr = (port: number): string => `127.0.0.1:${port}`;

/**
 * Start a pair: a (primary) then b (secondary), each as `serve --config DIR/<name>.yaml --node
 * <name>`. Resolves once both serve NBD and /status; it does not wait for the link or the
 * initial sync (see waitInSync).
 */
export async function startPair(opts: PairOptions = {}): Promise<Pair> {
  const dir = opts.dir ?? makeTempDir('twinblock-pair-');
  // freePort() closes its probe before the node binds: on a busy runner another process can take
  // the port in between. Then start over with new ports (the stores are untouched by a failed start).
  for (let attempt = 1; ; attempt++) {
    try {
      return await startPairOnce(opts, dir);
    } catch (err) {
      if (attempt >= PORT_RETRIES || !/already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startPairOnce(opts: PairOptions, dir: string): Promise<Pair> {
  const ports = await freePairPorts();
  const stores = { a: opts.stores?.a ?? path.join(dir, 'a.img'), b: opts.stores?.b ?? path.join(dir, 'b.img') };
  const cache = opts.cache ?? '64MiB';
  const entry = (name: 'a' | 'b'): NodeEntry => {
    const e: NodeEntry & { link: string } = {
      nbd: addr(ports[name].nbd), admin: addr(ports[name].admin), link: addr(ports[name].link), store: stores[name], cache,
    };
    return e;
  };
  const config: ConfigSpec = {
    volume: 'vol0',
    size: opts.size ?? '64MiB',
    tracker: opts.tracker ?? 'destage-scan',
    flush: opts.flush ?? 'memory',
    maxDirtyAgeMs: opts.maxDirtyAgeMs ?? 5000,
    destageIntervalMs: opts.destageIntervalMs ?? 1000,
    rangeTracks: opts.rangeTracks ?? 64,
    secret: opts.secret ?? 'twinblock pair test secret',
    primary: 'a',
    heartbeatTimeoutMs: opts.heartbeatTimeoutMs ?? 1000,
    nodes: { a: entry('a'), b: entry('b') },
  };
  const configA = opts.configFor?.a?.(structuredClone(config)) ?? config;
  const configB = opts.configFor?.b?.(structuredClone(config)) ?? config;
  const startTimeoutMs = opts.startTimeoutMs ?? 15_000;
  const a = await startNode({ config: configA, nodeName: 'a', dir, startTimeoutMs });
  let b: NodeProcess;
  try {
    b = await startNode({ config: configB, nodeName: 'b', dir, startTimeoutMs });
  } catch (err) {
    await a.kill9();
    throw err;
  }
  return {
    dir, a, b, ports, config, stores,
    stop: async (timeoutMs = 30_000) => {
      const [ca, cb] = await Promise.all([a.stop({ timeoutMs }), b.stop({ timeoutMs })]);
      return { a: ca, b: cb };
    },
    kill: async () => {
      await Promise.all([a.kill9(), b.kill9()]);
    },
  };
}

/** Both nodes' stderr tails, for assertion messages. */
export function pairLogs(pair: Pair, chars = 3000): string {
  return `--- a stderr\n${pair.a.stderr.slice(-chars)}\n--- b stderr\n${pair.b.stderr.slice(-chars)}`;
}

// ------------------------------------------------------------------------------------ waiting

/**
 * Poll check() until it returns true; on timeout throw with the last description it gave (or the
 * last error it threw) and both nodes' logs.
 */
export function waitForPair(
  pair: Pair, what: string, check: () => Promise<{ ok: boolean; detail: string }>, timeoutMs: number, pollMs = 100,
): Promise<number> {
  return pollNodes(what, [pair.a, pair.b], check, () => pairLogs(pair), timeoutMs, pollMs);
}

/** Both nodes report their peer connected and in-sync; returns how long it took. */
export function waitInSync(pair: Pair, timeoutMs = 30_000): Promise<number> {
  return waitForPair(pair, 'both nodes in-sync', async () => {
    const [sa, sb] = await Promise.all([pairStatus(pair.a), pairStatus(pair.b)]);
    const ok = [sa, sb].every((s) => s.peers[0]?.connected === true && s.peers[0].state === 'in-sync');
    return { ok, detail: `${summarize(sa)} | ${summarize(sb)}` };
  }, timeoutMs);
}

/**
 * The bitmaps drained: on both nodes the united bitmap (peer-unhardened record) is empty and no
 * track is dirty in the cache, while the link is still up and in-sync.
 */
export function waitDrained(pair: Pair, timeoutMs = 30_000): Promise<number> {
  return waitForPair(pair, 'both bitmaps drained (unitedTracks 0, dirtyTracks 0)', async () => {
    const [sa, sb] = await Promise.all([pairStatus(pair.a), pairStatus(pair.b)]);
    const ok = [sa, sb].every((s) => s.peers[0]?.state === 'in-sync' && s.peers[0].unitedTracks === 0 && s.cache.dirtyTracks === 0);
    return { ok, detail: `${summarize(sa)} | ${summarize(sb)}` };
  }, timeoutMs, 200);
}

// ------------------------------------------------------------------------------------ logs

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/** The node's JSON log lines so far (non-JSON lines are skipped). */
export function logLines(node: NodeProcess): LogLine[] {
  const lines: LogLine[] = [];
  for (const text of node.stderr.split('\n')) {
    if (!text.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(text) as LogLine);
    } catch {
      // A line cut by the 64 KiB stderr window: not ours to judge.
    }
  }
  return lines;
}

/** Log lines with this exact msg. */
export function linesWithMsg(node: NodeProcess, msg: string): LogLine[] {
  return logLines(node).filter((l) => l.msg === msg);
}

// ------------------------------------------------------------------------------------ commands

/** Like node-process.ts run(), with a working directory (fio writes state files into its cwd). */
export function runIn(cwd: string, command: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve) => {
    const started = Date.now();
    execFile(command, args, { cwd, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals; killed?: boolean }) | null;
      const code = e === null ? 0 : typeof e.code === 'number' ? e.code : null;
      const timedOut = e !== null && e.killed === true && Date.now() - started >= timeoutMs - 50;
      const spawnError = e !== null && typeof e.code === 'string' ? `${command}: ${e.message}\n` : '';
      resolve({ code, signal: e?.signal ?? null, stdout: String(stdout), stderr: spawnError + String(stderr), timedOut });
    });
  });
}

/** qemu-io opening the image read-only (-r): the only way it can open a secondary's export. */
export function qemuIoReadOnly(uri: string, commands: string[], timeoutMs = 60_000): Promise<RunResult> {
  const args = ['-r', '-f', 'raw', uri];
  for (const c of commands) args.push('-c', c);
  return runIn(process.cwd(), 'qemu-io', args, timeoutMs);
}

/** First differing byte of two buffers, or -1 when equal (lengths must match). */
export function firstDifference(x: Buffer, y: Buffer): number {
  if (x.length !== y.length) return Math.min(x.length, y.length);
  if (x.equals(y)) return -1;
  // Compare in 64 KiB slices, then bytes: findIndex over 64 MiB is slow.
  const step = 64 * 1024;
  for (let at = 0; at < x.length; at += step) {
    const end = Math.min(at + step, x.length);
    if (!x.subarray(at, end).equals(y.subarray(at, end))) {
      for (let i = at; i < end; i++) if (x[i] !== y[i]) return i;
    }
  }
  return -1;
}

/** Assertion text for two store files that should be byte-identical; null when they are. */
export function compareFiles(pathA: string, pathB: string): string | null {
  const x = readFileSync(pathA);
  const y = readFileSync(pathB);
  if (x.length !== y.length) return `${pathA} is ${x.length} bytes, ${pathB} is ${y.length} bytes`;
  const at = firstDifference(x, y);
  return at < 0 ? null : `${pathA} and ${pathB} differ first at byte ${at}: ${x[at]} vs ${y[at]}`;
}

export { describeRun };

// ------------------------------------------------------------------------------------ link proxy

/** Frame layout of the link (src/core/link-codec.ts): a 16-byte header, the body, a 4-byte CRC. */
const LINK_MAGIC = 0x54424c4b; // 'TBLK'
const HEADER_BYTES = 16;
const TRAILER_BYTES = 4;
/** Wire type code of a mirrored host write: body = seq u64 | heldSeq u64 | offsetBytes u64 | data. */
const WRITE_TYPE = 4;
const WRITE_DATA_AT = 24;
const WRITE_OFFSET_AT = 16;

/** What the proxy did to the one frame it corrupted. */
export interface Corruption {
  /** The corrupted write's volume offset (where its data starts). */
  writeOffset: number;
  /** The write's volume offset plus the index of the flipped byte in its data. */
  volumeOffset: number;
  /** The write frame's data length. */
  dataBytes: number;
  originalByte: number;
  corruptedByte: number;
  /** Which proxied connection (1-based) carried it. */
  connection: number;
}

/**
 * A TCP proxy on 127.0.0.1 for the link from the dialer (a) to the acceptor (b). It follows the
 * a→b stream frame by frame and, once armed, flips every bit of one byte in the middle of the data
 * of the next mirrored write with at least minDataBytes of data, after both CRCs were computed:
 * exactly what a bad cable or NIC would do. While blocked it closes new connections at once (so the
 * test decides when the dialer may reconnect).
 */
export class LinkProxy {
  port = 0;
  connections = 0;
  blocked = false;
  /** Set when the a→b stream stopped looking like link frames (the test then fails on it). */
  parseError: string | null = null;
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  private armed: { minDataBytes: number } | null = null;
  private corruptionResolve: ((c: Corruption) => void) | null = null;
  /** Resolves when the armed corruption was applied. */
  corruption: Promise<Corruption> = new Promise(() => {});

  /** Where b's link really listens; may be set after start() (before the first connection). */
  constructor(public targetPort = 0) {}

  async start(): Promise<number> {
    const server = net.createServer((client) => this.onClient(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    // A test that times out must not leave the runner waiting on this server.
    server.unref();
    this.server = server;
    this.port = (server.address() as net.AddressInfo).port;
    return this.port;
  }

  /** Corrupt the next mirrored write of at least minDataBytes going a→b. */
  arm(minDataBytes = 4096): Promise<Corruption> {
    this.armed = { minDataBytes };
    this.corruption = new Promise((resolve) => { this.corruptionResolve = resolve; });
    return this.corruption;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = null;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private onClient(client: net.Socket): void {
    client.on('error', () => {});
    if (this.blocked) {
      client.destroy();
      return;
    }
    const id = ++this.connections;
    const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
    upstream.on('error', () => {});
    this.sockets.add(client);
    this.sockets.add(upstream);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('close', end);
    upstream.on('close', end);
    const transform = this.frameWalker(id);
    client.on('data', (chunk: Buffer) => {
      if (!upstream.write(transform(chunk))) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!client.write(chunk)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
  }

  /** A per-connection a→b transform: walks frames, forwards every byte, flips one when armed. */
  private frameWalker(connection: number): (chunk: Buffer) => Buffer {
    const header = Buffer.alloc(HEADER_BYTES);
    let headerFill = 0;
    let state: 'header' | 'body' | 'trailer' | 'lost' = 'header';
    let type = 0;
    let bodyBytes = 0;
    let bodyPos = 0;
    let trailerLeft = 0;
    const writeFields = Buffer.alloc(WRITE_DATA_AT);
    let flipAt = -1;
    return (input: Buffer): Buffer => {
      const chunk = Buffer.from(input);
      let i = 0;
      while (i < chunk.length && state !== 'lost') {
        if (state === 'header') {
          const take = Math.min(HEADER_BYTES - headerFill, chunk.length - i);
          chunk.copy(header, headerFill, i, i + take);
          headerFill += take;
          i += take;
          if (headerFill < HEADER_BYTES) break;
          headerFill = 0;
          if (header.readUInt32BE(0) !== LINK_MAGIC) {
            this.parseError = `connection ${connection}: frame header without the TBLK magic: ${header.toString('hex')}`;
            state = 'lost';
            break;
          }
          type = header[5]!;
          bodyBytes = header.readUInt32BE(8);
          bodyPos = 0;
          flipAt = -1;
          if (this.armed !== null && type === WRITE_TYPE && bodyBytes - WRITE_DATA_AT >= this.armed.minDataBytes) {
            flipAt = WRITE_DATA_AT + Math.floor((bodyBytes - WRITE_DATA_AT) / 2);
            this.armed = null;
          }
          state = bodyBytes > 0 ? 'body' : 'trailer';
          trailerLeft = TRAILER_BYTES;
        } else if (state === 'body') {
          const take = Math.min(bodyBytes - bodyPos, chunk.length - i);
          if (bodyPos < WRITE_DATA_AT) {
            const n = Math.min(WRITE_DATA_AT - bodyPos, take);
            chunk.copy(writeFields, bodyPos, i, i + n);
          }
          if (flipAt >= bodyPos && flipAt < bodyPos + take) {
            const at = i + (flipAt - bodyPos);
            const originalByte = chunk[at]!;
            chunk[at] = originalByte ^ 0xff;
            const writeOffset = Number(writeFields.readBigUInt64BE(WRITE_OFFSET_AT));
            const volumeOffset = writeOffset + (flipAt - WRITE_DATA_AT);
            this.corruptionResolve?.({
              writeOffset, volumeOffset, dataBytes: bodyBytes - WRITE_DATA_AT, originalByte, corruptedByte: chunk[at]!, connection,
            });
            flipAt = -1;
          }
          bodyPos += take;
          i += take;
          if (bodyPos === bodyBytes) state = 'trailer';
        } else {
          const take = Math.min(trailerLeft, chunk.length - i);
          trailerLeft -= take;
          i += take;
          if (trailerLeft === 0) state = 'header';
        }
      }
      return chunk;
    };
  }
}
