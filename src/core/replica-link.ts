// The replica core's link half: the state exchange at link-up, the peer's messages in link order,
// the resync (as source and as target), the epoch history and the persisted state. It works on
// the data path (replica-data.ts) it is given and never calls back into ReplicaCore (replica.ts),
// which owns both parts, routes the events that span them (peer messages, link loss, persist and
// fdatasync completions) and adds the roles. Pure and synchronous.
import { assert } from './assert.js';
import { TrackBitmap } from './bitmap.js';
import { compareHistories, currentEpoch, nextEpoch, type EpochEntry } from './epochs.js';
import type { DataChannel as Channel, DataPath, ReplicaSettings } from './replica-data.js';
import type { LinkMessage, PersistedState } from './replica-types.js';
import { PeerStateMachine } from './peer-state.js';
import { MetadataOnDisk, outOfSyncOnDisk } from './replica-on-disk.js';
import { decideSync, keepApart, resyncTracks, type SideState } from './resync.js';
import { StreamPosition } from './stream-position.js';
import { ResyncSender, tracksOthersMayLack, type ResyncPlanSpec } from './resync-sender.js';
import { applyPeerDataAt, staleStream } from './replica-apply.js';
import { ComparePart } from './replica-compare.js';
import { StoreTrust } from './store-trust.js';

export class LinkHalf {
  /**
   * A resync into this node started and has not finished, across link drops and restarts
   * (persisted): its store is a mix of old and new tracks, so promote refuses without --force.
   */
  resyncIncomplete: boolean;
  lastPersistToken = -1;
  /** Who was primary when (persisted): decides the sync source, detects split brain. */
  history: EpochEntry[];
  /** Trusted for a delta resync, and what a failed fdatasync left unsure (store-trust.ts). */
  readonly trust: StoreTrust;
  /** outOfSync is complete (no crash since it was collected). */
  private outOfSyncValid: boolean;
  /** The last run stopped cleanly (its close synced the store): what the store shows is durable. */
  private readonly startedClean: boolean;
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
  /** The resync this node sends: reads and chunks (resync-sender.ts). */
  readonly sender: ResyncSender;
  /** Checksum comparisons: online verify, a checksum resync's compare phase, the peer's sumReqs. */
  readonly compare: ComparePart;
  /** What the metadata on disk records, by value (a part; ReplicaCore.onPersisted reads its epoch). */
  readonly onDisk = new MetadataOnDisk();
  /** Persisted: the highest epoch ever proposed to (or adopted from) the peer; never taken again. */
  proposedEpoch: number;
  /** As primary: this write stream's name, the epoch this node took becoming primary (stream-position.ts). */
  streamEpoch = 0;
  /** As secondary: what it holds of its primary's write stream (in memory: a restart loses it with the RAM). */
  readonly position: StreamPosition;

  /**
   * Restores this half from `persisted` (the node's metadata from its last run, or null for a
   * fresh store) on a data path whose startup role ReplicaCore chose (startupRole, replica-on-disk.ts); a node
   * that starts primary does so in a new epoch of its own, persisted before anything else.
   */
  constructor(private readonly data: DataPath, readonly settings: ReplicaSettings, persisted: PersistedState | null) {
    this.history = persisted === null ? [] : [...persisted.history];
    this.discardLocal = persisted?.discardLocal ?? false;
    this.trust = new StoreTrust(persisted, this.discardLocal);
    this.outOfSyncValid = persisted?.cleanShutdown === true;
    if (persisted?.cleanShutdown && persisted.outOfSync !== null) {
      const saved = TrackBitmap.fromBytes(this.data.cache.trackCount, persisted.outOfSync);
      for (const ch of this.data.channels) ch.outOfSync.addAll(saved);
    }
    this.data.diverging = persisted?.diverging ?? false;
    this.resyncIncomplete = persisted?.resyncIncomplete ?? false;
    this.proposedEpoch = persisted?.proposedEpoch ?? 0;
    this.startedClean = persisted?.cleanShutdown === true;
    this.position = new StreamPosition(this.data.cache.trackCount);
    this.sender = new ResyncSender(data, settings);
    this.compare = new ComparePart(data, settings);
    if (this.data.role === 'primary') this.history.push(this.newEpochEntry());
    if (this.data.role === 'primary') this.streamEpoch = currentEpoch(this.history);
    if (this.data.role === 'primary' && settings.mirrored) this.data.diverging = true;
    this.persist();
    if (persisted !== null && !persisted.cleanShutdown && settings.mirrored) {
      this.data.emit({ kind: 'log', level: 'warn', msg: 'restarted after a crash: coming up secondary', fields: { storeTrusted: this.trust.trusted, epoch: currentEpoch(this.history) } });
    }
  }

  // ================================================================ link and state exchange

  /**
   * The link is up and authenticated. Each side announces its state (seed: the returning node
   * "asks for a data update"); nothing is mirrored until both have decided who is the source.
   * Both records restart from what each side could lose if it failed now (unsyncedTracks).
   */
  linkEstablished(ch: Channel, nowMs: number): void {
    ch.linkIsUp = true;
    ch.linkWritable = true;
    ch.peerView = null;
    ch.record.reset();
    this.resetNotifier(ch);
    ch.event(PeerStateMachine.linkEvent('up', this.data.role));
    this.announce(ch, nowMs);
  }

  /**
   * Our state, then our hardening notices of what we hold only in RAM: the peer marks its record
   * of us with those tracks when it reads the state, and our mirror of its marks starts at the
   * same point (notices it may start come after the state). At link-up, and among several nodes
   * when we confirm a peer's promotion (its record of us was not kept while we followed another).
   */
  announce(ch: Channel, nowMs: number): void {
    this.sendState(ch);
    this.data.notices.notifyMarked(ch, this.unsyncedTracks(), nowMs);
  }

  /** This node became primary: a write stream of its own starts; it follows no other one. */
  beganStream(): void {
    this.streamEpoch = currentEpoch(this.history);
    this.position.forget();
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
  private resetNotifier(ch: Channel): void {
    ch.notifier.reset();
    this.data.durable.resetCycles(ch.name);
    for (const [waiterId, purpose] of this.data.waiterPurposes) {
      if ('op' in purpose || purpose.peer !== ch.name) continue;
      this.data.waiterPurposes.delete(waiterId);
      this.data.hardener.removeWaiter(waiterId);
    }
  }

  sendState(ch: Channel): void {
    const dirty = new TrackBitmap(this.data.cache.trackCount);
    for (const t of this.unsyncedTracks()) dirty.set(t);
    const primary = this.data.role === 'primary';
    this.data.send(ch, {
      type: 'state', role: this.data.role, history: [...this.history], storeTrusted: this.trust.trusted, storeBlank: this.storeBlank,
      outOfSyncValid: this.outOfSyncValid, discardLocal: this.discardLocal,
      outOfSync: ch.outOfSync.toBytes(), dirty: dirty.toBytes(),
      streamEpoch: primary ? this.streamEpoch : this.position.stream,
      positionValid: !primary && this.position.valid && !this.resyncIncomplete,
      lastSeq: primary ? this.data.sendSeq : this.position.lastSeq,
      above: primary ? new TrackBitmap(dirty.trackCount).toBytes() : this.position.aboveTracks().toBytes(),
    });
  }

  private onPeerState(ch: Channel, msg: Extract<LinkMessage, { type: 'state' }>, nowMs: number): void {
    const first = ch.peerView === null;
    ch.peerView = msg;
    // A new link, or the announce of a peer whose promotion we confirmed: what it holds only in
    // RAM joins our record of it. A secondary's dirty tracks came from the old primary, not from
    // us; promoted and then dead at once, its crash lost them and no bitmap said so (simulator,
    // three nodes, seed 50003673: a write acknowledged in the old stream, missing on the node
    // that had been promoted, after it returned).
    const announced = ch.announceDue && msg.role === 'primary';
    // A link-up's state does not end the wait: a promotion we confirmed may complete over a new
    // link (seed 60002642: its announce came after a reconnect, and went unrecorded).
    if (announced) ch.announceDue = false;
    if (first || announced) ch.recordUnsynced(msg);
    if (first) ch.vouchOnReturn(msg);
    if (this.settings.peers.length > 1 && ch.state === 'in-sync' && msg.role === 'secondary' && this.data.role === 'secondary') ch.event('primaryStepsDown');
    // In sync with the same history (a demote, say): nothing to decide, only the role changed.
    if (ch.state === 'in-sync' && compareHistories(this.history, msg.history) === 'equal') return;
    if (this.adoptsInSync(ch, msg)) return;
    // The target of our resync is primary: promoted by --force (it refuses a plain promote while
    // the resync into it runs). It takes no more of our data, and its new epoch may make it the
    // source (its syncStart follows this state): our resync ends and the pair decides afresh, as
    // the target's own promotion did on its side (found by the simulator with storage faults,
    // seeds 211, 383, 652, 284: that syncStart found this node still resyncing it).
    if (ch.sendsResync && msg.role === 'primary') {
      this.data.emit({ kind: 'log', level: 'warn', msg: 'peer promoted while this node resynced it: resync abandoned', fields: { peer: ch.name, sentBytes: ch.resync?.sentBytes ?? 0 } });
      ch.resync = null;
      this.compare.abort(ch, 'the peer was promoted', nowMs);
      ch.event('targetPromoted');
    }
    this.decide(ch, nowMs);
  }

  /**
   * In a volume of three or more nodes, a primary that lost one secondary starts a new generation
   * (markDiverging) while the others stay in sync: each of them holds every write of it, in link
   * order, so it takes the extended history as it is, with no resync. Only an in-sync secondary,
   * only from its primary, and only entries of that primary's own.
   */
  private adoptsInSync(ch: Channel, msg: Extract<LinkMessage, { type: 'state' }>): boolean {
    if (this.settings.peers.length < 2 || ch.state !== 'in-sync' || this.data.role !== 'secondary' || msg.role !== 'primary') return false;
    if (compareHistories(this.history, msg.history) !== 'theirs-newer' || !msg.history.slice(this.history.length).every((e) => e.node === ch.name)) return false;
    this.setHistory([...msg.history]);
    this.persist();
    return true;
  }

  /** Picks source, target or split brain from both sides' states (src/core/resync.ts). */
  decide(ch: Channel, nowMs: number): void {
    const peer = ch.peerView;
    if (peer === null || !ch.linkIsUp || ch.sendsResync || ch.intake.active) return;
    // In a volume of three or more nodes only a primary sends a resync (DESIGN.md "Several
    // secondaries", step 5 builds the rest): two secondaries leave each other alone, or one could
    // resync a third node with older data while the primary resyncs it too.
    if (this.settings.peers.length > 1 && this.data.role !== 'primary' && peer.role !== 'primary') {
      // A split brain between them ends once they hold the same history again (the discarding
      // side was resynced by a primary since): a third node, not they, decides their data.
      if (ch.state === 'split-brain' && compareHistories(this.history, peer.history) === 'equal') ch.event('splitBrainHealed');
      return;
    }
    const decision = decideSync(this.sideState(), { ...peer, node: ch.name }, this.branchesByEpoch);
    if (this.settings.peers.length > 1 && keepApart(decision, this.data.role, peer.role)) {
      if (decision.kind === 'target') this.data.emit({ kind: 'log', level: 'warn', msg: 'a secondary holds a newer epoch history (a promotion it confirmed did not complete): it is left alone until it follows a primary', fields: { peer: ch.name } });
      return;
    }
    if (decision.kind === 'split-brain') {
      if (ch.state !== 'split-brain') this.data.emit({ kind: 'log', level: 'error', msg: 'split brain: refusing to mirror; resolve with `twinblock resolve --discard-local` on the side to overwrite', fields: { reason: decision.reason } });
      ch.event('splitBrainDetected');
      return;
    }
    if (decision.kind === 'target') {
      ch.intake.expect();
      this.markResyncIncomplete();
      ch.event('targetChosen');
      if (this.data.role === 'primary') {
        // Nothing of ours was mirrored yet on this link (no decision had been made), so no
        // write of ours is in flight to a peer that would ignore it.
        this.data.emit({ kind: 'log', level: 'warn', msg: 'peer holds newer data: this node steps down to secondary', fields: { peer: ch.name } });
        this.data.setRole('secondary');
        this.persist();
      }
      return;
    }
    this.startResync(ch, decision, peer, nowMs);
  }

  /** Three or more nodes with `quorum: majority`: a diverged history is a failed promotion's branch (decideSync). */
  get branchesByEpoch(): boolean {
    return this.settings.peers.length > 1 && this.settings.quorum.policy === 'majority';
  }

  private sideState(): SideState {
    return { node: this.settings.node, history: this.history, storeTrusted: this.trust.trusted, storeBlank: this.storeBlank, outOfSyncValid: this.outOfSyncValid, discardLocal: this.discardLocal, role: this.data.role };
  }

  /** The store was created empty at this start and the cache took no write, zero or sync data since. */
  get storeBlank(): boolean {
    return this.settings.storeCreatedFresh === true && this.data.cache.sequence === 0;
  }

  private startResync(ch: Channel, plan: ResyncPlanSpec, peer: Extract<LinkMessage, { type: 'state' }>, nowMs: number): void {
    const theirs = peer.outOfSyncValid ? TrackBitmap.fromBytes(this.data.cache.trackCount, peer.outOfSync) : null;
    const tracks = resyncTracks(this.data.cache.trackCount, plan.full, ch.outOfSync, theirs);
    if (!plan.full) tracks.addAll(tracksOthersMayLack(this.data, ch));
    // A full resync into a store that may hold the data compares checksums first and sends only
    // what differs (issue 14 item 5); a new, empty store gets syncZero extents without a compare.
    if (plan.full && !peer.storeBlank) this.compare.startResync(ch, tracks, plan, nowMs);
    else this.sendResync(ch, tracks, plan, nowMs);
  }

  /**
   * A checksum comparison with `ch` is complete (replica-compare.ts): a checksum resync sends what
   * differs (and what other secondaries may lack, as a delta does); a verify with `resync` makes
   * what differs out of sync for the peer and resends it.
   */
  compared(ch: Channel, nowMs: number): void {
    const found = this.compare.finish(ch, nowMs);
    if (found.purpose === 'resync') {
      found.differing.addAll(tracksOthersMayLack(this.data, ch));
      this.sender.start(ch, found.differing, found.spec!, nowMs, found.comparedBytes);
      this.finishResyncIfDone(ch, nowMs);
    } else if (found.resync && found.differing.count() > 0) {
      ch.outOfSync.addAll(found.differing);
      this.sendResync(ch, found.differing, { full: false, reason: 'online verify found tracks that differ' }, nowMs);
    }
  }

  /** Resyncs `tracks` into `ch`'s peer (a delta, a full resync, or a fetch: RolePart.fetchRequested). */
  sendResync(ch: Channel, tracks: TrackBitmap, plan: ResyncPlanSpec, nowMs: number): void {
    this.compare.abort(ch, 'a resync of the peer started', nowMs);
    this.sender.start(ch, tracks, plan, nowMs);
    this.finishResyncIfDone(ch, nowMs);
  }

  /** The link dropped (reset, heartbeat timeout): the link half's part of ReplicaCore.linkDown. */
  linkLost(ch: Channel, nowMs: number): void {
    ch.linkIsUp = false;
    // Messages of the dead link still held back by a full cache must not be applied once a new
    // link has reset both sides' records (found by the simulator, seed 7). Dropping them is safe:
    // none was acknowledged, so the peer counts their tracks as out-of-sync and resends them.
    ch.inbound.clear();
    // The peer's FLUSH requests of the dead link are answered on it or not at all: completing
    // later, their flushAck would go out on the next link, where the peer (restarted, its op ids
    // begun again) may take it for a new FLUSH of its own (simulator, seed 30103572: a stalled
    // fdatasync answered a restarted primary's FLUSH 57 with the old FLUSH 57's ack, and a host
    // FLUSH was acknowledged before the peer's store held what it covered).
    for (const [id, op] of this.data.ops) if ('flushAck' in op.done && op.done.peer === ch.name) this.data.ops.delete(id);
    this.data.updateBlockedWriters();
    ch.outNotices = null;
    this.resetNotifier(ch);
    ch.resync = null;
    this.compare.abort(ch, 'the link dropped', nowMs);
    ch.intake.end();
    ch.peerView = null;
    // Writes that peer never acknowledged: DataPath.settleUnacked (degraded policy, quorum, demoted).
    const unacked = this.data.acks.dropPending(ch);
    ch.event(PeerStateMachine.linkEvent('down', this.data.role));
    // The peer may have lost whatever it held only in RAM: those tracks need resending.
    ch.outOfSync.addAll(ch.record.united());
    if (this.data.role === 'primary') this.markDiverging();
    if (this.data.role !== 'primary' && unacked.length > 0) {
      // Those bytes will be hardened here although the new primary may lack them and no bitmap
      // may say so after a crash: this store is no longer trusted for a delta, on disk first
      // (simulator, seed 2529).
      this.trust.trusted = false;
      this.persist();
      this.data.untrustToken = this.lastPersistToken;
    }
    this.data.settleUnacked(unacked);
    // A FLUSH or FUA still waiting for the peer: on a primary the local part alone decides
    // (degraded); a node demoted meanwhile fails it, as it fails its unacknowledged writes above
    // (found by the simulator, seed 2610: a demoted node's FUA answered ok, then overwritten by
    // the resync from the new primary that had crashed before hardening it).
    for (const [id, op] of this.data.ops) if (op.remotePending.has(ch.name)) this.data.opPartDone(id, ch.name, this.data.role === 'primary' ? null : 'EIO');
    this.data.pump(nowMs);
  }

  /** The shell's link send buffer crossed its high-water mark (false) or drained (true). */
  setLinkWritable(ch: Channel, writable: boolean, nowMs: number): void {
    ch.linkWritable = writable;
    if (writable) this.sender.pump(ch, nowMs);
    if (writable && this.compare.pump(ch, nowMs)) this.compared(ch, nowMs);
  }

  /**
   * Applies one message of the link half (ReplicaCore.applyInbound routes the roles' messages);
   * false when it must wait for cache room (it keeps its place).
   */
  processInbound(ch: Channel, msg: LinkMessage, nowMs: number): boolean {
    switch (msg.type) {
      case 'write':
      case 'zero':
      case 'syncData':
      case 'syncZero':
        if (staleStream(this.data.channels, ch, this.history)) return true;
        return applyPeerDataAt(this.data, ch, msg, this.position, nowMs);
      case 'writeAck':
        this.data.acks.acked(ch, msg.seq, nowMs);
        return true;
      case 'notice':
        this.data.notices.handle(ch, msg.op, msg.ranges);
        return true;
      case 'flushReq': {
        const tracks = msg.lengthBytes === 0 ? null : this.data.cache.tracksOf(msg.offsetBytes, msg.lengthBytes);
        this.data.startOp({ flushAck: msg.id, peer: ch.name }, { seq: this.data.cache.sequence, tracks }, null);
        return true;
      }
      case 'flushAck':
        if (this.data.ops.get(msg.id)?.remotePending.has(ch.name)) this.data.opPartDone(msg.id, ch.name, msg.ok ? null : 'EIO');
        return true;
      case 'state':
        this.onPeerState(ch, msg, nowMs);
        return true;
      case 'syncStart':
        if (this.data.role === 'primary') return true; // a forced promotion abandoned this resync
        // Every track is about to be rewritten: what a failed fdatasync left unsure is replaced. A
        // checksum resync rewrites only what differs, and the page cache may show sectors the disk
        // lost: such a store answers no checksum, so every track is sent (ComparePart).
        ch.intake.start(msg.totalBytes, msg.compare, msg.compare && this.trust.syncLost);
        // Its sums may vouch only for what is on disk: after a crash, sync first (ComparePart holds them).
        if (msg.compare && !this.startedClean) this.compare.syncBeforeSums();
        this.trust.intakeStarted(msg.totalBytes === this.settings.geometry.volumeSizeBytes && (!msg.compare || ch.intake.refusesSums));
        if (ch.peerView?.role === 'primary') this.position.resyncStarted(ch.peerView.streamEpoch, msg.seq);
        this.markResyncIncomplete();
        ch.event('resyncStartReceived');
        this.data.emit({ kind: 'log', level: 'info', msg: 'resync from the peer started', fields: { bytes: msg.totalBytes } });
        return true;
      case 'syncDone':
        // Only the end of a resync we are still receiving: after a forced promotion the stream's
        // tail must not bring back the old epoch history (found by the simulator, seed 577).
        if (ch.intake.active && this.data.role === 'secondary') this.resyncReceived(ch);
        return true;
      default:
        return true; // handshake and heartbeat messages belong to the link layer
    }
  }

  /**
   * The end of a fetch into this node being promoted (DESIGN.md "Several secondaries", step 5):
   * it now holds what the source held on those tracks. No history is adopted (the proposal is
   * ours); the store is a complete copy again.
   */
  fetchReceived(ch: Channel): void {
    const receivedBytes = this.intakeEnded(ch);
    this.persist();
    this.data.emit({ kind: 'log', level: 'info', msg: 'fetched the newest data before serving writes', fields: { from: ch.name, bytes: receivedBytes } });
  }

  /** A resync or fetch into this node ended: its store is a complete copy again. The bytes it took. */
  private intakeEnded(ch: Channel): number {
    const receivedBytes = ch.intake.end();
    this.resyncIncomplete = false;
    this.outOfSyncValid = true;
    ch.event('resyncReceived');
    return receivedBytes;
  }

  private markResyncIncomplete(): void {
    if (this.resyncIncomplete) return;
    this.resyncIncomplete = true;
    this.persist();
  }

  /** The target's side of syncDone: its store now matches the source; adopt its epoch history. */
  private resyncReceived(ch: Channel): void {
    const receivedBytes = this.intakeEnded(ch);
    if (ch.peerRole === 'primary') this.position.resyncCompleted();
    // A side that discards its changes (split brain resolved against it) may go back in epochs.
    if (ch.peerView !== null) this.setHistory([...ch.peerView.history], this.discardLocal);
    this.trust.intakeCompleted();
    this.discardLocal = false;
    ch.outOfSync.clearSpan(0, ch.outOfSync.trackCount);
    this.data.diverging = false;
    this.persist();
    this.data.emit({ kind: 'log', level: 'info', msg: 'resync complete: in-sync', fields: { bytes: receivedBytes } });
    // The other nodes learn our history now: one in split brain with us sees it healed.
    if (this.settings.peers.length > 1) for (const other of this.data.channels) if (other !== ch && other.linkIsUp) this.sendState(other);
  }

  // ================================================================ resync (source: resync-sender.ts reads and sends)

  /**
   * The shell read a resync chunk (cache overlaid on store), in the same synchronous step as the
   * cache's finishRead: sent, and the resync ends once its last chunk is out.
   */
  syncChunkRead(offsetBytes: number, data: Uint8Array, nowMs: number, resyncId: number): void {
    const ch = this.sender.chunkRead(offsetBytes, data, nowMs, resyncId);
    if (ch !== null) this.finishResyncIfDone(ch, nowMs);
  }

  private finishResyncIfDone(ch: Channel, nowMs: number): void {
    const plan = ch.resync;
    if (plan === null || !plan.complete || this.historyToken !== -1) return;
    this.data.send(ch, { type: 'syncDone' });
    ch.resync = null;
    ch.event('resyncSent');
    ch.inSyncFromSeq = this.data.sendSeq;
    ch.outOfSync.clearSpan(0, ch.outOfSync.trackCount);
    this.outOfSyncValid = true;
    // The source's store is the reference the peer now matches (a fresh primary's included).
    this.trust.sourceCompleted();
    this.data.diverging = false;
    this.persist();
    this.data.emit({ kind: 'log', level: 'info', msg: 'resync complete: in-sync', fields: { bytes: plan.sentBytes, full: plan.full, ms: nowMs - plan.startMs } });
    // An in-sync peer may bring quorum back: host writes held for it go on now, whichever event
    // ended the resync (a chunk read, a timer, the history's persist). Without it they waited for
    // an event that never came (simulator, three nodes, seeds 10001884, 10002821).
    this.data.pump(nowMs);
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
    // The peers still in sync hold every write of the new generation too: they take the new
    // history at once (onPeerState), or a forced promotion of one of them would later meet this
    // node as a split brain although it lacks nothing of ours. A peer not in sync yet takes it at
    // the end of the resync we send it (its syncDone adopts our last state): without it, it
    // followed us with an older history and refused a later promotion as "histories differ"
    // (randomized test, seed 26).
    for (const ch of this.data.channels) if (ch.linkIsUp) this.sendState(ch);
  }

  /** The entry of a new epoch of ours: past every epoch we know of or ever proposed. */
  newEpochEntry(minEpoch = 0): EpochEntry {
    return { epoch: Math.max(nextEpoch(this.history), this.proposedEpoch + 1, minEpoch), node: this.settings.node };
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
   * A failed fdatasync also costs this store its trust for a delta resync (StoreTrust.syncLost),
   * on disk before any notice goes out again (startDurableSync waits for the untrust token): a
   * power loss that then takes a sector this node hardened brings a full resync, not a delta.
   */
  storeSyncFailed(): void {
    if (!this.trust.syncFailed(this.settings.mirrored)) return;
    this.persist();
    this.data.untrustToken = this.lastPersistToken;
    this.data.emit({ kind: 'log', level: 'warn', msg: 'store no longer trusted for a delta resync: if this node crashes, it gets a full resync from its peer', fields: { reason: 'fdatasync failed' } });
  }

  /** May a delta resync into this store be trusted (status: `store.trustedForDelta`)? */
  get trustedForDelta(): boolean {
    return this.trust.trusted;
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
      for (const ch of this.data.channels) this.finishResyncIfDone(ch, nowMs);
    }
  }

  /** What goes in the metadata file; `cleanShutdown` only from the shell's final write. */
  persistedState(cleanShutdown: boolean): PersistedState {
    const outOfSync = outOfSyncOnDisk(this.data.channels, this.data.cache.trackCount, cleanShutdown);
    return {
      history: [...this.history], role: this.data.role, cleanShutdown, diverging: this.data.diverging,
      storeTrusted: this.trust.trusted, resyncIncomplete: this.resyncIncomplete, outOfSync: outOfSync.toBytes(), discardLocal: this.discardLocal,
      proposedEpoch: this.proposedEpoch, syncLost: this.trust.syncLost,
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
