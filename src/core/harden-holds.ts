// Harden holds: tracks that must not be hardened yet, because the primary holds a mirrored write
// to them that a peer has not acknowledged (DESIGN.md "Failures": a crashed primary must not have
// hardened data the new primary never received, or its returning store would differ where no
// bitmap says so). A count per track: several writes to one track may be in flight. Pure.
import { assert } from './assert.js';

/** Below this many entries, tracks no longer held keep theirs (see HardenHolds). */
const SWEEP_AT_ENTRIES = 4096;

/**
 * A track's count stays in the Map at 0 when its last hold goes, and those entries are swept only
 * once they are most of a big Map: a Map whose entries come and go a few dozen at a time rebuilds
 * its table each time it shrinks and grows again (V8's OrderedHashMap; each mirrored write held
 * and released a track, ~1% of the primary's CPU at 4 KiB QD32, perf).
 */
export class HardenHolds {
  private readonly counts = new Map<number, number>();
  /** Tracks whose count is above 0. */
  private heldTracks = 0;

  isHeld(track: number): boolean {
    return (this.counts.get(track) ?? 0) > 0;
  }

  /** One more hold on each of the tracks firstTrack..lastTrack. */
  hold(firstTrack: number, lastTrack: number): void {
    for (let t = firstTrack; t <= lastTrack; t++) {
      const n = this.counts.get(t) ?? 0;
      if (n === 0) this.heldTracks++;
      this.counts.set(t, n + 1);
    }
  }

  /** One hold less on each; a track not held is left alone (its holds were all cleared before). */
  release(firstTrack: number, lastTrack: number): void {
    for (let t = firstTrack; t <= lastTrack; t++) {
      const n = this.counts.get(t) ?? 0;
      if (n === 0) continue;
      if (n === 1) this.heldTracks--;
      this.counts.set(t, n - 1);
    }
    if (this.counts.size >= SWEEP_AT_ENTRIES && this.counts.size >= 4 * this.heldTracks) {
      for (const [t, n] of this.counts) if (n === 0) this.counts.delete(t);
    }
  }

  clear(): void {
    this.counts.clear();
    this.heldTracks = 0;
  }

  checkInvariants(): void {
    let held = 0;
    for (const n of this.counts.values()) {
      assert(n >= 0, 'negative harden hold');
      if (n > 0) held++;
    }
    assert(held === this.heldTracks, 'held track count drifted');
  }
}
