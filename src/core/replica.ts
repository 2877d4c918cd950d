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
import { Hardener, type HardenReason, type HardeningSettings } from './hardening.js';
import { applyNotice, HardeningNotifier, type NoticeOp, type NotifierAction, type TrackerKind } from './notifier.js';
import { PeerUnhardenedRecord } from './peer-record.js';
import type { DegradedPolicy, FlushPolicy, LinkMessage, PeerState, ReplicaAction, ReplyErrno, Role } from './replica-types.js';

export interface ReplicaSettings {
  geometry: CacheGeometry;
  hardening: HardeningSettings;
  tracker: TrackerKind;
  flush: FlushPolicy;
  degraded: DegradedPolicy;
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
interface SyncProgress { totalBytes: number; issuedBytes: number; sentBytes: number; readsInFlight: number; startMs: number }

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
  private sync: SyncProgress | null = null;
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

  constructor(readonly settings: ReplicaSettings, nowMs: number) {
    this.cache = new TrackCache(settings.geometry);
    this.hardener = new Hardener(this.cache, settings.hardening, nowMs);
    this.record = new PeerUnhardenedRecord(this.cache.trackCount, settings.geometry.rangeTracks);
    this.notifier = new HardeningNotifier(settings.tracker, this.cache.trackCount, settings.geometry.rangeTracks, settings.role === 'primary');
    this.outOfSync = new TrackBitmap(this.cache.trackCount);
    this.role = settings.role;
    this.peerState = settings.mirrored ? 'connecting' : 'standalone';
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

  // ================================================================ link

  /** The link to the peer is up and authenticated. The primary starts the initial sync. */
  linkEstablished(nowMs: number): void {
    this.linkIsUp = true;
    this.notifier.reset();
    this.linkWritable = true;
    if (this.role !== 'primary') return;
    // Without a persisted record of what the peer holds, a full sync is the only safe start.
    this.record.reset();
    this.peerState = 'resyncing';
    this.sync = { totalBytes: this.settings.geometry.volumeSizeBytes, issuedBytes: 0, sentBytes: 0, readsInFlight: 0, startMs: nowMs };
    this.send({ type: 'syncStart', totalBytes: this.sync.totalBytes });
    this.emit({ kind: 'log', level: 'info', msg: 'peer connected: full sync started', fields: { totalBytes: this.sync.totalBytes } });
    this.pumpSync(nowMs);
  }

  /** The link dropped (reset, heartbeat timeout). */
  linkDown(nowMs: number): void {
    this.linkIsUp = false;
    this.outNotices.clear();
    this.notifier.reset();
    this.sync = null;
    if (this.peerState === 'standalone') return;
    this.peerState = this.role === 'primary' ? 'degraded' : 'connecting';
    // The peer may have lost whatever it held only in RAM: those tracks need resending.
    const united = this.record.united();
    for (let t = 0; t < united.trackCount; t++) if (united.has(t)) this.outOfSync.set(t);
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
        if (piece) this.pieceDone(piece);
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
      case 'syncStart':
        this.peerState = 'resyncing';
        this.record.reset();
        this.syncReceivedBytes = 0;
        this.syncTotalBytes = msg.totalBytes;
        this.emit({ kind: 'log', level: 'info', msg: 'full sync from the primary started', fields: { totalBytes: msg.totalBytes } });
        return true;
      case 'syncDone':
        this.peerState = 'in-sync';
        this.emit({ kind: 'log', level: 'info', msg: 'full sync complete: in-sync', fields: { bytes: this.syncReceivedBytes } });
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

  // ================================================================ initial sync (primary)

  private pumpSync(nowMs: number): void {
    const sync = this.sync;
    if (sync === null || !this.linkWritable) return;
    const { syncChunkBytes, syncWindowChunks, syncRateBytesPerSec } = this.settings;
    const allowedBytes = syncRateBytesPerSec * Math.max(0, nowMs - sync.startMs) / 1000 + syncChunkBytes * syncWindowChunks;
    while (sync.readsInFlight < syncWindowChunks && sync.issuedBytes < sync.totalBytes && sync.issuedBytes < allowedBytes) {
      const lengthBytes = Math.min(syncChunkBytes, sync.totalBytes - sync.issuedBytes);
      this.emit({ kind: 'sync-read', offsetBytes: sync.issuedBytes, lengthBytes });
      sync.issuedBytes += lengthBytes;
      sync.readsInFlight++;
    }
  }

  /**
   * The shell read a sync chunk (cache overlaid on store). It must call this in the same
   * synchronous step as the cache's finishRead: the chunk then reflects every write applied so
   * far, and every later write follows it on the ordered link.
   */
  syncChunkRead(offsetBytes: number, data: Uint8Array, nowMs: number): void {
    const sync = this.sync;
    if (sync === null || this.peerState !== 'resyncing') return; // the link dropped meanwhile
    sync.readsInFlight--;
    this.markSentToPeer(this.cache.tracksOf(offsetBytes, data.length), nowMs);
    this.send({ type: 'syncData', offsetBytes, data });
    sync.sentBytes += data.length;
    this.counters.syncBytesSent += data.length;
    if (sync.sentBytes === sync.totalBytes) {
      this.send({ type: 'syncDone' });
      this.peerState = 'in-sync';
      this.outOfSync.clearSpan(0, this.outOfSync.trackCount);
      this.sync = null;
      this.emit({ kind: 'log', level: 'info', msg: 'full sync complete: in-sync', fields: { bytes: sync.sentBytes, ms: nowMs - sync.startMs } });
      return;
    }
    this.pumpSync(nowMs);
  }

  /** A sync read failed: the sync cannot finish; drop the link so it restarts cleanly. */
  syncChunkFailed(message: string): void {
    this.emit({ kind: 'log', level: 'error', msg: 'initial sync read failed', fields: { error: message } });
    this.sync = null;
  }

  syncStatus(nowMs: number): { totalBytes: number; doneBytes: number; rateBytesPerSec: number; etaSeconds: number | null } | null {
    if (this.sync !== null) {
      const elapsedSec = Math.max(0.001, (nowMs - this.sync.startMs) / 1000);
      const rate = this.sync.sentBytes / elapsedSec;
      return { totalBytes: this.sync.totalBytes, doneBytes: this.sync.sentBytes, rateBytesPerSec: Math.round(rate), etaSeconds: rate > 0 ? Math.ceil((this.sync.totalBytes - this.sync.sentBytes) / rate) : null };
    }
    if (this.role === 'secondary' && this.peerState === 'resyncing') {
      return { totalBytes: this.syncTotalBytes, doneBytes: this.syncReceivedBytes, rateBytesPerSec: 0, etaSeconds: null };
    }
    return null;
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
