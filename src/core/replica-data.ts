// The replica core's data path: the cache-facing part of one node's state machine — host writes
// (Fig. 4 steps 60-64 on the primary), durability ops for FLUSH/FUA, hardening, and hardening
// notices (Figs. 5-6). It also holds what every part reads: the node's role and peer state (each
// changed only through setRole and the peer-state table), the cache, the record of the peer and
// the actions emitted so far. ReplicaCore (replica.ts) owns it and the link half (replica-link.ts),
// which calls into it; it calls into neither: an event whose work spans both is taken by
// ReplicaCore, which calls each part in turn. Pure and synchronous (theory of operation in
// replica.ts).
import { assert } from './assert.js';
import { checkHardenJob, checkSend } from './replica-checks.js';
import { QuorumPart } from './replica-quorum.js';
import { TrackBitmap } from './bitmap.js';
import { TrackCache } from './cache.js';
import { Hardener, type HardenReason } from './hardening.js';
import { applyNotice, HardeningNotifier, type NoticeOp, type NotifierAction } from './notifier.js';
import { PeerUnhardenedRecord } from './peer-record.js';
import { DurableNotices } from './replica-durable.js';
import { InboundStream } from './replica-inbound.js';
import { initialPeerState, PeerStateMachine, type PeerEvent } from './peer-state.js';
import type { LinkMessage, PeerState, QuorumView, ReplicaAction, ReplicaCounters, ReplicaSettings, ReplyErrno, Role } from './replica-types.js';

export type { ReplicaCounters, ReplicaSettings } from './replica-types.js';

interface HostWrite { reqId: number; piecesLeft: number; offsetBytes: number; lengthBytes: number; fua: boolean; errno: ReplyErrno | null }
interface Piece { write: HostWrite; offsetBytes: number; lengthBytes: number; data: Uint8Array | null; trim: boolean }
type OpDone = { reply: number } | { flushAck: number };
interface Op {
  done: OpDone;
  localPending: boolean;
  remotePending: boolean;
  errno: ReplyErrno | null;
  /** A host write only this node vouches for (its peer never acknowledged it): the role changes seen when it started. */
  aloneSinceRoleChange: number | null;
}
type WaiterPurpose = { op: number } | { range: number };

export class DataPath {
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
    mirroredWrites: 0, syncBytesSent: 0, syncBytesReceived: 0, noticesSent: 0, noticesReceived: 0, fsyncFailures: 0,
  };
  /** This node's role: changed only through setRole (read-only view: `role`). */
  private roleValue: Role;
  /** The peer state: changed only by legal events of src/core/peer-state.ts (view: `peerState`). */
  private readonly peer: PeerStateMachine;
  private readonly actions: ReplicaAction[] = [];
  readonly hostQueue: Piece[] = [];
  readonly pendingAcks = new Map<number, Piece>();
  /** Quorum (issue 12) and the writes held for it (a part). */
  readonly quorumPart: QuorumPart<Piece>;
  /** The peer's messages held back for cache room, in link order (a part). */
  readonly inbound = new InboundStream();
  readonly ops = new Map<number, Op>();
  readonly waiterPurposes = new Map<number, WaiterPurpose>();
  private readonly storeSyncs = new Map<number, number>();
  /** Host-op fdatasyncs that were in flight when another one failed: they answer EIO (syncFinished). */
  private readonly taintedSyncs = new Set<number>();
  /** Hardening events waiting for an fdatasync before the peer hears of them (a part). */
  readonly durable = new DurableNotices();
  /** Notices queued in this event, in order: one batch of ranges while the op stays the same. */
  outNotices: { op: NoticeOp; ranges: number[] } | null = null;
  /** May hold hardened writes the peer lacks (a primary without its peer). */
  diverging = false;
  /** A persist that must be durable before anything more is hardened (see linkDown), or null. */
  untrustToken: number | null = null;
  /** Role changes so far: a write only this node vouched for fails if its role changed before it completed. */
  private roleChanges = 0;
  /** The persisted metadata says diverging: hardening of unmirrored writes may proceed. */
  divergingDurable = false;
  /**
   * What the metadata on disk says of diverging, by value (LinkHalf.persistLanded): checked
   * against the bookkeeping above whenever a primary without its peer hardens (checkHardenJob).
   */
  divergingOnDisk = false;
  private sendSeq = 0;
  /** The seq of the last write or zero sent on the link (checked to increase strictly). */
  private lastSentWriteSeq = 0;
  /** The link to the peer is up and authenticated: notices flow. */
  linkIsUp = false;
  nextId = 1;
  hardensInFlight = 0;
  pausedUntilMs = 0;
  /** Refusing new host writes (beginClose): shutdown has begun. */
  closing = false;

  constructor(readonly settings: ReplicaSettings, nowMs: number, role: Role) {
    this.cache = new TrackCache(settings.geometry);
    this.hardener = new Hardener(this.cache, settings.hardening, nowMs);
    this.record = new PeerUnhardenedRecord(this.cache.trackCount, settings.geometry.rangeTracks);
    this.outOfSync = new TrackBitmap(this.cache.trackCount);
    this.quorumPart = new QuorumPart(settings.quorum, settings.mirrored ? 2 : 1);
    this.roleValue = role;
    this.notifier = new HardeningNotifier(settings.tracker, this.cache.trackCount, settings.geometry.rangeTracks, role === 'primary');
    this.peer = new PeerStateMachine(initialPeerState(settings.mirrored, role));
  }

  get role(): Role {
    return this.roleValue;
  }

  get peerState(): PeerState {
    return this.peer.state;
  }

  setRole(role: Role): void {
    if (this.roleValue === 'primary' && role !== 'primary') this.failQueuedHostWrites();
    if (role !== this.roleValue) this.roleChanges++;
    this.roleValue = role;
    this.notifier.setSendsWrites(role === 'primary');
  }

  /** Moves the peer state along the table; an illegal event throws (src/core/peer-state.ts). */
  peerEvent(event: PeerEvent): void {
    this.peer.apply(event);
  }

  /** Takes the actions emitted so far, in order. */
  takeActions(): ReplicaAction[] {
    this.flushNotices();
    return this.actions.splice(0, this.actions.length);
  }

  emit(action: ReplicaAction): void {
    if (action.kind === 'send') this.lastSentWriteSeq = checkSend(this, action.msg, this.lastSentWriteSeq);
    this.actions.push(action);
  }

  send(msg: LinkMessage): void {
    this.flushNotices(); // anything queued before this message goes before it
    this.emit({ kind: 'send', msg });
  }

  /** Host write pieces waiting for cache room, oldest first (read-only; the simulator tracks them). */
  get queuedHostPieces(): readonly { readonly offsetBytes: number; readonly lengthBytes: number }[] {
    return this.hostQueue;
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
    if (!this.writesHaveQuorum && this.settings.quorum.onNoQuorum === 'io-error') return this.emit({ kind: 'reply', reqId, errno: 'EIO', message: this.noQuorumMessage() });
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
  splitPieces(offsetBytes: number, lengthBytes: number): [number, number][] {
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

  drainHostQueue(nowMs: number): void {
    // Without quorum, host writes wait unapplied (suspend-io); once it returns, the writes the
    // peer never acknowledged go first, so that nothing newer reaches it before them.
    const quorum = this.quorumPart;
    if (!this.writesHaveQuorum) {
      quorum.held = this.hostQueue.length > 0 || quorum.awaiting.length > 0;
      return this.updateBlockedWriters();
    }
    quorum.held = false;
    for (const piece of quorum.awaiting.splice(0)) this.mirrorPiece(piece, nowMs);
    while (this.hostQueue.length > 0) {
      const piece = this.hostQueue[0]!;
      if (!this.applyLocal(piece.offsetBytes, piece.lengthBytes, piece.data, nowMs)) break;
      this.hostQueue.shift();
      this.afterPieceApplied(piece, nowMs);
    }
    this.updateBlockedWriters();
  }

  /**
   * A node that stops being primary fails the host write pieces still waiting for cache room,
   * unapplied: applied later, they would reach its store though the new primary never saw them
   * and no bitmap says so (simulator, seed 10015049: a demoted node hardened such a write, crashed,
   * and came back with its store trusted for a delta that skipped the track).
   */
  private failQueuedHostWrites(errno: ReplyErrno = 'EIO'): void {
    for (const piece of [...this.quorumPart.awaiting.splice(0), ...this.hostQueue.splice(0)]) {
      piece.write.errno ??= errno;
      this.pieceDone(piece);
    }
    this.updateBlockedWriters();
  }

  // ================================================================ quorum (issue 12)

  /** Nodes this one reaches, itself included: the peer counts while our writes reach it (or its, ours). */
  private get reachableNodes(): number {
    return 1 + (this.linkIsUp && this.mirroring ? 1 : 0);
  }

  get quorum(): QuorumView {
    return this.quorumPart.view(this.reachableNodes);
  }

  /** May host writes be applied and answered now? Without quorum they wait, or fail (onNoQuorum). */
  get writesHaveQuorum(): boolean {
    return this.quorumPart.ok(this.reachableNodes);
  }

  noQuorumMessage(): string {
    return this.quorumPart.message(this.reachableNodes);
  }

  /**
   * The link dropped with these writes unacknowledged. A primary answers them under the degraded
   * policy, or, when quorum now fails, holds them to send again once it returns (failed at once by
   * failWritesWithoutQuorum with `io-error`). A node demoted meanwhile fails them: the new primary
   * may never see these bytes (simulator, seed 474).
   */
  settleUnacked(unacked: Piece[]): void {
    if (this.role === 'primary' && !this.writesHaveQuorum) this.quorumPart.awaiting.push(...unacked);
    else {
      for (const piece of unacked) {
        if (this.role !== 'primary') piece.write.errno = 'EIO';
        this.pieceDone(piece);
      }
    }
    this.failWritesWithoutQuorum();
  }

  /**
   * Without quorum, host writes still queued (and those the link lost) fail: all of them once
   * shutdown has begun (ESHUTDOWN: a stop must not wait for a quorum that may never return), and
   * with `onNoQuorum: io-error` at once (EIO). With suspend-io they wait for it.
   */
  failWritesWithoutQuorum(): void {
    if (this.writesHaveQuorum || this.role !== 'primary') return;
    if (this.closing) this.failQueuedHostWrites('ESHUTDOWN');
    else if (this.settings.quorum.onNoQuorum === 'io-error') this.failQueuedHostWrites('EIO');
  }

  /** Host writes and peer messages waiting for cache room both count as pressure. */
  updateBlockedWriters(): void {
    // Writes held for quorum are not waiting for room: they must not make hardening hurry.
    this.hardener.setBlockedWriters((this.writesHaveQuorum ? this.hostQueue.length : 0) + this.inbound.length);
  }

  /** Puts bytes into the cache; false (nothing changed) when there is no room yet. */
  applyLocal(offsetBytes: number, lengthBytes: number, data: Uint8Array | null, nowMs: number): boolean {
    const ok = data === null ? this.cache.writeZeroes(offsetBytes, lengthBytes, nowMs) : this.cache.write(offsetBytes, data, nowMs);
    if (ok) this.hardener.noteWrite(this.cache.tracksOf(offsetBytes, lengthBytes));
    return ok;
  }

  private afterPieceApplied(piece: Piece, nowMs: number): void {
    if (this.mirroring) return this.mirrorPiece(piece, nowMs);
    // The peer will lack these tracks: they join the resync set (seed: "a further record").
    if (this.settings.mirrored) for (const t of this.cache.tracksOf(piece.offsetBytes, piece.lengthBytes)) this.outOfSync.set(t);
    this.pieceDone(piece);
  }

  /** Fig. 4 steps 62-64: sends an applied piece to the peer; its ack completes it. */
  private mirrorPiece(piece: Piece, nowMs: number): void {
    const tracks = this.cache.tracksOf(piece.offsetBytes, piece.lengthBytes);
    const seq = ++this.sendSeq;
    this.cache.holdHardening(tracks); // not on our disk before it is in the peer's cache
    this.pendingAcks.set(seq, piece);
    this.counters.mirroredWrites++;
    this.send(piece.data === null
      ? { type: 'zero', seq, offsetBytes: piece.offsetBytes, lengthBytes: piece.lengthBytes, trim: piece.trim }
      : { type: 'write', seq, offsetBytes: piece.offsetBytes, data: piece.data }); // step 64
    this.markSentToPeer(tracks, nowMs); // step 62
  }

  /**
   * Marks the peer's copy of these tracks as possibly unhardened, and mirrors the mark. Called
   * right after the message carrying them is queued: a notice this starts (a SAVE over the
   * threshold) must follow that message on the link, where the peer marks them (found by the
   * simulator: a SAVE sent ahead of its write left the mark in the peer's current bitmap forever).
   */
  markSentToPeer(tracks: number[], nowMs: number): void {
    for (const t of tracks) this.record.mark(t);
    this.notifyMarked(tracks, nowMs);
  }

  /**
   * The peer just marked these tracks as ours-maybe-unhardened: mirror the marks. A track that is
   * clean here (initial sync sends hardened data too) counts as hardened at once, or the Fig. 6
   * counter M would wait forever for a harden that never comes.
   */
  notifyMarked(tracks: number[], nowMs: number): void {
    this.runNotifier(this.notifier.onWriteApplied(tracks, nowMs));
    const clean = tracks.filter((t) => !this.cache.isTrackDirty(t));
    if (clean.length > 0) this.afterDurable(clean, []);
    this.startCyclesOverThreshold(tracks);
  }

  pieceDone(piece: Piece): void {
    if (--piece.write.piecesLeft === 0) this.finishWrite(piece.write);
  }

  /** All pieces are in the cache(s): answer now, or after the durability the policy asks for. */
  private finishWrite(write: HostWrite): void {
    const tracks = this.cache.tracksOf(write.offsetBytes, write.lengthBytes);
    const local = { seq: this.cache.sequence, tracks };
    const done = { reply: write.reqId };
    // A demoted node finishing a write its peer never acknowledged is no longer the authority:
    // the new primary may never see these bytes (found by the simulator, seed 474).
    if (this.role !== 'primary' && this.peerState !== 'standalone' && !this.mirroring) write.errno = 'EIO';
    if (write.errno !== null) return this.emit({ kind: 'reply', reqId: write.reqId, errno: write.errno, message: 'the peer never acknowledged this write and this node is no longer primary' });
    if (this.peerState === 'standalone') return this.startOp(done, write.fua ? local : null, null);
    if (!this.mirroring) {
      const hardenFirst = write.fua || this.settings.degraded === 'write-through';
      return this.startOp(done, hardenFirst ? local : null, null, true);
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
    // Without its peer a FLUSH vouches for writes only this node holds: as such writes, it fails
    // if this node's role changes before it completes (finishOpIfDone).
    this.startOp(done, local, remote, !this.mirroring && this.peerState !== 'standalone');
    this.pump(nowMs);
  }

  /** Harden everything written so far, whatever the policy (shutdown). */
  hostFlushLocal(reqId: number, nowMs: number): void {
    this.startOp({ reply: reqId }, { seq: this.cache.sequence, tracks: null }, null);
    this.pump(nowMs);
  }

  // ================================================================ durability ops

  /** An op completes when its local part (harden + store sync) and remote part (peer flush) are done. */
  startOp(done: OpDone, local: { seq: number; tracks: number[] | null } | null, remote: { offsetBytes: number; lengthBytes: number } | null, alone = false): void {
    const id = this.nextId++;
    const op: Op = { done, localPending: local !== null, remotePending: remote !== null, errno: null, aloneSinceRoleChange: alone ? this.roleChanges : null };
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

  opPartDone(opId: number, part: 'local' | 'remote', errno: ReplyErrno | null): void {
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
    // A write only this node vouched for, whose role changed before it was hardened: the node
    // that took over may never have had it (a resync from it may even have overwritten it here),
    // so it is not durable anywhere (simulator, seed 197266155: a FUA answered ok after its node
    // stepped down and the new primary's resync replaced its block).
    if (op.aloneSinceRoleChange !== null && op.aloneSinceRoleChange !== this.roleChanges) op.errno ??= 'EIO';
    if ('reply' in op.done) this.emit({ kind: 'reply', reqId: op.done.reply, errno: op.errno, ...(op.errno ? { message: 'store write failed' } : {}) });
    else this.send({ type: 'flushAck', id: op.done.flushAck, ok: op.errno === null });
  }

  settleWaiters(): void {
    for (const waiterId of this.hardener.takeSatisfiedWaiters()) {
      const purpose = this.waiterPurposes.get(waiterId);
      this.waiterPurposes.delete(waiterId);
      if (purpose === undefined) continue;
      if ('op' in purpose) {
        const syncId = this.nextId++;
        this.storeSyncs.set(syncId, purpose.op);
        this.emit({ kind: 'sync-store', syncId });
      } else {
        this.afterDurable([], [purpose.range]); // step 78, once on disk for real
      }
    }
  }

  /**
   * The store's fdatasync finished (`error` null, or why it failed): the backoff is set and a
   * failure counted and logged; ReplicaCore.storeSynced then lets the link half react to a
   * failure before syncCompleted settles what waited for the sync. A failed fdatasync's host FLUSH
   * gets EIO; the notices it would have made true wait for a later one, tried after a backoff that
   * doubles with each failure in a row (storeRetryMs up to 32 times that), not at once: a failing
   * disk is not hammered, and the log says each time.
   */
  syncFinished(error: string | null, nowMs: number): void {
    const retryInMs = this.durable.syncFinished(error === null, nowMs, this.settings.storeRetryMs);
    if (error === null) return;
    // The syncs still in flight may succeed without covering what this one lost (Linux reports
    // a lost writeback once): none of them vouches for durability (DurableNotices.taintInFlight).
    this.durable.taintInFlight();
    for (const syncId of this.storeSyncs.keys()) this.taintedSyncs.add(syncId);
    this.counters.fsyncFailures++;
    this.emit({ kind: 'log', level: 'error', msg: 'store fdatasync failed: hardening notices wait for one that succeeds', fields: { error, failuresInRow: this.durable.failuresInRow, retryInMs } });
  }

  /** After syncFinished: the notices or the host op that waited for fdatasync `syncId`. */
  syncCompleted(syncId: number, ok: boolean): void {
    if (this.durable.owns(syncId)) return this.durableSynced(ok);
    const opId = this.storeSyncs.get(syncId);
    this.storeSyncs.delete(syncId);
    const tainted = this.taintedSyncs.delete(syncId);
    if (opId !== undefined) this.opPartDone(opId, 'local', ok && !tainted ? null : 'EIO');
  }

  /** fdatasyncs that failed since the last one that succeeded (0: the store syncs fine). */
  get storeSyncFailuresInRow(): number {
    return this.durable.failuresInRow;
  }

  /** Queue hardening events for the notifier until an fdatasync makes them true on disk. */
  private afterDurable(tracks: number[], ranges: number[]): void {
    if (!this.settings.mirrored) return; // no peer keeps marks of a standalone node
    this.durable.add(tracks, ranges);
    this.startDurableSync();
  }

  /**
   * One fdatasync at a time covers every hardening event queued before it started. Not during a
   * failed one's backoff, nor while the store's loss of trust (a failed fdatasync) is not on disk.
   */
  startDurableSync(): void {
    if (!this.durable.canStart || this.untrustToken !== null) return;
    const syncId = this.nextId++;
    this.durable.start(syncId);
    this.emit({ kind: 'sync-store', syncId });
  }

  private durableSynced(ok: boolean): void {
    const batch = this.durable.synced(ok);
    if (batch !== null) {
      // A track written again since it was hardened is not hardened now: its new data is not.
      // Nor is one written and hardened again while this sync ran: clean, but its new bytes wait
      // for the next sync (queued in `durable`), so this one must not clear its mark (simulator,
      // seed 10009055: a CLEAR for a rewrite that a stalled store then lost with power).
      const awaitingSync = new Set(this.durable.tracks);
      this.runNotifier(this.notifier.onTracksClean(batch.tracks.filter((t) => !this.cache.isTrackDirty(t) && !awaitingSync.has(t))));
      for (const range of batch.ranges) {
        if (this.notifier.rangeState(range) === 'hardening') this.runNotifier(this.notifier.rangeHardened(range));
      }
    }
    this.startDurableSync();
  }

  // ================================================================ hardening

  pump(nowMs: number): void {
    // Quorum lost or regained is logged; regained (the peer receives our writes), held writes go on.
    const log = this.quorumPart.logIfChanged(this.reachableNodes);
    if (log !== null) this.emit(log);
    if (this.role === 'primary' && this.quorumPart.mayResume(this.reachableNodes)) this.drainHostQueue(nowMs);
    if (nowMs < this.pausedUntilMs) return;
    // A primary without its peer hardens only once its metadata says so (markDiverging); a demoted
    // node holding unacknowledged writes only once its store is marked untrusted on disk.
    if (this.diverging && !this.divergingDurable && this.role === 'primary' && !this.mirroring) return;
    if (this.untrustToken !== null) return;
    while (this.hardensInFlight < this.settings.maxHardensInFlight) {
      const next = this.hardener.nextJob(nowMs);
      if (next === null) return;
      checkHardenJob(this, next.job);
      this.hardensInFlight++;
      this.emit({ kind: 'harden', job: next.job, reason: next.reason });
    }
  }

  /** A harden job's store write finished (ReplicaCore.hardenDone then frees what waited for room). */
  hardenCompleted(jobId: number, bytes: number, storeWrites: number, reason: HardenReason): void {
    this.hardensInFlight--;
    assert(this.hardensInFlight >= 0, 'a harden completed that was never started');
    const cleaned = this.cache.completeHarden(jobId);
    this.counters.hardenedBytes += bytes;
    this.counters.hardenWrites += storeWrites;
    this.counters.hardenRuns[reason]++;
    this.afterDurable(cleaned, []);
  }

  /** A store write failed: the data stays dirty; hosts waiting on durability get EIO. */
  hardenAbandoned(jobId: number, message: string, nowMs: number): void {
    this.hardensInFlight--;
    assert(this.hardensInFlight >= 0, 'a harden failed that was never started');
    this.cache.abandonHarden(jobId);
    this.pausedUntilMs = nowMs + this.settings.storeRetryMs;
    this.emit({ kind: 'log', level: 'error', msg: 'store write failed; data stays in cache and is retried', fields: { error: message } });
    for (const [waiterId, purpose] of this.waiterPurposes) {
      if (!('op' in purpose)) continue;
      this.waiterPurposes.delete(waiterId);
      this.hardener.removeWaiter(waiterId);
      this.opPartDone(purpose.op, 'local', 'EIO');
    }
  }

  // ================================================================ hardening notices

  private runNotifier(actions: NotifierAction[]): void {
    for (const a of actions) {
      if (a.kind === 'send') {
        this.queueNotice(a.notice.op, a.notice.range);
      } else if (a.tracks.length === 0) {
        this.afterDurable([], [a.range]);
      } else {
        // Step 76: harden what was dirty at the ack — every write up to now in those tracks.
        const waiterId = this.nextId++;
        this.waiterPurposes.set(waiterId, { range: a.range });
        this.hardener.addWaiter(waiterId, this.cache.sequence, a.tracks);
      }
    }
  }

  /**
   * Notices for consecutive ranges with the same op share one frame: ranges, not tracks, keep
   * them cheap. Order on the link is never changed — a SAVE and a CLEAR of one range, or a SAVE and
   * a write, must reach the peer in the order they happened (the mirror swaps at that point).
   */
  private queueNotice(op: NoticeOp, range: number): void {
    if (!this.linkIsUp) return;
    if (this.outNotices !== null && this.outNotices.op !== op) this.flushNotices();
    this.outNotices ??= { op, ranges: [] };
    this.outNotices.ranges.push(range);
  }

  private flushNotices(): void {
    const batch = this.outNotices;
    if (batch === null) return;
    assert(this.linkIsUp, 'hardening notices are sent only on a live link (linkDown drops queued ones)');
    this.outNotices = null;
    this.counters.noticesSent += batch.ranges.length;
    this.actions.push({ kind: 'send', msg: { type: 'notice', op: batch.op, ranges: batch.ranges } });
  }

  startDueCycles(nowMs: number): void {
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

  handleNotice(op: NoticeOp, ranges: number[]): void {
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
}
