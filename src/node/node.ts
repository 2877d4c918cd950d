// Wires one node: store + volume (replica core in its shell) + NBD server + admin HTTP, and for a
// pair the replication link. This is the only place that knows all the pieces; each of them can be
// tested alone.
import { nodeByName, peersOf, type Config, type NodeConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import { NodeMetrics } from '../admin/metrics.js';
import { startAdminServer } from '../admin/server.js';
import { LINK_PROTOCOL_VERSION } from '../core/link-codec.js';
import type { LinkMessage } from '../core/replica-types.js';
import { PeerLink } from '../link/peer-link.js';
import { startNbdServer } from '../nbd/server.js';
import { openFileStore } from '../store/file-store.js';
import { openNbdStore } from '../store/nbd-store.js';
import type { Store } from '../store/store.js';
import { buildStatus, LinkTraffic, type NodeStatus } from './status.js';
import { Volume } from './volume.js';

export type { NodeStatus } from './status.js';

export interface RunningNode {
  nbdPort: number;
  adminPort: number;
  status(): NodeStatus;
  /** Stops serving, hardens everything, syncs and closes the store. */
  stop(): Promise<void>;
}

export async function openStore(config: Config, node: NodeConfig): Promise<Store> {
  const location = node.store;
  return location.kind === 'file'
    ? openFileStore(location.path, config.sizeBytes)
    : openNbdStore(location.uri, config.sizeBytes);
}

/** Closes what started so far when a later step of startup fails, then rethrows. */
async function undoOnError<T>(step: Promise<T>, undo: Array<() => Promise<unknown>>): Promise<T> {
  try {
    return await step;
  } catch (err) {
    for (const u of undo.reverse()) await u().catch(() => undefined);
    throw err;
  }
}

export async function startNode(config: Config, nodeName: string, log: Logger): Promise<RunningNode> {
  const nodeConfig = nodeByName(config, nodeName);
  const peerConfig = peersOf(config, nodeName)[0] ?? null;
  const store = await openStore(config, nodeConfig);
  let metrics: NodeMetrics | null = null;
  let link: PeerLink | null = null;
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
    ...(peerConfig === null ? {} : {
      mirror: {
        role: config.primary === nodeName ? 'primary' as const : 'secondary' as const,
        tracker: config.tracker,
        flush: config.flush,
        degraded: config.degraded,
        syncRateBytesPerSec: config.syncRateBytesPerSec,
        send: (msg: LinkMessage) => link?.send(msg) ?? true,
        setReceiving: (receiving: boolean) => {
          if (receiving) link?.connection?.resumeReceiving();
          else link?.connection?.pauseReceiving();
        },
      },
    }),
    onHardened: (bytes, storeWrites, seconds, reason) => metrics?.hardenDone(bytes, storeWrites, seconds, reason),
    log: (level, msg, fields) => log[level]({ ...fields }, msg),
  });
  metrics = new NodeMetrics(() => volume.stats(), { defaultLabels: { node: nodeName, volume: config.volume } });
  const undo: Array<() => Promise<unknown>> = [() => volume.close()];
  const traffic = new LinkTraffic();

  if (peerConfig !== null) {
    link = startLink(config, nodeConfig, peerConfig, volume, metrics, traffic, log);
    const started = link;
    await undoOnError(started.start(), undo);
    undo.push(() => started.close());
  }
  const nbd = await undoOnError(startNbdServer({
    host: nodeConfig.nbd.host, port: nodeConfig.nbd.port, export: volume, observer: metrics,
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
  }), undo);
  undo.push(() => nbd.close());
  const status = (): NodeStatus => buildStatus({ config, node: nodeConfig, peer: peerConfig, volume, link, traffic, nbdPort: nbd.port, nbdConnections: nbd.connections() });
  const admin = await undoOnError(startAdminServer({ host: nodeConfig.admin.host, port: nodeConfig.admin.port, getStatus: status, metrics, log }), undo);
  log.info({ nbd: status().nbd.uri, admin: admin.port, store: store.description, role: volume.core.role, peer: peerConfig?.name ?? null }, 'node serving');

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
        await link?.close();
        log.info({ hardenedBytes: before.dirtyBytes }, 'hardened everything; store closed');
        await admin.close();
      })();
      return stopping;
    },
  };
}

/** The replication link to the peer, feeding the volume's core (DESIGN.md "Write path"). */
function startLink(config: Config, node: NodeConfig, peer: NodeConfig, volume: Volume, metrics: NodeMetrics, traffic: LinkTraffic, log: Logger): PeerLink {
  if (node.link === null || peer.link === null || config.secret === null) throw new Error('a pair needs link addresses and a secret');
  const link = new PeerLink({
    node: node.name,
    listen: node.link,
    peer: { name: peer.name, host: peer.link.host, port: peer.link.port },
    secret: config.secret,
    identity: {
      protocolVersion: LINK_PROTOCOL_VERSION, volumeId: config.volume, sizeBytes: config.sizeBytes,
      trackSizeBytes: config.trackSizeBytes, rangeTracks: config.rangeTracks,
    },
    getRoleAndEpoch: () => ({ role: volume.core.role, epoch: 0 }),
    heartbeatIntervalMs: Math.max(25, Math.floor(config.heartbeatTimeoutMs / 4)),
    heartbeatTimeoutMs: config.heartbeatTimeoutMs,
    log: (level, msg, fields) => log[level]({ ...fields }, msg),
  });
  link.on('up', (connection) => {
    traffic.attach(connection);
    log.info({ peer: peer.name }, 'link up: peer connected and authenticated');
    volume.linkEstablished();
  });
  link.on('down', (reason) => {
    traffic.detach();
    log.warn({ peer: peer.name, reason }, 'link down');
    volume.linkDown();
  });
  link.on('refused', (reason) => log.error({ peer: peer.name, reason }, 'link refused'));
  link.on('message', (msg) => volume.linkMessage(msg));
  link.on('drain', () => volume.linkDrained());
  metrics.registerLinkGauges(() => {
    const t = traffic.totals();
    return {
      connected: link.connected, sentBytes: t.sent, receivedBytes: t.received, noticeSentBytes: t.noticeSent,
      unitedTracks: volume.core.record.unitedCount(), outOfSyncTracks: volume.core.outOfSync.count(),
    };
  });
  link.on('rtt', (rttMs) => metrics.linkRttObserved(rttMs / 1000));
  return link;
}
