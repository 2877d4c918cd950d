// The volume configuration (YAML; DESIGN.md "Interfaces"). Parsing happens in two steps: zod checks
// the shape (strict: an unknown key is an error, because a misspelt "maxDirtyAgeMS" silently
// falling back to its default would quietly change how much data a power cut can lose), then plain
// code checks values and cross-field rules and applies defaults. Every failure becomes ONE line
// naming the file and the key path, e.g.
//   config /etc/twinblock.yaml: nodes.a.cache: bad size "12XB" (use e.g. 64KiB, 1GiB)
// because the CLI prints exactly that line and exits.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { formatSize, parseSize } from './size.js';
import { buildTls, nbdTlsModes, tlsSchema, type NbdTlsMode, type TlsFiles } from './tls-config.js';

export { formatSize, parseSize, SizeError } from './size.js';
export type { NbdTlsMode, TlsFiles } from './tls-config.js';

export type TrackerKind = 'destage-scan' | 'toggle-counter' | 'selective';
export type FlushPolicy = 'memory' | 'disk';
export type DegradedPolicy = 'write-through' | 'write-back';
/** When a host write is answered: every connected in-sync secondary holds it, or a majority of the nodes (issue 12). */
export type AckPolicy = 'all' | 'quorum';
/** Whether a primary needs a majority of the configured nodes (itself included) to accept writes. */
export type QuorumPolicy = 'off' | 'majority';
/** What a primary without quorum does with host writes: hold them until quorum returns, or fail them. */
export type NoQuorumPolicy = 'suspend-io' | 'io-error';

export interface Address {
  host: string;
  /** 0 means "any free port" (tests); the running node reports the real one. */
  port: number;
}

/** Where a node's non-volatile media lives (seed Fig. 2: local disk or remote disk over NBD). */
export type StoreLocation =
  | { kind: 'file'; /** absolute */ path: string }
  | { kind: 'nbd'; host: string; port: number; exportName: string; uri: string };

export interface NodeConfig {
  name: string;
  /** Where this node serves NBD to hosts. */
  nbd: Address;
  /** Where this node listens for its peer; null only for a standalone node that did not set it. */
  link: Address | null;
  /** HTTP status / metrics / actions. */
  admin: Address;
  store: StoreLocation;
  cacheBytes: number;
  /** Where the node metadata lives; null: beside a file store, or beside the config for nbd://. */
  metadata: string | null;
  /** This node's certificate, key and CA (issue 14): mutual TLS on the link, HTTPS on admin, NBD STARTTLS; null: none. */
  tls: TlsFiles | null;
}

/** A validated configuration with every default applied. */
export interface Config {
  /** Absolute path of the YAML file, or null for demoConfig / parseConfigText. */
  sourcePath: string | null;
  /** NBD export name. */
  volume: string;
  sizeBytes: number;
  trackSizeBytes: number;
  rangeTracks: number;
  tracker: TrackerKind;
  flush: FlushPolicy;
  maxDirtyAgeMs: number;
  destageIntervalMs: number;
  rangeDirtyThresholdTracks: number;
  degraded: DegradedPolicy;
  ack: AckPolicy;
  quorum: QuorumPolicy;
  onNoQuorum: NoQuorumPolicy;
  /** Upper bound on a resync's bandwidth, bytes per second: its rate with no host writes. */
  syncRateBytesPerSec: number;
  /** While host writes run, a resync yields down to this (issue 14 item 6; DRBD's c-min-rate); at syncRate it never yields. */
  syncMinRateBytesPerSec: number;
  /** Online verify (issue 14 item 4): bytes of tracks compared per second, on each node. */
  verifyRateBytesPerSec: number;
  /** A link silent this long is dead (the peer is lost); heartbeats go out at a quarter of it. */
  heartbeatTimeoutMs: number;
  /** NBD client connections open at once (handshake or transmission); one more is closed at accept. */
  nbdMaxConnections: number;
  /** From accept to the transmission phase: a client still negotiating after this is dropped. */
  nbdHandshakeTimeoutMs: number;
  /** After a reply at low queue depth, keep polling for the next event this long (src/node/busy-poll.ts); 0: never (the default with flush: disk). */
  busyPollUs: number;
  /** Shared link secret; null when standalone and not given. */
  secret: string | null;
  primary: string;
  /** In file order; one node is standalone, two are a pair. */
  nodes: NodeConfig[];
  /** Unattended failover through etcd (issue 13); null: promotions are the operator's. */
  arbiter: ArbiterConfig | null;
  /**
   * The bearer token every mutating admin request needs (issue 14 item 3); null: none, allowed
   * only while every node's admin address is on loopback.
   */
  adminToken: string | null;
  /** Issue 14 item 7: where each usage interval is appended (CloudEvents JSON lines); null: nowhere. */
  usageLog: string | null;
  usageIntervalMs: number;
  /** NBD STARTTLS for hosts (issue 14 item 2): off, offered (on), or required. */
  nbdTls: NbdTlsMode;
}

export interface ArbiterConfig {
  /** http://host:port of each etcd member (its client URL). */
  etcd: string[];
  /** The leader's lease; etcd counts leases in whole seconds, so a multiple of 1000, at least 2000. */
  leaseTtlMs: number;
  /** Keys live under PREFIX/VOLUME/. */
  prefix: string;
  autoFailover: boolean;
}

/** Any invalid configuration; message is one line, ready for "twinblock: <message>". */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export const defaults = {
  trackSizeBytes: 64 * 1024,
  rangeTracks: 64,
  tracker: 'destage-scan' as TrackerKind,
  flush: 'memory' as FlushPolicy,
  maxDirtyAgeMs: 5000,
  destageIntervalMs: 1000,
  degraded: 'write-through' as DegradedPolicy,
  ack: 'all' as AckPolicy,
  onNoQuorum: 'suspend-io' as NoQuorumPolicy,
  syncRateBytesPerSec: 200 * 1024 * 1024,
  syncMinRateBytesPerSec: 4 * 1024 * 1024,
  verifyRateBytesPerSec: 100 * 1024 * 1024,
  heartbeatTimeoutMs: 1000,
  leaseTtlMs: 2000,
  usageIntervalMs: 60_000,
  nbdMaxConnections: 1024,
  nbdHandshakeTimeoutMs: 10_000,
  busyPollUs: 100,
  cacheBytes: 256 * 1024 * 1024,
} as const;

export const limits = {
  sectorBytes: 512,
  minTrackSizeBytes: 4 * 1024,
  maxTrackSizeBytes: 16 * 1024 * 1024,
  minCacheTracks: 4,
  minMsValue: 10,
  minSecretChars: 16,
  maxNodes: 8,
  /** A window of 10 ms is already a core spent per request at QD1: anything longer is a mistake. */
  maxBusyPollUs: 10_000,
} as const;

const namePattern = /^[A-Za-z0-9._-]+$/;

// ---------------------------------------------------------------------------------------------
// Step 1: shape (zod). Sizes stay unknown here; step 2 parses them so the message can name the
// key path the same way for every field.

const trackerKinds = ['destage-scan', 'toggle-counter', 'selective'] as const;
const intField = z.number().int();

const nodeSchema = z.strictObject({
  nbd: z.string(),
  link: z.string().optional(),
  admin: z.string(),
  store: z.string(),
  cache: z.unknown().optional(),
  metadata: z.string().optional(),
  tls: tlsSchema.optional(),
});

const fileSchema = z.strictObject({
  volume: z.string(),
  size: z.unknown().refine((v) => v !== undefined),
  trackSize: z.unknown().optional(),
  rangeTracks: intField.optional(),
  tracker: z.enum(trackerKinds).optional(),
  flush: z.enum(['memory', 'disk']).optional(),
  maxDirtyAgeMs: intField.optional(),
  destageIntervalMs: intField.optional(),
  rangeDirtyThresholdTracks: intField.optional(),
  degraded: z.enum(['write-through', 'write-back']).optional(),
  ack: z.enum(['all', 'quorum']).optional(),
  quorum: z.enum(['off', 'majority']).optional(),
  onNoQuorum: z.enum(['suspend-io', 'io-error']).optional(),
  syncRate: z.unknown().optional(),
  syncMinRate: z.unknown().optional(),
  verifyRate: z.unknown().optional(),
  heartbeatTimeoutMs: intField.optional(),
  nbdMaxConnections: intField.optional(),
  nbdHandshakeTimeoutMs: intField.optional(),
  busyPollUs: intField.optional(),
  secret: z.string().optional(),
  primary: z.string().optional(),
  nodes: z.record(z.string(), nodeSchema),
  adminToken: z.string().optional(),
  usageLog: z.string().optional(),
  usageIntervalMs: intField.optional(),
  adminTokenFile: z.string().optional(),
  tls: tlsSchema.optional(),
  nbdTls: z.enum(nbdTlsModes).optional(),
  arbiter: z.strictObject({
    etcd: z.array(z.string()).min(1),
    leaseTtlMs: intField.optional(),
    prefix: z.string().optional(),
    autoFailover: z.boolean().optional(),
  }).optional(),
});

type RawConfig = z.infer<typeof fileSchema>;

/** A value error at a key path; turned into a ConfigError with the source name in front. */
class FieldError extends Error {
  constructor(readonly keyPath: string, message: string) {
    super(message);
  }
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'string') return `"${value}"`;
  if (typeof value === 'number' || typeof value === 'boolean') return `${typeof value} ${value}`;
  return Array.isArray(value) ? 'a list' : 'a mapping';
}

const expectedNames: Record<string, string> = { record: 'a mapping', object: 'a mapping', int: 'an integer', number: 'a number', string: 'a string' };

function formatIssue(issue: z.core.$ZodIssue): FieldError {
  const keyPath = issue.path.map(String).join('.');
  switch (issue.code) {
    case 'unrecognized_keys': {
      const shape = issue.path.length === 0 ? fileSchema.shape : issue.path.at(-1) === 'tls' ? tlsSchema.shape : issue.path[0] === 'arbiter' ? fileSchema.shape.arbiter.unwrap().shape : nodeSchema.shape;
      const known = Object.keys(shape);
      const key = issue.keys[0] ?? '?';
      return new FieldError(keyPath === '' ? key : `${keyPath}.${key}`, `unknown key (known keys here: ${known.join(', ')})`);
    }
    case 'invalid_type': {
      if (issue.input === undefined) return new FieldError(keyPath, 'missing (required)');
      const expected = expectedNames[issue.expected] ?? `a ${issue.expected}`;
      const hint = issue.expected === 'string' && typeof issue.input === 'number' ? ' (quote it)' : '';
      return new FieldError(keyPath, `expected ${expected}, got ${describeValue(issue.input)}${hint}`);
    }
    case 'invalid_value':
      return new FieldError(keyPath, `must be one of ${issue.values.join(', ')} (got ${describeValue(issue.input)})`);
    case 'custom':
      return new FieldError(keyPath, 'missing (required)');
    default:
      return new FieldError(keyPath, issue.message);
  }
}

function checkShape(data: unknown): RawConfig {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new FieldError('', `expected a YAML mapping at the top level, got ${describeValue(data)}`);
  }
  const result = fileSchema.safeParse(data, { reportInput: true });
  if (result.success) return result.data;
  // A misspelt key usually also makes a required key "missing": name the misspelling first.
  const issues = [...result.error.issues].sort(
    (a, b) => Number(b.code === 'unrecognized_keys') - Number(a.code === 'unrecognized_keys'),
  );
  throw formatIssue(issues[0]!);
}

// ---------------------------------------------------------------------------------------------
// Step 2: values, cross-field rules, defaults.

function sizeField(keyPath: string, value: unknown, fallback?: number): number {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new FieldError(keyPath, `expected a size such as 64KiB or 1GiB, got ${describeValue(value)}`);
  }
  try {
    return parseSize(value);
  } catch (err) {
    throw new FieldError(keyPath, (err as Error).message);
  }
}

function atLeast(keyPath: string, value: number, minimum: number): number {
  if (value < minimum) throw new FieldError(keyPath, `must be at least ${minimum} (got ${value})`);
  return value;
}

function atMost(keyPath: string, value: number, maximum: number): number {
  if (value > maximum) throw new FieldError(keyPath, `must be at most ${maximum} (got ${value})`);
  return value;
}

/** "host:port" or "[ipv6]:port"; port 0 asks for any free port. */
export function parseAddress(text: string): Address {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[3]) : NaN;
  if (match === null || port > 65535) {
    throw new Error(`bad address "${text}" (use host:port, e.g. 127.0.0.1:10809)`);
  }
  return { host: match[1] ?? match[2] ?? '', port };
}

export function formatAddress(address: Address): string {
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

function addressField(keyPath: string, text: string): Address {
  try {
    return parseAddress(text);
  } catch (err) {
    throw new FieldError(keyPath, (err as Error).message);
  }
}

function storeField(keyPath: string, text: string, baseDir: string): StoreLocation {
  if (text.trim() === '') throw new FieldError(keyPath, 'empty store path');
  if (!text.startsWith('nbd://')) return { kind: 'file', path: path.resolve(baseDir, text) };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new FieldError(keyPath, `bad store URI "${text}" (use nbd://host:port/export)`);
  }
  if (url.hostname === '') throw new FieldError(keyPath, `bad store URI "${text}": no host`);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = url.port === '' ? 10809 : Number(url.port);
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  return { kind: 'nbd', host, port, exportName, uri: text };
}

function buildNode(name: string, raw: RawConfig['nodes'][string], ctx: { baseDir: string; mirrored: boolean; trackSizeBytes: number }): NodeConfig {
  const at = `nodes.${name}`;
  if (!namePattern.test(name)) throw new FieldError(at, 'node names may use only A-Z a-z 0-9 . _ -');
  // Full mesh (issue 12): every node links to every other, so a node promoted later mirrors at once.
  if (ctx.mirrored && raw.link === undefined) throw new FieldError(`${at}.link`, 'missing (required when there are 2 or more nodes)');
  const cacheBytes = sizeField(`${at}.cache`, raw.cache, defaults.cacheBytes);
  const minCacheBytes = limits.minCacheTracks * ctx.trackSizeBytes;
  if (cacheBytes < minCacheBytes) {
    throw new FieldError(`${at}.cache`, `${formatSize(cacheBytes)} is too small: at least ${limits.minCacheTracks} tracks (${formatSize(minCacheBytes)})`);
  }
  return {
    name,
    nbd: addressField(`${at}.nbd`, raw.nbd),
    link: raw.link === undefined ? null : addressField(`${at}.link`, raw.link),
    admin: addressField(`${at}.admin`, raw.admin),
    store: storeField(`${at}.store`, raw.store, ctx.baseDir),
    cacheBytes,
    metadata: raw.metadata === undefined ? null : path.resolve(ctx.baseDir, raw.metadata),
    tls: null,
  };
}

function checkGeometry(raw: RawConfig): Pick<Config, 'sizeBytes' | 'trackSizeBytes' | 'rangeTracks' | 'rangeDirtyThresholdTracks'> {
  const sizeBytes = sizeField('size', raw.size);
  if (sizeBytes <= 0 || sizeBytes % limits.sectorBytes !== 0) {
    throw new FieldError('size', `must be a positive multiple of ${limits.sectorBytes} bytes (got ${sizeBytes})`);
  }
  const trackSizeBytes = sizeField('trackSize', raw.trackSize, defaults.trackSizeBytes);
  const isPowerOfTwo = trackSizeBytes > 0 && (trackSizeBytes & (trackSizeBytes - 1)) === 0;
  if (!isPowerOfTwo || trackSizeBytes < limits.minTrackSizeBytes || trackSizeBytes > limits.maxTrackSizeBytes) {
    throw new FieldError('trackSize', `must be a power of two from ${formatSize(limits.minTrackSizeBytes)} to ${formatSize(limits.maxTrackSizeBytes)} (got ${trackSizeBytes})`);
  }
  const rangeTracks = atLeast('rangeTracks', raw.rangeTracks ?? defaults.rangeTracks, 1);
  // Default: the whole range. Each early destage of a range is a notice cycle with the peer (seed
  // Fig. 5, steps 70-90) run on both nodes' event loops, so a lower threshold delays host writes on
  // every busy range without bounding anything the age bound, LRU pressure and the destage scan do
  // not already bound (docs/benchmarks.md, "Fewer destage cycles").
  const rangeDirtyThresholdTracks = atLeast('rangeDirtyThresholdTracks', raw.rangeDirtyThresholdTracks ?? rangeTracks, 1);
  if (rangeDirtyThresholdTracks > rangeTracks) {
    throw new FieldError('rangeDirtyThresholdTracks', `must not exceed rangeTracks (${rangeTracks})`);
  }
  return { sizeBytes, trackSizeBytes, rangeTracks, rangeDirtyThresholdTracks };
}

/** Two listeners on one host:port would fail at startup with a less helpful message. */
function checkDistinctListeners(nodes: NodeConfig[]): void {
  const seen = new Map<string, string>();
  for (const node of nodes) {
    const listeners: Array<[string, Address | null]> = [['nbd', node.nbd], ['link', node.link], ['admin', node.admin]];
    for (const [kind, address] of listeners) {
      if (address === null || address.port === 0) continue;
      const key = formatAddress(address);
      const other = seen.get(key);
      if (other !== undefined) throw new FieldError(`nodes.${node.name}.${kind}`, `${key} is already used by ${other}`);
      seen.set(key, `nodes.${node.name}.${kind}`);
    }
  }
}

function buildConfig(raw: RawConfig, baseDir: string, sourcePath: string | null): Config {
  if (!namePattern.test(raw.volume)) throw new FieldError('volume', `"${raw.volume}" is not a valid export name: use only A-Z a-z 0-9 . _ -`);
  const geometry = checkGeometry(raw);
  const names = Object.keys(raw.nodes);
  if (names.length === 0) throw new FieldError('nodes', 'at least one node is required');
  if (names.length > limits.maxNodes) throw new FieldError('nodes', `at most ${limits.maxNodes} nodes are supported (got ${names.length})`);
  const mirrored = names.length >= 2;
  const nodes = names.map((name) => buildNode(name, raw.nodes[name]!, { baseDir, mirrored, trackSizeBytes: geometry.trackSizeBytes }));
  checkDistinctListeners(nodes);
  const nbdTls = raw.nbdTls ?? 'off';
  const tls = buildTls(raw.tls, names.map((name) => ({ name, tls: raw.nodes[name]!.tls })), nbdTls, baseDir);
  if ('keyPath' in tls) throw new FieldError(tls.keyPath, tls.message);
  nodes.forEach((node, i) => { node.tls = tls.perNode[i]!; });
  const primary = raw.primary ?? names[0]!;
  if (!names.includes(primary)) throw new FieldError('primary', `"${primary}" is not one of the nodes (${names.join(', ')})`);
  if (raw.secret === undefined && mirrored) throw new FieldError('secret', 'missing (required when there are 2 or more nodes: it authenticates the links)');
  if (raw.secret !== undefined && raw.secret.length < limits.minSecretChars) {
    throw new FieldError('secret', `too short: at least ${limits.minSecretChars} characters`);
  }
  const flush = raw.flush ?? defaults.flush;
  return {
    sourcePath,
    volume: raw.volume,
    ...geometry,
    tracker: raw.tracker ?? defaults.tracker,
    flush,
    maxDirtyAgeMs: atLeast('maxDirtyAgeMs', raw.maxDirtyAgeMs ?? defaults.maxDirtyAgeMs, limits.minMsValue),
    destageIntervalMs: atLeast('destageIntervalMs', raw.destageIntervalMs ?? defaults.destageIntervalMs, limits.minMsValue),
    degraded: raw.degraded ?? defaults.degraded,
    ack: raw.ack ?? defaults.ack,
    // Issue 12: majority by default from three nodes on; a pair keeps serving when one side is lost.
    quorum: raw.quorum ?? (nodes.length >= 3 ? 'majority' : 'off'),
    onNoQuorum: raw.onNoQuorum ?? defaults.onNoQuorum,
    ...syncRates(raw),
    verifyRateBytesPerSec: atLeast('verifyRate', sizeField('verifyRate', raw.verifyRate, defaults.verifyRateBytesPerSec), 1024 * 1024),
    heartbeatTimeoutMs: atLeast('heartbeatTimeoutMs', raw.heartbeatTimeoutMs ?? defaults.heartbeatTimeoutMs, 100),
    nbdMaxConnections: atLeast('nbdMaxConnections', raw.nbdMaxConnections ?? defaults.nbdMaxConnections, 1),
    nbdHandshakeTimeoutMs: atLeast('nbdHandshakeTimeoutMs', raw.nbdHandshakeTimeoutMs ?? defaults.nbdHandshakeTimeoutMs, 100),
    // With flush: disk every FLUSH waits milliseconds on disks, and the hardening that follows it
    // needs the vCPU polling would hold: measured, a write after a FLUSH took 60-100 µs longer
    // (docs/benchmarks.md, "Busy polling at low depth"). So by default only flush: memory polls.
    busyPollUs: atMost('busyPollUs', atLeast('busyPollUs', raw.busyPollUs ?? (flush === 'disk' ? 0 : defaults.busyPollUs), 0), limits.maxBusyPollUs),
    secret: raw.secret ?? null,
    primary,
    nodes,
    arbiter: buildArbiter(raw, mirrored),
    adminToken: buildAdminToken(raw, baseDir, nodes),
    usageLog: raw.usageLog === undefined ? null : path.resolve(baseDir, raw.usageLog),
    usageIntervalMs: atLeast('usageIntervalMs', raw.usageIntervalMs ?? defaults.usageIntervalMs, 100),
    nbdTls,
  };
}

/** syncRate (the ceiling) and syncMinRate (the floor a resync yields to, at most the ceiling). */
function syncRates(raw: RawConfig): Pick<Config, 'syncRateBytesPerSec' | 'syncMinRateBytesPerSec'> {
  const syncRateBytesPerSec = atLeast('syncRate', sizeField('syncRate', raw.syncRate, defaults.syncRateBytesPerSec), 1024 * 1024);
  const floor = atLeast('syncMinRate', sizeField('syncMinRate', raw.syncMinRate, Math.min(defaults.syncMinRateBytesPerSec, syncRateBytesPerSec)), 64 * 1024);
  if (floor > syncRateBytesPerSec) throw new FieldError('syncMinRate', `${formatSize(floor)} exceeds syncRate (${formatSize(syncRateBytesPerSec)})`);
  return { syncRateBytesPerSec, syncMinRateBytesPerSec: floor };
}

/** Loopback: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * adminToken, or adminTokenFile (its first line; relative to the config's directory). Without
 * either, every admin address must be on loopback: anyone who can reach the port could promote,
 * demote or discard a node's data (issue 14 item 3).
 */
function buildAdminToken(raw: RawConfig, baseDir: string, nodes: NodeConfig[]): string | null {
  if (raw.adminToken !== undefined && raw.adminTokenFile !== undefined) throw new FieldError('adminTokenFile', 'give adminToken or adminTokenFile, not both');
  let token: string | null = raw.adminToken ?? null;
  if (raw.adminTokenFile !== undefined) {
    const file = path.resolve(baseDir, raw.adminTokenFile);
    try {
      token = (readFileSync(file, 'utf8').split('\n')[0] ?? '').trim();
    } catch (err) {
      throw new FieldError('adminTokenFile', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  if (token !== null && token.length < limits.minSecretChars) throw new FieldError(raw.adminTokenFile === undefined ? 'adminToken' : 'adminTokenFile', `too short: at least ${limits.minSecretChars} characters`);
  if (token !== null && !/^[\x21-\x7e]+$/.test(token)) throw new FieldError(raw.adminTokenFile === undefined ? 'adminToken' : 'adminTokenFile', 'use printable ASCII without spaces (it travels in an HTTP header)');
  if (token === null) {
    const open = nodes.find((n) => !isLoopbackHost(n.admin.host));
    if (open !== undefined) throw new FieldError(`nodes.${open.name}.admin`, `${formatAddress(open.admin)} is not on loopback: set adminToken (or adminTokenFile), or anyone who reaches it can promote, demote or discard this volume's data`);
  }
  return token;
}

/** The arbiter section (issue 13): etcd client URLs, the lease, where the keys live. */
function buildArbiter(raw: RawConfig, mirrored: boolean): ArbiterConfig | null {
  const a = raw.arbiter;
  if (a === undefined) return null;
  if (!mirrored) throw new FieldError('arbiter', 'needs two or more nodes: a standalone node has no one to fail over to');
  a.etcd.forEach((url, i) => {
    if (!/^https?:\/\/[^/\s]+\/?$/.test(url)) throw new FieldError(`arbiter.etcd[${i}]`, `"${url}" is not an etcd client URL (http://host:port)`);
  });
  const leaseTtlMs = atLeast('arbiter.leaseTtlMs', a.leaseTtlMs ?? defaults.leaseTtlMs, 2000);
  if (leaseTtlMs % 1000 !== 0) throw new FieldError('arbiter.leaseTtlMs', `${leaseTtlMs} is not a whole number of seconds (etcd's leases count seconds)`);
  const prefix = a.prefix ?? '/twinblock';
  if (!prefix.startsWith('/')) throw new FieldError('arbiter.prefix', `"${prefix}" must start with /`);
  return { etcd: a.etcd, leaseTtlMs, prefix, autoFailover: a.autoFailover ?? true };
}

function validate(data: unknown, baseDir: string, sourceName: string, sourcePath: string | null): Config {
  try {
    return buildConfig(checkShape(data), baseDir, sourcePath);
  } catch (err) {
    if (err instanceof FieldError) {
      const where = err.keyPath === '' ? '' : `${err.keyPath}: `;
      throw new ConfigError(`config ${sourceName}: ${where}${err.message}`);
    }
    throw err;
  }
}

/** Parse YAML text; relative store paths resolve against baseDir. sourceName prefixes errors. */
export function parseConfigText(text: string, baseDir: string, sourceName = '(text)'): Config {
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (err) {
    // yaml's messages carry a multi-line source excerpt; the first line has the position.
    const firstLine = ((err as Error).message.split('\n')[0] ?? '').replace(/:$/, '');
    throw new ConfigError(`config ${sourceName}: bad YAML: ${firstLine}`);
  }
  return validate(data, path.resolve(baseDir), sourceName, null);
}

/** Read and validate a config file; throws ConfigError with a one-line message. */
export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (err as Error).message;
    throw new ConfigError(`config ${file}: cannot read: ${reason}`);
  }
  const config = parseConfigText(text, path.dirname(path.resolve(file)), file);
  return { ...config, sourcePath: path.resolve(file) };
}

/**
 * The configuration `twinblock demo` runs: a local pair, primary "a" and secondary "b", with their
 * stores at DIR/a.img and DIR/b.img. Built through the same validation as a file, so a bad --size
 * gets the same kind of message. The secret comes from the caller (randomness is the shell's).
 */
/** The demo's volume: `nodeCount` nodes a, b, c, ... on consecutive local ports, a primary. */
export function demoConfig(dir: string, sizeBytes: number, secret: string, nodeCount = 2, etcd: string[] | null = null): Config {
  const nodes: Record<string, Record<string, string>> = {};
  for (let i = 0; i < nodeCount; i++) {
    const name = String.fromCharCode(97 + i);
    nodes[name] = { nbd: `127.0.0.1:${10809 + i}`, admin: `127.0.0.1:${8801 + i}`, link: `127.0.0.1:${7801 + i}`, store: `${name}.img`, cache: '256MiB' };
  }
  return validate({ volume: 'demo', size: sizeBytes, secret, primary: 'a', nodes, ...(etcd === null ? {} : { arbiter: { etcd } }) }, path.resolve(dir), 'demo', null);
}

/** The named node, or a ConfigError listing the names the config has. */
export function nodeByName(config: Config, name: string): NodeConfig {
  const node = config.nodes.find((n) => n.name === name);
  if (node === undefined) {
    const where = config.sourcePath ?? 'config';
    throw new ConfigError(`unknown node "${name}": ${where} has ${config.nodes.map((n) => n.name).join(', ')}`);
  }
  return node;
}

/** The other nodes of the volume (zero when standalone, one in a pair). */
export function peersOf(config: Config, name: string): NodeConfig[] {
  return config.nodes.filter((n) => n.name !== name);
}
