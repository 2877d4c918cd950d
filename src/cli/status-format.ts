// `twinblock status` output: a short summary in the spirit of `drbdadm status`, one block per node
// with its peers indented below. It reads the /status JSON defensively: a field the node does not
// report (older version, not wired yet) prints as "?" or its line is left out, never a crash.
import { formatSize } from '../config/size.js';

/** The parts of GET /status this formatter reads (DESIGN.md "Interfaces" plus exposure fields). */
export interface StatusJson {
  node?: string;
  role?: string;
  epoch?: number;
  pid?: number;
  volume?: string;
  sizeBytes?: number;
  mode?: string;
  store?: string;
  tracker?: string;
  flush?: string;
  cache?: {
    /** Older shape; exposure.unhardenedBytes wins when both are present. */
    dirtyBytes?: number;
    dirtyTracks?: number;
    cachedTracks?: number;
    capacityBytes?: number;
    oldestDirtyAgeMs?: number;
    waitingWrites?: number;
  };
  exposure?: { unhardenedBytes?: number; oldestDirtyAgeMs?: number; maxDirtyAgeMs?: number };
  counters?: {
    writes?: number;
    hardenedBytes?: number;
    hardenWrites?: number;
    /** Hardening runs by reason, e.g. { threshold: 3, scan: 10 }. */
    hardenRuns?: Record<string, number>;
    linkBytesSent?: number;
    resyncBytesSent?: number;
  };
  nbd?: { connections?: number };
  peers?: PeerStatusJson[];
}

export interface PeerStatusJson {
  node?: string;
  connected?: boolean;
  state?: string;
  unitedTracks?: number;
  outOfSyncTracks?: number;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function num(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

function str(value: unknown): string {
  return typeof value === 'string' || typeof value === 'number' ? String(value) : '?';
}

function bytes(value: unknown): string {
  const n = num(value);
  return n === undefined ? '?' : formatSize(n);
}

function count(value: unknown): string {
  const n = num(value);
  return n === undefined ? '?' : String(n);
}

function plural(n: unknown, word: string): string {
  return `${count(n)} ${word}${num(n) === 1 ? '' : 's'}`;
}

/** 850 → "850ms", 1500 → "1.5s", 125000 → "2m05s", 7260000 → "2h01m". */
export function formatDurationMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Math.round(ms / 100) / 10}s`;
  const totalSeconds = Math.round(ms / 1000);
  if (totalSeconds < 3600) return `${Math.floor(totalSeconds / 60)}m${String(totalSeconds % 60).padStart(2, '0')}s`;
  const totalMinutes = Math.floor(totalSeconds / 60);
  return `${Math.floor(totalMinutes / 60)}h${String(totalMinutes % 60).padStart(2, '0')}m`;
}

function headerLine(s: Json): string {
  const parts = [str(s['volume'] ?? '(volume ?)'), `node:${str(s['node'])}`, `role:${str(s['role'])}`];
  if (s['epoch'] !== undefined) parts.push(`epoch:${str(s['epoch'])}`);
  if (s['sizeBytes'] !== undefined) parts.push(`size:${bytes(s['sizeBytes'])}`);
  if (s['mode'] !== undefined) parts.push(`mode:${str(s['mode'])}`);
  if (s['pid'] !== undefined) parts.push(`pid:${str(s['pid'])}`);
  return parts.join(' ');
}

function storeLine(s: Json): string[] {
  if (s['store'] === undefined) return [];
  const policy = [s['tracker'] === undefined ? null : `tracker ${str(s['tracker'])}`, s['flush'] === undefined ? null : `flush ${str(s['flush'])}`]
    .filter((p) => p !== null);
  return [`  store: ${str(s['store'])}${policy.length > 0 ? ` (${policy.join(', ')})` : ''}`];
}

/** Issue 13: the etcd arbiter, when one is configured. */
function arbiterLine(s: Json): string[] {
  const a = s['arbiter'];
  if (!isObject(a)) return [];
  const reach = a['connected'] === true ? 'etcd connected' : `etcd UNREACHABLE${typeof a['lastError'] === 'string' ? ` (${a['lastError']})` : ''}`;
  const leader = typeof a['leader'] === 'string' ? `leader ${a['leader']}` : 'no leader';
  const lease = a['state'] === 'leader' ? `, lease ${str(a['leaseRemainingMs'])} ms left` : '';
  const held = typeof s['heldReplies'] === 'number' && s['heldReplies'] > 0 ? `, ${s['heldReplies']} replies held` : '';
  return [`  arbiter: ${reach}, ${leader}, epoch ${str(a['epoch'])}${lease}, electable ${Array.isArray(a['electable']) ? a['electable'].join(',') : '?'}${a['autoFailover'] === true ? '' : ', autoFailover off'}${held}`];
}

/** Issue 12: the ack policy, and quorum as nodes reached against nodes needed. */
function quorumLine(s: Json): string[] {
  const q = s['quorum'];
  if (!isObject(q) || q['policy'] === undefined) return [];
  const ack = s['ack'] === undefined ? '' : `ack ${str(s['ack'])}, `;
  if (q['policy'] === 'off') return [`  quorum: off (${ack}reaches ${str(q['have'])} node${q['have'] === 1 ? '' : 's'})`];
  const verdict = q['ok'] === true ? 'ok' : `LOST: writes ${q['onNoQuorum'] === 'io-error' ? 'fail with EIO' : 'wait'}`;
  return [`  quorum: ${verdict} (${ack}majority: reaches ${str(q['have'])} of the ${str(q['need'])} nodes needed)`];
}

/** " (+N of zeros)" when cached tracks hold zeros only (no data RAM), else nothing. */
function zeroTracks(cache: Json): string {
  const zeros = (num(cache['cachedTracks']) ?? 0) - (num(cache['dataTracks']) ?? 0);
  return zeros > 0 ? ` (+${zeros} of zeros)` : '';
}

function cacheLines(cache: Json, exposure: Json): string[] {
  const dirty = exposure['unhardenedBytes'] ?? cache['dirtyBytes'];
  return [
    `  cache: ${bytes(dirty)} dirty (${plural(cache['dirtyTracks'], 'track')}) of ${bytes(cache['capacityBytes'])}, ` +
      // What a person can act on: RAM in use and tracks holding data; zero tracks cost no data RAM.
      (cache['chargedBytes'] === undefined || cache['dataTracks'] === undefined
        ? `${plural(cache['cachedTracks'], 'track')} cached`
        : `${bytes(cache['chargedBytes'])} in use, ${plural(cache['dataTracks'], 'track')} holding data` +
          zeroTracks(cache)) +
      (num(cache['waitingWrites']) ? `, ${plural(cache['waitingWrites'], 'write')} waiting for space` : ''),
  ];
}

/**
 * The number an operator must find at a glance (DESIGN.md "Durability policy"): what losing both
 * nodes at once would lose right now, and how old the oldest of it is against the maxDirtyAgeMs cap.
 */
function exposureLine(cache: Json, exposure: Json): string[] {
  const dirty = num(exposure['unhardenedBytes'] ?? cache['dirtyBytes']);
  const age = num(exposure['oldestDirtyAgeMs'] ?? cache['oldestDirtyAgeMs']);
  const limit = num(exposure['maxDirtyAgeMs']);
  if (dirty === undefined && age === undefined) return [];
  if (dirty === 0) return ['  exposure: none (everything hardened)'];
  const ageText = age === undefined ? '?' : formatDurationMs(age);
  return [`  exposure: ${bytes(dirty)} unhardened, oldest dirty ${ageText} ago${limit === undefined ? '' : ` (limit ${formatDurationMs(limit)})`}`];
}

function counterLines(counters: Json): string[] {
  const lines: string[] = [];
  let hardening = `  hardening: ${bytes(counters['hardenedBytes'])} hardened`;
  if (counters['hardenWrites'] !== undefined) hardening += ` in ${plural(counters['hardenWrites'], 'store write')}`;
  const runs = counters['hardenRuns'];
  if (isObject(runs)) {
    const byReason = Object.entries(runs).filter(([, n]) => num(n)).map(([reason, n]) => `${reason} ${count(n)}`);
    if (byReason.length > 0) hardening += `; runs: ${byReason.join(', ')}`;
  }
  lines.push(hardening);
  const traffic = [`writes ${count(counters['writes'])}`];
  if (counters['linkBytesSent'] !== undefined) traffic.push(`link sent ${bytes(counters['linkBytesSent'])}`);
  if (counters['resyncBytesSent'] !== undefined) traffic.push(`resync sent ${bytes(counters['resyncBytesSent'])}`);
  lines.push(`  traffic: ${traffic.join(', ')}`);
  return lines;
}

/** Issue 15: host write IOPS and latency over the last closed interval (none closed yet: no line). */
function hostWritesLine(w: Json): string[] {
  const intervalMs = num(w['intervalMs']);
  if (intervalMs === undefined || intervalMs === 0) return [];
  const over = `over the last ${formatDurationMs(intervalMs)}`;
  const p50 = num(w['p50Ms']);
  const p99 = num(w['p99Ms']);
  if (p50 === undefined || p99 === undefined) return [`  host writes: none ${over}`];
  return [`  host writes: ${Math.round(num(w['iops']) ?? 0)} IOPS, p50 ${p50.toFixed(2)}ms, p99 ${p99.toFixed(2)}ms ${over}`];
}

function peerLines(peers: unknown[]): string[] {
  if (peers.length === 0) return ['  peers: none (standalone)'];
  return peers.flatMap((p) => {
    const peer = isObject(p) ? p : {};
    const connected = peer['connected'] === true ? 'yes' : peer['connected'] === false ? 'no' : '?';
    const rtt = num(peer['rttMs']);
    const lines = [`  peer ${str(peer['node'])} connected:${connected} state:${str(peer['state'])} ` +
      `united:${plural(peer['unitedTracks'], 'track')} out-of-sync:${plural(peer['outOfSyncTracks'], 'track')}` +
      (rtt === undefined ? '' : ` rtt:${rtt.toFixed(2)}ms`)];
    const sync = isObject(peer['sync']) ? peer['sync'] : null;
    if (sync !== null) {
      const total = num(sync['totalBytes']) ?? 0;
      const done = num(sync['doneBytes']) ?? 0;
      const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
      const eta = num(sync['etaSeconds']);
      const tracksLeft = num(sync['tracksLeft']);
      lines.push(`    resync: ${bytes(done)} of ${bytes(total)} (${pct}%)` + (tracksLeft === undefined ? '' : `, ${plural(tracksLeft, 'track')} left`) +
        (num(sync['rateBytesPerSec']) ? `, ${bytes(sync['rateBytesPerSec'])}/s` : '') + (eta === undefined ? '' : `, ETA ${eta}s`) +
        (sync['full'] === true ? ', full' : '') + (sync['phase'] === 'compare' ? ', comparing checksums first' : '') +
        (sync['yielding'] === true ? `, yielding to host writes (limit ${bytes(sync['limitBytesPerSec'])}/s)` : ''));
    }
    const compared = num(peer['resyncBytesCompared']) ?? 0;
    if (compared > 0) lines.push(`    checksum resyncs: ${bytes(compared)} compared, ${bytes(peer['resyncBytesSent'])} sent`);
    if (peer['incompleteResync'] === true && sync === null) lines.push('    this node\'s last resync did not finish: its data is incomplete until the next one does');
    if (peer['state'] === 'split-brain') lines.push('    SPLIT BRAIN: both nodes were primary; run `twinblock resolve --discard-local` on the side to overwrite');
    return lines;
  });
}

/** The last online verify (issue 14 item 4): progress while it runs, then what it found. */
export function verifyLine(v: Json): string {
  const total = num(v['totalBytes']) ?? 0;
  const done = num(v['doneBytes']) ?? 0;
  const head = `  verify against ${str(v['peer'])}: ${str(v['state'])}`;
  if (v['state'] === 'running') return `${head}, ${bytes(done)} of ${bytes(total)} (${total > 0 ? Math.floor((100 * done) / total) : 100}%), ${plural(v['differingTracks'], 'differing track')} so far`;
  const unverified = num(v['unverifiedTracks']) ?? 0;
  return `${head} ${str(v['endedAt'])}, ${plural(v['differingTracks'], 'differing track')}` + (unverified > 0 ? `, ${plural(unverified, 'track')} written throughout (unverified)` : '') +
    (v['state'] === 'aborted' ? ` (${str(v['reason'])})` : '') + (v['resync'] === true && (num(v['differingTracks']) ?? 0) > 0 ? ', resent' : '');
}

/** Human-readable summary of one node's /status JSON; ends with a newline. */
export function formatStatus(status: unknown): string {
  if (!isObject(status)) return `unexpected status (not a JSON object): ${JSON.stringify(status)}\n`;
  const lines = [headerLine(status), ...storeLine(status), ...quorumLine(status), ...arbiterLine(status)];
  const cache = isObject(status['cache']) ? status['cache'] : undefined;
  const exposure = isObject(status['exposure']) ? status['exposure'] : {};
  if (cache !== undefined) lines.push(...cacheLines(cache, exposure));
  lines.push(...exposureLine(cache ?? {}, exposure));
  if (isObject(status['counters'])) lines.push(...counterLines(status['counters']));
  if (isObject(status['nbd'])) lines.push(`  nbd: ${plural(status['nbd']['connections'], 'connection')}`);
  if (isObject(status['hostWrites'])) lines.push(...hostWritesLine(status['hostWrites']));
  if (Array.isArray(status['peers'])) lines.push(...peerLines(status['peers']));
  if (isObject(status['verify'])) lines.push(verifyLine(status['verify']));
  return `${lines.join('\n')}\n`;
}

/** `twinblock usage`: the /usage answer as a table (issue 14 item 7). */
export function formatUsage(body: Json): string {
  const u = isObject(body['usage']) ? body['usage'] : {};
  const rows: Array<[string, string]> = [
    ['host reads', `${count(u['hostReadOps'])} ops, ${bytes(u['hostReadBytes'])}`],
    ['host writes', `${count(u['hostWriteOps'])} ops, ${bytes(u['hostWriteBytes'])}`],
    ['mirrored to peers', bytes(u['mirroredBytes'])],
    ['resync sent', bytes(u['resyncBytes'])],
    ['provisioned', `${(num(u['provisionedGiBHours']) ?? 0).toFixed(6)} GiB-hours`],
    ['primary', `${(num(u['primarySeconds']) ?? 0).toFixed(1)} s`],
    ['secondary', `${(num(u['secondarySeconds']) ?? 0).toFixed(1)} s`],
    ['primary, degraded', `${(num(u['degradedSeconds']) ?? 0).toFixed(1)} s`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return [`usage of volume ${str(body['volume'])} on node ${str(body['node'])}, ${str(body['since'])} to ${str(body['to'])}:`,
    ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`), ''].join('\n');
}
