// A secondary's position in its primary's write stream (DESIGN.md "Several secondaries", steps
// 4-5). With several secondaries, one may hold writes of the primary that another lacks (`ack:
// quorum` answers before the slowest holds them; any write is lost in flight when the primary
// dies). When a secondary is promoted, the survivors must learn who holds what without the dead
// primary's bitmaps. Each write carries `heldSeq`: every configured secondary acknowledged every
// write of the stream up to it. A secondary keeps:
//
//   stream    which stream this is: the epoch its primary took becoming primary (a primary's seqs
//             start again in each stream);
//   lastSeq   the last write of that stream it holds (a resync's syncStart counts as every write
//             up to its seq, once the resync completes);
//   above     each track it received in a write or resync chunk with a seq above heldSeq, and that
//             seq: the only tracks another secondary of the stream may hold differently;
//   valid     it holds a complete copy up to lastSeq: a resync from the primary completed since it
//             joined the stream, and it did not restart since (RAM is lost in a crash).
//
// Why `above` is enough: heldSeq never exceeds what any secondary acknowledged, and no secondary
// acknowledges a write it does not hold; so a write one valid secondary holds and another lacks
// has a seq above every heldSeq either has seen, and the one holding it kept its tracks. Two valid
// secondaries of one stream differ at most in the union of their `above` sets. Pure.
import { TrackBitmap } from './bitmap.js';

/** `above` is pruned of entries at or below heldSeq once it holds this many. */
const PRUNE_AT_ENTRIES = 4096;

export class StreamPosition {
  stream = 0;
  lastSeq = 0;
  valid = false;
  /** The highest heldSeq seen in this stream: entries at or below it may go. */
  private heldSeq = 0;
  /** Track → the highest seq of this stream that wrote it (writes) or that a chunk reflected (resync). */
  private readonly above = new Map<number, number>();
  private sincePrune = 0;

  constructor(private readonly trackCount: number) {}

  /**
   * A resync from the primary of `stream` starts (its syncStart, carrying its last seq then): the
   * position is incomplete until it ends. A new stream starts from nothing.
   */
  resyncStarted(stream: number, seq: number): void {
    if (stream !== this.stream) {
      this.stream = stream;
      this.lastSeq = 0;
      this.heldSeq = 0;
      this.above.clear();
    }
    this.valid = false;
    this.lastSeq = Math.max(this.lastSeq, seq);
  }

  /** That resync ended: every write up to lastSeq is here. */
  resyncCompleted(): void {
    this.valid = true;
  }

  /** A write (seq) of the stream, or a resync chunk (seq null: it reflects writes up to lastSeq), into `tracks`. */
  received(tracks: readonly number[], seq: number | null, heldSeq: number): void {
    if (seq !== null) this.lastSeq = Math.max(this.lastSeq, seq);
    this.partlyReceived(tracks, seq, heldSeq);
    // Lazily: the set only has to be a superset of what lies above heldSeq (aboveTracks filters),
    // and pruning a small Map only made V8 shrink and grow its table again (~1% of a
    // secondary's CPU at 4 KiB QD32, perf): it waits until the Map is big.
    if (++this.sincePrune >= 256 && this.above.size >= PRUNE_AT_ENTRIES) this.prune();
  }

  /**
   * Part of a write (seq), or of a resync chunk (null), is in `tracks`; the rest waits for cache
   * room, and may never come (the link drops). Those tracks may differ from another secondary's
   * already: above, but the write does not count as held (lastSeq stays).
   */
  partlyReceived(tracks: readonly number[], seq: number | null, heldSeq: number): void {
    this.heldSeq = Math.max(this.heldSeq, heldSeq);
    const at = seq ?? this.lastSeq;
    if (at > this.heldSeq) for (const t of tracks) this.above.set(t, Math.max(this.above.get(t) ?? 0, at));
  }

  private prune(): void {
    this.sincePrune = 0;
    for (const [t, seq] of this.above) if (seq <= this.heldSeq) this.above.delete(t);
  }

  /** The tracks received above heldSeq, as a bitmap. */
  aboveTracks(): TrackBitmap {
    const set = new TrackBitmap(this.trackCount);
    for (const [t, seq] of this.above) if (seq > this.heldSeq) set.set(t);
    return set;
  }

  /**
   * This node was the primary of `stream` and steps down alive (a demote): it holds every write
   * of its own stream up to `lastSeq`, and `above` is what some secondary may lack of it. A
   * promotion survey then counts it as knowing where it stands; forgotten, its stand said
   * nothing, and a switchover followed by a crash of the new primary left too few who could
   * (simulator, three nodes, seed 10002047).
   */
  ownStreamEnded(stream: number, lastSeq: number, above: TrackBitmap): void {
    this.forget();
    this.stream = stream;
    this.lastSeq = lastSeq;
    this.valid = true;
    for (let t = 0; t < above.trackCount; t++) if (above.has(t)) this.above.set(t, lastSeq);
  }

  /** This node leaves the stream (it becomes primary, or restarts): nothing of it may be vouched for. */
  forget(): void {
    this.stream = 0;
    this.lastSeq = 0;
    this.heldSeq = 0;
    this.valid = false;
    this.above.clear();
  }
}
