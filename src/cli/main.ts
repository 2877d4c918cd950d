#!/usr/bin/env node
// The `twinblock` command (DESIGN.md "Interfaces"): serve one node of a config, run a local demo,
// or show a node's status. Startup errors are operator errors far more often than bugs (a typo in
// the config, a port in use), so they print ONE line, "twinblock: <message>", and exit 1; a stack
// trace would bury the line that says what to fix. Set TWINBLOCK_DEBUG=1 to get the stack too.
import './threadpool.js'; // first: sizes libuv's pool before any store I/O
import { mkdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Command, Option } from 'commander';
import { demoConfig, formatAddress, loadConfig, nodeByName, parseSize, type Config } from '../config/config.js';
import { createLogger, logLevels, type Logger } from '../log.js';
import { startNode, type RunningNode } from '../node/node.js';
import { adminRequest, caOf, type CaOptions } from '../admin/http-client.js';
import { formatStatus, formatUsage } from './status-format.js';
import { startDemoEtcd } from './demo-etcd.js';
import { verifyCommand } from './verify.js';

const STATUS_TIMEOUT_MS = 5000;
/**
 * Demote waits for in-flight writes, and a promote among three or more nodes for the fetch of
 * what the node lacks (a resync, as long as the data it copies): give them longer than a status
 * read. On timeout the action may still be under way on the node: the message says so.
 */
const ACTION_TIMEOUT_MS = 600_000;

function oneLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0] ?? message;
}

/** Print the one-line error (plus the stack with TWINBLOCK_DEBUG) and exit 1. */
function fail(err: unknown): never {
  process.stderr.write(`twinblock: ${oneLine(err)}\n`);
  if (process.env['TWINBLOCK_DEBUG'] && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  process.exit(1);
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * First SIGTERM/SIGINT: stop the node, which hardens every dirty track before it returns, then
 * exit 0. A store that fails meanwhile does not end the stop: the node logs it and keeps trying
 * (it may hold acknowledged writes nobody else holds; Volume.stop), so it exits 1 only on a fault
 * after everything is hardened (closing the store, the last metadata write). A second signal
 * means the operator will not wait: exit 1 at once (unhardened data in this node's RAM is lost; a
 * primary hardens before it leaves the link, so a peer still connected holds all of it).
 */
function stopOnSignals(node: RunningNode, log: Logger): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now, without waiting for hardening');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'stopping: hardening all dirty data (signal again to exit at once)');
    node.stop().then(
      () => {
        log.info('stopped cleanly');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/** After startup, a crash is logged as a structured fatal line (the log is where operators look). */
function exitOnCrash(log: Logger): void {
  const crash = (err: unknown): void => {
    log.fatal({ err }, 'crashed');
    process.exit(1);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
}

interface LogOptions {
  logFormat?: 'json' | 'pretty';
  logLevel?: string;
}

async function runNode(config: Config, nodeName: string, log: Logger): Promise<RunningNode> {
  const node = await startNode(config, nodeName, log);
  stopOnSignals(node, log);
  exitOnCrash(log);
  return node;
}

async function serveCommand(opts: LogOptions & { config: string; node: string }): Promise<void> {
  const config = loadConfig(opts.config);
  nodeByName(config, opts.node);
  const log = createLogger({ format: opts.logFormat, level: opts.logLevel, bindings: { node: opts.node, volume: config.volume } });
  const node = await runNode(config, opts.node, log);
  log.info({ nbdPort: node.nbdPort, adminPort: node.adminPort, config: config.sourcePath }, 'serving');
}

async function demoCommand(opts: LogOptions & { dir: string; size: string; nodes: string; arbiter?: boolean }): Promise<void> {
  let sizeBytes: number;
  try {
    sizeBytes = parseSize(opts.size);
  } catch (err) {
    throw new Error(`--size: ${oneLine(err)}`);
  }
  const nodeCount = Number(opts.nodes);
  if (!Number.isInteger(nodeCount) || nodeCount < 2 || nodeCount > 8) throw new Error(`--nodes: must be a whole number from 2 to 8 (got "${opts.nodes}")`);
  const dir = path.resolve(opts.dir);
  mkdirSync(dir, { recursive: true });
  const etcd = opts.arbiter === true ? await startDemoEtcd(dir) : null;
  // A fresh link secret per run: the demo's links are authenticated like a real volume's.
  const config = demoConfig(dir, sizeBytes, randomBytes(24).toString('base64url'), nodeCount, etcd === null ? null : [etcd.url]);
  // A demo is watched by a person: readable logs unless they asked otherwise.
  const format = opts.logFormat ?? (process.env['TWINBLOCK_LOG'] === 'json' ? 'json' : 'pretty');
  const logs = config.nodes.map((n) => createLogger({ format, level: opts.logLevel, bindings: { node: n.name, volume: config.volume } }));
  const nodes: RunningNode[] = [];
  for (const [i, n] of config.nodes.entries()) nodes.push(await startNode(config, n.name, logs[i]!));
  const pair: RunningNode = {
    nbdPort: nodes[0]!.nbdPort,
    adminPort: nodes[0]!.adminPort,
    status: () => nodes[0]!.status(),
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop()));
      await etcd?.stop();
    },
  };
  stopOnSignals(pair, logs[0]!);
  exitOnCrash(logs[0]!);
  const what = nodeCount === 2 ? 'a mirrored pair' : `${nodeCount} mirrored nodes (ack: ${config.ack}, quorum: ${config.quorum})`;
  const lines = [`twinblock demo: volume "${config.volume}", ${opts.size}, ${what} with stores in ${dir}`];
  config.nodes.forEach((n, i) => {
    const nbdUri = `nbd://${formatAddress({ host: n.nbd.host, port: nodes[i]!.nbdPort })}/${config.volume}`;
    const adminUrl = `http://${formatAddress({ host: n.admin.host, port: nodes[i]!.adminPort })}`;
    const role = n.name === config.primary ? 'primary (read-write)' : 'secondary (read-only)';
    lines.push(`  node ${n.name}, ${role}:`, `    NBD:    ${nbdUri}`, `    admin:  ${adminUrl}/status   ${adminUrl}/metrics`);
  });
  const primaryUri = `nbd://${formatAddress({ host: config.nodes[0]!.nbd.host, port: nodes[0]!.nbdPort })}/${config.volume}`;
  const secondaryUri = `nbd://${formatAddress({ host: config.nodes[1]!.nbd.host, port: nodes[1]!.nbdPort })}/${config.volume}`;
  lines.push(
    `  try:    qemu-io -f raw -c 'write -P 0xab 0 1M' ${primaryUri}`,
    `          qemu-io -f raw -r -c 'read -P 0xab 0 1M' ${secondaryUri}`,
    `          twinblock status --admin http://${formatAddress(config.nodes[0]!.admin)}`,
    ...(etcd === null ? [] : [
      `  arbiter: etcd at ${etcd.url} (data in ${etcd.dataDir}): a holds the leader lease`,
      `          twinblock demote --admin http://${formatAddress(config.nodes[0]!.admin)}   # b takes over on its own`,
    ]),
    '  Ctrl-C hardens everything on every node and stops them.',
    '',
  );
  process.stdout.write(lines.join('\n'));
}

/** Accepts "http://h:p", "h:p" or with a trailing slash; returns the /status URL. */
function statusUrl(admin: string): URL {
  const withScheme = /^[a-z]+:\/\//i.test(admin) ? admin : `http://${admin}`;
  try {
    return new URL('status', withScheme.endsWith('/') ? withScheme : `${withScheme}/`);
  } catch {
    throw new Error(`bad admin URL "${admin}" (use e.g. http://127.0.0.1:8801)`);
  }
}

/** GETs an admin endpoint: unreachable, or an answer that is not JSON, is a one-line error. */
async function getAdminJson(url: URL, ca: Buffer | null): Promise<{ ok: boolean; status: number; body: unknown; text: string }> {
  const { ok, status, text } = await adminRequest(url, { method: 'GET', timeoutMs: STATUS_TIMEOUT_MS, ca });
  try {
    return { ok, status, body: JSON.parse(text) as unknown, text };
  } catch {
    if (!ok) throw new Error(`admin at ${url.origin} answered HTTP ${status}: ${text.trim().split('\n')[0] ?? ''}`);
    throw new Error(`admin at ${url.origin} did not answer JSON on ${url.pathname}`);
  }
}

/** GET /status; anything but a JSON 200 is a one-line error. */
async function fetchStatus(opts: { admin: string }, ca: Buffer | null): Promise<unknown> {
  const url = statusUrl(opts.admin);
  const { ok, status, body, text } = await getAdminJson(url, ca);
  if (!ok) throw new Error(`admin at ${url.origin} answered HTTP ${status}: ${text.trim().split('\n')[0] ?? ''}`);
  return body;
}

async function statusCommand(opts: CaOptions & { admin: string; json?: boolean }): Promise<void> {
  const body = await fetchStatus(opts, caOf(opts));
  process.stdout.write(opts.json ? `${JSON.stringify(body, null, 2)}\n` : formatStatus(body));
}

async function usageCommand(opts: CaOptions & { admin: string; since?: string; json?: boolean }): Promise<void> {
  const url = new URL('usage', statusUrl(opts.admin));
  if (opts.since !== undefined) url.searchParams.set('since', opts.since);
  const { ok, status, body } = await getAdminJson(url, caOf(opts));
  const answer = (body ?? {}) as Record<string, unknown>;
  if (!ok) throw new Error(`usage refused by ${url.origin}: ${typeof answer['error'] === 'string' ? answer['error'] : `HTTP ${status}`}`);
  process.stdout.write(opts.json === true ? `${JSON.stringify(answer, null, 2)}\n` : formatUsage(answer));
}

function logOptions(command: Command): Command {
  return command
    .addOption(new Option('--log-format <format>', 'log format on stderr (env TWINBLOCK_LOG)').choices(['json', 'pretty']))
    .addOption(new Option('--log-level <level>', 'log level (env TWINBLOCK_LOG_LEVEL; default info)').choices([...logLevels]));
}

function buildProgram(): Command {
  const program = new Command('twinblock')
    .description('Mirrored network block device: writes acknowledged from two RAM caches, hardened later')
    .version(packageVersion())
    .configureOutput({ outputError: (text, write) => write(`twinblock: ${text.replace(/^error: /, '')}`) });
  logOptions(program.command('serve').description('serve one node of a volume')
    .requiredOption('--config <file>', 'volume configuration (YAML)')
    .requiredOption('--node <name>', 'which node of the config this process is'))
    .action((opts: LogOptions & { config: string; node: string }) => serveCommand(opts));
  logOptions(program.command('demo').description('run a local mirrored volume (primary a, secondary b, and c... with --nodes) with file stores and print how to use it')
    .option('--dir <dir>', 'directory for the store files', './twinblock-demo')
    .option('--size <size>', 'volume size, e.g. 1GiB', '1GiB')
    .option('--nodes <n>', 'how many nodes, 2 to 8', '2')
    .option('--arbiter', 'fail over on its own: start an etcd (found on PATH) and name it as the arbiter'))
    .action((opts: LogOptions & { dir: string; size: string; nodes: string; arbiter?: boolean }) => demoCommand(opts));
  caOptions(program.command('status').description("show a node's status")
    .option('--admin <url>', "the node's admin URL", 'http://127.0.0.1:8801')
    .option('--json', 'print the raw /status JSON'))
    .action((opts: CaOptions & { admin: string; json?: boolean }) => statusCommand(opts));
  caOptions(program.command('usage').description("a node's usage since metering began (or --since): host I/O, mirrored and resync bytes, GiB-hours, time per role")
    .option('--admin <url>', "the node's admin URL", 'http://127.0.0.1:8801')
    .option('--since <time>', 'only the usage logged since this time (ISO 8601; needs usageLog)')
    .option('--json', 'print the raw /usage JSON'))
    .action((opts: CaOptions & { admin: string; since?: string; json?: boolean }) => usageCommand(opts));
  tokenOptions(program.command('promote').description('make a secondary the primary (bumps and persists the epoch)')
    .requiredOption('--admin <url>', "the node's admin URL")
    .option('--force', 'promote even while a connected peer is primary or this node is mid-resync (risks split brain)'))
    .action((opts: TokenOptions & { admin: string; force?: boolean }) => actionCommand(opts, 'promote', { force: opts.force === true }));
  tokenOptions(program.command('demote').description('make a primary secondary (in-flight writes complete first)')
    .requiredOption('--admin <url>', "the node's admin URL"))
    .action((opts: TokenOptions & { admin: string }) => actionCommand(opts, 'demote', {}));
  tokenOptions(program.command('resolve').description('end a split brain: this node discards its changes and resyncs from its peer')
    .requiredOption('--admin <url>', "the node's admin URL")
    .requiredOption('--discard-local', 'required: this node is the side whose changes are discarded'))
    .action((opts: TokenOptions & { admin: string; discardLocal?: boolean }) => actionCommand(opts, 'resolve', { discardLocal: opts.discardLocal === true }));
  tokenOptions(program.command('verify').description("online verify: compare every track's checksum with a secondary's while both serve; waits for the end and prints the differing tracks")
    .requiredOption('--admin <url>', "the primary's admin URL")
    .option('--peer <node>', 'the secondary to compare with (needed with two or more secondaries)')
    .option('--resync', 'make the differing tracks out of sync for that peer and resend them'))
    .action((opts: TokenOptions & { admin: string; peer?: string; resync?: boolean }) => {
      const ca = caOf(opts); // once: the command polls /status until the verify ends
      return verifyCommand(opts, {
        start: (body) => postAction(opts, 'verify', body, ca),
        status: async () => (await fetchStatus(opts, ca)) as Record<string, unknown>,
        out: (text) => process.stdout.write(text),
        progress: (text) => process.stderr.write(text),
        sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      });
    });
  return program;
}

interface TokenOptions extends CaOptions { token?: string; config?: string }

/** --ca for https:// admin URLs (env TWINBLOCK_CA; or --config's tls.ca). */
function caOptions(command: Command, withConfig = true): Command {
  command.option('--ca <file>', "the CA that signed the node's certificate, for https:// admin URLs (env TWINBLOCK_CA; or --config's tls.ca)");
  return withConfig ? command.option('--config <file>', 'read the CA (tls.ca) from this volume config') : command;
}

/** --token, else TWINBLOCK_ADMIN_TOKEN, else --config's adminToken (issue 14 item 3). */
function tokenOptions(command: Command): Command {
  return caOptions(command, false)
    .option('--token <token>', "the nodes' admin token (env TWINBLOCK_ADMIN_TOKEN; or --config)")
    .option('--config <file>', 'read the admin token (adminToken or adminTokenFile) and the CA (tls.ca) from this volume config');
}

function adminTokenOf(opts: TokenOptions): string | null {
  if (opts.token !== undefined) return opts.token;
  const env = process.env['TWINBLOCK_ADMIN_TOKEN'];
  if (env !== undefined && env !== '') return env;
  return opts.config === undefined ? null : loadConfig(opts.config).adminToken;
}

/** POST an admin action and print its answer; a refusal (HTTP 401, 409) is a one-line error and exit 1. */
async function actionCommand(opts: TokenOptions & { admin: string }, action: string, body: Record<string, unknown>): Promise<void> {
  const answer = await postAction(opts, action, body, caOf(opts));
  process.stdout.write(`${action}: done ${JSON.stringify(answer)}\n`);
}

/** POST an admin action; its JSON answer, or a one-line error for a refusal. */
async function postAction(opts: TokenOptions & { admin: string }, action: string, body: Record<string, unknown>, ca: Buffer | null): Promise<Record<string, unknown>> {
  const url = new URL(action, statusUrl(opts.admin));
  const token = adminTokenOf(opts);
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) };
  let text: string;
  let ok: boolean;
  try {
    ({ ok, text } = await adminRequest(url, { method: 'POST', body: JSON.stringify(body), headers, timeoutMs: ACTION_TIMEOUT_MS, ca }));
  } catch (err) {
    const timedOut = (err as { timedOut?: boolean }).timedOut === true;
    throw new Error(`${(err as Error).message}${timedOut ? ` (the ${action} may still be under way there: see twinblock status)` : ''}`);
  }
  let answer: Record<string, unknown> = {};
  try {
    answer = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // keep the raw text for the message below
  }
  if (!ok) throw new Error(`${action} refused by ${url.origin}: ${typeof answer['error'] === 'string' ? answer['error'] : text.trim()}`);
  return answer;
}

buildProgram().parseAsync(process.argv).catch(fail);
