// GET /status: what a node is, what it holds unhardened, and how its peer relation stands
// (DESIGN.md "Interfaces"; `twinblock status` prints it for people, like `drbdadm status`).
import { formatAddress, type Config, type NbdTlsMode, type NodeConfig } from '../config/config.js';
import type { PeerState, QuorumView, Role } from '../core/replica-types.js';
import type { VerifyReport } from '../core/replica-compare.js';
import type { SyncProgress } from '../core/resync.js';
import type { LinkConnection } from '../link/connection.js';
import type { PeerLink } from '../link/peer-link.js';
import type { Volume, VolumeCounters } from './volume.js';
import type { ArbiterStatus } from '../arbiter/arbiter-shell.js';
import type { HostWriteFigures } from '../core/write-window.js';

export interface PeerStatus {
  node: string;
  connected: boolean;
  state: PeerState;
  /** Tracks the peer may hold only in RAM (current OR old bitmap, seed Fig. 3). */
  unitedTracks: number;
  /** Tracks the peer lacks and must be sent on resync. */
  outOfSyncTracks: number;
  rttMs: number | null;
  /**
   * Resync data sent to this peer since start (counters.resyncBytesSent is the node's total): the
   * tracks sent, not those a checksum resync found equal and skipped.
   */
  resyncBytesSent: number;
  /** Bytes whose checksums a checksum resync into this peer compared, since start (issue 14 item 5). */
  resyncBytesCompared: number;
  /** During a resync: its progress; `phase: "compare"` while a checksum resync compares (then it sends what differs). */
  sync: SyncProgress | null;
  /** A resync into this node started and has not finished (its data is incomplete). */
  incompleteResync: boolean;
  /** Per range with any mark: counts in the current and old bitmaps. */
  ranges: { range: number; current: number; old: number }[];
}

export interface NodeStatus {
  node: string;
  volume: string;
  role: Role;
  mode: 'standalone' | 'mirrored';
  epoch: number;
  /** Who was primary when, oldest first (decides the sync source; detects split brain). */
  epochHistory: { epoch: number; node: string }[];
  pid: number;
  sizeBytes: number;
  trackSizeBytes: number;
  rangeTracks: number;
  tracker: string;
  flush: string;
  /** Issue 12: when host writes are answered (all in-sync secondaries, or a majority). */
  ack: string;
  /** Nodes reachable (this one included) against those a primary needs to answer writes. */
  quorum: QuorumView & { onNoQuorum: string };
  store: string;
  nbd: { uri: string; connections: number; readOnly: boolean; tls: NbdTlsMode };
  cache: {
    capacityBytes: number;
    chargedBytes: number;
    dirtyBytes: number;
    oldestDirtyAgeMs: number;
    cachedTracks: number;
    /** Cached tracks holding data (the rest hold zeros and cost bookkeeping only). */
    dataTracks: number;
    dirtyTracks: number;
    hardeningTracks: number;
    waitingWrites: number;
  };
  /** The disk's failures (retried with backoff) and whether it is trusted for a delta resync. */
  storeHealth: Volume['storeHealth'];
  /** A file store's small reads: inline on the event loop or in libuv's pool (null: not a file store). */
  storeReads: Volume['storeReads'];
  /** What losing this node's RAM would lose were it alone; bounded in age by maxDirtyAgeMs. */
  exposure: { unhardenedBytes: number; oldestDirtyAgeMs: number; maxDirtyAgeMs: number };
  counters: VolumeCounters & { linkBytesSent: number; linkBytesReceived: number; noticeBytesSent: number; resyncBytesSent: number };
  peers: PeerStatus[];
  /** Issue 13: the etcd arbiter as this node sees it (null: none configured). */
  arbiter: ArbiterStatus | null;
  /** Host replies the arbiter's ack gate holds (this node does not hold the lease now). */
  heldReplies: number;
  /** Issue 15: host writes (NBD WRITE) answered over the last interval of at least a second. */
  hostWrites: HostWriteFigures;
  /** The last online verify (issue 14 item 4), with its progress while it runs; null: none since start. */
  verify: VerifyView | null;
}

/** /status `verify`: VerifyReport with its times as ISO 8601. */
export type VerifyView = Omit<VerifyReport, 'startedAtMs' | 'endedAtMs'> & { startedAt: string; endedAt: string | null };

export function verifyView(report: VerifyReport): VerifyView {
  const { startedAtMs, endedAtMs, ...rest } = report;
  return { ...rest, startedAt: new Date(startedAtMs).toISOString(), endedAt: endedAtMs === null ? null : new Date(endedAtMs).toISOString() };
}

/** Status lists at most this many ranges, the fullest first: enough to see where marks sit. */
const MAX_RANGES_LISTED = 32;

/** Link bytes over the node's lifetime: closed connections' totals plus the live one's. */
export class LinkTraffic {
  private closed = { sent: 0, received: 0, noticeSent: 0 };
  private live: LinkConnection | null = null;

  attach(connection: LinkConnection): void {
    this.detach();
    this.live = connection;
  }

  detach(): void {
    if (this.live === null) return;
    const t = this.of(this.live);
    this.closed = { sent: this.closed.sent + t.sent, received: this.closed.received + t.received, noticeSent: this.closed.noticeSent + t.noticeSent };
    this.live = null;
  }

  totals(): { sent: number; received: number; noticeSent: number } {
    const t = this.live === null ? { sent: 0, received: 0, noticeSent: 0 } : this.of(this.live);
    return { sent: this.closed.sent + t.sent, received: this.closed.received + t.received, noticeSent: this.closed.noticeSent + t.noticeSent };
  }

  private of(c: LinkConnection): { sent: number; received: number; noticeSent: number } {
    return { sent: c.bytesSent, received: c.bytesReceived, noticeSent: c.sentBytesByType.notice };
  }
}

/** The link to one other node: its PeerLink and its byte counts. */
export interface PeerLinkSource {
  name: string;
  link: PeerLink;
  traffic: LinkTraffic;
}

export interface StatusSources {
  config: Config;
  node: NodeConfig;
  /** One per other node of the volume (none standalone). */
  peers: readonly PeerLinkSource[];
  volume: Volume;
  nbdPort: number;
  nbdConnections: number;
  arbiter: ArbiterStatus | null;
  hostWrites: HostWriteFigures;
}

/** Link bytes of every link together. */
export function linkTotals(peers: readonly PeerLinkSource[]): { sent: number; received: number; noticeSent: number } {
  const sum = { sent: 0, received: 0, noticeSent: 0 };
  for (const p of peers) {
    const t = p.traffic.totals();
    sum.sent += t.sent;
    sum.received += t.received;
    sum.noticeSent += t.noticeSent;
  }
  return sum;
}

export function buildStatus(src: StatusSources): NodeStatus {
  const { config, node, volume } = src;
  const s = volume.stats();
  const core = volume.core;
  const traffic = linkTotals(src.peers);
  const nowMs = Date.now();
  return {
    node: node.name,
    volume: config.volume,
    role: core.role,
    mode: src.peers.length === 0 ? 'standalone' : 'mirrored',
    epoch: core.epoch,
    epochHistory: [...core.epochHistory],
    pid: process.pid,
    sizeBytes: config.sizeBytes,
    trackSizeBytes: config.trackSizeBytes,
    rangeTracks: config.rangeTracks,
    tracker: config.tracker,
    flush: src.peers.length === 0 ? 'disk' : config.flush,
    ack: config.ack,
    quorum: { ...volume.quorum, onNoQuorum: config.onNoQuorum },
    store: volume.storeDescription,
    // nbds:// (libnbd's scheme) when hosts must start TLS (issue 14 item 2).
    nbd: { uri: `${config.nbdTls === 'require' ? 'nbds' : 'nbd'}://${formatAddress({ host: node.nbd.host, port: src.nbdPort })}/${config.volume}`, connections: src.nbdConnections, readOnly: volume.readOnly, tls: config.nbdTls },
    cache: {
      capacityBytes: s.capacityBytes, chargedBytes: s.chargedBytes, dirtyBytes: s.dirtyBytes,
      oldestDirtyAgeMs: s.oldestDirtyAgeMs, cachedTracks: s.cachedTracks, dataTracks: s.dataTracks, dirtyTracks: s.dirtyTracks,
      hardeningTracks: s.hardeningTracks, waitingWrites: s.waitingWrites,
    },
    storeHealth: volume.storeHealth,
    storeReads: volume.storeReads,
    exposure: { unhardenedBytes: s.dirtyBytes, oldestDirtyAgeMs: s.oldestDirtyAgeMs, maxDirtyAgeMs: config.maxDirtyAgeMs },
    counters: {
      ...volume.counters,
      hardenRuns: { ...volume.counters.hardenRuns },
      linkBytesSent: traffic.sent,
      linkBytesReceived: traffic.received,
      noticeBytesSent: traffic.noticeSent,
      resyncBytesSent: volume.counters.syncBytesSent,
    },
    peers: core.peers.map((ch): PeerStatus => {
      const connection = src.peers.find((p) => p.name === ch.name)?.link.connection ?? null;
      return {
        node: ch.name,
        connected: connection !== null,
        state: ch.state,
        unitedTracks: ch.record.unitedCount(),
        outOfSyncTracks: ch.outOfSync.count(),
        rttMs: connection?.lastRttMs ?? null,
        resyncBytesSent: ch.resyncBytesSent,
        resyncBytesCompared: ch.resyncBytesCompared + (ch.compare?.purpose === 'resync' ? ch.compare.progress().comparedBytes : 0),
        sync: core.syncStatus(ch.name, nowMs),
        incompleteResync: core.incompleteResync,
        ranges: ch.record.rangeSummary().sort((a, b) => b.current + b.old - a.current - a.old).slice(0, MAX_RANGES_LISTED),
      };
    }),
    arbiter: src.arbiter,
    heldReplies: volume.heldReplyCount,
    hostWrites: src.hostWrites,
    verify: verifyOf(volume),
  };
}

function verifyOf(volume: Volume): VerifyView | null {
  const report = volume.verifyReport;
  return report === null ? null : verifyView(report);
}
