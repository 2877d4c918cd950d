// The replica core's data path: the cache-facing part of one node's state machine — host writes
// (Fig. 4 steps 60-64 on the primary), quorum, durability ops for FLUSH/FUA and hardening; its
// parts mirror the writes and count acks (replica-acks.ts) and run the hardening notices (Figs.
// 5-6, replica-notices.ts). It also holds what every part reads: the node's role (changed only
// through setRole), the peer channels (peer-channel.ts), the cache and the actions emitted so far. ReplicaCore (replica.ts) owns it and the link half (replica-link.ts),
// which calls into it; it calls into neither: an event whose work spans both is taken by
// ReplicaCore, which calls each part in turn. Pure and synchronous (theory of operation in
// replica.ts).
import { assert } from './assert.js';
import { checkHardenJob, checkSend } from './replica-checks.js';
import { QuorumPart } from './replica-quorum.js';
import { TrackCache } from './cache.js';
import { Hardener, type HardenReason } from './hardening.js';
import { PeerChannel } from './peer-channel.js';
import { DurableNotices, type DurableRange } from './replica-durable.js';
import { NoticePart, type WaiterPurpose } from './replica-notices.js';
import { AckPart } from './replica-acks.js';
import { isOnePiece, newPiece, splitPieces, type HostWrite, type Piece } from './write-pieces.js';
import type { LinkMessage, PeerState, QuorumView, ReplicaAction, ReplicaCounters, ReplicaSettings, ReplyErrno, Role } from './replica-types.js';

export type { ReplicaCounters, ReplicaSettings } from './replica-types.js';
export type { HostWrite, Piece } from './write-pieces.js';

/**
 * What a finished op does: answer a host request, answer a peer's FLUSH request (on that peer's
 * link), or nothing (`internal`: an fdatasync the node wants for itself, whose outcome its
 * requester hears through storeSynced).
 */
type OpDone = { reply: number } | { flushAck: number; peer: string } | { internal: 'syncBeforeSums' };
interface Op {
  done: OpDone;
  localPending: boolean;
  /** The peers whose FLUSH answer this op still waits for. */
  remotePending: Set<string>;
  errno: ReplyErrno | null;
  /** A host write only this node vouches for (its peer never acknowledged it): the role changes seen when it started. */
  aloneSinceRoleChange: number | null;
}
/** A peer channel of the data path (its pending writes are the data path's pieces). */
export type DataChannel = PeerChannel<Piece>;

export class DataPath {
  readonly cache: TrackCache;
  readonly hardener: Hardener;
  /** What this node keeps of each other node (peer-channel.ts): one channel in a pair, none standalone. */
  readonly channels: readonly PeerChannel<Piece>[];
  readonly counters: ReplicaCounters = {
    writes: 0, writtenBytes: 0, hardenedBytes: 0, hardenWrites: 0,
    hardenRuns: { flush: 0, pressure: 0, age: 0, threshold: 0, scan: 0 },
    mirroredWrites: 0, mirroredBytes: 0, syncBytesSent: 0, syncBytesReceived: 0, noticesSent: 0, noticesReceived: 0, fsyncFailures: 0,
  };
  /** This node's role: changed only through setRole (read-only view: `role`). */
  private roleValue: Role;
  private readonly actions: ReplicaAction[] = [];
  readonly hostQueue: Piece[] = [];
  /** Quorum (issue 12) and the writes held for it (a part). */
  readonly quorumPart: QuorumPart<Piece>;
  readonly ops = new Map<number, Op>();
  readonly waiterPurposes = new Map<number, WaiterPurpose>();
  private readonly storeSyncs = new Map<number, number>();
  /** Host-op fdatasyncs that were in flight when another one failed: they answer EIO (syncFinished). */
  private readonly taintedSyncs = new Set<number>();
  /** Hardening events waiting for an fdatasync before the peer hears of them (a part). */
  readonly durable = new DurableNotices();
  /** Marks, notifier cycles and notice frames of every peer (a part). */
  readonly notices = new NoticePart(this);
  /** Mirrored writes and their acks, per the ack policy (a part). */
  readonly acks = new AckPart(this);
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
  /** The seq of the last write or zero sent: one sequence for every peer, so they apply the same seqs in order. */
  sendSeq = 0;
  nextId = 1;
  hardensInFlight = 0;
  pausedUntilMs = 0;
  /**
   * An fdatasync of this process succeeded: what the store shows is on its disk, save what was
   * written since (dirty and durable.tracks). Until then, after a crash, the page cache may still
   * hold writes of the process that died, which a power loss can take (checksum resync).
   */
  storeSyncedSinceStart = false;
  /** Refusing new host writes (beginClose): shutdown has begun. */
  closing = false;

  constructor(readonly settings: ReplicaSettings, nowMs: number, role: Role) {
    this.cache = new TrackCache(settings.geometry);
    this.hardener = new Hardener(this.cache, settings.hardening, nowMs);
    this.quorumPart = new QuorumPart(settings.quorum, 1 + settings.peers.length);
    this.roleValue = role;
    const shape = { trackCount: this.cache.trackCount, rangeTracks: settings.geometry.rangeTracks, tracker: settings.tracker, mirrored: settings.mirrored };
    assert(settings.mirrored === settings.peers.length > 0 && !settings.peers.includes(settings.node), `peers [${settings.peers.join(', ')}] of node ${settings.node} (mirrored: ${settings.mirrored})`);
    this.channels = settings.peers.map((name) => new PeerChannel<Piece>(name, shape, role));
  }

  /** The channel of the peer named `name` (an unknown name is a bug of the shell). */
  channelOf(name: string): PeerChannel<Piece> {
    // Runs for every message sent and received: a loop, not a closure per call.
    for (const ch of this.channels) if (ch.name === name) return ch;
    throw new Error(`assertion failed: no peer channel for node ${name}`);
  }

  /**
   * The one peer of a pair, where the core still assumes a single peer (DESIGN.md "Several
   * secondaries", steps 3-5 lift each such use): asserted, never guessed.
   */
  get pairChannel(): PeerChannel<Piece> {
    assert(this.channels.length === 1, `a pair's single peer asked of a node with ${this.channels.length} peers`);
    return this.channels[0]!;
  }

  get role(): Role {
    return this.roleValue;
  }

  /** The pair's peer state ('standalone' without peers). */
  get peerState(): PeerState {
    return this.channels.length === 0 ? 'standalone' : this.pairChannel.state;
  }

  setRole(role: Role): void {
    if (this.roleValue === 'primary' && role !== 'primary') this.failQueuedHostWrites();
    if (role !== this.roleValue) this.roleChanges++;
    // A new write stream: no peer has acknowledged any of it yet (heldSeq, replica-acks.ts).
    if (role === 'primary' && this.roleValue !== 'primary') for (const ch of this.channels) ch.ackedSeq = 0;
    this.roleValue = role;
    for (const ch of this.channels) ch.notifier.setSendsWrites(role === 'primary');
  }

  /** Takes the actions emitted so far, in order. */
  takeActions(): ReplicaAction[] {
    this.notices.flush();
    return this.actions.splice(0, this.actions.length);
  }

  pushAction(action: ReplicaAction): void {
    this.actions.push(action);
  }

  emit(action: ReplicaAction): void {
    if (action.kind === 'send') {
      const ch = this.channelOf(action.peer);
      ch.lastSentWriteSeq = checkSend(this, ch, action.msg, ch.lastSentWriteSeq);
    }
    this.actions.push(action);
  }

  send(ch: PeerChannel<Piece>, msg: LinkMessage): void {
    this.notices.flush(ch); // anything queued before this message goes before it
    this.emit({ kind: 'send', peer: ch.name, msg });
  }

  /** Host write pieces waiting for cache room, oldest first (read-only; the simulator tracks them). */
  get queuedHostPieces(): readonly { readonly offsetBytes: number; readonly lengthBytes: number }[] {
    return this.hostQueue;
  }

  /** Is a peer receiving our writes now (so they are mirrored)? */
  get mirroring(): boolean {
    // Read several times per host write: a loop, not a closure per call.
    for (const ch of this.channels) if (ch.mirroring) return true;
    return false;
  }

  // ================================================================ host requests

  /** NBD WRITE / WRITE_ZEROES / TRIM (data null = zeros), 512-aligned. Answered by a reply action. */
  hostWrite(reqId: number, offsetBytes: number, lengthBytes: number, data: Uint8Array | null, trim: boolean, fua: boolean, nowMs: number): void {
    if (this.role !== 'primary') return this.emit({ kind: 'reply', reqId, errno: 'EPERM', message: 'this node is secondary: writes go to the primary' });
    if (this.closing) return this.emit({ kind: 'reply', reqId, errno: 'ESHUTDOWN', message: 'node is shutting down' });
    if (!this.writesHaveQuorum && this.settings.quorum.onNoQuorum === 'io-error') return this.emit({ kind: 'reply', reqId, errno: 'EIO', message: this.noQuorumMessage() });
    const write: HostWrite = { reqId, piecesLeft: 0, offsetBytes, lengthBytes, fua, errno: null };
    if (lengthBytes === 0) return this.finishWrite(write);
    if (isOnePiece(this.settings.geometry, offsetBytes, lengthBytes)) {
      // One piece (almost every write): no list of pieces, no view of all of the write's bytes.
      write.piecesLeft = 1;
      this.hostQueue.push(newPiece(write, offsetBytes, lengthBytes, data, trim, nowMs));
    } else {
      const pieces = splitPieces(this.settings.geometry, offsetBytes, lengthBytes);
      write.piecesLeft = pieces.length;
      for (const [off, len] of pieces) this.hostQueue.push(newPiece(write, off, len, data === null ? null : data.subarray(off - offsetBytes, off - offsetBytes + len), trim, nowMs));
    }
    this.counters.writes++;
    this.counters.writtenBytes += lengthBytes;
    for (const ch of this.channels) ch.resync?.throttle?.hostWrite(nowMs);
    this.drainHostQueue(nowMs);
    this.pump(nowMs);
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
    if (quorum.awaiting.length > 0) for (const piece of quorum.awaiting.splice(0)) this.acks.mirror(piece, nowMs);
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

  /**
   * Nodes this one reaches, itself included: the peer counts while our writes reach it (or its,
   * ours). Among three or more nodes, only while it is in sync: a peer still being resynced is not
   * a copy that could take over (as DRBD counts only up-to-date nodes toward quorum).
   */
  private get reachableNodes(): number {
    let nodes = 1;
    const several = this.channels.length > 1;
    for (const ch of this.channels) if (ch.linkIsUp && (several ? ch.state === 'in-sync' : ch.mirroring)) nodes++;
    return nodes;
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
    // A pair holds them to send again once quorum returns: its one peer lost every frame after
    // the first it did not acknowledge, so they go again in order. Among several peers, newer
    // writes may have reached the others meanwhile (and failed, their quorum gone): sent again
    // after them, an older write overwrote a newer one (randomized test, seed 2855; the ack path's
    // twin, seed 2208). It fails instead, as AckPart.acked fails it there.
    if (this.role === 'primary' && !this.writesHaveQuorum && this.channels.length === 1) this.quorumPart.awaiting.push(...unacked);
    else {
      for (const piece of unacked) {
        if (this.role !== 'primary') piece.write.errno = 'EIO';
        else this.acks.failIfTooFewHold(piece);
        this.acks.answer(piece);
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
    let heldInbound = 0;
    for (const ch of this.channels) heldInbound += ch.inbound.length;
    this.hardener.setBlockedWriters((this.writesHaveQuorum ? this.hostQueue.length : 0) + heldInbound);
  }

  /** Puts bytes into the cache; false (nothing changed) when there is no room yet. */
  applyLocal(offsetBytes: number, lengthBytes: number, data: Uint8Array | null, nowMs: number): boolean {
    const ok = data === null ? this.cache.writeZeroes(offsetBytes, lengthBytes, nowMs) : this.cache.write(offsetBytes, data, nowMs);
    if (!ok) return false;
    const tracks = this.cache.tracksOf(offsetBytes, lengthBytes);
    this.hardener.noteWrite(tracks);
    // A checksum comparison must not judge a track on sums taken around this write (track-compare.ts).
    for (const ch of this.channels) ch.compare?.written(tracks);
    return true;
  }

  private afterPieceApplied(piece: Piece, nowMs: number): void {
    // A peer not receiving our writes will lack these tracks: they join its resync set (seed: "a
    // further record").
    for (const ch of this.channels) {
      if (!ch.mirroring) for (const t of this.cache.tracksOf(piece.offsetBytes, piece.lengthBytes)) ch.outOfSync.set(t);
    }
    if (this.mirroring) return this.acks.mirror(piece, nowMs);
    this.pieceDone(piece);
  }

  pieceDone(piece: Piece): void {
    if (--piece.write.piecesLeft === 0) this.finishWrite(piece.write);
  }

  /** All pieces are in the cache(s): answer now, or after the durability the policy asks for. */
  private finishWrite(write: HostWrite): void {
    const done = { reply: write.reqId };
    // A demoted node finishing a write its peer never acknowledged is no longer the authority:
    // the new primary may never see these bytes (found by the simulator, seed 474).
    if (this.role !== 'primary' && this.settings.mirrored && !this.mirroring) write.errno = 'EIO';
    if (write.errno !== null) return this.emit({ kind: 'reply', reqId: write.reqId, errno: write.errno, message: write.reason ?? 'the peer never acknowledged this write and this node is no longer primary' });
    if (!this.settings.mirrored) return this.startOp(done, write.fua ? this.hardenedPart(write) : null, null);
    if (!this.mirroring) {
      const hardenFirst = write.fua || this.settings.degraded === 'write-through';
      return this.startOp(done, hardenFirst ? this.hardenedPart(write) : null, null, true);
    }
    const onDisk = write.fua && this.settings.flush === 'disk';
    this.startOp(done, onDisk ? this.hardenedPart(write) : null, onDisk ? { offsetBytes: write.offsetBytes, lengthBytes: write.lengthBytes } : null);
  }

  /** The local part of a write that must be on this node's disk before it is answered (FUA). */
  private hardenedPart(write: HostWrite): { seq: number; tracks: number[] } {
    return { seq: this.cache.sequence, tracks: this.cache.tracksOf(write.offsetBytes, write.lengthBytes) };
  }

  /** NBD FLUSH: every write completed before it is as durable as the policy promises. */
  hostFlush(reqId: number, nowMs: number): void {
    const local = { seq: this.cache.sequence, tracks: null };
    const done = { reply: reqId };
    if (this.settings.flush === 'memory' && this.channels.some((ch) => ch.state === 'in-sync')) {
      // Every completed write was acknowledged by a peer's cache (an in-sync peer's resync brought
      // it the older ones): it is in two caches already.
      return this.startOp(done, null, null);
    }
    const remote = this.mirroring && this.settings.flush === 'disk' ? { offsetBytes: 0, lengthBytes: 0 } : null;
    // Without its peer a FLUSH vouches for writes only this node holds: as such writes, it fails
    // if this node's role changes before it completes (finishOpIfDone).
    this.startOp(done, local, remote, !this.mirroring && this.settings.mirrored);
    this.pump(nowMs);
  }

  /** Harden everything written so far, whatever the policy (shutdown). */
  hostFlushLocal(reqId: number, nowMs: number): void {
    this.startOp({ reply: reqId }, { seq: this.cache.sequence, tracks: null }, null);
    this.pump(nowMs);
  }

  // ================================================================ durability ops

  /**
   * An op completes when its local part (harden + store sync) and its remote part (a FLUSH of
   * every peer receiving our writes) are done.
   */
  startOp(done: OpDone, local: { seq: number; tracks: number[] | null } | null, remote: { offsetBytes: number; lengthBytes: number } | null, alone = false): void {
    const aloneSinceRoleChange = alone ? this.roleChanges : null;
    // Nothing to wait for (a write whose peers' caches hold it, with `flush: memory`): answered
    // now, with no op in `ops` (its Map's growing and shrinking was ~1% of the primary's CPU).
    if (local === null && remote === null) return this.finishOp(done, null, aloneSinceRoleChange);
    const op: Op = { done, localPending: local !== null, remotePending: new Set(), errno: null, aloneSinceRoleChange };
    const id = this.nextId++;
    this.ops.set(id, op);
    if (remote) {
      for (const ch of this.channels) {
        if (!ch.mirroring) continue;
        op.remotePending.add(ch.name);
        this.send(ch, { type: 'flushReq', id, offsetBytes: remote.offsetBytes, lengthBytes: remote.lengthBytes });
      }
    }
    if (local) {
      const waiterId = this.nextId++;
      this.waiterPurposes.set(waiterId, { op: id });
      this.hardener.addWaiter(waiterId, local.seq, local.tracks);
      this.settleWaiters();
    }
    this.finishOpIfDone(id);
  }

  /** The op's local part (`peer` null) or that peer's FLUSH finished. */
  opPartDone(opId: number, peer: string | null, errno: ReplyErrno | null): void {
    const op = this.ops.get(opId);
    if (op === undefined) return;
    op.errno ??= errno;
    if (peer === null) op.localPending = false;
    else op.remotePending.delete(peer);
    this.finishOpIfDone(opId);
  }

  private finishOpIfDone(opId: number): void {
    const op = this.ops.get(opId);
    if (op === undefined || op.localPending || op.remotePending.size > 0) return;
    this.ops.delete(opId);
    this.finishOp(op.done, op.errno, op.aloneSinceRoleChange);
  }

  private finishOp(done: OpDone, errno: ReplyErrno | null, aloneSinceRoleChange: number | null): void {
    // A write only this node vouched for, whose role changed before it was hardened: the node
    // that took over may never have had it (a resync from it may even have overwritten it here),
    // so it is not durable anywhere (simulator, seed 197266155: a FUA answered ok after its node
    // stepped down and the new primary's resync replaced its block).
    if (aloneSinceRoleChange !== null && aloneSinceRoleChange !== this.roleChanges) errno ??= 'EIO';
    if ('reply' in done) this.emit(errno === null ? { kind: 'reply', reqId: done.reply, errno: null } : { kind: 'reply', reqId: done.reply, errno, message: 'store write failed' });
    else if ('flushAck' in done) this.send(this.channelOf(done.peer), { type: 'flushAck', id: done.flushAck, ok: errno === null });
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
        this.afterDurable([], [purpose]); // step 78, once on disk for real
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
    if (error === null) this.storeSyncedSinceStart = true;
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
    if (opId !== undefined) this.opPartDone(opId, null, ok && !tainted ? null : 'EIO');
  }

  /** fdatasyncs that failed since the last one that succeeded (0: the store syncs fine). */
  get storeSyncFailuresInRow(): number {
    return this.durable.failuresInRow;
  }

  /** Queue hardening events for the notifier until an fdatasync makes them true on disk. */
  afterDurable(tracks: number[], ranges: DurableRange[]): void {
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
      const clean = batch.tracks.filter((t) => !this.cache.isTrackDirty(t) && !awaitingSync.has(t));
      for (const ch of this.channels) this.notices.run(ch, ch.notifier.onTracksClean(clean));
      for (const { peer, range } of batch.ranges) {
        const ch = this.channelOf(peer);
        if (ch.notifier.rangeState(range) === 'hardening') this.notices.run(ch, ch.notifier.rangeHardened(range));
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
      this.opPartDone(purpose.op, null, 'EIO');
    }
  }


}
