// What a Volume (volume.ts) is made of: its options, the ports it is given, its internal limits
// with their production defaults, and the shapes of what it reports. Types and constants only.
import type { CacheStats } from '../core/cache.js';
import type { HardenReason, HardeningSettings } from '../core/hardening.js';
import type { TrackerKind } from '../core/notifier.js';
import type { ReplicaCounters } from '../core/replica.js';
import type { DegradedPolicy, FlushPolicy, QuorumSettings, Role } from '../core/replica-types.js';
import type { Store } from '../store/store.js';
import type { Clock, LinkPort, MetadataPort } from './ports.js';

export interface VolumeOptions {
  /** This node's name (epoch history entries carry it). */
  node?: string;
  name: string;
  description: string;
  sizeBytes: number;
  trackSizeBytes: number;
  cacheBytes: number;
  rangeTracks: number;
  hardening: Omit<HardeningSettings, 'maxJobBytes' | 'pressureFraction'>;
  store: Store;
  /** The metadata from the last run (null: a fresh store) and how to write it atomically. */
  metadata?: MetadataPort;
  /** The store was created empty at this start: it holds zeros until written (no initial sync beside another such). */
  storeCreatedFresh?: boolean;
  /** Mirroring: absent for a standalone node. */
  mirror?: LinkPort & {
    /** Every other node of the volume (one in a pair). */
    peers: string[];
    role: Role;
    tracker: TrackerKind;
    flush: FlushPolicy;
    degraded: DegradedPolicy;
    quorum: QuorumSettings;
    syncRateBytesPerSec: number;
    /** The floor a resync yields down to while host writes run (absent: it never yields). */
    syncMinRateBytesPerSec?: number;
    /** Online verify's rate (default: syncRateBytesPerSec). */
    verifyRateBytesPerSec?: number;
  };
  /** Called after each harden job, for metrics. */
  onHardened?: (bytes: number, storeWrites: number, seconds: number, reason: HardenReason) => void;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
  /**
   * The core threw (a failed assertion: its state can no longer be trusted). The volume has
   * stopped taking events; the node must stop too. Default: rethrown outside the current call,
   * so the process crashes (src/cli/main.ts logs it as fatal) instead of an admin request or a
   * socket handler swallowing it and serving on from a half-applied event.
   */
  onFatal?: (err: unknown) => void;
  /** Time and timers (default: the real ones). */
  clock?: Clock;
  /**
   * With an arbiter (issue 13): may a host request's success be sent now? Checked as each reply
   * is ready; held replies go when Volume.releaseHeldReplies finds it open.
   */
  ackGate?: () => boolean;
  /** Internal limits; production uses the defaults below, the simulator draws them per seed. */
  tuning?: Partial<VolumeTuning>;
}

export interface VolumeTuning {
  maxHardensInFlight: number;
  maxJobBytes: number;
  pressureFraction: number;
  storeRetryMs: number;
  syncChunkBytes: number;
  syncWindowChunks: number;
  promoteConfirmTimeoutMs: number;
}

/** Hardening jobs in flight at once: enough to keep a disk queue busy. */
const MAX_CONCURRENT_HARDENS = 4;
/** Largest coalesced store write. */
const MAX_JOB_BYTES = 4 * 1024 * 1024;
/**
 * Dirty share of the cache (line charges) where LRU hardening starts before any writer blocks: a
 * reserve of clean lines for writes and read fills to tracks the cache does not hold. A writer that
 * finds no room starts pressure hardening at once anyway (Hardener.nextJob). Not half: the share
 * counts whole lines, and a 4 KiB random write dirties a whole 64 KiB line, so at 0.5 a working set
 * that fits in the cache crossed it within a few tenths of a second and was hardened line by line
 * long before the destage scan or the age bound came due, undoing what hardening later is for
 * (seed Fig. 5: overwrites absorbed in RAM). At 0.9, 4 KiB random writes on a cache-sized pair cost
 * 0.68-0.74 store writes per host write instead of 0.89-0.93 and a sixth to a third less CPU, and
 * less on a volume four times the cache too (docs/benchmarks.md, "The pressure reserve").
 */
const PRESSURE_FRACTION = 0.9;
const STORE_RETRY_MS = 1000;
const SYNC_CHUNK_BYTES = 1024 * 1024;
const SYNC_WINDOW_CHUNKS = 4;
/** How long a connected promote waits for the peer to confirm (it persists, then answers). */
const PROMOTE_CONFIRM_TIMEOUT_MS = 5000;

export const DEFAULT_TUNING: VolumeTuning = {
  maxHardensInFlight: MAX_CONCURRENT_HARDENS, maxJobBytes: MAX_JOB_BYTES, pressureFraction: PRESSURE_FRACTION,
  storeRetryMs: STORE_RETRY_MS, syncChunkBytes: SYNC_CHUNK_BYTES, syncWindowChunks: SYNC_WINDOW_CHUNKS,
  promoteConfirmTimeoutMs: PROMOTE_CONFIRM_TIMEOUT_MS,
};

export interface VolumeStats extends CacheStats {
  waitingWrites: number;
}

export type VolumeCounters = ReplicaCounters;
