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
import { TrackBitmap } from './bitmap.js';
import { assert, TrackCache, type CacheGeometry } from './cache.js';
import { compareHistories, currentEpoch, nextEpoch, type EpochEntry } from './epochs.js';
import { Hardener, type HardenReason, type HardeningSettings } from './hardening.js';
import { applyNotice, HardeningNotifier, type NoticeOp, type NotifierAction, type TrackerKind } from './notifier.js';
import { PeerUnhardenedRecord } from './peer-record.js';
import type { DegradedPolicy, FlushPolicy, LinkMessage, PeerState, PersistedState, ReplicaAction, ReplyErrno, Role } from './replica-types.js';
import { decideSync, ResyncPlan, resyncTracks, type SideState } from './resync.js';

export interface ReplicaSettings {
  /** This node's name, and its peer's (null when standalone). */
  node: string;
  peer: string | null;
  geometry: CacheGeometry;
  hardening: HardeningSettings;
  tracker: TrackerKind;
  flush: FlushPolicy;
  degraded: DegradedPolicy;
  /** The config's primary: the role of a node starting on a fresh store. */
  role: Role;
  /** False for a standalone node (one node in the config). */
  mirrored: boolean;
  maxHardensInFlight: number;
  syncChunkBytes: number;
  syncWindowChunks: number;
  syncRateBytesPerSec: number;
  /** After a failed store write, wait this long before hardening again. */
  storeRetryMs: number;
}

interface HostWrite { reqId: number; piecesLeft: number; offsetBytes: number; lengthBytes: number; fua: boolean; errno: ReplyErrno | null }
interface Piece { write: HostWrite; offsetBytes: number; lengthBytes: number; data: Uint8Array | null; trim: boolean }
type OpDone = { reply: number } | { flushAck: number };
interface Op { done: OpDone; localPending: boolean; remotePending: boolean; errno: ReplyErrno | null }
type WaiterPurpose = { op: number } | { range: number };

export interface ReplicaCounters {
  writes: number;
  writtenBytes: number;
  hardenedBytes: number;
  hardenWrites: number;
  hardenRuns: Record<HardenReason, number>;
  mirroredWrites: number;
  syncBytesSent: number;
  syncBytesReceived: number;
  noticesSent: number;
  noticesReceived: number;
}

export class ReplicaCore {
  readonly cache: TrackCache;
  readonly hardener: Hardener;
  /** What the peer may hold only in its RAM (seed Fig. 3). */
  readonly record: PeerUnhardenedRecord;
  readonly notifier: HardeningNotifier;
  /** Tracks the peer lacks (written while it was away): the resync set. */
  readonly outOfSync: TrackBitmap;
  readonly counters: ReplicaCounters = {
    writes: 0, writtenBytes: 0, hardenedBytes: 0, hardenWrites: 0,
    hardenRuns: { flush: 0, pressure: 0, age: 0, threshold: 0, scan: 0 },
    mirroredWrites: 0, syncBytesSent: 0, syncBytesReceived: 0, noticesSent: 0, noticesReceived: 0,
  };
  role: Role;
  peerState: PeerState;
  private readonly actions: ReplicaAction[] = [];
  private readonly hostQueue: Piece[] = [];
  private readonly pendingAcks = new Map<number, Piece>();
  private readonly inbound: LinkMessage[] = [];
  /** Bytes of the head inbound write already applied (a big write goes in as room allows). */
  private inboundAppliedBytes = 0;
  private readonly ops = new Map<number, Op>();
  private readonly waiterPurposes = new Map<number, WaiterPurpose>();
  private readonly storeSyncs = new Map<number, number>();
  private readonly outNotices = new Map<NoticeOp, number[]>();
  /** The resync this node is sending (as source), or null. */
  private resync: ResyncPlan | null = null;
  private resyncFull = false;
  /** This node is the target of a resync (decided, or syncStart received) not yet done. */
  private receivingResync = false;
  /** The peer's latest state message (link-up exchange, role changes). */
  private peerView: Extract<LinkMessage, { type: 'state' }> | null = null;
  /** Who was primary when (persisted): decides the sync source, detects split brain. */
  private history: EpochEntry[];
  /** Every hardened write is known to the peer or listed in outOfSync. */
  private storeTrusted: boolean;
  /** outOfSync is complete (no crash since it was collected). */
  private outOfSyncValid: boolean;
  private discardLocal: boolean;
  /** May hold hardened writes the peer lacks (a primary without its peer). */
  private diverging = false;
  /** The persisted metadata says diverging: hardening of unmirrored writes may proceed. */
  private divergingDurable = false;
  private divergingToken = -1;
  private syncReceivedBytes = 0;
  private syncTotalBytes = 0;
  private sendSeq = 0;
  /** The link to the peer is up and authenticated: notices flow. */
  private linkIsUp = false;
  private nextId = 1;
  private hardensInFlight = 0;
  private pausedUntilMs = 0;
  private linkWritable = true;
  closing = false;

  /**
   * `persisted` is the node's metadata from its last run, or null for a fresh store. A node that
   * crashed comes back secondary (its peer may have been promoted meanwhile); one that shut down
   * cleanly as primary, or a standalone node, comes back primary in a new epoch.
   */
  constructor(readonly settings: ReplicaSettings, nowMs: number, persisted: PersistedState | null = null) {
    this.cache = new TrackCache(settings.geometry);
    this.hardener = new Hardener(this.cache, settings.hardening, nowMs);
    this.record = new PeerUnhardenedRecord(this.cache.trackCount, settings.geometry.rangeTracks);
    this.outOfSync = new TrackBitmap(this.cache.trackCount);
    this.history = persisted === null ? [] : [...persisted.history];
    this.discardLocal = persisted?.discardLocal ?? false;
    this.storeTrusted = persisted !== null && persisted.storeTrusted && (persisted.cleanShutdown || !persisted.diverging) && !this.discardLocal;
    this.outOfSyncValid = persisted?.cleanShutdown === true;
    if (persisted?.cleanShutdown && persisted.outOfSync !== null) {
      const saved = TrackBitmap.fromBytes(this.cache.trackCount, persisted.outOfSync);
      for (let t = 0; t < saved.trackCount; t++) if (saved.has(t)) this.outOfSync.set(t);
    }
    this.diverging = persisted?.diverging ?? false;
    this.role = this.startupRole(persisted);
    this.notifier = new HardeningNotifier(settings.tracker, this.cache.trackCount, settings.geometry.rangeTracks, this.role === 'primary');
    this.peerState = settings.mirrored ? (this.role === 'primary' ? 'degraded' : 'connecting') : 'standalone';
    if (this.role === 'primary') this.history.push({ epoch: nextEpoch(this.history), node: settings.node });
    if (this.role === 'primary' && settings.mirrored) this.diverging = true;
    this.persist();
    if (persisted !== null && !persisted.cleanShutdown && settings.mirrored) {
      this.emit({ kind: 'log', level: 'warn', msg: 'restarted after a crash: coming up secondary', fields: { storeTrusted: this.storeTrusted, epoch: currentEpoch(this.history) } });
    }
  }

  private startupRole(persisted: PersistedState | null): Role {
    if (!this.settings.mirrored) return 'primary';
    if (persisted === null) return this.settings.role;
    return persisted.cleanShutdown && persisted.role === 'primary' && !persisted.discardLocal ? 'primary' : 'secondary';
  }

  /** Takes the actions emitted so far, in order. */
  takeActions(): ReplicaAction[] {
    this.flushNotices();
    return this.actions.splice(0, this.actions.length);
  }

  private emit(action: ReplicaAction): void {
    this.actions.push(action);
  }

  private send(msg: LinkMessage): void {
    this.emit({ kind: 'send', msg });
  }

  /** Is the peer receiving our writes now (so they are mirrored)? */
  get mirroring(): boolean {
    return this.peerState === 'in-sync' || this.peerState === 'resyncing';
  }

  // ================================================================ host requests

  /** NBD WRITE / WRITE_ZEROES / TRIM (data null = zeros), 512-aligned. Answered by a reply action. */
  hostWrite(reqId: number, offsetBytes: number, lengthBytes: number, data: Uint8Array | null, trim: boolean, fua: boolean, nowMs: number): void {
    if (this.role !== 'primary') return this.emit({ kind: 'reply', reqId, errno: 'EPERM', message: 'this node is secondary: writes go to the primary' });
    if (this.closing) return this.emit({ kind: 'reply', reqId, errno: 'ESHUTDOWN', message: 'node is shutting down' });
    const write: HostWrite = { reqId, piecesLeft: 0, offsetBytes, lengthBytes, fua, errno: null };
    const pieces = this.splitPieces(offsetBytes, lengthBytes).map(([off, len]): Piece => ({
      write, offsetBytes: off, lengthBytes: len, data: data === null ? null : data.subarray(off - offsetBytes, off - offsetBytes + len), trim,
    }));
    write.piecesLeft = pieces.length;
    if (pieces.length === 0) return this.finishWrite(write);
    this.counters.writes++;
    this.counters.writtenBytes += lengthBytes;
    for (const piece of pieces) this.hostQueue.push(piece);
    this.drainHostQueue(nowMs);
    this.pump(nowMs);
  }

  /** Track-aligned pieces no larger than half the cache: each fits once hardening empties it. */
  private splitPieces(offsetBytes: number, lengthBytes: number): [number, number][] {
    const { trackSizeBytes, capacityBytes } = this.settings.geometry;
    const pieceBytes = Math.max(trackSizeBytes, Math.floor(capacityBytes / 2 / trackSizeBytes) * trackSizeBytes);
    const out: [number, number][] = [];
    const end = offsetBytes + lengthBytes;
    for (let pos = offsetBytes; pos < end;) {
      const pieceEnd = Math.min(end, (Math.floor(pos / pieceBytes) + 1) * pieceBytes);
      out.push([pos, pieceEnd - pos]);
      pos = pieceEnd;
    }
    return out;
  }

  private drainHostQueue(nowMs: number): void {
    while (this.hostQueue.length > 0) {
      const piece = this.hostQueue[0]!;
      if (!this.applyLocal(piece.offsetBytes, piece.lengthBytes, piece.data, nowMs)) break;
      this.hostQueue.shift();
      this.afterPieceApplied(piece, nowMs);
    }
    this.updateBlockedWriters();
  }

  /** Host writes and peer messages waiting for cache room both count as pressure. */
  private updateBlockedWriters(): void {
    this.hardener.setBlockedWriters(this.hostQueue.length + this.inbound.length);
  }

  /** Puts bytes into the cache; false (nothing changed) when there is no room yet. */
  private applyLocal(offsetBytes: number, lengthBytes: number, data: Uint8Array | null, nowMs: number): boolean {
    const ok = data === null ? this.cache.writeZeroes(offsetBytes, lengthBytes, nowMs) : this.cache.write(offsetBytes, data, nowMs);
    if (ok) this.hardener.noteWrite(this.cache.tracksOf(offsetBytes, lengthBytes));
    return ok;
  }

  private afterPieceApplied(piece: Piece, nowMs: number): void {
    const tracks = this.cache.tracksOf(piece.offsetBytes, piece.lengthBytes);
    if (!this.mirroring) {
      // The peer will lack these tracks: they join the resync set (seed: "a further record").
      if (this.settings.mirrored) for (const t of tracks) this.outOfSync.set(t);
      return this.pieceDone(piece);
    }
    const seq = ++this.sendSeq;
    this.markSentToPeer(tracks, nowMs); // step 62
    this.cache.holdHardening(tracks); // not on our disk before it is in the peer's cache
    this.pendingAcks.set(seq, piece);
    this.counters.mirroredWrites++;
    this.send(piece.data === null
      ? { type: 'zero', seq, offsetBytes: piece.offsetBytes, lengthBytes: piece.lengthBytes, trim: piece.trim }
      : { type: 'write', seq, offsetBytes: piece.offsetBytes, data: piece.data }); // step 64
  }

  /** Marks the peer's copy of these tracks as possibly unhardened, and mirrors the mark. */
  private markSentToPeer(tracks: number[], nowMs: number): void {
    for (const t of tracks) this.record.mark(t);
    this.notifyMarked(tracks, nowMs);
  }

  /**
   * The peer just marked these tracks as ours-maybe-unhardened: mirror the marks. A track that is
   * clean here (initial sync sends hardened data too) counts as hardened at once, or the Fig. 6
   * counter M would wait forever for a harden that never comes.
   */
  private notifyMarked(tracks: number[], nowMs: number): void {
    this.runNotifier(this.notifier.onWriteApplied(tracks, nowMs));
    const clean = tracks.filter((t) => !this.cache.isTrackDirty(t));
    if (clean.length > 0) this.runNotifier(this.notifier.onTracksClean(clean));
    this.startCyclesOverThreshold(tracks);
  }

  private pieceDone(piece: Piece): void {
    if (--piece.write.piecesLeft === 0) this.finishWrite(piece.write);
  }

  /** All pieces are in the cache(s): answer now, or after the durability the policy asks for. */
  private finishWrite(write: HostWrite): void {
    const tracks = this.cache.tracksOf(write.offsetBytes, write.lengthBytes);
    const local = { seq: this.cache.sequence, tracks };
    const done = { reply: write.reqId };
    if (this.peerState === 'standalone') return this.startOp(done, write.fua ? local : null, null);
    if (!this.mirroring) {
      const hardenFirst = write.fua || this.settings.degraded === 'write-through';
      return this.startOp(done, hardenFirst ? local : null, null);
    }
    const onDisk = write.fua && this.settings.flush === 'disk';
    this.startOp(done, onDisk ? local : null, onDisk ? { offsetBytes: write.offsetBytes, lengthBytes: write.lengthBytes } : null);
  }

  /** NBD FLUSH: every write completed before it is as durable as the policy promises. */
  hostFlush(reqId: number, nowMs: number): void {
    const local = { seq: this.cache.sequence, tracks: null };
    const done = { reply: reqId };
    if (this.peerState === 'in-sync' && this.settings.flush === 'memory') {
      // Every completed write was acknowledged by the peer's cache: it is in both caches already.
      return this.startOp(done, null, null);
    }
    const remote = this.mirroring && this.settings.flush === 'disk' ? { offsetBytes: 0, lengthBytes: 0 } : null;
    this.startOp(done, local, remote);
    this.pump(nowMs);
  }

  /** Harden everything written so far, whatever the policy (shutdown). */
  hostFlushLocal(reqId: number, nowMs: number): void {
    this.startOp({ reply: reqId }, { seq: this.cache.sequence, tracks: null }, null);
    this.pump(nowMs);
  }

  // ================================================================ durability ops

  /** An op completes when its local part (harden + store sync) and remote part (peer flush) are done. */
  private startOp(done: OpDone, local: { seq: number; tracks: number[] | null } | null, remote: { offsetBytes: number; lengthBytes: number } | null): void {
    const id = this.nextId++;
    const op: Op = { done, localPending: local !== null, remotePending: remote !== null, errno: null };
    this.ops.set(id, op);
    if (remote) this.send({ type: 'flushReq', id, offsetBytes: remote.offsetBytes, lengthBytes: remote.lengthBytes });
    if (local) {
      const waiterId = this.nextId++;
      this.waiterPurposes.set(waiterId, { op: id });
      this.hardener.addWaiter(waiterId, local.seq, local.tracks);
      this.settleWaiters();
    }
    this.finishOpIfDone(id);
  }

  private opPartDone(opId: number, part: 'local' | 'remote', errno: ReplyErrno | null): void {
    const op = this.ops.get(opId);
    if (op === undefined) return;
    op.errno ??= errno;
    if (part === 'local') op.localPending = false;
    else op.remotePending = false;
    this.finishOpIfDone(opId);
  }

  private finishOpIfDone(opId: number): void {
    const op = this.ops.get(opId);
    if (op === undefined || op.localPending || op.remotePending) return;
    this.ops.delete(opId);
    if ('reply' in op.done) this.emit({ kind: 'reply', reqId: op.done.reply, errno: op.errno, ...(op.errno ? { message: 'store write failed' } : {}) });
    else this.send({ type: 'flushAck', id: op.done.flushAck, ok: op.errno === null });
  }

  private settleWaiters(): void {
    for (const waiterId of this.hardener.takeSatisfiedWaiters()) {
      const purpose = this.waiterPurposes.get(waiterId);
      this.waiterPurposes.delete(waiterId);
      if (purpose === undefined) continue;
      if ('op' in purpose) {
        const syncId = this.nextId++;
        this.storeSyncs.set(syncId, purpose.op);
        this.emit({ kind: 'sync-store', syncId });
      } else if (this.notifier.rangeState(purpose.range) === 'hardening') {
        this.runNotifier(this.notifier.rangeHardened(purpose.range)); // step 78
      }
    }
  }

  /** The store's fdatasync finished (ok false: it failed). */
  storeSynced(syncId: number, ok: boolean): void {
    const opId = this.storeSyncs.get(syncId);
    this.storeSyncs.delete(syncId);
    if (opId !== undefined) this.opPartDone(opId, 'local', ok ? null : 'EIO');
  }

  // ================================================================ hardening

  private pump(nowMs: number): void {
    if (nowMs < this.pausedUntilMs) return;
    // A primary without its peer hardens only once its metadata says so (markDiverging).
    if (this.diverging && !this.divergingDurable && this.role === 'primary' && !this.mirroring) return;
    while (this.hardensInFlight < this.settings.maxHardensInFlight) {
      const next = this.hardener.nextJob(nowMs);
      if (next === null) return;
      this.hardensInFlight++;
      this.emit({ kind: 'harden', job: next.job, reason: next.reason });
    }
  }

  hardenDone(jobId: number, bytes: number, storeWrites: number, reason: HardenReason, nowMs: number): void {
    this.hardensInFlight--;
    const cleaned = this.cache.completeHarden(jobId);
    this.counters.hardenedBytes += bytes;
    this.counters.hardenWrites += storeWrites;
    this.counters.hardenRuns[reason]++;
    this.runNotifier(this.notifier.onTracksClean(cleaned));
    this.afterRoomFreed(nowMs);
  }

  /** A store write failed: the data stays dirty; hosts waiting on durability get EIO. */
  hardenFailed(jobId: number, message: string, nowMs: number): void {
    this.hardensInFlight--;
    this.cache.abandonHarden(jobId);
    this.pausedUntilMs = nowMs + this.settings.storeRetryMs;
    this.emit({ kind: 'log', level: 'error', msg: 'store write failed; data stays in cache and is retried', fields: { error: message } });
    for (const [waiterId, purpose] of this.waiterPurposes) {
      if (!('op' in purpose)) continue;
      this.waiterPurposes.delete(waiterId);
      this.hardener.removeWaiter(waiterId);
      this.opPartDone(purpose.op, 'local', 'EIO');
    }
    this.afterRoomFreed(nowMs);
  }

  private afterRoomFreed(nowMs: number): void {
    this.drainHostQueue(nowMs);
    this.drainInbound(nowMs);
    this.settleWaiters();
    this.pump(nowMs);
  }

  tick(nowMs: number): void {
    this.hardener.tick(nowMs);
    this.startDueCycles(nowMs);
    this.pumpSync(nowMs);
    this.pump(nowMs);
  }

  // ================================================================ hardening notices

  private runNotifier(actions: NotifierAction[]): void {
    for (const a of actions) {
      if (a.kind === 'send') {
        this.queueNotice(a.notice.op, a.notice.range);
      } else if (a.tracks.length === 0) {
        this.runNotifier(this.notifier.rangeHardened(a.range));
      } else {
        // Step 76: harden what was dirty at the ack — every write up to now in those tracks.
        const waiterId = this.nextId++;
        this.waiterPurposes.set(waiterId, { range: a.range });
        this.hardener.addWaiter(waiterId, this.cache.sequence, a.tracks);
      }
    }
  }

  /** Notices are batched per op into one frame per event: ranges, not tracks, keep them cheap. */
  private queueNotice(op: NoticeOp, range: number): void {
    if (!this.linkIsUp) return;
    const list = this.outNotices.get(op) ?? [];
    list.push(range);
    this.outNotices.set(op, list);
  }

  private flushNotices(): void {
    for (const [op, ranges] of this.outNotices) {
      this.counters.noticesSent += ranges.length;
      this.send({ type: 'notice', op, ranges });
    }
    this.outNotices.clear();
  }

  private startDueCycles(nowMs: number): void {
    if (!this.linkIsUp) return;
    const { destageIntervalMs, maxDirtyAgeMs } = this.settings.hardening;
    for (const range of this.notifier.rangesDue(nowMs - Math.min(destageIntervalMs, maxDirtyAgeMs / 2))) {
      this.runNotifier(this.notifier.startCycle(range)); // step 70 / step 90
    }
  }

  private startCyclesOverThreshold(tracks: number[]): void {
    if (!this.linkIsUp) return;
    const threshold = this.settings.hardening.rangeDirtyThresholdTracks;
    let lastRange = -1;
    for (const t of tracks) {
      const range = this.cache.rangeOfTrack(t);
      if (range === lastRange) continue;
      lastRange = range;
      if (this.notifier.wantsCycle(range) && this.cache.dirtyTracksInRange(range) >= threshold) {
        this.runNotifier(this.notifier.startCycle(range));
      }
    }
  }

  private handleNotice(op: NoticeOp, ranges: number[]): void {
    this.counters.noticesReceived += ranges.length;
    for (const range of ranges) {
      if (range < 0 || range >= this.record.rangeCount) continue;
      if (op === 'save-ack') {
        if (this.notifier.rangeState(range) === 'awaiting-ack') this.runNotifier(this.notifier.onSaveAck(range, this.cache.dirtyTracksOfRange(range)));
        continue;
      }
      const reply = applyNotice(this.record, { op, range }); // steps 72-74, 80
      if (reply) this.queueNotice(reply.op, reply.range);
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
    this.notifier.reset();
    if (this.peerState !== 'split-brain') this.peerState = this.role === 'primary' ? 'degraded' : 'connecting';
    const dirty = this.cache.dirtyTracks();
    this.notifyMarked(dirty, nowMs); // the peer marks these when our state arrives: first on the stream
    this.sendState();
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
    this.resync = new ResyncPlan(tracks, trackSizeBytes, volumeSizeBytes, this.settings.syncChunkBytes, nowMs);
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
    this.outNotices.clear();
    this.notifier.reset();
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
    // Writes the peer never acknowledged now complete under the degraded policy.
    const unacked = [...this.pendingAcks.values()];
    this.pendingAcks.clear();
    for (const piece of unacked) this.pieceDone(piece);
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

  private drainInbound(nowMs: number): void {
    while (this.inbound.length > 0 && this.processInbound(this.inbound[0]!, nowMs)) this.inbound.shift();
    this.updateBlockedWriters();
  }

  /** Applies one message; false when it must wait for cache room (it keeps its place). */
  private processInbound(msg: LinkMessage, nowMs: number): boolean {
    switch (msg.type) {
      case 'write':
      case 'zero':
      case 'syncData':
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
        this.receivingResync = true;
        this.peerState = 'resyncing';
        this.syncReceivedBytes = 0;
        this.syncTotalBytes = msg.totalBytes;
        this.emit({ kind: 'log', level: 'info', msg: 'resync from the peer started', fields: { bytes: msg.totalBytes } });
        return true;
      case 'syncDone':
        this.resyncReceived();
        return true;
      default:
        return true; // handshake and heartbeat messages belong to the link layer
    }
  }

  /** Step 66 on the secondary: cache the peer's bytes, mark the record, ack writes. */
  private applyPeerData(msg: Extract<LinkMessage, { type: 'write' | 'zero' | 'syncData' }>, nowMs: number): boolean {
    if (this.role !== 'secondary') {
      this.emit({ kind: 'log', level: 'error', msg: 'primary received volume data from its peer: ignored', fields: { type: msg.type } });
      return true;
    }
    const lengthBytes = msg.type === 'zero' ? msg.lengthBytes : msg.data.length;
    const data = msg.type === 'zero' ? null : msg.data;
    // A write larger than half our cache goes in as pieces while room allows (our cache may be
    // smaller than the primary's); the message keeps its place until all of it is in.
    for (const [off, len] of this.splitPieces(msg.offsetBytes + this.inboundAppliedBytes, lengthBytes - this.inboundAppliedBytes)) {
      const rel = off - msg.offsetBytes;
      if (!this.applyLocal(off, len, data === null ? null : data.subarray(rel, rel + len), nowMs)) return false;
      this.inboundAppliedBytes += len;
    }
    this.inboundAppliedBytes = 0;
    const tracks = this.cache.tracksOf(msg.offsetBytes, lengthBytes);
    for (const t of tracks) this.record.mark(t); // step 66
    this.notifyMarked(tracks, nowMs);
    if (msg.type === 'syncData') {
      this.syncReceivedBytes += lengthBytes;
      this.counters.syncBytesReceived += lengthBytes;
    } else {
      this.counters.writes++;
      this.counters.writtenBytes += lengthBytes;
      this.send({ type: 'writeAck', seq: msg.seq });
    }
    return true;
  }

  /** The target's side of syncDone: its store now matches the source; adopt its epoch history. */
  private resyncReceived(): void {
    this.receivingResync = false;
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

  private pumpSync(nowMs: number): void {
    const plan = this.resync;
    if (plan === null || !this.linkWritable) return;
    const { syncChunkBytes, syncWindowChunks, syncRateBytesPerSec } = this.settings;
    const allowedBytes = syncRateBytesPerSec * Math.max(0, nowMs - plan.startMs) / 1000 + syncChunkBytes * syncWindowChunks;
    while (plan.readsInFlight < syncWindowChunks && plan.issuedBytes < allowedBytes) {
      const chunk = plan.nextChunk();
      if (chunk === null) break;
      plan.readsInFlight++;
      this.emit({ kind: 'sync-read', offsetBytes: chunk.offsetBytes, lengthBytes: chunk.lengthBytes });
    }
  }

  /**
   * The shell read a resync chunk (cache overlaid on store). It must call this in the same
   * synchronous step as the cache's finishRead: the chunk then reflects every write applied so
   * far, and every later write follows it on the ordered link.
   */
  syncChunkRead(offsetBytes: number, data: Uint8Array, nowMs: number): void {
    const plan = this.resync;
    if (plan === null || this.peerState !== 'resyncing') return; // the link dropped meanwhile
    plan.readsInFlight--;
    this.markSentToPeer(this.cache.tracksOf(offsetBytes, data.length), nowMs);
    this.send({ type: 'syncData', offsetBytes, data });
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

  syncStatus(nowMs: number): { totalBytes: number; doneBytes: number; rateBytesPerSec: number; etaSeconds: number | null; full: boolean } | null {
    if (this.resync !== null) {
      const elapsedSec = Math.max(0.001, (nowMs - this.resync.startMs) / 1000);
      const rate = this.resync.sentBytes / elapsedSec;
      const left = this.resync.totalBytes - this.resync.sentBytes;
      return { totalBytes: this.resync.totalBytes, doneBytes: this.resync.sentBytes, rateBytesPerSec: Math.round(rate), etaSeconds: rate > 0 ? Math.ceil(left / rate) : null, full: this.resyncFull };
    }
    if (this.receivingResync && this.peerState === 'resyncing') {
      return { totalBytes: this.syncTotalBytes, doneBytes: this.syncReceivedBytes, rateBytesPerSec: 0, etaSeconds: null, full: false };
    }
    return null;
  }

  // ================================================================ roles (promote, demote, resolve)

  /** Makes this node primary: a new epoch, persisted before a write is served (the shell awaits it). */
  promote(force: boolean, nowMs: number): { ok: true } | { ok: false; error: string } {
    if (!this.settings.mirrored) return { ok: false, error: 'a standalone node is always primary' };
    if (this.role === 'primary') return { ok: false, error: 'already primary' };
    if (!force && this.linkIsUp && this.peerView?.role === 'primary') return { ok: false, error: `peer ${this.peerName} is primary and connected: demote it first, or use --force` };
    if (!force && this.receivingResync) return { ok: false, error: 'this node is still being resynced: its data is incomplete (use --force to promote anyway)' };
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
    if (this.linkIsUp) {
      this.peerState = 'degraded';
      this.sendState();
      this.decide(nowMs);
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
    this.peerState = this.linkIsUp ? 'connecting' : 'connecting';
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
    if (this.diverging && !this.divergingDurable) this.divergingToken = token;
    if (!this.diverging) this.divergingDurable = false;
    this.emit({ kind: 'persist', token, state: this.persistedState(false) });
  }

  /** The shell wrote the metadata of persist action `token` durably. */
  persistDone(token: number, nowMs: number): void {
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
      storeTrusted: this.storeTrusted, outOfSync: outOfSync.toBytes(), discardLocal: this.discardLocal,
    };
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
