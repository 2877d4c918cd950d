// Runs real twinblock node processes for interop, persistence and benchmark runs: writes a YAML
// config into a temp dir, spawns `node dist/src/cli/main.js serve`, and waits until the node is
// really serving (its NBD port accepts connections AND /status answers), so a test never races the
// node's startup. Every failure message carries the node's stderr, because "timed out" alone says
// nothing about why a node did not come up.
//
// Everything started here is tracked: call cleanupAll() from after() so a failed test leaves no
// process or temp dir behind; an exit hook kill -9s leftovers if the test runner itself dies.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { adminRequest } from '../../src/admin/http-client.js';

/** The compiled CLI, relative to this file's compiled location (dist/test/helpers/). */
export const cliMainPath = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** Keep at most this much of a child's stderr: enough for the last log lines, bounded for long runs. */
const MAX_STDERR_CHARS = 64 * 1024;
const DEFAULT_START_TIMEOUT_MS = 15_000;
const DEFAULT_STOP_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 50;
/** Attempts to start a node when a port we picked was taken meanwhile. */
const PORT_RETRIES = 3;

// ------------------------------------------------------------------------------------ cleanup

const liveChildren = new Set<ChildProcess>();
const tempDirs = new Set<string>();

process.on('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function track(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
}

/** A fresh temp dir, removed by cleanupAll() (or at process exit). */
export function makeTempDir(prefix = 'twinblock-test-'): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** kill -9 every process still running and remove every temp dir; for after() hooks. */
export async function cleanupAll(): Promise<void> {
  const exits = [...liveChildren].map((child) => {
    const exited = waitForExit(child);
    child.kill('SIGKILL');
    return exited;
  });
  await Promise.all(exits);
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

// ------------------------------------------------------------------------------------ ports

/** A port that was free a moment ago: bind port 0 on loopback, read the port, close. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** True when something accepts TCP connections on host:port right now. */
export function portAccepts(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------ commands

export interface RunResult {
  /** null when killed by a signal (e.g. the timeout). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Run a command to completion; never rejects on a non-zero exit (the caller asserts on code). */
export function run(command: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve) => {
    const started = Date.now();
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: opts.env ?? process.env, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals; killed?: boolean }) | null;
        const code = e === null ? 0 : typeof e.code === 'number' ? e.code : null;
        const timedOut = e !== null && e.killed === true && Date.now() - started >= timeoutMs - 50;
        // ENOENT etc.: report as stderr so assertion messages say what happened.
        const spawnError = e !== null && typeof e.code === 'string' ? `${command}: ${e.message}\n` : '';
        resolve({ code, signal: e?.signal ?? null, stdout: String(stdout), stderr: spawnError + String(stderr), timedOut });
      });
  });
}

/** One-string summary of a command's outcome, for assertion messages. */
export function describeRun(what: string, r: RunResult): string {
  const how = r.timedOut ? 'timed out' : r.signal !== null ? `killed by ${r.signal}` : `exit ${r.code}`;
  return `${what}: ${how}\n--- stdout\n${r.stdout.slice(-8000)}\n--- stderr\n${r.stderr.slice(-8000)}`;
}

// ------------------------------------------------------------------------------------ node config

/** One node's entry; ports are picked by startNode when omitted. */
export interface NodeEntry {
  nbd?: string;
  admin?: string;
  /** A file path or nbd:// URI. */
  store: string;
  cache?: string;
}

/** The YAML config, as the file has it (sizes as strings like "64MiB"). */
export interface ConfigSpec {
  volume?: string;
  size: string;
  trackSize?: string;
  rangeTracks?: number;
  maxDirtyAgeMs?: number;
  destageIntervalMs?: number;
  flush?: 'memory' | 'disk';
  nodes: Record<string, NodeEntry>;
  [key: string]: unknown;
}

/** Write the config as YAML into dir; returns its path. */
export function writeConfig(dir: string, spec: ConfigSpec, fileName = 'twinblock.yaml'): string {
  const file = path.join(dir, fileName);
  writeFileSync(file, toYaml({ volume: 'vol0', ...spec }));
  return file;
}

// ------------------------------------------------------------------------------------ node process

export interface StartNodeOptions {
  config: ConfigSpec;
  /** Which node of config.nodes to run; default: the first. */
  nodeName?: string;
  /** Where the config (and nothing else) is written; default: a fresh temp dir. */
  dir?: string;
  startTimeoutMs?: number;
  /** Extra node(1) flags before the script, e.g. ['--cpu-prof', '--cpu-prof-dir', DIR]. */
  nodeArgs?: string[];
  /** Copy the node's stderr to ours as it comes (benchmark debugging). */
  echoStderr?: boolean;
}

export interface NodeStatus {
  node: string;
  role: string;
  pid: number;
  cache: { dirtyTracks: number; [key: string]: unknown };
  exposure: { unhardenedBytes: number; oldestDirtyAgeMs: number | null; [key: string]: unknown };
  counters: { writes: number; hardenedBytes: number; [key: string]: unknown };
  nbd: { uri: string; connections: number; [key: string]: unknown };
  [key: string]: unknown;
}

export class NodeProcess {
  private stderrText = '';
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly child: ChildProcess,
    readonly name: string,
    readonly configPath: string,
    readonly config: ConfigSpec,
    readonly nbdPort: number,
    readonly adminPort: number,
    echoStderr: boolean,
  ) {
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderrText = (this.stderrText + chunk).slice(-MAX_STDERR_CHARS);
      if (echoStderr) process.stderr.write(chunk);
    });
    // stdout is unused by `serve`, but drain it so a chatty node cannot block on a full pipe.
    child.stdout?.resume();
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** The NBD URI a host uses: nbd://127.0.0.1:PORT/VOLUME. */
  get uri(): string {
    return `nbd://127.0.0.1:${this.nbdPort}/${this.config.volume ?? 'vol0'}`;
  }

  /** https:// when the node has TLS (its admin port is HTTPS, issue 14). */
  get adminUrl(): string {
    return `${this.tlsCa === null ? 'http' : 'https'}://127.0.0.1:${this.adminPort}`;
  }

  /** The CA that signed this node's certificate (config tls.ca, top level or the node's own), or null. */
  get tlsCa(): Buffer | null {
    const tls = (this.config.nodes[this.name] as { tls?: { ca: string } } | undefined)?.tls ?? (this.config['tls'] as { ca: string } | undefined);
    return tls === undefined ? null : readFileSync(path.resolve(path.dirname(this.configPath), tls.ca));
  }

  /** GET an admin path; over HTTPS trusting the volume's CA. */
  private async adminGet(pathname: string): Promise<{ ok: boolean; status: number; text: string }> {
    return adminRequest(new URL(pathname, this.adminUrl), { method: 'GET', timeoutMs: 5000, ca: this.tlsCa });
  }

  /** The node's stderr so far (JSON log lines), at most the last 64 KiB. */
  get stderr(): string {
    return this.stderrText;
  }

  get hasExited(): boolean {
    return this.exitInfo !== null;
  }

  async status(): Promise<NodeStatus> {
    const res = await this.adminGet('/status');
    if (!res.ok) throw new Error(`GET /status: HTTP ${res.status}: ${res.text}`);
    return JSON.parse(res.text) as NodeStatus;
  }

  async metrics(): Promise<string> {
    const res = await this.adminGet('/metrics');
    if (!res.ok) throw new Error(`GET /metrics: HTTP ${res.status}`);
    return res.text;
  }

  /** Resolves when the process exits (immediately if it already has). */
  waitExit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.exited;
  }

  /**
   * SIGTERM (the clean stop: the node hardens everything first) and wait for the exit; returns the
   * exit code. A node that does not exit in time is kill -9ed and the error carries its stderr.
   */
  async stop(opts: { signal?: NodeJS.Signals; timeoutMs?: number } = {}): Promise<number | null> {
    if (!this.hasExited) this.child.kill(opts.signal ?? 'SIGTERM');
    const timeoutMs = opts.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs); });
    const result = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (result === 'timeout') {
      this.child.kill('SIGKILL');
      await this.exited;
      throw new Error(`node ${this.name} did not exit within ${timeoutMs} ms of ${opts.signal ?? 'SIGTERM'}; stderr:\n${this.stderr}`);
    }
    return result.code;
  }

  /** kill -9: a crash, nothing is hardened. */
  async kill9(): Promise<void> {
    if (!this.hasExited) this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** Fill in free ports for nodes that have none, so tests never collide. */
async function withPorts(config: ConfigSpec): Promise<ConfigSpec> {
  const nodes: Record<string, NodeEntry> = {};
  for (const [name, entry] of Object.entries(config.nodes)) {
    nodes[name] = {
      ...entry,
      nbd: entry.nbd ?? `127.0.0.1:${await freePort()}`,
      admin: entry.admin ?? `127.0.0.1:${await freePort()}`,
    };
  }
  return { ...config, nodes };
}

function portOf(address: string): number {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  if (!Number.isInteger(port) || port <= 0) throw new Error(`test helper needs a fixed port, got "${address}"`);
  return port;
}

/**
 * Start a node and wait until it serves NBD and /status. The config's ports are filled in when
 * missing; a node that exits or does not come up in time fails with its stderr in the message.
 */
export async function startNode(opts: StartNodeOptions): Promise<NodeProcess> {
  // freePort() closes its probe before the node binds, so another process on a busy CI runner can
  // take the port in between. Only ports we picked are retried; a test's own ports never are.
  const picksPorts = Object.values(opts.config.nodes).some((e) => e.nbd === undefined || e.admin === undefined);
  for (let attempt = 1; ; attempt++) {
    try {
      return await startNodeOnce(opts);
    } catch (err) {
      if (!picksPorts || attempt >= PORT_RETRIES || !/already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startNodeOnce(opts: StartNodeOptions): Promise<NodeProcess> {
  const config = await withPorts(opts.config);
  const name = opts.nodeName ?? Object.keys(config.nodes)[0];
  if (name === undefined) throw new Error('config has no nodes');
  const entry = config.nodes[name]!;
  const dir = opts.dir ?? makeTempDir();
  const configPath = writeConfig(dir, config, `${name}.yaml`);
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), cliMainPath, 'serve', '--config', configPath, '--node', name], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: dir,
  });
  track(child);
  const node = new NodeProcess(child, name, configPath, config, portOf(entry.nbd!), portOf(entry.admin!), opts.echoStderr ?? false);
  await waitUntilServing(node, opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
  return node;
}

async function waitUntilServing(node: NodeProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastProblem = 'nothing tried yet';
  while (Date.now() < deadline) {
    if (node.hasExited) {
      const { code, signal } = await node.waitExit();
      throw new Error(`node ${node.name} exited during startup (code ${code}, signal ${signal}); stderr:\n${node.stderr}`);
    }
    if (await portAccepts(node.nbdPort)) {
      try {
        const status = await node.status();
        if (status.pid !== node.pid) throw new Error(`/status pid ${status.pid} is not our node's pid ${node.pid} (port clash?)`);
        return;
      } catch (err) {
        lastProblem = `/status: ${(err as Error).message}`;
      }
    } else {
      lastProblem = `NBD port ${node.nbdPort} not accepting yet`;
    }
    await sleep(POLL_INTERVAL_MS);
  }
  await node.kill9();
  throw new Error(`node ${node.name} did not come up within ${timeoutMs} ms (${lastProblem}); stderr:\n${node.stderr}`);
}

/**
 * Run `serve` for a config expected to be refused (bad store, bad config): waits for the exit and
 * returns the outcome; a node that starts serving instead is killed when the timeout passes.
 */
export async function serveExpectingFailure(config: ConfigSpec, timeoutMs = 15_000): Promise<RunResult> {
  const full = await withPorts(config);
  const dir = makeTempDir();
  const name = Object.keys(full.nodes)[0]!;
  const configPath = writeConfig(dir, full, `${name}.yaml`);
  return run(process.execPath, [cliMainPath, 'serve', '--config', configPath, '--node', name], { timeoutMs });
}

// ------------------------------------------------------------------------------------ other servers

export interface BackgroundProcess {
  child: ChildProcess;
  port: number;
  stderr(): string;
  stop(): Promise<void>;
}

/**
 * Spawn a helper server (e.g. `nbdkit -f -p PORT memory 64M`) and wait until its port accepts
 * connections. Tracked for cleanupAll().
 */
export async function startBackground(command: string, args: string[], port: number, timeoutMs = 10_000): Promise<BackgroundProcess> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let stderrText = '';
  let exited = false;
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (c: string) => { stderrText = (stderrText + c).slice(-MAX_STDERR_CHARS); });
  child.stdout?.resume();
  const exitPromise = waitForExit(child);
  void exitPromise.then(() => { exited = true; });
  child.once('error', (err) => { stderrText += `\nspawn ${command}: ${err.message}`; });
  const deadline = Date.now() + timeoutMs;
  while (!(await portAccepts(port))) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      await exitPromise;
      throw new Error(`${command} ${args.join(' ')} did not listen on port ${port}${exited ? ' (it exited)' : ''}; stderr:\n${stderrText}`);
    }
    await sleep(POLL_INTERVAL_MS);
  }
  return {
    child,
    port,
    stderr: () => stderrText,
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      await exitPromise;
    },
  };
}

function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    // spawn failures (ENOENT) emit 'error' and may never emit 'exit'.
    child.once('error', () => resolve());
  });
}

// ------------------------------------------------------------------------------------ qemu-io

/**
 * Run qemu-io against an NBD URI with one -c per command. Note: qemu's NBD driver sends FLUSH when
 * it closes the image, whatever the cache mode (seen with qemu 7.2 and cache=unsafe), so qemu-io
 * cannot leave writes only in the node's cache; fio's nbd engine can.
 */
export function qemuIo(uri: string, commands: string[], opts: { cacheMode?: 'unsafe' | 'writeback' | 'none'; timeoutMs?: number; readOnly?: boolean } = {}): Promise<RunResult> {
  const args = ['-f', 'raw'];
  if (opts.cacheMode !== undefined) args.push('-t', opts.cacheMode);
  if (opts.readOnly === true) args.push('-r'); // a secondary's export is read-only
  args.push(uri);
  for (const c of commands) args.push('-c', c);
  return run('qemu-io', args, { timeoutMs: opts.timeoutMs ?? 60_000 });
}

/**
 * Why a qemu-io run failed, or null: a non-zero exit OR any failure line in its output (qemu-io
 * prints "Pattern verification failed" and carries on with the next -c).
 */
export function qemuIoProblem(r: RunResult): string | null {
  const text = `${r.stdout}\n${r.stderr}`;
  if (r.code !== 0 || /Pattern verification failed|failed:|error/i.test(text)) return describeRun('qemu-io', r);
  return null;
}

/** fio prints "fio: connected to NBD server" lines before its JSON; skip to the JSON. */
export function parseFioJson(stdout: string): FioReport {
  const start = stdout.search(/^\{/m);
  if (start < 0) throw new Error(`no JSON in fio output:\n${stdout.slice(0, 2000)}`);
  return JSON.parse(stdout.slice(start)) as FioReport;
}

export interface FioIoStats {
  io_bytes: number;
  iops: number;
  bw_bytes: number;
  clat_ns: { mean: number; percentile?: Record<string, number> };
  lat_ns: { mean: number; percentile?: Record<string, number> };
}

export interface FioReport {
  jobs: Array<{ jobname: string; error: number; read: FioIoStats; write: FioIoStats; [key: string]: unknown }>;
  [key: string]: unknown;
}

/**
 * Polls check() until it says ok and returns the time that took. Fails at once, with `logs()`, if
 * one of `nodes` exits meanwhile; on timeout, with the last description check() gave (or the last
 * error it threw) and `logs()`.
 */
export async function pollNodes(
  what: string, nodes: readonly NodeProcess[], check: () => Promise<{ ok: boolean; detail: string }>,
  logs: () => string, timeoutMs: number, pollMs: number,
): Promise<number> {
  const started = Date.now();
  let last = 'not checked yet';
  while (Date.now() - started < timeoutMs) {
    for (const node of nodes) {
      if (node.hasExited) {
        const { code, signal } = await node.waitExit();
        throw new Error(`waiting for ${what}: node ${node.name} exited (code ${code}, signal ${signal})\n${logs()}`);
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
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last}\n${logs()}`);
}
