// What one node keeps of one other node: a peer channel (DESIGN.md "Several secondaries", step 1).
// The replica core splits its state in two. The node's own — cache, hardener, role, epoch history,
// host queue, durability ops, the store's trust — exists once. What belongs to one peer lives
// here, once per peer:
//
//   the peer state   this node's view of its relation with that peer (peer-state.ts table);
//   the link         up or down, and writable (the shell's send buffer below its high water);
//   the record       seed Fig. 3: the current/old bitmaps per range of what the peer may hold only
//                    in its RAM, drained by the peer's hardening notices (steps 72-80);
//   the notifier     seed Figs. 5-6: this node's own hardening, told to that peer, with the
//                    notices queued in this event for one frame;
//   out of sync      the tracks that peer lacks (written while it was away): its resync set;
//   the streams      the peer's messages held back for cache room, our writes awaiting its ack;
//   the resync       the one this node sends that peer, or the one it takes from it;
//   the peer's view  its last state message (role, epoch history, trust, bitmaps).
//
// A pair has one channel. Pure: a holder of state, moved by the data path and the link half.
import type { TrackerKind } from './notifier.js';
import { HardeningNotifier, type NoticeOp } from './notifier.js';
import { TrackBitmap } from './bitmap.js';
import { IdRing } from './id-ring.js';
import { PeerUnhardenedRecord } from './peer-record.js';
import { initialPeerState, PeerStateMachine, type PeerEvent } from './peer-state.js';
import { InboundStream } from './replica-inbound.js';
import type { LinkMessage, PeerState, Role } from './replica-types.js';
import { ResyncIntake, type ResyncPlan } from './resync.js';
import type { TrackCompare } from './track-compare.js';

export type StateMessage = Extract<LinkMessage, { type: 'state' }>;

export interface ChannelShape {
  trackCount: number;
  rangeTracks: number;
  tracker: TrackerKind;
  mirrored: boolean;
}

/** One peer's share of a node's state; `Pending` is the data path's write piece awaiting an ack. */
export class PeerChannel<Pending> {
  /** What the peer may hold only in its RAM (seed Fig. 3). */
  readonly record: PeerUnhardenedRecord;
  /** This node's hardening, as the peer hears of it (seed Figs. 5-6). */
  readonly notifier: HardeningNotifier;
  /** Tracks the peer lacks (written while it was away): the resync set. */
  readonly outOfSync: TrackBitmap;
  /** The peer state: changed only by legal events of src/core/peer-state.ts (view: `state`). */
  private readonly machine: PeerStateMachine;
  /** The link to the peer is up and authenticated: notices flow. */
  linkIsUp = false;
  /** The shell's send buffer for this link is below its high-water mark (resync reads go on). */
  linkWritable = true;
  /** Notices queued in this event, in order: one batch of ranges while the op stays the same. */
  outNotices: { op: NoticeOp; ranges: number[] } | null = null;
  /** The peer's messages held back for cache room, in link order. */
  readonly inbound = new InboundStream();
  /** The seq of the last write or zero sent on this link (checked to increase strictly). */
  lastSentWriteSeq = 0;
  /**
   * Our last write seq when this peer's resync ended: its acks of later writes come from a
   * complete copy (only those count toward `ack: quorum` among three or more nodes).
   */
  inSyncFromSeq = Infinity;
  /** The highest seq of our write stream the peer acknowledged (heldSeq is the least over peers). */
  ackedSeq = 0;
  /** Our writes sent to the peer, by seq, until it acknowledges them (step 64). */
  readonly pendingAcks = new IdRing<Pending>();
  /** The resync this node sends the peer (as source), or null. */
  resync: ResyncPlan | null = null;
  /**
   * A checksum comparison with the peer (issue 14 items 4-5, replica-compare.ts): an online
   * verify while in sync, or the compare phase of a checksum resync this node sends (`resync`
   * is null until it is complete).
   */
  compare: TrackCompare | null = null;
  /** This node is the target of the peer's resync (decided, or syncStart received) not yet done. */
  readonly intake = new ResyncIntake();
  /** The peer's latest state message (link-up exchange, role changes), or null on a new link. */
  peerView: StateMessage | null = null;
  /**
   * This node became primary while the peer was away, after a survey (promotion-survey.ts): the
   * stream whose complete copy, if the peer comes back with one, vouches for its data. Its
   * out-of-sync set holds what may differ; at its next link-up its own `above` set joins it, or
   * every track does (replica-link.ts onPeerState). Null: nothing pending.
   */
  vouchIn: number | null = null;
  /**
   * Among three or more nodes: this node confirmed the peer's promotion, so the peer's next state
   * as primary is its announce, and the tracks it holds only in RAM join our record of it then
   * (replica-link.ts onPeerState).
   */
  announceDue = false;
  /** Resync data sent to this peer since start (counters.syncBytesSent is the node's total). */
  resyncBytesSent = 0;
  /** Bytes a checksum resync into this peer compared, since start (sent or not). */
  resyncBytesCompared = 0;

  constructor(readonly name: string, shape: ChannelShape, role: Role) {
    this.record = new PeerUnhardenedRecord(shape.trackCount, shape.rangeTracks);
    this.outOfSync = new TrackBitmap(shape.trackCount);
    this.notifier = new HardeningNotifier(shape.tracker, shape.trackCount, shape.rangeTracks, role === 'primary');
    this.machine = new PeerStateMachine(initialPeerState(shape.mirrored, role));
  }

  get state(): PeerState {
    return this.machine.state;
  }

  /** The tracks the peer's state says it holds only in RAM (or unsynced) join our record of it. */
  recordUnsynced(msg: StateMessage): void {
    const dirty = TrackBitmap.fromBytes(this.outOfSync.trackCount, msg.dirty);
    for (let t = 0; t < dirty.trackCount; t++) if (dirty.has(t)) this.record.mark(t);
  }

  /**
   * The peer was away when this node was promoted (RolePart.serveAfterSurvey) and is back. With a
   * complete copy of the stream the survey judged, it differs from ours at most in what may differ
   * among complete copies (already in its out-of-sync set) and its own `above` set
   * (stream-position.ts); otherwise nothing vouches for its data, and every track is resent.
   */
  vouchOnReturn(msg: StateMessage): void {
    if (this.vouchIn === null) return;
    const vouched = msg.positionValid && msg.streamEpoch === this.vouchIn && msg.storeTrusted;
    if (vouched) this.outOfSync.addAll(TrackBitmap.fromBytes(this.outOfSync.trackCount, msg.above));
    else this.outOfSync.setAll();
    this.vouchIn = null;
  }

  /** Moves the peer state along the table; an illegal event throws (src/core/peer-state.ts). */
  event(event: PeerEvent): void {
    this.machine.apply(event);
  }

  /** This node sends the peer a resync: its data, or its compare phase (a checksum resync). */
  get sendsResync(): boolean {
    return this.resync !== null || this.compare?.purpose === 'resync';
  }

  /** Is the peer receiving our writes now (so they are mirrored)? */
  get mirroring(): boolean {
    return this.state === 'in-sync' || this.state === 'resyncing';
  }

  /** The peer's role as it last announced it (null before its state arrives). */
  get peerRole(): Role | null {
    return this.peerView?.role ?? null;
  }
}
