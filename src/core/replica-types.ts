// Types shared by the replica core and its shell: what goes in, what comes out.
import type { HardenJob } from './cache.js';
import type { EpochEntry } from './epochs.js';
import type { CacheGeometry } from './cache.js';
import type { HardenReason, HardeningSettings } from './hardening.js';
import type { TrackerKind } from './notifier.js';
import type { LinkMessage } from './link-codec.js';

export type Role = 'primary' | 'secondary';

/**
 * The state of this node's relation with its peer (DESIGN.md "Interfaces"):
 *  standalone — the config has one node; connecting — no link yet (a primary serves alone);
 *  resyncing — the link is up and the primary is sending the volume; in-sync — mirrored;
 *  degraded — the link was lost: the primary serves alone and the peer needs a resync.
 */
export type PeerState = 'standalone' | 'connecting' | 'resyncing' | 'in-sync' | 'degraded' | 'split-brain';

/** The node metadata kept beside the store (issue 5 item 3), written atomically by the shell. */
export interface PersistedState {
  /** Who was primary when: (epoch, node) pairs, oldest first. */
  history: EpochEntry[];
  role: Role;
  /** Written true only by a clean shutdown; false from startup on. */
  cleanShutdown: boolean;
  /** This node may hold hardened writes its peer lacks beyond outOfSync (it was primary alone). */
  diverging: boolean;
  /**
   * The store is complete up to what the bitmaps record: false for a new store until its first
   * resync finishes, and for the losing side of a split brain. A crash mid-resync keeps it false.
   */
  storeTrusted: boolean;
  /** A resync into this node started and did not finish: its store mixes old and new tracks. */
  resyncIncomplete: boolean;
  /** Tracks the peer lacks, as a bitmap (trusted only with cleanShutdown). */
  outOfSync: Uint8Array | null;
  /** Split brain resolved against this node: it is the target of the next resync. */
  discardLocal: boolean;
  /**
   * The highest epoch this node ever proposed to its peer in a promote request (0: none). The peer
   * may have adopted it although the request then failed, so it is never proposed or taken again.
   */
  proposedEpoch: number;
  /**
   * An fdatasync failed since every track of this store was last rewritten (replica-link.ts
   * syncLost). Persisted because the lost writeback outlives the process (simulator, seed 10007857).
   */
  syncLost: boolean;
}

export type FlushPolicy = 'memory' | 'disk';
export type DegradedPolicy = 'write-through' | 'write-back';

/**
 * Issue 12's acknowledgement and quorum policies. `ack`: a write is answered once every connected
 * in-sync secondary holds it (`all`) or a majority of the nodes does (`quorum`; in a pair the same
 * two copies). `policy: majority`: a primary reaching fewer than a majority of the configured nodes,
 * itself included, answers no write (`onNoQuorum`: holds them until quorum returns, or fails them
 * with EIO), and a secondary promotes only while it reaches a majority (or with --force).
 */
export interface QuorumSettings {
  ack: 'all' | 'quorum';
  policy: 'off' | 'majority';
  onNoQuorum: 'suspend-io' | 'io-error';
}

/** Issue 12's defaults for a pair: answer once the peer holds it, never stop for quorum. */
export const PAIR_QUORUM_DEFAULTS: QuorumSettings = { ack: 'all', policy: 'off', onNoQuorum: 'suspend-io' };

/** What /status shows of quorum: nodes reachable (this one included) against those needed. */
export interface QuorumView {
  policy: QuorumSettings['policy'];
  have: number;
  need: number;
  ok: boolean;
}

/** errno names the core answers hosts with (a subset of NBD's). */
export type ReplyErrno = 'EPERM' | 'EIO' | 'ESHUTDOWN';

export type ReplicaAction =
  /** Send `msg` on the link to node `peer`. */
  | { kind: 'send'; peer: string; msg: LinkMessage }
  | { kind: 'reply'; reqId: number; errno: ReplyErrno | null; message?: string }
  | { kind: 'harden'; job: HardenJob; reason: HardenReason }
  /** fdatasync the store, then call storeSynced(syncId). */
  | { kind: 'sync-store'; syncId: number }
  /** Write the node metadata atomically, then call persistDone(token). */
  | { kind: 'persist'; token: number; state: PersistedState }
  /** Read this span for the initial sync (cache-aware), then call syncChunkRead. */
  | { kind: 'sync-read'; offsetBytes: number; lengthBytes: number; resyncId: number }
  /**
   * Read this span through the cache (no fill), hash each track of it (TRACK_SUM_BYTES each, in
   * the same step as the read's finishRead) and call sumsRead(readId) (issue 14 items 4-5).
   */
  | { kind: 'sum-read'; readId: number; offsetBytes: number; lengthBytes: number }
  /** A promote that waited for the peer's confirmation has ended (error null: now primary). */
  | { kind: 'promote-done'; requestId: number; error: string | null }
  | { kind: 'log'; level: 'info' | 'warn' | 'error'; msg: string; fields?: Record<string, unknown> };

export type { LinkMessage };

export interface ReplicaSettings {
  /** This node's name, and every other node's of the volume (none when standalone; one in a pair). */
  node: string;
  peers: readonly string[];
  geometry: CacheGeometry;
  hardening: HardeningSettings;
  tracker: TrackerKind;
  flush: FlushPolicy;
  degraded: DegradedPolicy;
  quorum: QuorumSettings;
  /** The config's primary: the role of a node starting on a fresh store. */
  role: Role;
  /** False for a standalone node (one node in the config): exactly when `peers` is empty. */
  /** The store was created empty at this start (file just made sparse): zeros, until written. */
  storeCreatedFresh?: boolean;
  mirrored: boolean;
  maxHardensInFlight: number;
  syncChunkBytes: number;
  syncWindowChunks: number;
  syncRateBytesPerSec: number;
  /** While host writes run, a resync yields down to this rate (issue 14 item 6); absent or at least syncRate: it never yields. */
  syncMinRateBytesPerSec?: number;
  /** How fast an online verify compares tracks (bytes per second; default: syncRateBytesPerSec). */
  verifyRateBytesPerSec?: number;
  /** After a failed store write, wait this long before hardening again. */
  storeRetryMs: number;
}

export interface ReplicaCounters {
  writes: number;
  writtenBytes: number;
  hardenedBytes: number;
  hardenWrites: number;
  hardenRuns: Record<HardenReason, number>;
  mirroredWrites: number;
  /** Bytes of host writes sent to peers, once per peer (usage metering). */
  mirroredBytes: number;
  syncBytesSent: number;
  syncBytesReceived: number;
  noticesSent: number;
  noticesReceived: number;
  /** fdatasyncs of the store that failed (a host FLUSH's or a notice batch's). */
  fsyncFailures: number;
}
