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
import { LinkListener } from '../link/link-listener.js';
import { PeerLink, type LinkLogLevel, type PeerLinkOptions } from '../link/peer-link.js';
import { startNbdServer } from '../nbd/server.js';
import { BusyPoll } from './busy-poll.js';
import { openFileStore } from '../store/file-store.js';
import { openNbdStore } from '../store/nbd-store.js';
import type { Store } from '../store/store.js';
import { buildStatus, LinkTraffic, verifyView, type NodeStatus, type PeerLinkSource } from './status.js';
import { MetadataFileStore } from './metadata.js';
import { RoleChangeError, Volume } from './volume.js';
import { ArbiterShell } from '../arbiter/arbiter-shell.js';
import { UsageQueryError, UsageRecorder } from './usage.js';
import { clientText } from '../log.js';
import { EtcdClient } from '../arbiter/etcd.js';
import { performance } from 'node:perf_hooks';
import { loadTlsMaterial, type TlsMaterial } from './tls.js';
import { Dashboard } from '../admin/dashboard.js';
import { HostWriteWindow } from '../core/write-window.js';
import { buildDashboardState, observeHostWrites } from './dashboard-state.js';

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

/** Usage totals live beside the metadata: `<store>.twinblock-usage.json` (issue 14 item 7). */
export function usagePath(config: Config, node: NodeConfig): string {
  const meta = metadataPath(config, node);
  return meta.endsWith('-meta.json') ? `${meta.slice(0, -'-meta.json'.length)}-usage.json` : `${meta}.usage.json`;
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
  const peerConfigs = peersOf(config, nodeName);
  // First: a bad certificate is a one-line error before anything opens (issue 14 items 1-3).
  const tlsMaterial = nodeConfig.tls === null ? null : loadTlsMaterial(nodeConfig.tls, Date.now());
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
  // With an arbiter, etcd names the primary: a node whose metadata (or config) says primary while
  // etcd names another starts as secondary, before it takes a new epoch or applies a host write
  // the new primary lacks (issue 13 item 8).
  const etcdPrimary = config.arbiter === null || peerConfigs.length === 0 ? null : await primaryInEtcd(config, nodeName, log);
  const startRole = etcdPrimary !== null && etcdPrimary !== nodeName ? 'secondary' as const : null;
  if (startRole !== null && (persisted?.role ?? (config.primary === nodeName ? 'primary' : 'secondary')) === 'primary') {
    log.warn({ primary: etcdPrimary }, `arbiter: etcd names ${etcdPrimary} primary: starting as secondary`);
    if (persisted !== null) persisted = { ...persisted, role: 'secondary' as const };
  }
  let metrics: NodeMetrics | null = null;
  const links = new Map<string, PeerLink>();
  /** Per peer, the local send time of the newest heartbeat it echoed (the arbiter's failsafe evidence). */
  const echoed = new Map<string, number>();
  let arbiter: ArbiterShell | null = null;
  const volume = new Volume({
    node: nodeName,
    metadata: { persisted, save: (state) => metadata.save(state) },
    storeCreatedFresh: store.createdFresh,
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
    ...(peerConfigs.length === 0 ? {} : {
      mirror: {
        peers: peerConfigs.map((p) => p.name),
        role: startRole ?? (config.primary === nodeName ? 'primary' as const : 'secondary' as const),
        tracker: config.tracker,
        flush: config.flush,
        degraded: config.degraded,
        quorum: { ack: config.ack, policy: config.quorum, onNoQuorum: config.onNoQuorum },
        syncRateBytesPerSec: config.syncRateBytesPerSec,
        syncMinRateBytesPerSec: config.syncMinRateBytesPerSec,
        verifyRateBytesPerSec: config.verifyRateBytesPerSec,
        send: (peer: string, msg: LinkMessage) => links.get(peer)?.send(msg) ?? true,
        setReceiving: (peer: string, receiving: boolean) => {
          const connection = links.get(peer)?.connection;
          if (receiving) connection?.resumeReceiving();
          else connection?.pauseReceiving();
        },
      },
    }),
    onHardened: (bytes, storeWrites, seconds, reason) => metrics?.hardenDone(bytes, storeWrites, seconds, reason),
    log: (level, msg, fields) => log[level]({ ...fields }, msg),
    // With an arbiter, nothing is acknowledged before it says this node holds the lease.
    ...(config.arbiter === null ? {} : { ackGate: () => arbiter?.mayAcknowledge() ?? false }),
  });
  metrics = new NodeMetrics(() => volume.stats(), { defaultLabels: { node: nodeName, volume: config.volume } });
  metrics.registerReadCounters(() => volume.readCounters);
  metrics.registerQuorumGauges(() => volume.quorum);
  const undo: Array<() => Promise<unknown>> = [() => volume.close()];
  // Link and serve only once this start's metadata is on disk (Volume.ready; retried until then).
  await volume.ready();
  const usage = await undoOnError(UsageRecorder.open({
    volume, volumeName: config.volume, node: nodeName, sizeBytes: config.sizeBytes, file: usagePath(config, nodeConfig), fresh: store.createdFresh === true,
    logPath: config.usageLog, intervalMs: config.usageIntervalMs, log: (level, msg, fields) => log[level]({ ...fields }, msg),
  }), undo);
  usage.start();
  metrics.registerUsageCounters(() => usage.report().usage);

  // One per process: the NBD server says when the host is at low depth, the links poll for acks then.
  const busyPoll = new BusyPoll(config.busyPollUs);
  const nodeLinks = peerConfigs.length === 0 ? null : await undoOnError(startLinks(config, nodeConfig, peerConfigs, volume, metrics, log, echoed, { tls: tlsMaterial, busyPoll }), undo);
  for (const p of nodeLinks?.peers ?? []) links.set(p.name, p.link);
  if (nodeLinks !== null) undo.push(() => nodeLinks.close());
  const peers = nodeLinks?.peers ?? [];
  if (config.arbiter !== null) {
    arbiter = new ArbiterShell({
      config: config.arbiter, node: nodeName, peers: peerConfigs.map((p) => p.name), volumeName: config.volume,
      heartbeatTimeoutMs: config.heartbeatTimeoutMs, ackQuorum: config.ack === 'quorum', volume, echoedSentAtMs: (peer) => echoed.get(peer) ?? null,
      cleanStart: persisted === null || persisted.cleanShutdown,
      log: (level, msg, fields) => log[level]({ ...fields }, msg),
    });
    await undoOnError(arbiter.start(), undo);
    const running = arbiter;
    undo.push(() => running.stop());
    metrics.registerArbiterGauges(() => {
      const a = running.status();
      return { connected: a.connected, holdsLease: a.state === 'leader', leaseRemainingMs: a.leaseRemainingMs, epoch: a.epoch, heldReplies: volume.heldReplyCount };
    });
  }
  const hostWrites = new HostWriteWindow(performance.now());
  const nbd = await undoOnError(startNbdServer({
    host: nodeConfig.nbd.host, port: nodeConfig.nbd.port, export: volume, observer: observeHostWrites(metrics, hostWrites),
    maxConnections: config.nbdMaxConnections, handshakeTimeoutMs: config.nbdHandshakeTimeoutMs,
    tls: tlsMaterial === null || config.nbdTls === 'off' ? null : { context: tlsMaterial.context, mode: config.nbdTls },
    busyPoll,
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
  }), undo);
  undo.push(() => nbd.close());
  const status = (): NodeStatus => buildStatus({ config, node: nodeConfig, peers, volume, nbdPort: nbd.port, nbdConnections: nbd.connections(), arbiter: arbiter?.status() ?? null,
    hostWrites: hostWrites.read(performance.now()),
  });
  // POST /promote (?force=1), /demote, /resolve {"discardLocal": true}: a refused change is 409.
  const asAdmin = <T extends object>(run: () => Promise<T>) => run().catch((err: unknown) => {
    throw err instanceof RoleChangeError ? new AdminActionError(409, err.message) : err;
  });
  const actions: Record<string, AdminAction> = {
    // With an arbiter a promotion is etcd's transaction first (issue 13 item 5), forced or not.
    promote: (p) => asAdmin(() => (arbiter === null ? volume.promote(p['force'] === true) : arbiter.promoteByOperator())),
    demote: () => asAdmin(() => volume.demote()),
    resolve: (p) => asAdmin(async () => {
      if (p['discardLocal'] !== true) throw new RoleChangeError('resolve needs discardLocal: this node is the side whose changes are discarded');
      await volume.resolveDiscardLocal();
      return { resolved: true, discardLocal: true };
    }),
    // POST /verify {"peer": "b", "resync": true}: starts an online verify (issue 14 item 4) and
    // answers at once; /status `verify` shows its progress and, once it ends, its result.
    verify: (p) => asAdmin(async () => {
      const peer = p['peer'];
      if (peer !== undefined && typeof peer !== 'string') throw new AdminActionError(400, 'peer: give a node name');
      return { started: true, verify: verifyView(volume.verify(peer ?? null, p['resync'] === true)) };
    }),
  };
  const getUsage = async (query: Record<string, string>): Promise<object> => {
    if (query['since'] === undefined) return usage.report();
    const sinceMs = Date.parse(query['since']);
    if (Number.isNaN(sinceMs)) throw new AdminActionError(400, `since: "${clientText(query['since'], 60)}" is not a time (use ISO 8601, e.g. 2026-12-04T10:00:00Z)`);
    return usage.reportSince(sinceMs).catch((err: unknown) => {
      throw err instanceof UsageQueryError ? new AdminActionError(400, err.message) : err;
    });
  };
  const dashboard = new Dashboard({
    volume: config.volume, self: nodeName, nodes: config.nodes.map((n) => ({ name: n.name, admin: n.admin })),
    getState: () => buildDashboardState(status(), volume.core), log, ca: tlsMaterial?.ca ?? null,
  });
  undo.push(async () => dashboard.close());
  const admin = await undoOnError(startAdminServer({
    host: nodeConfig.admin.host, port: nodeConfig.admin.port, getStatus: status, metrics, log, actions, adminToken: config.adminToken, getUsage,
    pages: (req, res, path) => dashboard.handle(req, res, path), tls: tlsMaterial,
  }), undo);
  if (tlsMaterial !== null) log.info({ cert: tlsMaterial.files.cert, subject: tlsMaterial.subject, validTo: new Date(tlsMaterial.validToMs).toISOString(), nbdTls: config.nbdTls }, 'tls: link is mutual TLS, admin is HTTPS');
  log.info({ nbd: status().nbd.uri, admin: admin.port, store: store.description, role: volume.core.role, peers: peerConfigs.map((p) => p.name) }, 'node serving');

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
        // With an arbiter a stopping primary hands over: it demotes (its writes drained, its peers
        // in sync hold them all), then lets its lease go, so a secondary takes over at once and
        // this node returns as secondary with a delta, not as a diverged primary.
        if (arbiter !== null && volume.core.role === 'primary') {
          await volume.demote().catch((err: unknown) => log.warn({ error: String(err) }, 'stopping: hand-over demote failed'));
        }
        await arbiter?.stop();
        const before = volume.stats();
        await volume.stop(async () => nodeLinks?.close());
        await usage.stop();
        log.info({ hardenedBytes: before.dirtyBytes }, 'hardened everything; store closed');
        dashboard.close();
        await admin.close();
      })();
      return stopping;
    },
  };
}

/**
 * The primary etcd names for this volume (state key), read at start; null when it names none or
 * does not answer within two lease TTLs (the node then starts in its own role, and acknowledges
 * nothing until the arbiter holds the lease or the failsafe holds).
 */
async function primaryInEtcd(config: Config, nodeName: string, log: Logger): Promise<string | null> {
  const arbiter = config.arbiter!;
  const etcd = new EtcdClient({ endpoints: arbiter.etcd, prefix: arbiter.prefix, volume: config.volume, leaseTtlMs: arbiter.leaseTtlMs, requestTimeoutMs: 500 });
  const deadline = performance.now() + 2 * arbiter.leaseTtlMs;
  for (;;) {
    try {
      const record = await etcd.read();
      return record.leader?.node ?? record.state?.primary ?? null;
    } catch (err) {
      if (performance.now() > deadline) {
        log.warn({ node: nodeName, endpoints: arbiter.etcd, error: (err as Error).message }, 'arbiter: etcd not reached at start');
        return null;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * The replication links to every other node (full mesh, issue 12), feeding the volume's core
 * (DESIGN.md "Write path"): one listener on this node's link address, one PeerLink per peer.
 */
async function startLinks(config: Config, node: NodeConfig, peerConfigs: NodeConfig[], volume: Volume, metrics: NodeMetrics, log: Logger, echoed: Map<string, number>, io: { tls: TlsMaterial | null; busyPoll: BusyPoll }): Promise<{ peers: PeerLinkSource[]; close(): Promise<void> }> {
  if (node.link === null || config.secret === null) throw new Error('a mirrored volume needs link addresses and a secret');
  const common = {
    node: node.name,
    listen: node.link,
    secret: config.secret,
    identity: {
      protocolVersion: LINK_PROTOCOL_VERSION, volumeId: config.volume, sizeBytes: config.sizeBytes,
      trackSizeBytes: config.trackSizeBytes, rangeTracks: config.rangeTracks,
    },
    getRoleAndEpoch: () => ({ role: volume.core.role, epoch: volume.core.epoch }),
    heartbeatIntervalMs: Math.max(25, Math.floor(config.heartbeatTimeoutMs / 4)),
    heartbeatTimeoutMs: config.heartbeatTimeoutMs,
    tls: io.tls,
    busyPoll: io.busyPoll,
    log: (level: LinkLogLevel, msg: string, fields?: Record<string, unknown>) => log[level]({ ...fields }, msg),
  };
  const listener = new LinkListener(common);
  const peers = peerConfigs.map((peer) => startLink(common, listener, peer, volume, log));
  // Every link closes (each emits nothing after close: the core hears of each that was up here).
  const close = async (): Promise<void> => {
    for (const p of peers) {
      const wasUp = p.link.connected;
      await p.link.close();
      if (wasUp) volume.linkDown(p.name);
    }
    await listener.close();
  };
  metrics.registerLinkGauges(() => peers.map((p) => {
    const t = p.traffic.totals();
    const ch = volume.core.peers.find((c) => c.name === p.name);
    return {
      peer: p.name, connected: p.link.connected, sentBytes: t.sent, receivedBytes: t.received, noticeSentBytes: t.noticeSent,
      unitedTracks: ch?.record.unitedCount() ?? 0, outOfSyncTracks: ch?.outOfSync.count() ?? 0, resyncSentBytes: ch?.resyncBytesSent ?? 0,
    };
  }));
  for (const p of peers) {
    p.link.on('rtt', (rttMs) => {
      metrics.linkRttObserved(rttMs / 1000, p.name);
      echoed.set(p.name, performance.now() - rttMs);
    });
    p.link.on('down', () => echoed.delete(p.name));
  }
  await listener.start();
  try {
    for (const p of peers) await p.link.start();
  } catch (err) {
    await close();
    throw err;
  }
  return { peers, close };
}

/** The link to one peer. */
function startLink(common: Omit<PeerLinkOptions, 'peer' | 'listener'>, listener: LinkListener, peer: NodeConfig, volume: Volume, log: Logger): PeerLinkSource {
  if (peer.link === null) throw new Error(`node ${peer.name} has no link address`);
  const link = new PeerLink({ ...common, listener, peer: { name: peer.name, host: peer.link.host, port: peer.link.port } });
  const traffic = new LinkTraffic();
  link.on('up', (connection) => {
    traffic.attach(connection);
    log.info({ peer: peer.name }, 'link up: peer connected and authenticated');
    volume.linkEstablished(peer.name);
  });
  link.on('down', (reason) => {
    traffic.detach();
    log.warn({ peer: peer.name, reason }, 'link down');
    volume.linkDown(peer.name);
  });
  // A misconfigured peer is retried every few seconds: say it loudly once, then quietly.
  link.on('refused', (reason, repeated) => log[repeated ? 'debug' : 'error']({ peer: peer.name, reason }, 'link refused'));
  link.on('message', (msg) => volume.linkMessage(peer.name, msg));
  link.on('drain', () => volume.linkDrained(peer.name));
  return { name: peer.name, link, traffic };
}
