// A plain promotion among three or more nodes (DESIGN.md "Several secondaries", step 5; issue 12
// item 4: "promotion picks data, not luck"). The proposer's promoteReq goes to every secondary it
// reaches. Each that adopts the new epoch stops following the old primary (it refuses while it
// still follows a live one) and answers with its state, then its promoteAck: where it stands in
// the old primary's write stream (stream-position.ts). Once every peer asked has answered (or
// dropped), this part judges, with the answers of a majority:
//
//   refuse   too few confirmed; fewer than a majority that know where they stand in the stream
//            (only then do they meet every majority that acknowledged a write); or a node
//            still being resynced when the primary went away holds writes beyond every complete
//            copy (some may have been acknowledged, and its store mixes old and new tracks).
//   fetch    another node holds later writes of the stream than this one: the proposer takes the
//            tracks either may hold differently (their `above` sets), or every track if its own
//            position is incomplete, as a resync from it, before it serves a write.
//   serve    this node is the most current: it becomes primary.
//
// After either, the resync each other node gets is only what the positions say may differ (the
// union of the `above` sets), or every track for a node whose position vouches for nothing. Pure:
// it holds the answers and the decision, and sends nothing.
import { TrackBitmap } from './bitmap.js';
import type { EpochEntry } from './epochs.js';

/** Where a node stands in a primary's write stream (a state message's fields, or our own). */
export interface StreamStand {
  node: string;
  stream: number;
  lastSeq: number;
  valid: boolean;
  above: TrackBitmap;
}

export type SurveyVerdict =
  | { kind: 'refuse'; error: string }
  | { kind: 'fetch'; from: string; tracks: TrackBitmap }
  | { kind: 'serve' };

export class PromotionSurvey {
  /** Peers asked that have not answered yet. */
  private readonly awaiting: Set<string>;
  /** Why each peer refused (or dropped); the confirmers' stands. */
  private readonly refusals: string[] = [];
  private readonly stands: StreamStand[] = [];
  /** The fetch under way: its source, and the promotion that waits for it. */
  fetchingFrom: string | null = null;
  fetching: { history: EpochEntry[]; requestId: number } | null = null;
  /** The newest stream, and the tracks nodes of it may hold differently (set by judge). */
  private newestStream = 0;
  private differing: TrackBitmap;
  /** Nodes whose position vouches for what they hold of the newest stream (the rest get every track). */
  private readonly vouched = new Set<string>();
  private ownerVouched = false;
  private judged: StreamStand[] = [];

  constructor(asked: readonly string[], private readonly trackCount: number) {
    this.awaiting = new Set(asked);
    this.differing = new TrackBitmap(trackCount);
  }

  /** The stands judged, for the log: node, stream, last seq, complete or not, tracks above held. */
  describe(): string {
    return this.judged.map((s) => `${s.node}:${s.stream}/${s.lastSeq}${s.valid ? '' : ' incomplete'} above ${s.above.count()}`).join(', ');
  }

  /** A peer answered (reason null: it confirmed, with `stand`), or its link dropped. True once all have. */
  answered(peer: string, reason: string | null, stand: StreamStand | null): boolean {
    if (!this.awaiting.delete(peer)) return this.awaiting.size === 0;
    if (reason !== null) this.refusals.push(`${peer}: ${reason}`);
    else if (stand !== null) this.stands.push(stand);
    return this.awaiting.size === 0;
  }

  /** Still waiting for `peer`'s answer? */
  asks(peer: string): boolean {
    return this.awaiting.has(peer);
  }

  /**
   * The verdict, once every peer answered: `self` is the proposer's own stand, `need` the nodes
   * (itself included) that must confirm.
   */
  judge(self: StreamStand, need: number): SurveyVerdict {
    const confirmed = 1 + this.stands.length;
    if (confirmed < need) return { kind: 'refuse', error: `only ${confirmed} of the ${need} nodes needed confirmed the promotion${this.refusals.length > 0 ? ` (${this.refusals.join('; ')})` : ''}` };
    const all = [self, ...this.stands];
    this.judged = all;
    const newest = Math.max(...all.map((s) => s.stream));
    const complete = all.filter((s) => s.stream === newest && s.valid);
    if (newest === 0 || complete.length === 0) return { kind: 'refuse', error: 'no reachable node is known to hold every write of the last primary (each restarted or was being resynced since): promote with --force the node whose data to keep' };
    // The nodes asked meet every node that held an acknowledged write (a majority with `ack:
    // quorum` or `quorum: majority`; with `ack: all`, every secondary in sync then) only if each
    // of them can say where it stands. One that restarted since (stream 0: its RAM and its place
    // in the stream are gone) cannot: counted, it let a promotion serve without a write only the
    // dead primary and the node not asked held (simulator, three nodes, seeds 38 and 944: a
    // complete copy may be a prefix, its link lost before the last writes). One still being
    // resynced can (its acks never counted, or it still holds what it acked).
    const known = all.filter((s) => s.stream !== 0);
    if (known.length < need) return { kind: 'refuse', error: `only ${known.length} of the ${need} nodes needed know where they stand in the last primary's writes (${all.filter((s) => s.stream === 0).map((s) => s.node).join(', ')} restarted since): retry once more nodes are back, or promote with --force the node whose data to keep` };
    // The most current complete copy; this node on a tie (no fetch).
    const best = complete.reduce((a, b) => (b.lastSeq > a.lastSeq ? b : a));
    const beyond = all.find((s) => s.stream === newest && !s.valid && s.lastSeq > best.lastSeq);
    if (beyond !== undefined) return { kind: 'refuse', error: `${beyond.node} was still being resynced when the primary went away and holds writes no complete copy has (some may have been acknowledged): promote with --force the node whose data to keep` };
    this.newestStream = newest;
    for (const s of all) if (s.stream === newest) this.differing.addAll(s.above);
    for (const s of complete) this.vouched.add(s.node);
    // The old primary's store holds only what every secondary acknowledged, and what it held only
    // in RAM is in this node's record of it, or in `differing`: true if this node followed it to the end.
    this.ownerVouched = this.vouched.has(self.node);
    if (best === self) return { kind: 'serve' };
    this.fetchingFrom = best.node;
    // This node's own position vouches for what it holds: only what may differ comes over.
    // Otherwise it copies every track, and then holds exactly what the source holds.
    const tracks = this.ownerVouched ? this.differing : fullBitmap(this.trackCount);
    this.vouched.add(self.node);
    return { kind: 'fetch', from: best.node, tracks };
  }

  /**
   * What the new primary resends to `peer` beyond its out-of-sync set: the tracks nodes of the
   * newest stream may hold differently, for a node whose position vouches for the rest (the old
   * primary too, which hardened only what every secondary acknowledged); every track otherwise.
   */
  resendTo(peer: string, streamOwner: string | null): TrackBitmap {
    if (this.vouched.has(peer) || (peer === streamOwner && this.ownerVouched)) return this.differing;
    return fullBitmap(this.trackCount);
  }

  /**
   * For a node that was away (its link down) and did not answer: what it gets beyond its
   * out-of-sync set if it comes back with a complete copy of the newest stream (its own `above`
   * set is added then), or null when no position can vouch for it (it gets every track).
   */
  resendIfVouchedLater(peer: string): TrackBitmap | null {
    return this.vouched.has(peer) || this.newestStream === 0 ? null : this.differing;
  }

  /** The stream whose owner the resend treats as vouched for (its old primary). */
  get stream(): number {
    return this.newestStream;
  }
}

function fullBitmap(trackCount: number): TrackBitmap {
  const all = new TrackBitmap(trackCount);
  all.setAll();
  return all;
}
