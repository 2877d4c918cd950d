// The replica core's link half: the state exchange at link-up, the peer's messages in link order,
// the resync (as source and as target), the epoch history and the persisted state. It works on
// the data path (replica-data.ts) it is given and never calls back into ReplicaCore (replica.ts),
// which owns both parts, routes the events that span them (peer messages, link loss, persist and
// fdatasync completions) and adds the roles. Pure and synchronous.
import { assert } from './assert.js';
import { TrackBitmap } from './bitmap.js';
import { isAllZero } from './zero.js';
import { compareHistories, currentEpoch, nextEpoch, type EpochEntry } from './epochs.js';
import type { DataPath, ReplicaSettings } from './replica-data.js';
import type { LinkMessage, PersistedState, Role } from './replica-types.js';
import { PeerStateMachine } from './peer-state.js';
import { MetadataOnDisk } from './replica-on-disk.js';
import { decideSync, ResyncIntake, ResyncPlan, resyncTracks, type SideState, type SyncProgress } from './resync.js';

export class LinkHalf {
  /** The resync this node is sending (as source), or null. */
  resync: ResyncPlan | null = null;
  /** This node is the target of a resync (decided, or syncStart received) not yet done. */
  readonly intake = new ResyncIntake();
  /**
   * A resync into this node started and has not finished, across link drops and restarts
   * (persisted): its store is a mix of old and new tracks, so promote refuses without --force.
   */
  resyncIncomplete: boolean;
  lastPersistToken = -1;
  /** The peer's latest state message (link-up exchange, role changes). */
  peerView: Extract<LinkMessage, { type: 'state' }> | null = null;
  /** Who was primary when (persisted): decides the sync source, detects split brain. */
  history: EpochEntry[];
  /** Every hardened write is known to the peer or listed in outOfSync. */
  storeTrusted: boolean;
  /** outOfSync is complete (no crash since it was collected). */
  private outOfSyncValid: boolean;
  /**
   * An fdatasync failed since every track of this store was last rewritten (a full resync into
   * it). Linux may drop the dirty pages of a failed writeback and report it once ("fsyncgate"):
   * sectors hardened before it may be lost to a power loss although a later fdatasync succeeds,
   * and no bitmap names them. Such a store is not trusted for a delta resync (a crash of this
   * node brings a full one), and becoming a resync source does not restore that trust. Persisted:
   * a restart of the process (crash or clean stop) does not end it — the kernel's page cache, and
   * the writeback it lost, outlive the process, and after a power loss the disk may lack those
   * sectors. Kept in memory only, it was forgotten at a restart, and the next resync this node
   * sent made its store trusted again; a later power loss took a sector hardened before the failed
   * fdatasync, and the delta resync after it skipped that track (simulator, seed 10007857).
   */
  private syncLost = false;
  discardLocal: boolean;
  private divergingToken = -1;
  /**
   * The persist that last changed the epoch history, until it is durable (then -1), and that
   * history. The peer adopts our history at the end of a resync we send it (syncDone), so that
   * waits for it: a node that crashed with its newest epoch still undurable came back without it
   * and, forced primary, took the same epoch again for new writes — "same epoch history" to the
   * peer that had adopted the first one, which then resynced over them (simulator, seed 10118270).
   */
  private historyToken = -1;
  private historyKey = '';
  /** What the metadata on disk records, by value (a part; ReplicaCore.onPersisted reads its epoch). */
  readonly onDisk = new MetadataOnDisk();
  /** Persisted: the highest epoch ever proposed to (or adopted from) the peer; never taken again. */
  proposedEpoch: number;
  private linkWritable = true;

  /**
   * Restores this half from `persisted` (the node's metadata from its last run, or null for a
   * fresh store) on a data path whose startup role ReplicaCore chose (startupRole, replica-on-disk.ts); a node
   * that starts primary does so in a new epoch of its own, persisted before anything else.
   */
  constructor(private readonly data: DataPath, readonly settings: ReplicaSettings, persisted: PersistedState | null) {
    this.history = persisted === null ? [] : [...persisted.history];
    this.discardLocal = persisted?.discardLocal ?? false;
    this.storeTrusted = persisted !== null && persisted.storeTrusted && (persisted.cleanShutdown || !persisted.diverging) && !this.discardLocal;
    this.outOfSyncValid = persisted?.cleanShutdown === true;
    if (persisted?.cleanShutdown && persisted.outOfSync !== null) {
      const saved = TrackBitmap.fromBytes(this.data.cache.trackCount, persisted.outOfSync);
      for (let t = 0; t < saved.trackCount; t++) if (saved.has(t)) this.data.outOfSync.set(t);
    }
    this.data.diverging = persisted?.diverging ?? false;
    this.resyncIncomplete = persisted?.resyncIncomplete ?? false;
    this.proposedEpoch = persisted?.proposedEpoch ?? 0;
    this.syncLost = persisted?.syncLost === true;
    if (this.data.role === 'primary') this.history.push(this.newEpochEntry());
    if (this.data.role === 'primary' && settings.mirrored) this.data.diverging = true;
    this.persist();
    if (persisted !== null && !persisted.cleanShutdown && settings.mirrored) {
      this.data.emit({ kind: 'log', level: 'warn', msg: 'restarted after a crash: coming up secondary', fields: { storeTrusted: this.storeTrusted, epoch: currentEpoch(this.history) } });
    }
  }

  // ================================================================ link and state exchange

  /**
   * The link is up and authenticated. Each side announces its state (seed: the returning node
   * "asks for a data update"); nothing is mirrored until both have decided who is the source.
   * Both records restart from what each side could lose if it failed now (unsyncedTracks).
   */
  linkEstablished(nowMs: number): void {
    this.data.linkIsUp = true;
    this.linkWritable = true;
    this.peerView = null;
    this.data.record.reset();
    this.resetNotifier();
    this.data.peerEvent(PeerStateMachine.linkEvent('up', this.data.role));
    // The state goes first on the new stream; the peer marks our unsynced tracks when it reads it,
    // and our mirror marks them at the same point (notices it may start come after the state).
    this.sendState();
    this.data.notifyMarked(this.unsyncedTracks(), nowMs);
  }

  /**
   * What a crash of this node may lose: its dirty tracks, and the tracks it hardened that no
   * fdatasync has covered yet (a power loss may take those too). The peer's record must start
   * with both: a peer that had restarted with an empty record did not resend a track this node
   * hardened while its store stalled, then lost with power (simulator, seeds 712, 7000697).
   */
  private unsyncedTracks(): number[] {
    const tracks = new Set([...this.data.cache.dirtyTracks(), ...this.data.durable.tracks]);
    return [...tracks].sort((x, y) => x - y);
  }

  /**
   * Cycles in progress die with the link, and so do their destage waits: a wait left over from the
   * old link would otherwise end the new link's cycle of the same range before its tracks are
   * hardened (found by the simulator, seed 570: a CLEAR for a range still holding sync data).
   */
  private resetNotifier(): void {
    this.data.notifier.reset();
    this.data.durable.resetCycles();
    for (const [waiterId, purpose] of this.data.waiterPurposes) {
      if ('op' in purpose) continue;
      this.data.waiterPurposes.delete(waiterId);
      this.data.hardener.removeWaiter(waiterId);
    }
  }

  sendState(): void {
    const dirty = new TrackBitmap(this.data.cache.trackCount);
    for (const t of this.unsyncedTracks()) dirty.set(t);
    this.data.send({
      type: 'state', role: this.data.role, history: [...this.history], storeTrusted: this.storeTrusted,
      outOfSyncValid: this.outOfSyncValid, discardLocal: this.discardLocal,
      outOfSync: this.data.outOfSync.toBytes(), dirty: dirty.toBytes(),
    });
  }

  private onPeerState(msg: Extract<LinkMessage, { type: 'state' }>, nowMs: number): void {
    const first = this.peerView === null;
    this.peerView = msg;
    if (first) {
      const dirty = TrackBitmap.fromBytes(this.data.cache.trackCount, msg.dirty);
      for (let t = 0; t < dirty.trackCount; t++) if (dirty.has(t)) this.data.record.mark(t);
    }
    // In sync with the same history (a demote, say): nothing to decide, only the role changed.
    if (this.data.peerState === 'in-sync' && compareHistories(this.history, msg.history) === 'equal') return;
    // The target of our resync is primary: promoted by --force (it refuses a plain promote while
    // the resync into it runs). It takes no more of our data, and its new epoch may make it the
    // source (its syncStart follows this state): our resync ends and the pair decides afresh, as
    // the target's own promotion did on its side (found by the simulator with storage faults,
    // seeds 211, 383, 652, 284: that syncStart found this node still resyncing it).
    if (this.resync !== null && msg.role === 'primary') {
      this.data.emit({ kind: 'log', level: 'warn', msg: 'peer promoted while this node resynced it: resync abandoned', fields: { peer: this.peerName, sentBytes: this.resync.sentBytes } });
      this.resync = null;
      this.data.peerEvent('targetPromoted');
    }
    this.decide(nowMs);
  }

  /** Picks source, target or split brain from both sides' states (src/core/resync.ts). */
  decide(nowMs: number): void {
    const peer = this.peerView;
    if (peer === null || !this.data.linkIsUp || this.resync !== null || this.intake.active) return;
    const decision = decideSync(this.sideState(), { ...peer, node: this.peerName });
    if (decision.kind === 'split-brain') {
      if (this.data.peerState !== 'split-brain') this.data.emit({ kind: 'log', level: 'error', msg: 'split brain: refusing to mirror; resolve with `twinblock resolve --discard-local` on the side to overwrite', fields: { reason: decision.reason } });
      this.data.peerEvent('splitBrainDetected');
      return;
    }
    if (decision.kind === 'target') {
      this.intake.expect();
      this.markResyncIncomplete();
      this.data.peerEvent('targetChosen');
      if (this.data.role === 'primary') {
        // Nothing of ours was mirrored yet on this link (no decision had been made), so no
        // write of ours is in flight to a peer that would ignore it.
        this.data.emit({ kind: 'log', level: 'warn', msg: 'peer holds newer data: this node steps down to secondary', fields: { peer: this.peerName } });
        this.data.setRole('secondary');
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

  get peerName(): string {
    return this.settings.peer ?? 'peer';
  }

  private startResync(full: boolean, reason: string, peer: Extract<LinkMessage, { type: 'state' }>, nowMs: number): void {
    const { volumeSizeBytes, trackSizeBytes } = this.settings.geometry;
    const theirs = peer.outOfSyncValid ? TrackBitmap.fromBytes(this.data.cache.trackCount, peer.outOfSync) : null;
    const tracks = resyncTracks(this.data.cache.trackCount, full, this.data.outOfSync, theirs);
    const pace = { chunkBytes: this.settings.syncChunkBytes, windowChunks: this.settings.syncWindowChunks, rateBytesPerSec: this.settings.syncRateBytesPerSec };
    this.resync = new ResyncPlan(tracks, trackSizeBytes, volumeSizeBytes, pace, nowMs, this.data.nextId++, full);
    this.data.peerEvent('resyncStarted');
    this.data.send({ type: 'syncStart', totalBytes: this.resync.totalBytes });
    this.data.emit({ kind: 'log', level: full ? 'warn' : 'info', msg: full ? 'full resync of the peer started' : 'resync of the out-of-sync tracks started', fields: { tracks: this.resync.trackCount, bytes: this.resync.totalBytes, reason } });
    this.pumpSync(nowMs);
    this.finishResyncIfDone(nowMs);
  }

  /** The link dropped (reset, heartbeat timeout): the link half's part of ReplicaCore.linkDown. */
  linkLost(nowMs: number): void {
    this.data.linkIsUp = false;
    // Messages of the dead link still held back by a full cache must not be applied once a new
    // link has reset both sides' records (found by the simulator, seed 7). Dropping them is safe:
    // none was acknowledged, so the peer counts their tracks as out-of-sync and resends them.
    this.data.inbound.clear();
    // The peer's FLUSH requests of the dead link are answered on it or not at all: completing
    // later, their flushAck would go out on the next link, where the peer (restarted, its op ids
    // begun again) may take it for a new FLUSH of its own (simulator, seed 30103572: a stalled
    // fdatasync answered a restarted primary's FLUSH 57 with the old FLUSH 57's ack, and a host
    // FLUSH was acknowledged before the peer's store held what it covered).
    for (const [id, op] of this.data.ops) if ('flushAck' in op.done) this.data.ops.delete(id);
    this.data.updateBlockedWriters();
    this.data.outNotices = null;
    this.resetNotifier();
    this.resync = null;
    this.intake.end();
    this.peerView = null;
    this.data.cache.releaseAllHolds();
    if (this.data.peerState === 'standalone') return;
    this.data.peerEvent(PeerStateMachine.linkEvent('down', this.data.role));
    // The peer may have lost whatever it held only in RAM: those tracks need resending.
    const united = this.data.record.united();
    for (let t = 0; t < united.trackCount; t++) if (united.has(t)) this.data.outOfSync.set(t);
    if (this.data.role === 'primary') this.markDiverging();
    // Writes the peer never acknowledged: DataPath.settleUnacked (degraded policy, quorum, demoted).
    const unacked = [...this.data.pendingAcks.values()];
    this.data.pendingAcks.clear();
    if (this.data.role !== 'primary' && unacked.length > 0) {
      // Those bytes will be hardened here although the new primary may lack them and no bitmap
      // may say so after a crash: this store is no longer trusted for a delta, on disk first
      // (simulator, seed 2529).
      this.storeTrusted = false;
      this.persist();
      this.data.untrustToken = this.lastPersistToken;
    }
    this.data.settleUnacked(unacked);
    // A FLUSH or FUA still waiting for the peer: on a primary the local part alone decides
    // (degraded); a node demoted meanwhile fails it, as it fails its unacknowledged writes above
    // (found by the simulator, seed 2610: a demoted node's FUA answered ok, then overwritten by
    // the resync from the new primary that had crashed before hardening it).
    for (const [id, op] of this.data.ops) if (op.remotePending) this.data.opPartDone(id, 'remote', this.data.role === 'primary' ? null : 'EIO');
    this.data.pump(nowMs);
  }

  /** The shell's link send buffer crossed its high-water mark (false) or drained (true). */
  setLinkWritable(writable: boolean, nowMs: number): void {
    this.linkWritable = writable;
    if (writable) this.pumpSync(nowMs);
  }

  /** Is the inbound stream held back by a full cache? The shell pauses the socket meanwhile. */
  get inboundBlocked(): boolean {
    return this.data.inbound.length > 0;
  }

  /**
   * Peer messages held back for cache room, and the bytes of the first already in the cache (the
   * simulator's account of which write each cached block holds needs exactly this).
   */
  get heldInbound(): { queued: number; headAppliedBytes: number } {
    return { queued: this.data.inbound.length, headAppliedBytes: this.data.inbound.headAppliedBytes };
  }

  /**
   * Applies one message of the link half (ReplicaCore.applyInbound routes the roles' messages);
   * false when it must wait for cache room (it keeps its place).
   */
  processInbound(msg: LinkMessage, nowMs: number): boolean {
    switch (msg.type) {
      case 'write':
      case 'zero':
      case 'syncData':
      case 'syncZero':
        return this.applyPeerData(msg, nowMs);
      case 'writeAck': {
        const piece = this.data.pendingAcks.get(msg.seq);
        this.data.pendingAcks.delete(msg.seq);
        if (piece) {
          this.data.cache.releaseHardening(this.data.cache.tracksOf(piece.offsetBytes, piece.lengthBytes));
          this.data.pieceDone(piece);
        }
        return true;
      }
      case 'notice':
        this.data.handleNotice(msg.op, msg.ranges);
        return true;
      case 'flushReq': {
        const tracks = msg.lengthBytes === 0 ? null : this.data.cache.tracksOf(msg.offsetBytes, msg.lengthBytes);
        this.data.startOp({ flushAck: msg.id }, { seq: this.data.cache.sequence, tracks }, null);
        return true;
      }
      case 'flushAck':
        if (this.data.ops.get(msg.id)?.remotePending) this.data.opPartDone(msg.id, 'remote', msg.ok ? null : 'EIO');
        return true;
      case 'state':
        this.onPeerState(msg, nowMs);
        return true;
      case 'syncStart':
        if (this.data.role === 'primary') return true; // a forced promotion abandoned this resync
        // Every track is about to be rewritten: what a failed fdatasync left unsure is replaced.
        if (msg.totalBytes === this.settings.geometry.volumeSizeBytes) this.syncLost = false;
        this.intake.start(msg.totalBytes);
        this.markResyncIncomplete();
        this.data.peerEvent('resyncStartReceived');
        this.data.emit({ kind: 'log', level: 'info', msg: 'resync from the peer started', fields: { bytes: msg.totalBytes } });
        return true;
      case 'syncDone':
        // Only the end of a resync we are still receiving: after a forced promotion the stream's
        // tail must not bring back the old epoch history (found by the simulator, seed 577).
        if (this.intake.active && this.data.role === 'secondary') this.resyncReceived();
        return true;
      default:
        return true; // handshake and heartbeat messages belong to the link layer
    }
  }

  /** Step 66 on the secondary: cache the peer's bytes, mark the record, ack writes. */
  private applyPeerData(msg: Extract<LinkMessage, { type: 'write' | 'zero' | 'syncData' | 'syncZero' }>, nowMs: number): boolean {
    if (this.data.role !== 'secondary') {
      this.data.emit({ kind: 'log', level: 'error', msg: 'primary received volume data from its peer: ignored', fields: { type: msg.type } });
      // Promoted while this message was half in (held back for cache room): the pieces already
      // applied are marked in the record (step 66 per piece) but the notifier never heard of them,
      // so a selective destage left them out and a CLEAR dropped the peer's mark while they were
      // still only in this node's RAM (simulator, seed 40118207). It hears of them now.
      const appliedBytes = this.data.inbound.headAppliedBytes;
      if (appliedBytes > 0) this.data.notifyMarked(this.data.cache.tracksOf(msg.offsetBytes, appliedBytes), nowMs);
      return true;
    }
    const lengthBytes = msg.type === 'zero' || msg.type === 'syncZero' ? msg.lengthBytes : msg.data.length;
    const data = msg.type === 'zero' || msg.type === 'syncZero' ? null : msg.data;
    // A write larger than half our cache goes in as pieces while room allows (our cache may be
    // smaller than the primary's); the message keeps its place until all of it is in.
    const appliedBytes = this.data.inbound.headAppliedBytes;
    for (const [off, len] of this.data.splitPieces(msg.offsetBytes + appliedBytes, lengthBytes - appliedBytes)) {
      const rel = off - msg.offsetBytes;
      if (!this.data.applyLocal(off, len, data === null ? null : data.subarray(rel, rel + len), nowMs)) return false;
      this.data.inbound.noteApplied(len);
      // Step 66 per piece: if the link drops before the last piece, the applied ones are marked
      // (simulator, seed 3330).
      for (const t of this.data.cache.tracksOf(off, len)) this.data.record.mark(t);
    }
    if (msg.type === 'syncData' || msg.type === 'syncZero') {
      this.intake.received(lengthBytes);
      this.data.counters.syncBytesReceived += lengthBytes;
    } else {
      this.data.counters.writes++;
      this.data.counters.writtenBytes += lengthBytes;
      this.data.send({ type: 'writeAck', seq: msg.seq });
    }
    const tracks = this.data.cache.tracksOf(msg.offsetBytes, lengthBytes);
    for (const t of tracks) this.data.record.mark(t); // step 66
    this.data.notifyMarked(tracks, nowMs);
    return true;
  }

  /** The target's side of syncDone: its store now matches the source; adopt its epoch history. */
  private markResyncIncomplete(): void {
    if (this.resyncIncomplete) return;
    this.resyncIncomplete = true;
    this.persist();
  }

  private resyncReceived(): void {
    const receivedBytes = this.intake.end();
    this.resyncIncomplete = false;
    this.data.peerEvent('resyncReceived');
    // A side that discards its changes (split brain resolved against it) may go back in epochs.
    if (this.peerView !== null) this.setHistory([...this.peerView.history], this.discardLocal);
    this.storeTrusted = !this.syncLost;
    this.discardLocal = false;
    this.outOfSyncValid = true;
    this.data.outOfSync.clearSpan(0, this.data.outOfSync.trackCount);
    this.data.diverging = false;
    this.persist();
    this.data.emit({ kind: 'log', level: 'info', msg: 'resync complete: in-sync', fields: { bytes: receivedBytes } });
  }

  // ================================================================ resync (source)

  /** A rate-capped or paused resync's next read (null: none, or it waits for the link to drain). */
  resyncDeadlineMs(nowMs: number): number | null {
    if (this.resync === null || !this.linkWritable) return null;
    return this.resync.nextReadAtMs(nowMs);
  }

  pumpSync(nowMs: number): void {
    const plan = this.resync;
    if (plan === null || !this.linkWritable) return;
    for (const chunk of plan.readsDue(nowMs)) {
      this.data.emit({ kind: 'sync-read', offsetBytes: chunk.offsetBytes, lengthBytes: chunk.lengthBytes, resyncId: plan.id });
    }
  }

  /**
   * The shell read a resync chunk (cache overlaid on store). It must call this in the same
   * synchronous step as the cache's finishRead: the chunk then reflects every write applied so
   * far, and every later write follows it on the ordered link.
   */
  syncChunkRead(offsetBytes: number, data: Uint8Array, nowMs: number, resyncId?: number): void {
    const plan = this.resync;
    if (plan === null || this.data.peerState !== 'resyncing') return; // the link dropped meanwhile
    // A read issued by an earlier resync (before a link loss) must not count for this one
    // (simulator, seed 679: a chunk counted twice and the last one never sent).
    if (resyncId !== undefined && resyncId !== plan.id) return;
    // Sparse volumes are mostly zeros: a zero chunk crosses the link as its extent only.
    this.data.send(isAllZero(data) ? { type: 'syncZero', offsetBytes, lengthBytes: data.length } : { type: 'syncData', offsetBytes, data });
    this.data.markSentToPeer(this.data.cache.tracksOf(offsetBytes, data.length), nowMs);
    plan.chunkSent(data.length);
    this.data.counters.syncBytesSent += data.length;
    this.pumpSync(nowMs);
    this.finishResyncIfDone(nowMs);
  }

  private finishResyncIfDone(nowMs: number): void {
    const plan = this.resync;
    if (plan === null || !plan.complete || this.historyToken !== -1) return;
    this.data.send({ type: 'syncDone' });
    this.resync = null;
    this.data.peerEvent('resyncSent');
    this.data.outOfSync.clearSpan(0, this.data.outOfSync.trackCount);
    this.outOfSyncValid = true;
    // The source's store is the reference the peer now matches (a fresh primary's included),
    // unless a failed fdatasync may have lost some of it.
    this.storeTrusted = !this.syncLost;
    this.data.diverging = false;
    this.persist();
    this.data.emit({ kind: 'log', level: 'info', msg: 'resync complete: in-sync', fields: { bytes: plan.sentBytes, full: plan.full, ms: nowMs - plan.startMs } });
  }

  /**
   * A resync read failed (the store said EIO, say). The chunk goes back to the front of the plan
   * and the resync pauses for storeRetryMs, then reads it again: a transient error costs a pause,
   * never a resync stuck until the next link-up; a lasting one keeps saying so in the log.
   */
  syncChunkFailed(offsetBytes: number, lengthBytes: number, message: string, nowMs: number, resyncId?: number): void {
    const plan = this.resync;
    if (plan === null || (resyncId !== undefined && resyncId !== plan.id)) return;
    plan.chunkFailed({ offsetBytes, lengthBytes }, nowMs + this.settings.storeRetryMs);
    this.data.emit({ kind: 'log', level: 'error', msg: 'resync read failed: retrying', fields: { offsetBytes, lengthBytes, error: message, retryInMs: this.settings.storeRetryMs } });
  }

  syncStatus(nowMs: number): SyncProgress | null {
    const track = this.settings.geometry.trackSizeBytes;
    if (this.resync !== null) return this.resync.progress(nowMs);
    if (this.intake.active && this.data.peerState === 'resyncing') return this.intake.progress(track);
    return null;
  }

  // ================================================================ persisted state

  /**
   * A primary without its peer hardens writes the peer lacks. Before the first such harden, the
   * fact must be on disk: after a crash it tells the pair this store cannot be trusted for a delta.
   */
  private markDiverging(): void {
    if (this.data.diverging || !this.settings.mirrored) return;
    this.data.diverging = true;
    // A new data generation (as DRBD does): if the peer is promoted meanwhile, the two histories
    // diverge and the pair sees a split brain instead of silently dropping these writes.
    this.history.push(this.newEpochEntry());
    this.persist();
  }

  /** The entry of a new epoch of ours: past every epoch we know of or ever proposed. */
  newEpochEntry(): EpochEntry {
    return { epoch: Math.max(nextEpoch(this.history), this.proposedEpoch + 1), node: this.settings.node };
  }

  /**
   * Replaces the epoch history. Epochs never go backwards on a node, save on the side of a split
   * brain whose changes an operator discarded (it takes the other side's history whole).
   */
  setHistory(next: EpochEntry[], mayRollBack = false): void {
    assert(mayRollBack || currentEpoch(next) >= currentEpoch(this.history), `epoch went backwards: ${currentEpoch(this.history)} -> ${currentEpoch(next)}`);
    this.history = next;
  }

  persist(): void {
    // Every entry was appended with an epoch past all before it (newEpochEntry), on either node.
    for (let i = 1; i < this.history.length; i++) assert(this.history[i]!.epoch > this.history[i - 1]!.epoch, 'epoch history not strictly increasing');
    const token = this.data.nextId++;
    this.lastPersistToken = token;
    const historyKey = JSON.stringify(this.history);
    if (historyKey !== this.historyKey) {
      this.historyKey = historyKey;
      this.historyToken = token;
    }
    this.onDisk.issued(token, Math.max(currentEpoch(this.history), this.proposedEpoch), this.data.diverging);
    if (this.data.diverging && !this.data.divergingDurable) this.divergingToken = token;
    if (!this.data.diverging) {
      // Not diverging (a resync ended it): a save of the old mark still in flight must not count
      // for the next one when it lands. It did: a lone primary then hardened at once after its next
      // link loss, before the new mark was on disk (simulator, seed 105, found by the assertion
      // in checkHardenJob, replica-checks.ts).
      this.data.divergingDurable = false;
      this.divergingToken = -1;
    }
    this.data.emit({ kind: 'persist', token, state: this.persistedState(false) });
  }

  /**
   * A failed fdatasync also costs this store its trust for a delta resync (see syncLost), on disk
   * before any notice goes out again (startDurableSync waits for the untrust token): a power loss
   * that then takes a sector this node hardened brings a full resync, not a delta that skips it.
   */
  storeSyncFailed(): void {
    this.syncLost = true;
    if (!this.settings.mirrored || !this.storeTrusted) return;
    this.storeTrusted = false;
    this.persist();
    this.data.untrustToken = this.lastPersistToken;
    this.data.emit({ kind: 'log', level: 'warn', msg: 'store no longer trusted for a delta resync: if this node crashes, it gets a full resync from its peer', fields: { reason: 'fdatasync failed' } });
  }

  /** May a delta resync into this store be trusted (status: `store.trustedForDelta`)? */
  get trustedForDelta(): boolean {
    return this.storeTrusted;
  }

  /** Persist `token` is on disk (first in ReplicaCore.persistDone): what it records is durable. */
  persistLanded(token: number): void {
    this.onDisk.landed(token);
    this.data.divergingOnDisk = this.onDisk.diverging;
  }

  /** The link half's part of ReplicaCore.persistDone: hardening that waited for this metadata. */
  persistDurable(token: number, nowMs: number): void {
    if (token === this.data.untrustToken) {
      this.data.untrustToken = null;
      this.data.pump(nowMs);
      this.data.startDurableSync();
    }
    if (token === this.divergingToken) {
      this.data.divergingDurable = true;
      this.data.pump(nowMs);
    }
    if (token === this.historyToken) {
      this.historyToken = -1;
      this.finishResyncIfDone(nowMs);
    }
  }

  /** What goes in the metadata file; `cleanShutdown` only from the shell's final write. */
  persistedState(cleanShutdown: boolean): PersistedState {
    const outOfSync = new TrackBitmap(this.data.cache.trackCount);
    for (let t = 0; t < this.data.cache.trackCount; t++) if (this.data.outOfSync.has(t) || (cleanShutdown && this.data.record.isUnited(t))) outOfSync.set(t);
    return {
      history: [...this.history], role: this.data.role, cleanShutdown, diverging: this.data.diverging,
      storeTrusted: this.storeTrusted, resyncIncomplete: this.resyncIncomplete, outOfSync: outOfSync.toBytes(), discardLocal: this.discardLocal,
      proposedEpoch: this.proposedEpoch, syncLost: this.syncLost,
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
}
