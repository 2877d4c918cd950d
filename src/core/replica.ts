// The replica core: one node's whole state machine — cache, hardening, the peer-unhardened record,
// the hardening notifier, the mirrored write path, durability ops and the initial sync. Pure and
// synchronous (DESIGN.md "Architecture"): the shell feeds it events (host requests, link
// messages, store completions, ticks with the time) and carries out the actions it emits (send a
// message, answer a host, harden a job, sync the store, read for the initial sync). The same core
// runs standalone (no peer) and as either half of a mirrored pair.
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
// This file is the link half (state exchange, resync, roles, persisted state); replica-base.ts is
// the cache half (host writes, durability ops, hardening, notices).
import { TrackBitmap } from './bitmap.js';
import { assert } from './cache.js';
import { isAllZero } from './zero.js';
import { compareHistories, currentEpoch, nextEpoch, type EpochEntry } from './epochs.js';
import { ReplicaBase, type ReplicaSettings } from './replica-base.js';
import type { LinkMessage, PersistedState, Role } from './replica-types.js';
import { decideSync, ResyncPlan, resyncTracks, type SideState } from './resync.js';

export type { ReplicaCounters, ReplicaSettings } from './replica-base.js';

export class ReplicaCore extends ReplicaBase {
  /** The resync this node is sending (as source), or null. */
  private resync: ResyncPlan | null = null;
  private resyncFull = false;
  /** This node is the target of a resync (decided, or syncStart received) not yet done. */
  private receivingResync = false;
  /**
   * A resync into this node started and has not finished, across link drops and restarts
   * (persisted): its store is a mix of old and new tracks, so promote refuses without --force.
   */
  private resyncIncomplete: boolean;
  private lastPersistToken = -1;
  /** The peer's latest state message (link-up exchange, role changes). */
  private peerView: Extract<LinkMessage, { type: 'state' }> | null = null;
  /** Who was primary when (persisted): decides the sync source, detects split brain. */
  private history: EpochEntry[];
  /** Every hardened write is known to the peer or listed in outOfSync. */
  private storeTrusted: boolean;
  /** outOfSync is complete (no crash since it was collected). */
  private outOfSyncValid: boolean;
  private discardLocal: boolean;
  private divergingToken = -1;
  private syncReceivedBytes = 0;
  private syncTotalBytes = 0;
  private linkWritable = true;

  /**
   * `persisted` is the node's metadata from its last run, or null for a fresh store. A node that
   * crashed comes back secondary (its peer may have been promoted meanwhile); one that shut down
   * cleanly as primary, or a standalone node, comes back primary in a new epoch.
   */
  constructor(settings: ReplicaSettings, nowMs: number, persisted: PersistedState | null = null) {
    super(settings, nowMs, startupRole(settings, persisted));
    this.history = persisted === null ? [] : [...persisted.history];
    this.discardLocal = persisted?.discardLocal ?? false;
    this.storeTrusted = persisted !== null && persisted.storeTrusted && (persisted.cleanShutdown || !persisted.diverging) && !this.discardLocal;
    this.outOfSyncValid = persisted?.cleanShutdown === true;
    if (persisted?.cleanShutdown && persisted.outOfSync !== null) {
      const saved = TrackBitmap.fromBytes(this.cache.trackCount, persisted.outOfSync);
      for (let t = 0; t < saved.trackCount; t++) if (saved.has(t)) this.outOfSync.set(t);
    }
    this.diverging = persisted?.diverging ?? false;
    this.resyncIncomplete = persisted?.resyncIncomplete ?? false;
    if (this.role === 'primary') this.history.push({ epoch: nextEpoch(this.history), node: settings.node });
    if (this.role === 'primary' && settings.mirrored) this.diverging = true;
    this.persist();
    if (persisted !== null && !persisted.cleanShutdown && settings.mirrored) {
      this.emit({ kind: 'log', level: 'warn', msg: 'restarted after a crash: coming up secondary', fields: { storeTrusted: this.storeTrusted, epoch: currentEpoch(this.history) } });
    }
  }

  // ================================================================ link and state exchange

  /**
   * The link is up and authenticated. Each side announces its state (seed: the returning node
   * "asks for a data update"); nothing is mirrored until both have decided who is the source.
   * Both records restart from what each side now holds only in RAM.
   */
  linkEstablished(nowMs: number): void {
    this.linkIsUp = true;
    this.linkWritable = true;
    this.peerView = null;
    this.record.reset();
    this.resetNotifier();
    if (this.peerState !== 'split-brain') this.peerState = this.role === 'primary' ? 'degraded' : 'connecting';
    // The state goes first on the new stream; the peer marks our dirty tracks when it reads it,
    // and our mirror marks them at the same point (notices it may start come after the state).
    this.sendState();
    this.notifyMarked(this.cache.dirtyTracks(), nowMs);
  }

  /**
   * Cycles in progress die with the link, and so do their destage waits: a wait left over from the
   * old link would otherwise end the new link's cycle of the same range before its tracks are
   * hardened (found by the simulator, seed 570: a CLEAR for a range still holding sync data).
   */
  private resetNotifier(): void {
    this.notifier.reset();
    this.cycleGeneration++;
    this.pendingDurable.ranges = [];
    for (const [waiterId, purpose] of this.waiterPurposes) {
      if ('op' in purpose) continue;
      this.waiterPurposes.delete(waiterId);
      this.hardener.removeWaiter(waiterId);
    }
  }

  private sendState(): void {
    const dirty = new TrackBitmap(this.cache.trackCount);
    for (const t of this.cache.dirtyTracks()) dirty.set(t);
    this.send({
      type: 'state', role: this.role, history: [...this.history], storeTrusted: this.storeTrusted,
      outOfSyncValid: this.outOfSyncValid, discardLocal: this.discardLocal,
      outOfSync: this.outOfSync.toBytes(), dirty: dirty.toBytes(),
    });
  }

  private onPeerState(msg: Extract<LinkMessage, { type: 'state' }>, nowMs: number): void {
    const first = this.peerView === null;
    this.peerView = msg;
    if (first) {
      const dirty = TrackBitmap.fromBytes(this.cache.trackCount, msg.dirty);
      for (let t = 0; t < dirty.trackCount; t++) if (dirty.has(t)) this.record.mark(t);
    }
    // In sync with the same history (a demote, say): nothing to decide, only the role changed.
    if (this.peerState === 'in-sync' && compareHistories(this.history, msg.history) === 'equal') return;
    this.decide(nowMs);
  }

  /** Picks source, target or split brain from both sides' states (src/core/resync.ts). */
  private decide(nowMs: number): void {
    const peer = this.peerView;
    if (peer === null || !this.linkIsUp || this.resync !== null || this.receivingResync) return;
    const decision = decideSync(this.sideState(), { ...peer, node: this.peerName });
    if (decision.kind === 'split-brain') {
      if (this.peerState !== 'split-brain') this.emit({ kind: 'log', level: 'error', msg: 'split brain: refusing to mirror; resolve with `twinblock resolve --discard-local` on the side to overwrite', fields: { reason: decision.reason } });
      this.peerState = 'split-brain';
      return;
    }
    if (decision.kind === 'target') {
      this.receivingResync = true;
      this.markResyncIncomplete();
      if (this.peerState === 'split-brain') this.peerState = 'connecting';
      if (this.role === 'primary') {
        // Nothing of ours was mirrored yet on this link (no decision had been made), so no
        // write of ours is in flight to a peer that would ignore it.
        this.emit({ kind: 'log', level: 'warn', msg: 'peer holds newer data: this node steps down to secondary', fields: { peer: this.peerName } });
        this.setRole('secondary');
        this.persist();
      }
      return;
    }
    this.startResync(decision.full, decision.reason, peer, nowMs);
  }

  /** The peer's role as it last announced it (null before its state arrives). */
  get peerRole(): Role | null {
    return this.peerView?.role ?? null;
  }

  private sideState(): SideState {
    return { node: this.settings.node, history: this.history, storeTrusted: this.storeTrusted, outOfSyncValid: this.outOfSyncValid, discardLocal: this.discardLocal };
  }

  private get peerName(): string {
    return this.settings.peer ?? 'peer';
  }

  private startResync(full: boolean, reason: string, peer: Extract<LinkMessage, { type: 'state' }>, nowMs: number): void {
    const { volumeSizeBytes, trackSizeBytes } = this.settings.geometry;
    const theirs = peer.outOfSyncValid ? TrackBitmap.fromBytes(this.cache.trackCount, peer.outOfSync) : null;
    const tracks = resyncTracks(this.cache.trackCount, full, this.outOfSync, theirs);
    this.resync = new ResyncPlan(tracks, trackSizeBytes, volumeSizeBytes, this.settings.syncChunkBytes, nowMs, this.nextId++);
    this.resyncFull = full;
    this.peerState = 'resyncing';
    this.send({ type: 'syncStart', totalBytes: this.resync.totalBytes });
    this.emit({ kind: 'log', level: full ? 'warn' : 'info', msg: full ? 'full resync of the peer started' : 'resync of the out-of-sync tracks started', fields: { tracks: this.resync.trackCount, bytes: this.resync.totalBytes, reason } });
    this.pumpSync(nowMs);
    this.finishResyncIfDone(nowMs);
  }

  /** The link dropped (reset, heartbeat timeout). */
  linkDown(nowMs: number): void {
    this.linkIsUp = false;
    // Messages of the dead link still held back by a full cache must not be applied once a new
    // link has reset both sides' records (found by the simulator, seed 7). Dropping them is safe:
    // none was acknowledged, so the peer counts their tracks as out-of-sync and resends them.
    this.inbound.length = 0;
    this.inboundAppliedBytes = 0;
    this.updateBlockedWriters();
    this.outNotices = null;
    this.resetNotifier();
    this.resync = null;
    this.receivingResync = false;
    this.peerView = null;
    this.cache.releaseAllHolds();
    if (this.peerState === 'standalone') return;
    if (this.peerState !== 'split-brain') this.peerState = this.role === 'primary' ? 'degraded' : 'connecting';
    // The peer may have lost whatever it held only in RAM: those tracks need resending.
    const united = this.record.united();
    for (let t = 0; t < united.trackCount; t++) if (united.has(t)) this.outOfSync.set(t);
    if (this.role === 'primary') this.markDiverging();
    // Writes the peer never acknowledged now complete under the degraded policy — but only on a
    // primary: a node demoted meanwhile is no longer the authority, and the new primary may never
    // see these bytes, so they fail with EIO (found by the simulator, seed 474).
    const unacked = [...this.pendingAcks.values()];
    this.pendingAcks.clear();
    if (this.role !== 'primary' && unacked.length > 0) {
      // Those bytes will be hardened here although the new primary may lack them and no bitmap
      // may say so after a crash: this store is no longer trusted for a delta, on disk first
      // (simulator, seed 2529).
      this.storeTrusted = false;
      this.persist();
      this.untrustToken = this.lastPersistToken;
    }
    for (const piece of unacked) {
      if (this.role !== 'primary') piece.write.errno = 'EIO';
      this.pieceDone(piece);
    }
    // A peer flush that can no longer be answered: the local part alone decides (degraded).
    for (const [id, op] of this.ops) if (op.remotePending) this.opPartDone(id, 'remote', null);
    this.pump(nowMs);
  }

  /** The shell's link send buffer crossed its high-water mark (false) or drained (true). */
  setLinkWritable(writable: boolean, nowMs: number): void {
    this.linkWritable = writable;
    if (writable) this.pumpSync(nowMs);
  }

  /** A message from the authenticated peer, in link order. */
  linkMessage(msg: LinkMessage, nowMs: number): void {
    if (this.inbound.length > 0 || !this.processInbound(msg, nowMs)) this.inbound.push(msg);
    this.updateBlockedWriters();
    this.pump(nowMs);
  }

  /** Is the inbound stream held back by a full cache? The shell pauses the socket meanwhile. */
  get inboundBlocked(): boolean {
    return this.inbound.length > 0;
  }

  protected drainInbound(nowMs: number): void {
    while (this.inbound.length > 0 && this.processInbound(this.inbound[0]!, nowMs)) this.inbound.shift();
    this.updateBlockedWriters();
  }

  /** Applies one message; false when it must wait for cache room (it keeps its place). */
  private processInbound(msg: LinkMessage, nowMs: number): boolean {
    switch (msg.type) {
      case 'write':
      case 'zero':
      case 'syncData':
      case 'syncZero':
        return this.applyPeerData(msg, nowMs);
      case 'writeAck': {
        const piece = this.pendingAcks.get(msg.seq);
        this.pendingAcks.delete(msg.seq);
        if (piece) {
          this.cache.releaseHardening(this.cache.tracksOf(piece.offsetBytes, piece.lengthBytes));
          this.pieceDone(piece);
        }
        return true;
      }
      case 'notice':
        this.handleNotice(msg.op, msg.ranges);
        return true;
      case 'flushReq': {
        const tracks = msg.lengthBytes === 0 ? null : this.cache.tracksOf(msg.offsetBytes, msg.lengthBytes);
        this.startOp({ flushAck: msg.id }, { seq: this.cache.sequence, tracks }, null);
        return true;
      }
      case 'flushAck':
        if (this.ops.get(msg.id)?.remotePending) this.opPartDone(msg.id, 'remote', msg.ok ? null : 'EIO');
        return true;
      case 'state':
        this.onPeerState(msg, nowMs);
        return true;
      case 'syncStart':
        if (this.role === 'primary') return true; // a forced promotion abandoned this resync
        this.receivingResync = true;
        this.markResyncIncomplete();
        this.peerState = 'resyncing';
        this.syncReceivedBytes = 0;
        this.syncTotalBytes = msg.totalBytes;
        this.emit({ kind: 'log', level: 'info', msg: 'resync from the peer started', fields: { bytes: msg.totalBytes } });
        return true;
      case 'syncDone':
        // Only the end of a resync we are still receiving: after a forced promotion the stream's
        // tail must not bring back the old epoch history (found by the simulator, seed 577).
        if (this.receivingResync && this.role === 'secondary') this.resyncReceived();
        return true;
      default:
        return true; // handshake and heartbeat messages belong to the link layer
    }
  }

  /** Step 66 on the secondary: cache the peer's bytes, mark the record, ack writes. */
  private applyPeerData(msg: Extract<LinkMessage, { type: 'write' | 'zero' | 'syncData' | 'syncZero' }>, nowMs: number): boolean {
    if (this.role !== 'secondary') {
      this.emit({ kind: 'log', level: 'error', msg: 'primary received volume data from its peer: ignored', fields: { type: msg.type } });
      return true;
    }
    const lengthBytes = msg.type === 'zero' || msg.type === 'syncZero' ? msg.lengthBytes : msg.data.length;
    const data = msg.type === 'zero' || msg.type === 'syncZero' ? null : msg.data;
    // A write larger than half our cache goes in as pieces while room allows (our cache may be
    // smaller than the primary's); the message keeps its place until all of it is in.
    for (const [off, len] of this.splitPieces(msg.offsetBytes + this.inboundAppliedBytes, lengthBytes - this.inboundAppliedBytes)) {
      const rel = off - msg.offsetBytes;
      if (!this.applyLocal(off, len, data === null ? null : data.subarray(rel, rel + len), nowMs)) return false;
      this.inboundAppliedBytes += len;
      // Step 66 per piece: if the link drops before the last piece, the applied ones are marked
      // (simulator, seed 3330).
      for (const t of this.cache.tracksOf(off, len)) this.record.mark(t);
    }
    this.inboundAppliedBytes = 0;
    if (msg.type === 'syncData' || msg.type === 'syncZero') {
      this.syncReceivedBytes += lengthBytes;
      this.counters.syncBytesReceived += lengthBytes;
    } else {
      this.counters.writes++;
      this.counters.writtenBytes += lengthBytes;
      this.send({ type: 'writeAck', seq: msg.seq });
    }
    const tracks = this.cache.tracksOf(msg.offsetBytes, lengthBytes);
    for (const t of tracks) this.record.mark(t); // step 66
    this.notifyMarked(tracks, nowMs);
    return true;
  }

  /** The target's side of syncDone: its store now matches the source; adopt its epoch history. */
  private markResyncIncomplete(): void {
    if (this.resyncIncomplete) return;
    this.resyncIncomplete = true;
    this.persist();
  }

  private resyncReceived(): void {
    this.receivingResync = false;
    this.resyncIncomplete = false;
    this.peerState = 'in-sync';
    if (this.peerView !== null) this.history = [...this.peerView.history];
    this.storeTrusted = true;
    this.discardLocal = false;
    this.outOfSyncValid = true;
    this.outOfSync.clearSpan(0, this.outOfSync.trackCount);
    this.diverging = false;
    this.persist();
    this.emit({ kind: 'log', level: 'info', msg: 'resync complete: in-sync', fields: { bytes: this.syncReceivedBytes } });
  }

  // ================================================================ resync (source)

  protected pumpSync(nowMs: number): void {
    const plan = this.resync;
    if (plan === null || !this.linkWritable) return;
    const { syncChunkBytes, syncWindowChunks, syncRateBytesPerSec } = this.settings;
    const allowedBytes = syncRateBytesPerSec * Math.max(0, nowMs - plan.startMs) / 1000 + syncChunkBytes * syncWindowChunks;
    while (plan.readsInFlight < syncWindowChunks && plan.issuedBytes < allowedBytes) {
      const chunk = plan.nextChunk();
      if (chunk === null) break;
      plan.readsInFlight++;
      this.emit({ kind: 'sync-read', offsetBytes: chunk.offsetBytes, lengthBytes: chunk.lengthBytes, resyncId: plan.id });
    }
  }

  /**
   * The shell read a resync chunk (cache overlaid on store). It must call this in the same
   * synchronous step as the cache's finishRead: the chunk then reflects every write applied so
   * far, and every later write follows it on the ordered link.
   */
  syncChunkRead(offsetBytes: number, data: Uint8Array, nowMs: number, resyncId?: number): void {
    const plan = this.resync;
    if (plan === null || this.peerState !== 'resyncing') return; // the link dropped meanwhile
    // A read issued by an earlier resync (before a link loss) must not count for this one
    // (simulator, seed 679: a chunk counted twice and the last one never sent).
    if (resyncId !== undefined && resyncId !== plan.id) return;
    plan.readsInFlight--;
    // Sparse volumes are mostly zeros: a zero chunk crosses the link as its extent only.
    this.send(isAllZero(data) ? { type: 'syncZero', offsetBytes, lengthBytes: data.length } : { type: 'syncData', offsetBytes, data });
    this.markSentToPeer(this.cache.tracksOf(offsetBytes, data.length), nowMs);
    plan.sentBytes += data.length;
    this.counters.syncBytesSent += data.length;
    this.pumpSync(nowMs);
    this.finishResyncIfDone(nowMs);
  }

  private finishResyncIfDone(nowMs: number): void {
    const plan = this.resync;
    if (plan === null || !plan.finished || plan.issuedBytes < plan.totalBytes) return;
    this.send({ type: 'syncDone' });
    this.resync = null;
    this.peerState = 'in-sync';
    this.outOfSync.clearSpan(0, this.outOfSync.trackCount);
    this.outOfSyncValid = true;
    // The source's store is the reference the peer now matches (a fresh primary's included).
    this.storeTrusted = true;
    this.diverging = false;
    this.persist();
    this.emit({ kind: 'log', level: 'info', msg: 'resync complete: in-sync', fields: { bytes: plan.sentBytes, full: this.resyncFull, ms: nowMs - plan.startMs } });
  }

  /** A resync read failed: the resync cannot finish; it restarts at the next link-up. */
  syncChunkFailed(message: string): void {
    this.emit({ kind: 'log', level: 'error', msg: 'resync read failed', fields: { error: message } });
    this.resync = null;
  }

  syncStatus(nowMs: number): { totalBytes: number; doneBytes: number; tracksLeft: number; rateBytesPerSec: number; etaSeconds: number | null; full: boolean } | null {
    const track = this.settings.geometry.trackSizeBytes;
    if (this.resync !== null) {
      const plan = this.resync;
      const elapsedSec = Math.max(0.001, (nowMs - plan.startMs) / 1000);
      // The first window of chunks goes out at once: leave it out of the rate, or early ETAs lie.
      const burstBytes = this.settings.syncChunkBytes * this.settings.syncWindowChunks;
      const rate = Math.max(0, plan.sentBytes - burstBytes) / elapsedSec;
      const left = plan.totalBytes - plan.sentBytes;
      return {
        totalBytes: plan.totalBytes, doneBytes: plan.sentBytes, tracksLeft: Math.ceil(left / track), rateBytesPerSec: Math.round(rate),
        etaSeconds: rate > 0 ? Math.ceil(left / rate) : null, full: this.resyncFull,
      };
    }
    if (this.receivingResync && this.peerState === 'resyncing') {
      const left = this.syncTotalBytes - this.syncReceivedBytes;
      return { totalBytes: this.syncTotalBytes, doneBytes: this.syncReceivedBytes, tracksLeft: Math.ceil(left / track), rateBytesPerSec: 0, etaSeconds: null, full: false };
    }
    return null;
  }

  // ================================================================ roles (promote, demote, resolve)

  /** Makes this node primary: a new epoch, persisted before a write is served (the shell awaits it). */
  promote(force: boolean, nowMs: number): { ok: true } | { ok: false; error: string } {
    if (!this.settings.mirrored) return { ok: false, error: 'a standalone node is always primary' };
    if (this.role === 'primary') return { ok: false, error: 'already primary' };
    if (!force && this.linkIsUp && this.peerView?.role === 'primary') return { ok: false, error: `peer ${this.peerName} is primary and connected: demote it first, or use --force` };
    if (!force && (this.receivingResync || this.resyncIncomplete)) return { ok: false, error: 'a resync into this node has not finished: its data is incomplete (use --force to promote anyway)' };
    this.history = [...this.history, { epoch: nextEpoch(this.history), node: this.settings.node }];
    this.setRole('primary');
    // A failover: the old primary may have lost whatever it held only in RAM, so the united bitmap
    // becomes out-of-sync. A planned switchover (connected and in sync) keeps it as the record
    // instead: the old primary is alive and hardens its RAM; a later link loss folds it in.
    if (!(this.linkIsUp && this.peerState === 'in-sync')) {
      const united = this.record.united();
      for (let t = 0; t < united.trackCount; t++) if (united.has(t)) this.outOfSync.set(t);
    }
    this.receivingResync = false;
    this.resyncIncomplete = false; // forced: this node's data is now the reference
    if (this.linkIsUp) {
      this.sendState();
      // A resync we are sending goes on (the peer adopts our new history at its end); otherwise
      // the pair decides afresh with our new epoch (found by the simulator, seed 105).
      if (this.resync === null) {
        this.peerState = 'degraded';
        this.decide(nowMs);
      }
    } else {
      this.peerState = this.peerState === 'split-brain' ? 'split-brain' : 'degraded';
    }
    if (!this.mirroring) this.diverging = true; // the new epoch above is this generation
    this.persist();
    this.emit({ kind: 'log', level: 'warn', msg: 'promoted to primary', fields: { epoch: currentEpoch(this.history), outOfSyncTracks: this.outOfSync.count(), force } });
    return { ok: true };
  }

  /** Makes this node secondary; host writes get EPERM from now on. The shell waits for writesDrained. */
  demote(): { ok: true } | { ok: false; error: string } {
    if (!this.settings.mirrored) return { ok: false, error: 'a standalone node is always primary' };
    if (this.role !== 'primary') return { ok: false, error: 'already secondary' };
    this.setRole('secondary');
    this.persist();
    if (this.linkIsUp) this.sendState();
    this.emit({ kind: 'log', level: 'warn', msg: 'demoted to secondary' });
    return { ok: true };
  }

  /** Split brain: this node's changes since the divergence are discarded by a resync from the peer. */
  resolveDiscardLocal(nowMs: number): { ok: true } | { ok: false; error: string } {
    if (this.peerState !== 'split-brain') return { ok: false, error: 'not in split brain' };
    this.discardLocal = true;
    this.storeTrusted = false;
    if (this.role === 'primary') this.setRole('secondary');
    this.peerState = 'connecting'; // the next state exchange makes this node the resync target
    this.persist();
    this.emit({ kind: 'log', level: 'warn', msg: 'split brain resolved: this node discards its changes and resyncs from the peer' });
    if (this.linkIsUp) {
      this.sendState();
      this.decide(nowMs);
    }
    return { ok: true };
  }

  private setRole(role: Role): void {
    this.role = role;
    this.notifier.setSendsWrites(role === 'primary');
  }

  /** True once no host write is queued or waiting for the peer (demote drains these). */
  get writesDrained(): boolean {
    return this.hostQueue.length === 0 && this.pendingAcks.size === 0;
  }

  // ================================================================ persisted state

  /**
   * A primary without its peer hardens writes the peer lacks. Before the first such harden, the
   * fact must be on disk: after a crash it tells the pair this store cannot be trusted for a delta.
   */
  private markDiverging(): void {
    if (this.diverging || !this.settings.mirrored) return;
    this.diverging = true;
    // A new data generation (as DRBD does): if the peer is promoted meanwhile, the two histories
    // diverge and the pair sees a split brain instead of silently dropping these writes.
    this.history.push({ epoch: nextEpoch(this.history), node: this.settings.node });
    this.persist();
  }

  private persist(): void {
    const token = this.nextId++;
    this.lastPersistToken = token;
    if (this.diverging && !this.divergingDurable) this.divergingToken = token;
    if (!this.diverging) this.divergingDurable = false;
    this.emit({ kind: 'persist', token, state: this.persistedState(false) });
  }

  /** The shell wrote the metadata of persist action `token` durably. */
  persistDone(token: number, nowMs: number): void {
    if (token === this.untrustToken) {
      this.untrustToken = null;
      this.pump(nowMs);
    }
    if (token === this.divergingToken) {
      this.divergingDurable = true;
      this.pump(nowMs);
    }
  }

  /** What goes in the metadata file; `cleanShutdown` only from the shell's final write. */
  persistedState(cleanShutdown: boolean): PersistedState {
    const outOfSync = new TrackBitmap(this.cache.trackCount);
    for (let t = 0; t < this.cache.trackCount; t++) if (this.outOfSync.has(t) || (cleanShutdown && this.record.isUnited(t))) outOfSync.set(t);
    return {
      history: [...this.history], role: this.role, cleanShutdown, diverging: this.diverging,
      storeTrusted: this.storeTrusted, resyncIncomplete: this.resyncIncomplete, outOfSync: outOfSync.toBytes(), discardLocal: this.discardLocal,
    };
  }

  /** A resync into this node is unfinished (status shows it; promote refuses without --force). */
  get incompleteResync(): boolean {
    return this.resyncIncomplete;
  }

  get epoch(): number {
    return currentEpoch(this.history);
  }

  get epochHistory(): readonly EpochEntry[] {
    return this.history;
  }

  // ================================================================ shutdown

  /** Refuse new host writes from now on; the shell then flushes until nothing is dirty. */
  beginClose(): void {
    this.closing = true;
  }

  /** True when nothing is queued, in flight to the peer, or dirty. */
  get quiescent(): boolean {
    return this.hostQueue.length === 0 && this.pendingAcks.size === 0 && this.inbound.length === 0 && this.cache.stats(0).dirtyTracks === 0;
  }

  checkInvariants(): void {
    this.cache.checkInvariants();
    assert(this.hardensInFlight >= 0, 'negative hardens in flight');
  }
}

/** A crashed pair node comes back secondary (its peer may have been promoted meanwhile). */
function startupRole(settings: ReplicaSettings, persisted: PersistedState | null): Role {
  if (!settings.mirrored) return 'primary';
  if (persisted === null) return settings.role;
  return persisted.cleanShutdown && persisted.role === 'primary' && !persisted.discardLocal ? 'primary' : 'secondary';
}
