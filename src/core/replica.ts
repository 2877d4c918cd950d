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
// The state machine is split in three files along its seams: replica-base.ts (the cache half: host
// writes, durability ops, hardening, notices), replica-link.ts (the link half: state exchange,
// resync, persisted state) and this file (roles: promote, demote, resolve; shutdown). Calls go one
// way only: this class takes every event whose work spans the halves (peer messages, link loss,
// harden and persist completions, ticks) and calls each half in turn; the halves have no abstract
// hooks back into it. The peer state moves only along the table in peer-state.ts, role and peer
// state are read-only outside the core, and the invariants the halves keep between them are
// asserted after every event, at takeActions (checkBoundary).
import { assert } from './assert.js';
import { earlierMs } from './backoff.js';
import type { HardenReason } from './hardening.js';
import { compareHistories, currentEpoch, lastPrimary, type EpochEntry } from './epochs.js';
import type { LinkMessage, ReplicaAction } from './replica-types.js';
import { ReplicaLink } from './replica-link.js';
import { PromotionHandshake } from './replica-promotion.js';

export type { ReplicaCounters, ReplicaSettings } from './replica-base.js';

export class ReplicaCore extends ReplicaLink {
  /** The two-phase promotion's proposals and confirmations (a part with its own state). */
  private readonly promotion = new PromotionHandshake();

  // ================================================================ events that cross the halves
  //
  // Every event whose work spans the cache half, the link half and the roles enters here, and this
  // class calls each half in turn: the halves never call back up (no abstract hooks).

  /** A message from the authenticated peer, in link order. */
  linkMessage(msg: LinkMessage, nowMs: number): void {
    this.inbound.offer(msg, (m) => this.applyInbound(m, nowMs));
    this.updateBlockedWriters();
    this.pump(nowMs);
  }

  /** Applies one peer message; false when it must wait for cache room (it keeps its place). */
  private applyInbound(msg: LinkMessage, nowMs: number): boolean {
    if (msg.type === 'promoteReq') this.onPromoteRequest(msg);
    else if (msg.type === 'promoteAck') this.onPromoteAck(msg, nowMs);
    else return this.processInbound(msg, nowMs);
    return true;
  }

  /** The peer's held-back stream, resumed as cache room frees up. */
  private drainInbound(nowMs: number): void {
    this.inbound.drain((m) => this.applyInbound(m, nowMs));
    this.updateBlockedWriters();
  }

  /** The link dropped (reset, heartbeat timeout): a pending promotion dies first, then the link half. */
  linkDown(nowMs: number): void {
    this.abandonPromotion();
    this.linkLost(nowMs);
  }

  /** The shell wrote the metadata of persist action `token` durably. */
  persistDone(token: number, nowMs: number): void {
    assert(token > this.durableThroughToken, `persists complete in order (${token} after ${this.durableThroughToken})`);
    this.durableThroughToken = token;
    this.onPersisted(token);
    this.persistDurable(token, nowMs);
  }

  hardenDone(jobId: number, bytes: number, storeWrites: number, reason: HardenReason, nowMs: number): void {
    this.hardenCompleted(jobId, bytes, storeWrites, reason);
    this.afterRoomFreed(nowMs);
  }

  /** A store write failed: the data stays dirty; hosts waiting on durability get EIO. */
  hardenFailed(jobId: number, message: string, nowMs: number): void {
    this.hardenAbandoned(jobId, message, nowMs);
    this.afterRoomFreed(nowMs);
  }

  private afterRoomFreed(nowMs: number): void {
    this.drainHostQueue(nowMs);
    this.drainInbound(nowMs);
    this.settleWaiters();
    this.pump(nowMs);
  }

  /**
   * When the shell must call tick next (null: no timed work; events will do), as quinn's
   * poll_timeout: the base's deadlines and a rate-capped resync's next read. A deadline at or
   * before nowMs means "as soon as you can" (the shell waits at least a millisecond).
   */
  nextDeadlineMs(nowMs: number): number | null {
    // Runs after every event (the shell re-arms its timer): no allocation here.
    let at = earlierMs(this.hardener.nextDeadlineMs(nowMs), this.durable.retryAtMs); // age bound, scan; fdatasync backoff
    if (this.pausedUntilMs > nowMs) at = earlierMs(at, this.pausedUntilMs); // a failed store write's pause
    const wanted = this.notifier.earliestWantedSinceMs;
    if (this.linkIsUp && wanted !== null) {
      const { destageIntervalMs, maxDirtyAgeMs } = this.settings.hardening;
      at = earlierMs(at, wanted + Math.min(destageIntervalMs, maxDirtyAgeMs / 2)); // a range's cycle interval
    }
    return earlierMs(at, this.resyncDeadlineMs(nowMs));
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
    return this.queuedHostPieces.length > 0 || this.inboundBlocked;
  }

  tick(nowMs: number): void {
    // Room can appear without a harden completing (reads that pinned clean lines finish): retry
    // the held-back queues on every tick too (simulator, seed 1962: a demote never drained).
    this.drainHostQueue(nowMs);
    this.drainInbound(nowMs);
    this.hardener.tick(nowMs);
    if (this.durable.retryDue(nowMs)) this.startDurableSync(); // a failed fdatasync's backoff ended
    this.startDueCycles(nowMs);
    this.pumpSync(nowMs);
    this.pump(nowMs);
  }

  // ================================================================ roles (promote, demote, resolve)

  /**
   * Makes this node primary: a new epoch, persisted before a write is served (the shell awaits it).
   * While the link is up the change is two-phase (link-codec PromoteReqMessage): the proposal goes
   * to disk (proposedEpoch), then to the peer, which adopts the new history and confirms; only then
   * does this node serve writes. `pending` results end with a promote-done action for requestId.
   * Without the peer's word, a promotion its peer never saw would let a crash of the new primary
   * bring back a resync source that lost the acknowledged writes it held in RAM, and two quick
   * switchovers could give both nodes the same epoch (found by the simulator, seeds 1101, 3337).
   * `force` (or no link) promotes at once, alone.
   */
  promote(force: boolean, nowMs: number, requestId = 0): { ok: true; pending: boolean } | { ok: false; error: string } {
    if (!this.settings.mirrored) return { ok: false, error: 'a standalone node is always primary' };
    if (this.role === 'primary') return { ok: false, error: 'already primary' };
    if (this.promotion.pending) return { ok: false, error: 'a promotion is already waiting for the peer\'s confirmation' };
    if (!force && this.linkIsUp && this.peerView?.role === 'primary') return { ok: false, error: `peer ${this.peerName} is primary and connected: demote it first, or use --force` };
    if (!force && (this.intake.active || this.resyncIncomplete)) return { ok: false, error: 'a resync into this node has not finished: its data is incomplete (use --force to promote anyway)' };
    const entry = this.newEpochEntry();
    assert(entry.epoch > this.proposedEpoch, 'an epoch once proposed is never proposed again');
    const history = [...this.history, entry];
    if (force || !this.linkIsUp) {
      this.becomePrimary(history, force, nowMs);
      return { ok: true, pending: false };
    }
    this.proposedEpoch = entry.epoch;
    this.persist();
    this.promotion.propose({ id: this.nextId++, requestId, history }, this.lastPersistToken);
    this.emit({ kind: 'log', level: 'info', msg: 'promotion proposed to the peer', fields: { peer: this.peerName, epoch: entry.epoch } });
    return { ok: true, pending: true };
  }

  /** The peer proposes to become primary: adopt its history (on disk first) and confirm, or refuse. */
  private onPromoteRequest(msg: Extract<LinkMessage, { type: 'promoteReq' }>): void {
    const refusal = this.promoteRefusal(msg.history);
    if (refusal !== null) {
      this.emit({ kind: 'log', level: 'warn', msg: 'refused the peer\'s promotion', fields: { peer: this.peerName, reason: refusal } });
      this.send({ type: 'promoteAck', id: msg.id, ok: false, reason: refusal });
      return;
    }
    this.setHistory([...msg.history]); // promoteRefusal: it extends ours by one newer entry
    this.proposedEpoch = Math.max(this.proposedEpoch, currentEpoch(msg.history));
    if (this.peerView !== null) this.peerView = { ...this.peerView, role: 'primary', history: [...msg.history] };
    this.persist();
    this.promotion.confirmWhenDurable(this.lastPersistToken, msg.id);
    this.emit({ kind: 'log', level: 'info', msg: 'confirmed the peer\'s promotion', fields: { peer: this.peerName, epoch: currentEpoch(msg.history) } });
  }

  /** Why this node cannot confirm the peer's promotion to `history`, or null. */
  private promoteRefusal(history: readonly EpochEntry[]): string | null {
    if (this.role === 'primary') return `${this.settings.node} is primary: demote it first`;
    if (this.promotion.pending) return `${this.settings.node} is being promoted too`;
    if (this.peerState === 'split-brain') return 'split brain: resolve it first';
    if (this.resync !== null) return `${this.settings.node} is resyncing its newer data into ${this.peerName}`;
    if (history.length !== this.history.length + 1 || compareHistories(this.history, history) !== 'theirs-newer') return `epoch histories differ (${this.settings.node} is at epoch ${this.epoch})`;
    if (history[history.length - 1]!.epoch <= this.proposedEpoch) return `epoch ${history[history.length - 1]!.epoch} was already proposed`;
    return null;
  }

  /** The peer's answer to our promoteReq. */
  private onPromoteAck(msg: Extract<LinkMessage, { type: 'promoteAck' }>, nowMs: number): void {
    const promoting = this.promotion.answer(msg.id);
    if (promoting === null) return;
    if (!msg.ok) {
      this.emit({ kind: 'promote-done', requestId: promoting.requestId, error: `peer ${this.peerName} refused: ${msg.reason}` });
      return;
    }
    this.becomePrimary(promoting.history, false, nowMs);
    this.emit({ kind: 'promote-done', requestId: promoting.requestId, error: null });
  }

  private onPersisted(token: number): void {
    const { promoteReq, promoteAckId } = this.promotion.persisted(token);
    if (promoteReq !== null && this.linkIsUp) this.send({ type: 'promoteReq', ...promoteReq });
    if (promoteAckId !== null) this.send({ type: 'promoteAck', id: promoteAckId, ok: true, reason: '' });
  }

  /** A pending promotion dies with the link: the operator retries (alone, if the peer is gone). */
  private abandonPromotion(): void {
    this.promotion.dropConfirmations();
    this.endPromotion(`the link to ${this.peerName} went down before it confirmed the promotion: retry (a retry without the link promotes alone)`);
  }

  /**
   * The shell gave up waiting for the peer's confirmation (its disk may hang). The peer may still
   * adopt our proposal: our state, sent again, shows it we stayed secondary, and the pair settles
   * on its newer history by a resync (of nothing, if in sync).
   */
  cancelPromotion(reason: string): void {
    if (!this.endPromotion(reason)) return;
    if (this.linkIsUp) this.sendState();
  }

  private endPromotion(error: string): boolean {
    const requestId = this.promotion.end();
    if (requestId === null) return false;
    this.emit({ kind: 'promote-done', requestId, error });
    return true;
  }

  private becomePrimary(history: EpochEntry[], force: boolean, nowMs: number): void {
    // The new epoch extends what this node knows: a proposal made on an older history would
    // drop entries (promote refuses while a resync into this node runs; the peer refuses ours
    // while it resyncs us).
    assert(compareHistories(this.history, history) === 'theirs-newer' && history[history.length - 1]!.node === this.settings.node, 'a promotion extends this node\'s own epoch history');
    this.setHistory(history);
    this.setRole('primary');
    // A failover: the old primary may have lost whatever it held only in RAM, so the united bitmap
    // becomes out-of-sync. A planned switchover (connected and in sync) keeps it as the record
    // instead: the old primary is alive and hardens its RAM; a later link loss folds it in.
    if (!(this.linkIsUp && this.peerState === 'in-sync')) {
      const united = this.record.united();
      for (let t = 0; t < united.trackCount; t++) if (united.has(t)) this.outOfSync.set(t);
    }
    // Forced in the middle of a resync into this node: the tracks it had not received yet differ
    // from the peer's, and no bitmap says which. Every track is out of sync, so the resync this
    // node now sources rewrites them all (its data is the reference from now on).
    if (this.intake.active || this.resyncIncomplete) for (let t = 0; t < this.outOfSync.trackCount; t++) this.outOfSync.set(t);
    this.intake.end();
    this.resyncIncomplete = false; // forced: this node's data is now the reference
    if (this.linkIsUp) {
      this.sendState();
      // A resync we are sending goes on (the peer adopts our new history at its end); otherwise
      // the pair decides afresh with our new epoch (found by the simulator, seed 105).
      if (this.resync === null) {
        this.peerEvent('promotedConnected');
        this.decide(nowMs);
      }
    } else {
      this.peerEvent('promotedAlone');
    }
    if (!this.mirroring) this.diverging = true; // the new epoch above is this generation
    this.persist();
    this.emit({ kind: 'log', level: 'warn', msg: 'promoted to primary', fields: { epoch: currentEpoch(this.history), outOfSyncTracks: this.outOfSync.count(), force } });
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
    this.peerEvent('splitBrainResolved'); // the next state exchange makes this node the resync target
    this.persist();
    this.emit({ kind: 'log', level: 'warn', msg: 'split brain resolved: this node discards its changes and resyncs from the peer' });
    if (this.linkIsUp) {
      this.sendState();
      this.decide(nowMs);
    }
    return { ok: true };
  }


  /** True once no host write is queued, waiting for the peer, or waiting for its FLUSH/FUA (demote drains these). */
  get writesDrained(): boolean {
    return this.hostQueue.length === 0 && this.pendingAcks.size === 0 && ![...this.ops.values()].some((op) => 'reply' in op.done);
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

  // ================================================================ invariants

  /**
   * The core's boundary: the shell takes the actions after every event, so the node's own state
   * is checked here, each time, before anything goes out. These are the invariants the three
   * parts must keep between them; an assertion is a checked comment (TIGER_STYLE.md).
   */
  override takeActions(): ReplicaAction[] {
    this.checkBoundary();
    return super.takeActions();
  }

  private checkBoundary(): void {
    const state = this.peerState;
    assert((state === 'standalone') === !this.settings.mirrored, `peer state ${state} for a ${this.settings.mirrored ? 'mirrored' : 'standalone'} node`);
    // Mirroring, resync, writes awaiting acks and held-back peer messages all belong to a link:
    // linkDown ends every one of them.
    assert(!this.mirroring || this.linkIsUp, `peer state ${state} without a link`);
    assert(this.resync === null || (state === 'resyncing' && this.linkIsUp), `a resync is sent in peer state ${state}`);
    assert(state !== 'resyncing' || this.resync !== null || this.intake.active, 'resyncing with neither a resync sent nor one received');
    assert(!this.intake.active || this.linkIsUp, 'receiving a resync without a link');
    assert(this.pendingAcks.size === 0 || this.linkIsUp, 'writes await the peer\'s ack without a link');
    assert(this.inbound.length === 0 || this.linkIsUp, 'peer messages held back without a link');
    assert(!this.promotion.pending || (this.role === 'secondary' && this.linkIsUp), 'a promotion waits for the peer while primary or without a link');
    assert(this.hardensInFlight >= 0 && this.hardensInFlight <= this.settings.maxHardensInFlight, `hardens in flight ${this.hardensInFlight}`);
    // A primary serves in an epoch of its own: it appended (and persisted) that entry first.
    assert(this.role !== 'primary' || lastPrimary(this.history) === this.settings.node, `primary in epoch ${this.epoch} of ${lastPrimary(this.history) ?? 'nobody'}`);
    assert(this.settings.mirrored || this.role === 'primary', 'a standalone node is secondary');
  }

  /** The full self-check (walks the cache and the writes in flight): the simulator samples it. */
  checkInvariants(): void {
    this.cache.checkInvariants();
    this.checkBoundary();
    // Step 62 before step 64's ack: a write the peer has not acknowledged is marked as maybe only
    // in the peer's RAM. A cycle cannot clear it first: the peer's COMPLETE follows its SAVE-ACK,
    // and a write sent before that SAVE-ACK reaches the peer before it, so is acked before COMPLETE.
    for (const piece of this.pendingAcks.values()) {
      for (const t of this.cache.tracksOf(piece.offsetBytes, piece.lengthBytes)) assert(this.record.isUnited(t), `track ${t} awaits the peer's ack but is not in the united bitmap`);
    }
    // No peer, no record of it and nothing out of sync.
    assert(this.settings.mirrored || (this.record.unitedCount() === 0 && this.outOfSync.count() === 0), 'a standalone node keeps a record of a peer');
  }
}
