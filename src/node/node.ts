// Wires one node: store + volume (replica core in its shell) + NBD server + admin HTTP, and for a
// pair the replication link. This is the only place that knows all the pieces; each of them can be
// tested alone.
import path from 'node:path';
import { nodeByName, peersOf, type Config, type NodeConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import { NodeMetrics } from '../admin/metrics.js';
import { AdminActionError, startAdminServer, type AdminAction } from '../admin/server.js';
import { LINK_PROTOCOL_VERSION } from '../core/link-codec.js';
import type { LinkMessage } from '../core/replica-types.js';
import { PeerLink } from '../link/peer-link.js';
import { startNbdServer } from '../nbd/server.js';
import { openFileStore } from '../store/file-store.js';
import { openNbdStore } from '../store/nbd-store.js';
import type { Store } from '../store/store.js';
import { buildStatus, LinkTraffic, type NodeStatus } from './status.js';
import { MetadataFileStore } from './metadata.js';
import { RoleChangeError, Volume } from './volume.js';

export type { NodeStatus } from './status.js';

export interface RunningNode {
  nbdPort: number;
  adminPort: number;
  status(): NodeStatus;
  /**
   * Stops serving, hardens everything, syncs and closes the store. While the store fails it keeps
   * trying (Volume.stop): it resolves only once every acknowledged write is hardened.
   */
  stop(): Promise<void>;
}

export async function openStore(config: Config, node: NodeConfig): Promise<Store> {
  const location = node.store;
  return location.kind === 'file'
    ? openFileStore(location.path, config.sizeBytes)
    : openNbdStore(location.uri, config.sizeBytes);
}

/** Metadata lives beside a file store; an nbd:// store keeps it beside the config. */
export function metadataPath(config: Config, node: NodeConfig): string {
  if (node.metadata !== null) return node.metadata;
  if (node.store.kind === 'file') return `${node.store.path}.twinblock-meta.json`;
  const dir = config.sourcePath === null ? process.cwd() : path.dirname(config.sourcePath);
  return path.join(dir, `${config.volume}.${node.name}.twinblock-meta.json`);
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
  const metadata = new MetadataFileStore(metadataPath(config, nodeConfig), { volume: config.volume, sizeBytes: config.sizeBytes, trackSizeBytes: config.trackSizeBytes }, nodeName);
  let persisted;
  try {
    // A store created just now has no history whatever old metadata says: it starts fresh.
    persisted = store.createdFresh ? null : await metadata.load();
  } catch (err) {
    await store.close();
    throw err;
  }
  let metrics: NodeMetrics | null = null;
  let link: PeerLink | null = null;
  const volume = new Volume({
    node: nodeName,
    metadata: { persisted, save: (state) => metadata.save(state) },
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
        peer: peerConfig.name,
        role: config.primary === nodeName ? 'primary' as const : 'secondary' as const,
        tracker: config.tracker,
        flush: config.flush,
        degraded: config.degraded,
        quorum: { ack: config.ack, policy: config.quorum, onNoQuorum: config.onNoQuorum },
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
  metrics.registerReadCounters(() => volume.readCounters);
  metrics.registerQuorumGauges(() => volume.quorum);
  const undo: Array<() => Promise<unknown>> = [() => volume.close()];
  const traffic = new LinkTraffic();
  // Link and serve only once this start's metadata is on disk (Volume.ready; retried until then).
  await volume.ready();

  if (peerConfig !== null) {
    link = startLink(config, nodeConfig, peerConfig, volume, metrics, traffic, log);
    const started = link;
    await undoOnError(started.start(), undo);
    undo.push(() => started.close());
  }
  const nbd = await undoOnError(startNbdServer({
    host: nodeConfig.nbd.host, port: nodeConfig.nbd.port, export: volume, observer: metrics,
    maxConnections: config.nbdMaxConnections, handshakeTimeoutMs: config.nbdHandshakeTimeoutMs,
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
  }), undo);
  undo.push(() => nbd.close());
  const status = (): NodeStatus => buildStatus({ config, node: nodeConfig, peer: peerConfig, volume, link, traffic, nbdPort: nbd.port, nbdConnections: nbd.connections() });
  // POST /promote (?force=1), /demote, /resolve {"discardLocal": true}: a refused change is 409.
  const asAdmin = <T extends object>(run: () => Promise<T>) => run().catch((err: unknown) => {
    throw err instanceof RoleChangeError ? new AdminActionError(409, err.message) : err;
  });
  const actions: Record<string, AdminAction> = {
    promote: (p) => asAdmin(() => volume.promote(p['force'] === true)),
    demote: () => asAdmin(() => volume.demote()),
    resolve: (p) => asAdmin(async () => {
      if (p['discardLocal'] !== true) throw new RoleChangeError('resolve needs discardLocal: this node is the side whose changes are discarded');
      await volume.resolveDiscardLocal();
      return { resolved: true, discardLocal: true };
    }),
  };
  const admin = await undoOnError(startAdminServer({ host: nodeConfig.admin.host, port: nodeConfig.admin.port, getStatus: status, metrics, log, actions }), undo);
  log.info({ nbd: status().nbd.uri, admin: admin.port, store: store.description, role: volume.core.role, peer: peerConfig?.name ?? null }, 'node serving');

  let stopping: Promise<void> | null = null;
  return {
    nbdPort: nbd.port,
    adminPort: admin.port,
    status,
    stop: () => {
      stopping ??= (async () => {
        // Hosts first (their in-flight writes still get the peer's acks), then Volume.stop: a
        // primary hardens everything while its peer still mirrors it, then leaves the link; a
        // secondary leaves first (a primary still writing to it would keep it from ever being
        // clean). A failing store makes it retry, not fail (Volume.stop).
        await nbd.close();
        const before = volume.stats();
        await volume.stop(async () => {
          const linkWasUp = link?.connected ?? false;
          await link?.close(); // emits nothing after close: tell the core ourselves
          if (linkWasUp) volume.linkDown();
        });
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
    getRoleAndEpoch: () => ({ role: volume.core.role, epoch: volume.core.epoch }),
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
  // A misconfigured peer is retried every few seconds: say it loudly once, then quietly.
  link.on('refused', (reason, repeated) => log[repeated ? 'debug' : 'error']({ peer: peer.name, reason }, 'link refused'));
  link.on('message', (msg) => volume.linkMessage(msg));
  link.on('drain', () => volume.linkDrained());
  metrics.registerLinkGauges(() => {
    const t = traffic.totals();
    return {
      peer: peer.name, connected: link.connected, sentBytes: t.sent, receivedBytes: t.received, noticeSentBytes: t.noticeSent,
      unitedTracks: volume.core.record.unitedCount(), outOfSyncTracks: volume.core.outOfSync.count(), resyncSentBytes: volume.counters.syncBytesSent,
    };
  });
  link.on('rtt', (rttMs) => metrics.linkRttObserved(rttMs / 1000, peer.name));
  return link;
}
