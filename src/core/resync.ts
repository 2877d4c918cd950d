// Who resyncs whom, and what (DESIGN.md "Failures"; seed: the returning node "asks for a data
// update", and the survivor "transfers ... the data in all the tracks that are marked in the
// united bitmap"). Pure.
//
// At link-up each side announces its state (epoch history, whether its store and its out-of-sync
// set can be trusted). The node whose epoch history is newer is the sync source; equal histories
// leave the last primary as source; histories that diverged mean both sides accepted writes as
// primary since their last common epoch — split brain — unless one side was told to discard its
// changes. The source sends the out-of-sync tracks of both sides (its own: written while the peer
// was away or held only in the peer's RAM; the target's: written by the target while it was a
// primary the source never heard from). Anything it cannot vouch for turns the resync into a full one.
import { assert } from './assert.js';
import { ResyncThrottle, type ThrottleSettings } from './resync-throttle.js';
import { TrackBitmap } from './bitmap.js';
import { compareHistories, currentEpoch, lastPrimary, type EpochEntry } from './epochs.js';
import type { Role } from './replica-types.js';

export interface SideState {
  node: string;
  history: readonly EpochEntry[];
  /** Every hardened write is known to the peer or listed in outOfSync (no unrecorded divergence). */
  storeTrusted: boolean;
  /** outOfSync is complete (the node did not crash since it started collecting it). */
  outOfSyncValid: boolean;
  discardLocal: boolean;
  /** Its store was created empty at this start and nothing was written to it since (zeros). */
  storeBlank?: boolean;
  /** Its role now (decides a tie between branches of equal epochs: `byEpoch`). */
  role?: Role;
}

export type SyncDecision =
  /** `initial`: the peer never held data (a new node): its first sync, not a recovery. */
  | { kind: 'source'; full: boolean; reason: string; initial?: boolean }
  | { kind: 'target' }
  | { kind: 'split-brain'; reason: string };

/**
 * `byEpoch`: a volume of three or more nodes with `quorum: majority`. There two branches of
 * history cannot both have served writes (each promotion takes a majority, and a node that
 * confirmed one stops following the other), so a branch the other side lacks is a promotion
 * that failed after some node had confirmed it: the branch with the higher epoch is the newer,
 * and the other side is resynced in full. The promotion survey had already fetched any data of a
 * branch that did serve (promotion-survey.ts). Left a split brain, it needed an operator after
 * any failed promotion (simulator, three nodes, seeds 11, 24, 85).
 */
export function decideSync(me: SideState, peer: SideState, byEpoch = false): SyncDecision {
  const relation = compareHistories(me.history, peer.history, { me: me.node, peer: peer.node });
  if (relation === 'diverged' && byEpoch) {
    // On a tie (a primary left alone started a generation of its own under the number another
    // node proposed next: seed 11), the side that is primary now is the one a majority confirmed.
    const rank = (side: SideState): number => 2 * currentEpoch(side.history) + (side.role === 'primary' ? 1 : 0);
    const [mine, theirs] = [rank(me), rank(peer)];
    if (mine !== theirs) return mine > theirs ? { kind: 'source', full: true, reason: 'newer epoch: the peer holds a branch of a promotion that did not complete' } : { kind: 'target' };
  }
  if (me.discardLocal !== peer.discardLocal) {
    // An operator resolved a split brain (or forced a side): the discarding side is the target of
    // a resync of every track either side changed.
    return me.discardLocal ? { kind: 'target' } : sourceDecision(me, peer, 'peer discards its changes');
  }
  if (relation === 'diverged') {
    return { kind: 'split-brain', reason: `both ${me.node} and ${peer.node} were primary since their last common epoch` };
  }
  // Equal histories: nobody was promoted since the link went down. The side that did not crash
  // (its out-of-sync set is intact) holds every acknowledged write — a primary never hardens what
  // its peer has not acknowledged — so it is the source; a crashed primary must not push its
  // stale store over its peer. If both or neither crashed, the last primary is.
  const survivor = me.outOfSyncValid !== peer.outOfSyncValid ? me.outOfSyncValid : lastPrimary(me.history) === me.node;
  const iAmSource = relation === 'mine-newer' || (relation === 'equal' && survivor);
  return iAmSource ? sourceDecision(me, peer, relation === 'equal' ? 'same epoch history' : 'newer epoch history') : { kind: 'target' };
}

/**
 * Among three or more nodes, should two nodes leave `decision` undone? A secondary never sources
 * a resync, and a primary steps down only for a primary with newer data. A secondary's history is
 * newer than a live primary's when it confirmed a promotion that then failed (the proposer lost
 * its majority): resyncing the primary from it would drop writes the primary acknowledged since
 * with another majority. They stay apart; the secondary rejoins once a primary it can follow
 * exists. A secondary never sources one into a primary either: the primary's state may be old
 * news (a slow link), and the resync reached a node another primary was already resyncing
 * (simulator, five nodes, seed 80000188).
 */
export function keepApart(decision: SyncDecision, me: Role, peer: Role): boolean {
  if (decision.kind === 'target') return me === 'primary' && peer !== 'primary';
  return me !== 'primary' && (peer !== 'primary' || decision.kind === 'source');
}

function sourceDecision(me: SideState, peer: SideState, why: string): SyncDecision {
  // A split brain's losing side vouches for what it changed (its out-of-sync set) even though its
  // store is not trusted as a whole: every track either side changed is resent.
  if (peer.discardLocal && me.outOfSyncValid && peer.outOfSyncValid) return { kind: 'source', full: false, reason: `${why}; every track either side changed` };
  // Two stores created empty, neither written since: the same bytes (zeros); nothing to send
  // (issue 14 item 8). Only if both are: a new store beside one that holds data gets all of it.
  if (peer.storeBlank === true && me.storeBlank === true) return { kind: 'source', full: false, reason: `initial sync of a new pair: both stores are new and empty, nothing to send`, initial: true };
  if (!peer.storeTrusted && peer.history.length === 0) return { kind: 'source', full: true, reason: `initial sync: ${peer.node} joins with a new store`, initial: true };
  if (!peer.storeTrusted) return { kind: 'source', full: true, reason: `${why}; ${peer.node}'s store is new, mid-resync, or may hold writes no bitmap records (it crashed while primary alone)` };
  if (!me.outOfSyncValid) return { kind: 'source', full: true, reason: `${why}; this node's out-of-sync set is not known (it restarted without a clean shutdown)` };
  return { kind: 'source', full: false, reason: why };
}

/** The tracks to send: everything, or the union of both sides' out-of-sync sets. */
export function resyncTracks(trackCount: number, full: boolean, mine: TrackBitmap, theirs: TrackBitmap | null): TrackBitmap {
  const set = new TrackBitmap(trackCount);
  for (let t = 0; t < trackCount; t++) if (full || mine.has(t) || theirs?.has(t)) set.set(t);
  return set;
}

/**
 * How fast a resync source reads and sends: chunk size, reads in flight, and a rate cap. With
 * `yieldTo`, the rate and chunks shrink while host writes run (resync-throttle.ts, issue 14 item 6).
 */
export interface SyncPace {
  chunkBytes: number;
  windowChunks: number;
  rateBytesPerSec: number;
  yieldTo?: Omit<ThrottleSettings, 'ceilingBytesPerSec'>;
}

export interface SyncProgress {
  totalBytes: number;
  doneBytes: number;
  tracksLeft: number;
  rateBytesPerSec: number;
  etaSeconds: number | null;
  full: boolean;
  /** The source yields to host writes now (issue 14 item 6), at `limitBytesPerSec`. */
  yielding?: boolean;
  limitBytesPerSec?: number;
  /** A checksum resync (issue 14 item 5) comparing checksums before it sends what differs (replica-compare.ts). */
  phase?: 'compare';
  comparedBytes?: number;
  differingTracks?: number;
}

type Chunk = { offsetBytes: number; lengthBytes: number };

/**
 * One resync as its source runs it: walks a track set as coalesced spans of at most chunkBytes, in
 * ascending order, within a window of reads in flight and a rate cap, and counts what was sent.
 * The plan owns these counters; the core asks it what to read next and tells it what happened.
 */
export class ResyncPlan {
  readonly totalBytes: number;
  private issuedBytes = 0;
  private sent = 0;
  private readsInFlight = 0;
  /** Reads again no sooner than this (after a failed read). */
  private retryAtMs = 0;
  private cursorTrack = 0;
  /** Chunks whose read failed, read again before any new one. */
  private readonly retries: Chunk[] = [];
  /** Token bucket of the rate: bytes that may be issued now (negative: owed), as of budgetAtMs. */
  private budgetBytes: number;
  private budgetAtMs: number;
  /** Yields to host writes; null: a fixed rate. */
  readonly throttle: ResyncThrottle | null;

  constructor(
    private readonly tracks: TrackBitmap,
    private readonly trackSizeBytes: number,
    private readonly volumeSizeBytes: number,
    private readonly pace: SyncPace,
    readonly startMs: number,
    /** Tags this resync's reads, so a read from an earlier one is recognised. */
    readonly id: number,
    /** Every track, not only the out-of-sync ones. */
    readonly full: boolean,
  ) {
    let total = 0;
    for (let t = 0; t < tracks.trackCount; t++) if (tracks.has(t)) total += this.trackBytes(t);
    this.totalBytes = total;
    this.throttle = pace.yieldTo === undefined ? null : new ResyncThrottle({ ...pace.yieldTo, ceilingBytesPerSec: pace.rateBytesPerSec });
    // The first window goes out at once.
    this.budgetBytes = pace.chunkBytes * pace.windowChunks;
    this.budgetAtMs = startMs;
  }

  /** Chunk size and reads in flight now (smaller while yielding). */
  private shape(nowMs: number): { chunkBytes: number; windowChunks: number } {
    return this.throttle?.shape(nowMs, this.pace) ?? this.pace;
  }

  /** Adds what the rate allowed since the last call; at most one window's worth is saved up. */
  private refill(nowMs: number): number {
    const rate = this.throttle?.rateAt(nowMs) ?? this.pace.rateBytesPerSec;
    const { chunkBytes, windowChunks } = this.shape(nowMs);
    this.budgetBytes = Math.min(chunkBytes * windowChunks, this.budgetBytes + rate * Math.max(0, nowMs - this.budgetAtMs) / 1000);
    this.budgetAtMs = Math.max(this.budgetAtMs, nowMs);
    return rate;
  }

  private trackBytes(track: number): number {
    return Math.min(this.trackSizeBytes, this.volumeSizeBytes - track * this.trackSizeBytes);
  }

  /** The chunks to read now: as many as the window of reads in flight and the rate allow. */
  readsDue(nowMs: number): Chunk[] {
    if (nowMs < this.retryAtMs) return [];
    // Rate 0: a probe of the throttle, which measures the host without the resync.
    if (this.refill(nowMs) === 0) return [];
    const { chunkBytes, windowChunks } = this.shape(nowMs);
    const due: Chunk[] = [];
    while (this.readsInFlight < windowChunks && this.budgetBytes > 0) {
      const chunk = this.nextChunk(chunkBytes);
      if (chunk === null) break;
      this.readsInFlight++;
      this.budgetBytes -= chunk.lengthBytes;
      due.push(chunk);
    }
    return due;
  }

  /**
   * When readsDue will have a chunk to give, if only time stands in the way (a failed read's
   * pause, or the rate cap); null when it waits for an event (a read in flight to finish) or has
   * nothing left to issue.
   */
  nextReadAtMs(nowMs: number): number | null {
    const anyLeft = this.retries.length > 0 || this.issuedBytes < this.totalBytes;
    if (!anyLeft || this.readsInFlight >= this.shape(nowMs).windowChunks) return null;
    if (nowMs < this.retryAtMs) return this.retryAtMs;
    const rate = this.refill(nowMs);
    if (rate === 0) return this.throttle?.pausedUntilMs(nowMs) ?? nowMs + 1;
    // The budget must be positive again: what is owed, at the rate allowed now.
    return this.budgetBytes > 0 ? nowMs : nowMs + (1 - this.budgetBytes) * 1000 / rate;
  }

  /** The next span to read and send, or null when every track has been issued. */
  private nextChunk(chunkBytes: number): Chunk | null {
    const retry = this.retries.shift();
    if (retry !== undefined) return retry;
    const count = this.tracks.trackCount;
    while (this.cursorTrack < count && !this.tracks.has(this.cursorTrack)) this.cursorTrack++;
    if (this.cursorTrack >= count) return null;
    const first = this.cursorTrack;
    let lengthBytes = 0;
    while (this.cursorTrack < count && this.tracks.has(this.cursorTrack) && lengthBytes + this.trackBytes(this.cursorTrack) <= Math.max(chunkBytes, this.trackSizeBytes)) {
      lengthBytes += this.trackBytes(this.cursorTrack);
      this.cursorTrack++;
    }
    this.issuedBytes += lengthBytes;
    return { offsetBytes: first * this.trackSizeBytes, lengthBytes };
  }

  /** A chunk's read finished and its data went to the peer. */
  chunkSent(lengthBytes: number): void {
    assert(this.readsInFlight > 0, 'a resync chunk was sent that was never read');
    this.readsInFlight--;
    this.sent += lengthBytes;
    assert(this.sent <= this.issuedBytes && this.sent <= this.totalBytes, `resync sent ${this.sent} of ${this.totalBytes} bytes (${this.issuedBytes} issued)`);
  }

  /** A chunk whose read failed: issued again (counted once) from `atMs` on. */
  chunkFailed(chunk: Chunk, atMs: number): void {
    assert(this.readsInFlight > 0, 'a resync read failed that was never issued');
    this.readsInFlight--;
    this.retries.push(chunk);
    this.retryAtMs = atMs;
  }

  get sentBytes(): number {
    return this.sent;
  }

  /** Every track was read and sent: the source may send syncDone. */
  get complete(): boolean {
    return this.sent === this.totalBytes && this.readsInFlight === 0 && this.issuedBytes >= this.totalBytes;
  }

  get trackCount(): number {
    return this.tracks.count();
  }

  /** Progress for /status: bytes, tracks left, the rate so far and an estimate of the time left. */
  progress(nowMs: number): SyncProgress {
    const elapsedSec = Math.max(0.001, (nowMs - this.startMs) / 1000);
    // The first window of chunks goes out at once: leave it out of the rate, or early ETAs lie.
    const burstBytes = this.pace.chunkBytes * this.pace.windowChunks;
    const rate = Math.max(0, this.sent - burstBytes) / elapsedSec;
    const left = this.totalBytes - this.sent;
    return {
      totalBytes: this.totalBytes, doneBytes: this.sent, tracksLeft: Math.ceil(left / this.trackSizeBytes), rateBytesPerSec: Math.round(rate),
      etaSeconds: rate > 0 ? Math.ceil(left / rate) : null, full: this.full,
      yielding: this.throttle?.yielding(nowMs) ?? false, limitBytesPerSec: Math.round(this.throttle?.currentRate(nowMs) ?? this.pace.rateBytesPerSec),
    };
  }
}

/**
 * A resync into this node, as its target sees it: active from the moment the state exchange made
 * this node the target (or the source's syncStart arrived) until syncDone or the link's loss, and
 * how many of the announced bytes arrived.
 */
export class ResyncIntake {
  private activeValue = false;
  private totalBytes = 0;
  private receivedBytes = 0;
  /** A checksum resync: the bytes whose checksums this node gave so far (its progress until all are). */
  private compare: { answeredBytes: number } | null = null;
  /** A checksum resync into a store that lost a writeback: it answers no checksum, so every track is sent. */
  refusesSums = false;

  get active(): boolean {
    return this.activeValue;
  }

  /** This node is the target: the source's syncStart follows. */
  expect(): void {
    this.activeValue = true;
  }

  /** The source's syncStart: it will send `totalBytes`, or compare them first (`compare`) and send what differs. */
  start(totalBytes: number, compare = false, refusesSums = false): void {
    this.activeValue = true;
    this.refusesSums = refusesSums;
    this.totalBytes = totalBytes;
    this.receivedBytes = 0;
    this.compare = compare ? { answeredBytes: 0 } : null;
  }

  /** This node answered the source's checksum request for `bytes` of tracks. */
  answered(bytes: number): void {
    if (this.compare !== null) this.compare.answeredBytes += bytes;
  }

  received(bytes: number): void {
    this.receivedBytes += bytes;
  }

  /** The resync ended (syncDone), or was abandoned: the bytes received. */
  end(): number {
    this.activeValue = false;
    return this.receivedBytes;
  }

  progress(trackSizeBytes: number): SyncProgress {
    // A checksum resync counts the tracks compared (the source then sends only what differs).
    const compared = this.compare === null ? null : Math.min(this.totalBytes, this.compare.answeredBytes);
    if (compared !== null) {
      const phase = compared < this.totalBytes ? { phase: 'compare' as const } : {};
      return { totalBytes: this.totalBytes, doneBytes: compared, tracksLeft: Math.ceil((this.totalBytes - compared) / trackSizeBytes), rateBytesPerSec: 0, etaSeconds: null, full: true, ...phase, comparedBytes: compared };
    }
    const left = this.totalBytes - this.receivedBytes;
    return { totalBytes: this.totalBytes, doneBytes: this.receivedBytes, tracksLeft: Math.ceil(left / trackSizeBytes), rateBytesPerSec: 0, etaSeconds: null, full: false };
  }
}
