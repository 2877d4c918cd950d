// Wires one node: store + volume (cache and hardening) + NBD server + admin HTTP. This is the
// only place that knows all the pieces; each of them can be tested alone.
import { formatAddress, nodeByName, type Config, type NodeConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import { NodeMetrics } from '../admin/metrics.js';
import { startAdminServer } from '../admin/server.js';
import { startNbdServer } from '../nbd/server.js';
import { openFileStore } from '../store/file-store.js';
import { openNbdStore } from '../store/nbd-store.js';
import type { Store } from '../store/store.js';
import { Volume, type VolumeCounters } from './volume.js';

export interface RunningNode {
  nbdPort: number;
  adminPort: number;
  status(): NodeStatus;
  /** Stops serving, hardens everything, syncs and closes the store. */
  stop(): Promise<void>;
}

export interface NodeStatus {
  node: string;
  volume: string;
  role: 'primary' | 'secondary';
  mode: 'standalone' | 'mirrored';
  epoch: number;
  pid: number;
  sizeBytes: number;
  trackSizeBytes: number;
  rangeTracks: number;
  tracker: string;
  flush: string;
  store: string;
  nbd: { uri: string; connections: number };
  cache: {
    capacityBytes: number;
    chargedBytes: number;
    dirtyBytes: number;
    oldestDirtyAgeMs: number;
    cachedTracks: number;
    dirtyTracks: number;
    hardeningTracks: number;
    waitingWrites: number;
  };
  /** What a failure of this node alone would lose right now if it were not mirrored. */
  exposure: { unhardenedBytes: number; oldestDirtyAgeMs: number; maxDirtyAgeMs: number };
  counters: VolumeCounters & { linkBytesSent: number; resyncBytesSent: number };
  peers: unknown[];
}

export async function openStore(config: Config, node: NodeConfig): Promise<Store> {
  const location = node.store;
  return location.kind === 'file'
    ? openFileStore(location.path, config.sizeBytes)
    : openNbdStore(location.uri, config.sizeBytes);
}

export async function startNode(config: Config, nodeName: string, log: Logger): Promise<RunningNode> {
  const nodeConfig = nodeByName(config, nodeName);
  const store = await openStore(config, nodeConfig);
  let metrics: NodeMetrics | null = null;
  const volume = new Volume({
    name: config.volume,
    description: `twinblock volume ${config.volume} on node ${nodeName}`,
    sizeBytes: config.sizeBytes,
    trackSizeBytes: config.trackSizeBytes,
    cacheBytes: nodeConfig.cacheBytes,
    rangeTracks: config.rangeTracks,
    hardening: {
      maxDirtyAgeMs: config.maxDirtyAgeMs,
      destageIntervalMs: config.destageIntervalMs,
      rangeDirtyThresholdTracks: config.rangeDirtyThresholdTracks,
    },
    store,
    onHardened: (bytes, storeWrites, seconds, reason) => metrics?.hardenDone(bytes, storeWrites, seconds, reason),
    log: (level, msg, fields) => log[level]({ ...fields, store: store.description }, msg),
  });
  metrics = new NodeMetrics(() => volume.stats(), { defaultLabels: { node: nodeName, volume: config.volume } });

  let nbd: Awaited<ReturnType<typeof startNbdServer>>;
  try {
    nbd = await startNbdServer({
      host: nodeConfig.nbd.host, port: nodeConfig.nbd.port, export: volume, observer: metrics,
      log: (level, msg, fields) => log[level](fields ?? {}, msg),
    });
  } catch (err) {
    await volume.close();
    throw err;
  }
  const status = (): NodeStatus => buildStatus(config, nodeConfig, volume, nbd.port, nbd.connections());
  let admin: Awaited<ReturnType<typeof startAdminServer>>;
  try {
    admin = await startAdminServer({ host: nodeConfig.admin.host, port: nodeConfig.admin.port, getStatus: status, metrics, log });
  } catch (err) {
    await nbd.close();
    await volume.close();
    throw err;
  }
  log.info({ nbd: `nbd://${formatAddress({ host: nodeConfig.nbd.host, port: nbd.port })}/${config.volume}`, admin: admin.port, store: store.description }, 'node serving');

  let stopping: Promise<void> | null = null;
  return {
    nbdPort: nbd.port,
    adminPort: admin.port,
    status,
    stop: () => {
      stopping ??= (async () => {
        await nbd.close();
        const before = volume.stats();
        await volume.close();
        log.info({ hardenedBytes: before.dirtyBytes }, 'hardened everything; store closed');
        await admin.close();
      })();
      return stopping;
    },
  };
}

function buildStatus(config: Config, node: NodeConfig, volume: Volume, nbdPort: number, connections: number): NodeStatus {
  const s = volume.stats();
  return {
    node: node.name,
    volume: config.volume,
    role: config.primary === node.name ? 'primary' : 'secondary',
    mode: config.nodes.length === 1 ? 'standalone' : 'mirrored',
    epoch: 0,
    pid: process.pid,
    sizeBytes: config.sizeBytes,
    trackSizeBytes: config.trackSizeBytes,
    rangeTracks: config.rangeTracks,
    tracker: config.tracker,
    flush: config.nodes.length === 1 ? 'disk' : config.flush,
    store: volume.storeDescription,
    nbd: { uri: `nbd://${formatAddress({ host: node.nbd.host, port: nbdPort })}/${config.volume}`, connections },
    cache: {
      capacityBytes: s.capacityBytes, chargedBytes: s.chargedBytes, dirtyBytes: s.dirtyBytes,
      oldestDirtyAgeMs: s.oldestDirtyAgeMs, cachedTracks: s.cachedTracks,
      dirtyTracks: s.dirtyTracks, hardeningTracks: s.hardeningTracks, waitingWrites: s.waitingWrites,
    },
    exposure: { unhardenedBytes: s.dirtyBytes, oldestDirtyAgeMs: s.oldestDirtyAgeMs, maxDirtyAgeMs: config.maxDirtyAgeMs },
    // The link and resync counters stay zero until mirroring exists (issue 4).
    counters: { ...volume.counters, hardenRuns: { ...volume.counters.hardenRuns }, linkBytesSent: 0, resyncBytesSent: 0 },
    peers: [],
  };
}
