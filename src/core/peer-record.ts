// The peer-unhardened record (seed Fig. 3): per range, two bitmaps (50 and 52) whose roles,
// *current* and *old*, toggle back and forth. A node marks the current bitmap for every track the
// peer may now hold only in its cache (Fig. 4 steps 62 and 66); a hardening notice from the peer
// saves the current bitmap of a range as old (step 72) and, later, clears that old bitmap (step 80).
// The union of both — the *united bitmap* — is a superset of the peer's unhardened tracks, and is
// what recovery resyncs. The same structure serves as the *mirror* a hardening node keeps of its
// peer's record (Fig. 6 and the selective variant). Pure.
import { TrackBitmap } from './bitmap.js';

export class PeerUnhardenedRecord {
  readonly rangeCount: number;
  private readonly bitmaps: [TrackBitmap, TrackBitmap];
  /** Per range: 0 when bitmap 50 is current, 1 when bitmap 52 is. */
  private readonly currentIndex: Uint8Array;

  constructor(readonly trackCount: number, readonly rangeTracks: number) {
    this.rangeCount = Math.ceil(trackCount / rangeTracks);
    this.bitmaps = [new TrackBitmap(trackCount), new TrackBitmap(trackCount)];
    this.currentIndex = new Uint8Array(this.rangeCount);
  }

  rangeOf(track: number): number {
    return Math.floor(track / this.rangeTracks);
  }

  private span(range: number): [number, number] {
    return [range * this.rangeTracks, Math.min(this.trackCount, (range + 1) * this.rangeTracks)];
  }

  private current(range: number): TrackBitmap {
    return this.bitmaps[this.currentIndex[range]!]!;
  }

  private old(range: number): TrackBitmap {
    return this.bitmaps[1 - this.currentIndex[range]!]!;
  }

  /** Fig. 4 steps 62/66: mark in the current bitmap. True if newly marked there. */
  mark(track: number): boolean {
    return this.current(this.rangeOf(track)).set(track);
  }

  isCurrent(track: number): boolean {
    return this.current(this.rangeOf(track)).has(track);
  }

  isOld(track: number): boolean {
    return this.old(this.rangeOf(track)).has(track);
  }

  clearCurrentTrack(track: number): boolean {
    return this.current(this.rangeOf(track)).clear(track);
  }

  clearOldTrack(track: number): boolean {
    return this.old(this.rangeOf(track)).clear(track);
  }

  /** Step 72: discard the old bitmap of the range, and make the current one old. */
  saveCurrentAsOld(range: number): void {
    const [first, end] = this.span(range);
    this.old(range).clearSpan(first, end);
    this.currentIndex[range] = 1 - this.currentIndex[range]!;
  }

  /** Step 80: clear the old bitmap of the range. */
  clearOld(range: number): void {
    const [first, end] = this.span(range);
    this.old(range).clearSpan(first, end);
  }

  /** Current OR old: may the peer hold this track unhardened? */
  isUnited(track: number): boolean {
    return this.isCurrent(track) || this.isOld(track);
  }

  currentCount(range: number): number {
    const [first, end] = this.span(range);
    return this.current(range).countSpan(first, end);
  }

  oldCount(range: number): number {
    const [first, end] = this.span(range);
    return this.old(range).countSpan(first, end);
  }

  oldTracks(range: number): number[] {
    const [first, end] = this.span(range);
    return this.old(range).tracksInSpan(first, end);
  }

  /** The united bitmap as one bitmap (recovery's starting out-of-sync set). */
  united(): TrackBitmap {
    const out = new TrackBitmap(this.trackCount);
    for (let t = 0; t < this.trackCount; t++) if (this.isUnited(t)) out.set(t);
    return out;
  }

  unitedCount(): number {
    let n = 0;
    for (let r = 0; r < this.rangeCount; r++) n += this.unitedCountOfRange(r);
    return n;
  }

  unitedCountOfRange(range: number): number {
    const [first, end] = this.span(range);
    // Current OR old is bitmap 50 OR bitmap 52, whichever of them is current in this range.
    return this.bitmaps[0].countUnionSpan(this.bitmaps[1], first, end);
  }

  /** Per-range counts for status: only ranges with any mark. */
  rangeSummary(): { range: number; current: number; old: number }[] {
    const out: { range: number; current: number; old: number }[] = [];
    for (let r = 0; r < this.rangeCount; r++) {
      const current = this.currentCount(r);
      const old = this.oldCount(r);
      if (current + old > 0) out.push({ range: r, current, old });
    }
    return out;
  }

  /** Forget everything (after a full resync the peer holds nothing unhardened of ours). */
  reset(): void {
    for (let r = 0; r < this.rangeCount; r++) {
      const [first, end] = this.span(r);
      this.bitmaps[0].clearSpan(first, end);
      this.bitmaps[1].clearSpan(first, end);
    }
  }
}
