// The replica core: one node's whole state machine — cache, hardening, the peer-unhardened record,
// the hardening notifier, the mirrored write path, durability ops and the initial sync. Pure and
// synchronous (DESIGN.md "Architecture"): the shell feeds it events (host requests, link
// messages, store completions, ticks with the time) and carries out the actions it emits (send a
// message, answer a host, harden a job, sync the store, read for the initial sync). The same core
// runs standalone (no peer), as either half of a mirrored pair, and as any node of a volume of up to
// eight (DESIGN.md "Several secondaries": what is built of it).
//
// Write path (seed Fig. 4, DESIGN.md "Write path"): the primary puts the write into its cache,
// marks the tracks in its current bitmap for the peer (step 62) and sends the write (step 64); the
// secondary caches it, marks its own current bitmap (step 66) and acks; on the ack the primary
// answers the host. Neither side waits for its disk. The link is one ordered stream, and the
// secondary applies its messages strictly in order (a write that finds its cache full holds back
// every later message), so overlapping writes end byte-identical on both nodes.
//
// Durability (DESIGN.md "Durability policy"): FLUSH and FUA with `flush: memory` are satisfied by
// the mirrored ack; with `flush: disk` they also harden on both nodes. Standalone, a FLUSH or FUA
// hardens locally. A primary without its peer (connecting, degraded) acknowledges a write only
// once hardened locally, unless `degraded: write-back`.
//
// Failures (DESIGN.md "Failures"): at link-up both sides exchange state (epoch history, trust,
// out-of-sync and dirty bitmaps); the newer history is the resync source and sends the out-of-sync
// tracks of both sides, reading each chunk through its cache in the same step it sends it, while
// host writes keep flowing behind it on the ordered link; diverged histories are split brain. The
// primary never hardens a mirrored write the peer has not acknowledged, and a primary alone starts
// a new epoch (persisted) before it hardens anything its peer lacks.
//
// The state machine is composed of parts, each in its own file: the data path (replica-data.ts:
// host writes, acks per policy, durability ops, hardening, and the role every part reads), the
// link half (replica-link.ts: state exchange, resync, epoch history, persisted state), the roles
// (replica-roles.ts: promote, demote, resolve, with the promotion handshake and, among three or
// more nodes, the survey that fetches what the promoted node lacks) and smaller parts they own
// (mirrored writes and their acks, hardening notices, durable notices, quorum, the resync
// sender, plan and intake, the position in the write stream). What the node keeps of each other node — its
// peer state, link, Fig. 3 record, notifier, out-of-sync set, inbound stream, resync — is one peer
// channel per peer (peer-channel.ts): one in a pair, none standalone, up to seven (issue 12). This class owns them and is the only entry: it takes every
// event, calls each part in turn when the work spans them, and shows the outside read-only views.
// Calls go one way (core → roles → link half → data path); no part holds a hook back up. The peer state
// moves only along the table in peer-state.ts, and the invariants the parts keep between them are
// asserted after every event, at takeActions (checkBoundary).
import { assert, assertionFailed } from './assert.js';
import { earlierMs } from './backoff.js';
import { lastPrimary, type EpochEntry } from './epochs.js';
import type { LinkMessage, PeerState, PersistedState, QuorumView, ReplicaAction, Role } from './replica-types.js';
import type { TrackBitmap } from './bitmap.js';
import type { TrackCache } from './cache.js';
import type { Hardener, HardenReason } from './hardening.js';
import type { HardeningNotifier } from './notifier.js';
import type { PeerUnhardenedRecord } from './peer-record.js';
import { DataPath, type DataChannel, type ReplicaCounters, type ReplicaSettings } from './replica-data.js';
import type { SyncProgress } from './resync.js';
import { LinkHalf } from './replica-link.js';
import { startupRole } from './replica-on-disk.js';
import { RolePart } from './replica-roles.js';
import type { VerifyReport } from './replica-compare.js';

export type { ReplicaCounters, ReplicaSettings } from './replica-data.js';

export class ReplicaCore {
  /** The cache-facing half: host writes, durability ops, hardening, notices (replica-data.ts). */
  private readonly data: DataPath;
  /** The link half: state exchange, resync, persisted state (replica-link.ts). */
  private readonly link: LinkHalf;
  /** Promote, demote, resolve (replica-roles.ts). */
  private readonly roles: RolePart;

  /**
   * `persisted` is the node's metadata from its last run, or null for a fresh store. A node that
   * crashed comes back secondary (its peer may have been promoted meanwhile); one that shut down
   * cleanly as primary, or a standalone node, comes back primary in a new epoch.
   */
  constructor(readonly settings: ReplicaSettings, nowMs: number, persisted: PersistedState | null = null) {
    this.data = new DataPath(settings, nowMs, startupRole(settings, persisted));
    this.link = new LinkHalf(this.data, settings, persisted);
    this.roles = new RolePart(this.data, this.link, settings);
  }

  // ================================================================ read-only views

  get cache(): TrackCache { return this.data.cache; }
  get hardener(): Hardener { return this.data.hardener; }
  /** What this node keeps of each other node, one channel per peer (peer-channel.ts). */
  get peers(): readonly DataChannel[] { return this.data.channels; }
  /** A pair's peer: what it may hold only in its RAM (seed Fig. 3). */
  get record(): PeerUnhardenedRecord { return this.data.pairChannel.record; }
  get notifier(): HardeningNotifier { return this.data.pairChannel.notifier; }
  /** A pair's peer: the tracks it lacks (written while it was away), its resync set. */
  get outOfSync(): TrackBitmap { return this.data.pairChannel.outOfSync; }
  get counters(): ReplicaCounters { return this.data.counters; }
  get role(): Role { return this.data.role; }
  get peerState(): PeerState { return this.data.peerState; }
  /** Is the peer receiving our writes now (so they are mirrored)? */
  get mirroring(): boolean { return this.data.mirroring; }
  /** Host write pieces waiting for cache room, oldest first (the simulator tracks them). */
  get queuedHostPieces(): readonly { readonly offsetBytes: number; readonly lengthBytes: number }[] { return this.data.queuedHostPieces; }
  /** Writes applied here whose peer ack the link lost, held until quorum returns (issue 12). */
  get awaitingQuorumCount(): number { return this.data.quorumPart.awaiting.length; }
  /** Nodes reachable against nodes needed (issue 12; /status `quorum`). */
  get quorum(): QuorumView { return this.data.quorum; }
  /** fdatasyncs that failed since the last one that succeeded (0: the store syncs fine). */
  get storeSyncFailuresInRow(): number { return this.data.storeSyncFailuresInRow; }
  /** The peer's role as it last announced it (null before its state arrives). */
  get peerRole(): Role | null { return this.data.pairChannel.peerRole; }
  /** Is a peer's inbound stream held back by a full cache? The shell pauses its socket meanwhile. */
  get inboundBlocked(): boolean {
    // Read after every event by the shell: a loop, not a closure per call.
    for (const ch of this.data.channels) if (ch.inbound.length > 0) return true;
    return false;
  }
  /**
   * A pair's peer messages held back for cache room, and the bytes of the first already in the
   * cache (the simulator's account of which write each cached block holds needs exactly this).
   */
  get heldInbound(): { queued: number; headAppliedBytes: number } {
    const { inbound } = this.data.pairChannel;
    return { queued: inbound.length, headAppliedBytes: inbound.headAppliedBytes };
  }
  /** May a delta resync into this store be trusted (status: `store.trustedForDelta`)? */
  get trustedForDelta(): boolean { return this.link.trustedForDelta; }
  /** A resync into this node is unfinished (status shows it; promote refuses without --force). */
  get incompleteResync(): boolean { return this.link.incompleteResync; }
  get epoch(): number { return this.link.epoch; }
  get epochHistory(): readonly EpochEntry[] { return this.link.epochHistory; }
  /** The resync with `peer` (either way), or null. */
  syncStatus(peer: string, nowMs: number): SyncProgress | null {
    const ch = this.data.channelOf(peer);
    return this.link.sender.status(ch, nowMs) ?? this.link.compare.resyncProgress(ch, nowMs);
  }
  /** The last online verify (issue 14 item 4), with its progress while it runs; null before the first. */
  verifyReport(nowMs: number): VerifyReport | null { return this.link.compare.verifyReport(nowMs); }
  /** What goes in the metadata file; `cleanShutdown` only from the shell's final write. */
  persistedState(cleanShutdown: boolean): PersistedState { return this.link.persistedState(cleanShutdown); }

  // ================================================================ events of one half

  /** NBD WRITE / WRITE_ZEROES / TRIM (data null = zeros), 512-aligned. Answered by a reply action. */
  hostWrite(reqId: number, offsetBytes: number, lengthBytes: number, data: Uint8Array | null, trim: boolean, fua: boolean, nowMs: number): void {
    this.data.hostWrite(reqId, offsetBytes, lengthBytes, data, trim, fua, nowMs);
  }

  /** NBD FLUSH: every write completed before it is as durable as the policy promises. */
  hostFlush(reqId: number, nowMs: number): void {
    this.data.hostFlush(reqId, nowMs);
  }

  /** Harden everything written so far, whatever the policy (shutdown). */
  hostFlushLocal(reqId: number, nowMs: number): void {
    this.data.hostFlushLocal(reqId, nowMs);
  }

  /** The link to `peer` is up and authenticated: the state exchange starts (replica-link.ts). */
  linkEstablished(peer: string, nowMs: number): void {
    this.link.linkEstablished(this.data.channelOf(peer), nowMs);
  }

  /** The shell's send buffer of the link to `peer` crossed its high-water mark (false) or drained (true). */
  setLinkWritable(peer: string, writable: boolean, nowMs: number): void {
    this.link.setLinkWritable(this.data.channelOf(peer), writable, nowMs);
  }

  /** The shell read a resync chunk (cache overlaid on store), in the same step as finishRead. */
  syncChunkRead(offsetBytes: number, data: Uint8Array, nowMs: number, resyncId: number): void {
    this.link.syncChunkRead(offsetBytes, data, nowMs, resyncId);
  }

  syncChunkFailed(offsetBytes: number, lengthBytes: number, message: string, nowMs: number, resyncId: number): void {
    this.link.sender.chunkFailed(offsetBytes, lengthBytes, message, nowMs, resyncId);
  }

  /** The shell read and hashed the tracks of `sum-read` action `readId` (sums null: the read failed). */
  sumsRead(readId: number, sums: Uint8Array | null, nowMs: number): void {
    this.compared(this.link.compare.sumsRead(readId, sums, nowMs), nowMs);
  }

  /**
   * Online verify (issue 14 item 4): compare every track's checksum with `peer`'s (null: the only
   * peer) at verifyRate, while both serve; `resync` resends the tracks that differ.
   */
  startVerify(peer: string | null, resync: boolean, nowMs: number): { ok: true; report: VerifyReport } | { ok: false; error: string } {
    const started = this.link.compare.startVerify(peer, resync, nowMs);
    if (!started.ok) return started;
    const ch = this.data.channelOf(started.report.peer);
    if (this.link.compare.pump(ch, nowMs)) this.link.compared(ch, nowMs);
    return started;
  }

  /** A checksum comparison that is complete ends here: the link half acts on what it found. */
  private compared(ch: DataChannel | null, nowMs: number): void {
    if (ch !== null) this.link.compared(ch, nowMs);
  }

  // ================================================================ events that cross the halves
  //
  // Every event whose work spans the cache half, the link half and the roles enters here, and this
  // class calls each half in turn: the halves never call back up (no abstract hooks).

  /** A message from the authenticated peer `peer`, in its link's order. */
  linkMessage(peer: string, msg: LinkMessage, nowMs: number): void {
    const ch = this.data.channelOf(peer);
    ch.inbound.offer(msg, (m) => this.applyInbound(ch, m, nowMs));
    this.data.updateBlockedWriters();
    this.data.pump(nowMs);
  }

  /** Applies one peer message; false when it must wait for cache room (it keeps its place). */
  private applyInbound(ch: DataChannel, msg: LinkMessage, nowMs: number): boolean {
    if (msg.type === 'promoteReq') this.roles.onPromoteRequest(ch, msg);
    else if (msg.type === 'promoteAck') this.roles.onPromoteAck(ch, msg, nowMs);
    else if (msg.type === 'fetchReq') this.roles.fetchRequested(ch, msg.tracks, nowMs);
    else if (msg.type === 'syncDone' && this.roles.fetchesFrom(ch)) this.roles.fetchReceived(ch, nowMs);
    else if (msg.type === 'sumReq') this.link.compare.onSumRequest(ch, msg);
    else if (msg.type === 'sumReply') this.compared(this.link.compare.onSumReply(ch, msg, nowMs), nowMs);
    else {
      if (msg.type === 'state') this.roles.onSurveyedState(ch, msg);
      return this.link.processInbound(ch, msg, nowMs);
    }
    return true;
  }

  /** The peers' held-back streams, resumed as cache room frees up. */
  private drainInbound(nowMs: number): void {
    for (const ch of this.data.channels) ch.inbound.drain((m) => this.applyInbound(ch, m, nowMs));
    this.data.updateBlockedWriters();
  }

  /** The link to `peer` dropped (reset, heartbeat timeout): a pending promotion dies first, then the link half. */
  linkDown(peer: string, nowMs: number): void {
    const ch = this.data.channelOf(peer);
    this.roles.abandonPromotion(ch, nowMs);
    this.link.linkLost(ch, nowMs);
  }

  /** The shell wrote the metadata of persist action `token` durably. */
  persistDone(token: number, nowMs: number): void {
    this.link.persistLanded(token);
    this.roles.onPersisted(token, nowMs);
    this.link.persistDurable(token, nowMs);
  }

  /**
   * The store's fdatasync finished (`error` null, or why it failed). A failure also costs the
   * store its trust for a delta resync (the link half), before what waited for the sync settles.
   */
  storeSynced(syncId: number, error: string | null, nowMs: number): void {
    this.data.syncFinished(error, nowMs);
    if (error !== null) this.link.storeSyncFailed();
    this.data.syncCompleted(syncId, error === null);
    this.link.compare.storeSynced(error === null);
  }

  hardenDone(jobId: number, bytes: number, storeWrites: number, reason: HardenReason, nowMs: number): void {
    this.data.hardenCompleted(jobId, bytes, storeWrites, reason);
    this.afterRoomFreed(nowMs);
  }

  /** A store write failed: the data stays dirty; hosts waiting on durability get EIO. */
  hardenFailed(jobId: number, message: string, nowMs: number): void {
    this.data.hardenAbandoned(jobId, message, nowMs);
    this.afterRoomFreed(nowMs);
  }

  private afterRoomFreed(nowMs: number): void {
    this.data.drainHostQueue(nowMs);
    this.drainInbound(nowMs);
    this.data.settleWaiters();
    this.data.pump(nowMs);
  }

  /**
   * When the shell must call tick next (null: no timed work; events will do), as quinn's
   * poll_timeout: the base's deadlines and a rate-capped resync's next read. A deadline at or
   * before nowMs means "as soon as you can" (the shell waits at least a millisecond).
   */
  nextDeadlineMs(nowMs: number): number | null {
    // Runs after every event (the shell re-arms its timer): no allocation here.
    let at = earlierMs(this.data.hardener.nextDeadlineMs(nowMs), this.data.durable.retryAtMs); // age bound, scan; fdatasync backoff
    if (this.data.pausedUntilMs > nowMs) at = earlierMs(at, this.data.pausedUntilMs); // a failed store write's pause
    const { destageIntervalMs, maxDirtyAgeMs } = this.settings.hardening;
    for (const ch of this.data.channels) {
      const wanted = ch.notifier.earliestWantedSinceMs;
      if (ch.linkIsUp && wanted !== null) at = earlierMs(at, wanted + Math.min(destageIntervalMs, maxDirtyAgeMs / 2)); // a range's cycle interval
    }
    return earlierMs(earlierMs(at, this.link.sender.deadlineMs(nowMs)), this.link.compare.deadlineMs());
  }

  /**
   * A host read finished: the clean lines it pinned may be evicted now, so writes and peer data
   * waiting for room get another chance (without it, they waited for the next harden or tick;
   * simulator, seed 1962: a demote never drained).
   */
  readDone(nowMs: number): void {
    if (this.waitingForRoom) this.afterRoomFreed(nowMs);
  }

  /** Host writes or peer data wait for cache room (the shell tells the core of a read only then). */
  get waitingForRoom(): boolean {
    return this.data.queuedHostPieces.length > 0 || this.inboundBlocked;
  }

  tick(nowMs: number): void {
    // Room can appear without a harden completing (reads that pinned clean lines finish): retry
    // the held-back queues on every tick too (simulator, seed 1962: a demote never drained).
    this.data.drainHostQueue(nowMs);
    this.drainInbound(nowMs);
    this.data.hardener.tick(nowMs);
    if (this.data.durable.retryDue(nowMs)) this.data.startDurableSync(); // a failed fdatasync's backoff ended
    this.data.notices.startDueCycles(nowMs);
    this.link.sender.pumpAll(nowMs);
    for (const ch of this.link.compare.pumpAll(nowMs)) this.link.compared(ch, nowMs);
    this.data.pump(nowMs);
  }

  // ================================================================ roles (replica-roles.ts)

  promote(force: boolean, nowMs: number, requestId = 0, minEpoch = 0): { ok: true; pending: boolean } | { ok: false; error: string } {
    return this.roles.promote(force, nowMs, requestId, minEpoch);
  }

  cancelPromotion(reason: string): void {
    this.roles.cancelPromotion(reason);
  }

  demote(): { ok: true } | { ok: false; error: string } {
    return this.roles.demote();
  }

  resolveDiscardLocal(nowMs: number): { ok: true } | { ok: false; error: string } {
    return this.roles.resolveDiscardLocal(nowMs);
  }

  /** True once no host write is queued, waiting for the peer, or waiting for its FLUSH/FUA (demote drains these). */
  get writesDrained(): boolean {
    return this.data.hostQueue.length === 0 && this.data.channels.every((ch) => ch.pendingAcks.size === 0) && ![...this.data.ops.values()].some((op) => 'reply' in op.done);
  }

  // ================================================================ shutdown

  /** Refuse new host writes from now on; the shell then flushes until nothing is dirty. */
  beginClose(): void {
    this.data.closing = true;
    this.data.failWritesWithoutQuorum();
  }

  /** True when nothing is queued, in flight to the peer, or dirty. */
  get quiescent(): boolean {
    return this.data.hostQueue.length === 0 && this.data.channels.every((ch) => ch.pendingAcks.size === 0 && ch.inbound.length === 0) && this.data.cache.stats(0).dirtyTracks === 0;
  }

  // ================================================================ invariants

  /**
   * The core's boundary: the shell takes the actions after every event, so the node's own state
   * is checked here, each time, before anything goes out. These are the invariants the three
   * parts must keep between them; an assertion is a checked comment (TIGER_STYLE.md).
   */
  takeActions(): ReplicaAction[] {
    this.checkBoundary();
    return this.data.takeActions();
  }

  private checkBoundary(): void {
    // Runs after every event: messages are built only when a check fails (assertionFailed).
    if (this.settings.mirrored !== (this.data.channels.length > 0)) assertionFailed(`${this.data.channels.length} peer channels for a ${this.settings.mirrored ? 'mirrored' : 'standalone'} node`);
    for (const ch of this.data.channels) this.checkChannel(ch);
    assert(!this.roles.pending || (this.data.role === 'secondary' && this.data.channels.some((ch) => ch.linkIsUp)), 'a promotion waits for peers while primary or without a link');
    if (this.data.hardensInFlight < 0 || this.data.hardensInFlight > this.settings.maxHardensInFlight) assertionFailed(`hardens in flight ${this.data.hardensInFlight}`);
    // A primary serves in an epoch of its own: it appended (and persisted) that entry first.
    if (this.data.role === 'primary' && lastPrimary(this.link.history) !== this.settings.node) assertionFailed(`primary in epoch ${this.link.epoch} of ${lastPrimary(this.link.history) ?? 'nobody'}`);
    assert(this.settings.mirrored || this.data.role === 'primary', 'a standalone node is secondary');
  }

  /**
   * Mirroring, resync, writes awaiting acks and held-back peer messages all belong to a link:
   * linkDown ends every one of them.
   */
  private checkChannel(ch: DataChannel): void {
    const state = ch.state;
    if (state === 'standalone') assertionFailed(`peer ${ch.name} in state standalone`);
    if (ch.mirroring && !ch.linkIsUp) assertionFailed(`peer state ${state} without a link`);
    if (ch.resync !== null && !(state === 'resyncing' && ch.linkIsUp)) assertionFailed(`a resync is sent in peer state ${state}`);
    assert(state !== 'resyncing' || ch.sendsResync || ch.intake.active, 'resyncing with neither a resync sent nor one received');
    if (ch.compare !== null && !(ch.linkIsUp && (ch.compare.purpose === 'verify' || state === 'resyncing'))) assertionFailed(`a checksum comparison in peer state ${state}`);
    assert(ch.resync === null || ch.compare === null, 'a resync sent while its checksums are still compared');
    assert(!ch.intake.active || ch.linkIsUp, 'receiving a resync without a link');
    assert(ch.pendingAcks.size === 0 || ch.linkIsUp, 'writes await the peer\'s ack without a link');
    assert(ch.inbound.length === 0 || ch.linkIsUp, 'peer messages held back without a link');
  }

  /** The full self-check (walks the cache and the writes in flight): the simulator samples it. */
  checkInvariants(): void {
    this.data.cache.checkInvariants();
    this.checkBoundary();
    // Step 62 before step 64's ack: a write the peer has not acknowledged is marked as maybe only
    // in the peer's RAM. A cycle cannot clear it first: the peer's COMPLETE follows its SAVE-ACK,
    // and a write sent before that SAVE-ACK reaches the peer before it, so is acked before COMPLETE.
    for (const ch of this.data.channels) {
      for (const piece of ch.pendingAcks.values()) {
        for (const t of this.data.cache.tracksOf(piece.offsetBytes, piece.lengthBytes)) assert(ch.record.isUnited(t), `track ${t} awaits ${ch.name}'s ack but is not in its united bitmap`);
      }
    }
  }
}
