// Per-seed options, drawn from the seed (swarm testing, as in TigerBeetle's VOPR: every seed gets
// its own mix of geometry, policies, latencies and fault rates, so one run of many seeds covers
// configurations no hand-written test would combine). Volumes are tiny on purpose: a few dozen
// tracks of 4-8 KiB with caches of a few tracks, so back-pressure, eviction and range cycles
// happen within a few hundred host operations.
import type { TrackerKind } from '../src/core/notifier.js';
import type { DegradedPolicy, FlushPolicy, QuorumSettings } from '../src/core/replica-types.js';
import type { Prng } from './prng.js';

export interface NodeOptions {
  cacheTracks: number;
  storeWriteMeanMs: number;
  storeReadMeanMs: number;
  storeSyncMeanMs: number;
  /** Extra mean delay of every message to this node (a slow secondary; three nodes or more). */
  slowLinkMs: number;
}

export interface FaultWeights {
  drop: number;
  partition: number;
  corrupt: number;
  crashSecondary: number;
  crashPrimary: number;
  storeFail: number;
  /** A node stops reading its links for a while (SIGSTOP, swapping): three nodes or more. */
  stall: number;
}

/**
 * Storage fault rates (issue 10 item 3), each drawn per seed and on in a share of the seeds:
 * a probability per operation (stall: per operation, that the store stops answering for a while).
 */
export interface StorageFaults {
  writeFail: number;
  readFail: number;
  fsyncFail: number;
  metadataFail: number;
  stall: number;
}

const NO_STORAGE_FAULTS: StorageFaults = { writeFail: 0, readFail: 0, fsyncFail: 0, metadataFail: 0, stall: 0 };

export interface SimOptions {
  trackSizeBytes: number;
  trackCount: number;
  rangeTracks: number;
  tracker: TrackerKind;
  flush: FlushPolicy;
  degraded: DegradedPolicy;
  maxDirtyAgeMs: number;
  destageIntervalMs: number;
  rangeDirtyThresholdTracks: number;
  maxJobTracks: number;
  pressureFraction: number;
  maxHardensInFlight: number;
  syncChunkTracks: number;
  syncWindowChunks: number;
  syncRateBytesPerSec: number;
  storeRetryMs: number;
  /** One per node: two (a pair), or three to five (issue 12: `overrides.nodes`). */
  nodes: NodeOptions[];
  linkDelayMeanMs: number;
  /** Messages queued on a direction before the sender is told to stop (link back-pressure). */
  linkHighWater: number;
  /** Heartbeat-timeout-like delay before a node notices a silent dead link. */
  detectMeanMs: number;
  reconnectMeanMs: number;
  hostOps: number;
  hostQueueDepth: number;
  hostGapMeanMs: number;
  maxOpBlocks: number;
  /** Fraction of writes aimed at a small hot span, so writes overlap and race. */
  hotFraction: number;
  faultGapMeanMs: number;
  faults: FaultWeights;
  /** Weight of a planned switchover (demote, then promote the other) among the faults. */
  switchoverWeight: number;
  /** How long the operator takes to promote the survivor after the primary dies. */
  promoteMeanMs: number;
  downMeanMs: number;
  partitionMeanMs: number;
  /** How long a stalled node stops reading (three nodes or more). */
  stallMeanMs: number;
  /** Half the crashes are a power loss of the machine (unsynced sectors may be lost; sim/disk.ts). */
  powerLoss: boolean;
  storage: StorageFaults;
  /** Weight of a clean restart (SIGTERM: harden all, clean-shutdown metadata, start again). */
  cleanRestartWeight: number;
  /** Simulated time after the workload ends within which the pair must be in sync again. */
  livenessLimitMs: number;
  /** Issue 12's policies; with `policy: majority` a primary without its peer answers no write. */
  quorum: QuorumSettings;
}

export interface OptionOverrides {
  faults?: boolean;
  powerLoss?: boolean;
  /** false: no random storage faults (store, fsync, metadata, stall). */
  storageFaults?: boolean;
  tracker?: TrackerKind;
  flush?: FlushPolicy;
  quorum?: QuorumSettings['policy'];
  ack?: QuorumSettings['ack'];
  /** Nodes in the volume: 2 (the default) to 5. */
  nodes?: number;
}

export function drawOptions(prng: Prng, overrides: OptionOverrides = {}): SimOptions {
  const trackSizeBytes = prng.pick([4096, 8192]);
  const trackCount = prng.range(16, 48);
  const minCache = 6;
  const node = (): NodeOptions => ({
    cacheTracks: prng.range(minCache, 16),
    storeWriteMeanMs: prng.range(1, 15),
    storeReadMeanMs: prng.range(0, 4),
    storeSyncMeanMs: prng.range(0, 10),
    slowLinkMs: 0,
  });
  const nodes: NodeOptions[] = [node(), node()];
  const rangeTracks = prng.pick([1, 2, 4, 8]);
  const maxDirtyAgeMs = prng.range(40, 600);
  const faultsOn = overrides.faults ?? true;
  const drawn = {
    trackSizeBytes,
    trackCount,
    rangeTracks,
    tracker: overrides.tracker ?? prng.pick<TrackerKind>(['destage-scan', 'toggle-counter', 'selective']),
    flush: overrides.flush ?? prng.pick<FlushPolicy>(['memory', 'disk']),
    degraded: prng.pick<DegradedPolicy>(['write-through', 'write-through', 'write-back']),
    maxDirtyAgeMs,
    destageIntervalMs: prng.range(10, 400),
    rangeDirtyThresholdTracks: prng.range(1, rangeTracks + 1),
    maxJobTracks: prng.range(1, 4),
    pressureFraction: prng.pick([0.3, 0.5, 0.8, 0.95]),
    maxHardensInFlight: prng.range(1, 4),
    // A sync chunk must fit in half of either cache, or the secondary applies it in pieces.
    syncChunkTracks: prng.range(1, Math.floor(minCache / 2)),
    syncWindowChunks: prng.range(1, 4),
    syncRateBytesPerSec: prng.pick([2, 8, 64, 1024]) * 1024 * 1024,
    storeRetryMs: prng.range(20, 200),
    nodes,
    linkDelayMeanMs: prng.range(0, 4),
    linkHighWater: prng.range(4, 64),
    detectMeanMs: prng.range(5, 100),
    reconnectMeanMs: prng.range(5, 100),
    hostOps: prng.range(150, 400),
    hostQueueDepth: prng.range(1, 8),
    hostGapMeanMs: prng.range(0, 4),
    maxOpBlocks: prng.range(1, (2 * trackSizeBytes) / 512),
    hotFraction: prng.pick([0, 0.3, 0.7]),
    faultGapMeanMs: prng.range(20, 300),
    faults: faultsOn ? {
      drop: prng.range(0, 4),
      partition: prng.range(0, 3),
      corrupt: prng.range(0, 3),
      crashSecondary: prng.range(0, 4),
      crashPrimary: prng.range(0, 4),
      storeFail: prng.range(0, 1),
      stall: 0,
    } : { drop: 0, partition: 0, corrupt: 0, crashSecondary: 0, crashPrimary: 0, storeFail: 0, stall: 0 },
    switchoverWeight: faultsOn ? prng.range(0, 2) : 0,
    promoteMeanMs: prng.range(5, 300),
    downMeanMs: prng.range(10, 200),
    partitionMeanMs: prng.range(10, 300),
    stallMeanMs: 0,
    livenessLimitMs: 60_000,
    // Drawn last, so that adding it left every earlier draw of a seed as it was.
    cleanRestartWeight: faultsOn ? prng.range(0, 2) : 0,
  };
  // Drawn after everything above, for the same reason.
  const storageOn = faultsOn && overrides.storageFaults !== false;
  const storage: StorageFaults = storageOn ? {
    writeFail: prng.chance(0.4) ? prng.pick([0.01, 0.03, 0.1]) : 0,
    readFail: prng.chance(0.3) ? prng.pick([0.01, 0.05]) : 0,
    fsyncFail: prng.chance(0.4) ? prng.pick([0.02, 0.1, 0.3]) : 0,
    metadataFail: prng.chance(0.4) ? prng.pick([0.05, 0.2, 0.5]) : 0,
    stall: prng.chance(0.3) ? prng.pick([0.002, 0.01]) : 0,
  } : NO_STORAGE_FAULTS;
  const powerLoss = overrides.powerLoss ?? (faultsOn && prng.chance(0.5));
  // Drawn last of all (issue 12), so every seed's earlier draws stay as they were.
  const quorum: QuorumSettings = {
    ack: prng.pick<QuorumSettings['ack']>(['all', 'quorum']),
    policy: overrides.quorum ?? (prng.chance(0.3) ? 'majority' : 'off'),
    onNoQuorum: prng.pick<QuorumSettings['onNoQuorum']>(['suspend-io', 'io-error']),
  };
  if (overrides.ack !== undefined) quorum.ack = overrides.ack;
  const options: SimOptions = { ...drawn, storage, powerLoss, quorum };
  const count = overrides.nodes ?? 2;
  if (count > 2) drawSeveral(prng, options, count, node, faultsOn, overrides);
  return options;
}

/**
 * Issue 12 item 8: a volume of three nodes or more. Drawn after everything a pair draws, so a
 * pair's seed stays as it was: the extra nodes, slow secondaries, stalls, and the quorum policy.
 */
function drawSeveral(prng: Prng, o: SimOptions, count: number, node: () => NodeOptions, faultsOn: boolean, overrides: OptionOverrides): void {
  if (count > 5) throw new Error(`sim: --nodes ${count}: at most 5`);
  while (o.nodes.length < count) o.nodes.push(node());
  for (let i = 1; i < count; i++) if (prng.chance(0.25)) o.nodes[i]!.slowLinkMs = prng.range(5, 40);
  if (faultsOn) o.faults.stall = prng.range(0, 3);
  o.stallMeanMs = prng.range(20, 400);
  // `majority`, the default from three nodes on. With `off`, a promotion that fails after a node
  // confirmed it leaves that node a branch of history no later proposal extends (README, known
  // limits): `--quorum off` runs such seeds by hand.
  if (overrides.quorum === undefined) o.quorum.policy = 'majority';
}

/** One line for the trace header: enough to see which corner of the swarm a seed is in. */
export function describeOptions(o: SimOptions): string {
  return [
    `tracks=${o.trackCount}x${o.trackSizeBytes / 1024}KiB range=${o.rangeTracks}`,
    `tracker=${o.tracker} flush=${o.flush} degraded=${o.degraded} quorum=${o.quorum.policy}/${o.quorum.onNoQuorum} ack=${o.quorum.ack}`,
    `${o.nodes.length > 2 ? `nodes=${o.nodes.length} slow=${o.nodes.map((n) => n.slowLinkMs).join('/')} stall=${o.faults.stall}/${o.stallMeanMs}ms ` : ''}cache=${o.nodes.map((n) => n.cacheTracks).join('/')}tr age=${o.maxDirtyAgeMs}ms scan=${o.destageIntervalMs}ms thr=${o.rangeDirtyThresholdTracks}`,
    `ops=${o.hostOps} qd=${o.hostQueueDepth} faults=${JSON.stringify(o.nodes.length > 2 ? o.faults : { ...o.faults, stall: undefined })} storage=${JSON.stringify(o.storage)} powerLoss=${o.powerLoss}`,
  ].join(' ');
}
