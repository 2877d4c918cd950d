// Comparing tracks by checksum with a peer (issue 14 items 4-5): the plan one comparison walks,
// for an online verify and for a checksum resync alike. Pure and synchronous.
//
// The node walks a set of tracks as batches of contiguous tracks. For each batch it asks the peer
// for the tracks' checksums (sumReq, in link order) and, in the same event, reads its own through
// its cache (the shell hashes them). Both checksums of a track reflect every write this node
// applied before the batch was sent: those writes went out on the ordered link before the sumReq,
// so the peer applied them before reading. A write this node applies while the batch is open (from
// the sumReq until both sets of checksums are in) may be in one checksum and not the other, so a
// track written then is not judged on them: a verify compares it again later (up to maxRechecks
// times, then calls it unverified), a resync sends it. Writes applied after the batch closed reach
// the peer too, in order, so a track judged equal stays equal. A batch whose checksums could not be
// read (either side) counts as differing: a resync sends it, a verify reports it.
import { TrackBitmap } from './bitmap.js';
import { TRACK_SUM_BYTES } from './link-messages.js';

/** Why the tracks are compared: `verify` reports differences, `resync` sends them. */
export type ComparePurpose = 'verify' | 'resync';

/** How fast a comparison goes: tracks per batch, batches open at once, and a rate cap on the bytes compared. */
export interface ComparePace {
  batchTracks: number;
  windowBatches: number;
  rateBytesPerSec: number;
}

/** One batch to start: the peer is asked for these tracks' checksums, and this node reads its own. */
export interface CompareBatch {
  id: number;
  firstTrack: number;
  trackCount: number;
}

interface OpenBatch extends CompareBatch {
  /** This node's checksums (null: not in yet), or 'failed' when its read failed. */
  local: Uint8Array | 'failed' | null;
  remote: Uint8Array | 'failed' | null;
  /** Tracks of the batch this node wrote while it was open. */
  readonly written: Set<number>;
}

export interface CompareProgress {
  totalBytes: number;
  /** Bytes of tracks judged so far (equal, differing or unverified). */
  doneBytes: number;
  /** Bytes whose checksums were compared, each time (a track compared again counts again). */
  comparedBytes: number;
  differingTracks: number;
  unverifiedTracks: number;
}

export class TrackCompare {
  /** Tracks whose checksums differ (or could not be read); for a resync also those written while compared. */
  readonly differing: TrackBitmap;
  /** Verify: tracks written every time they were compared (maxRechecks + 1 times): not judged. */
  readonly unverified: TrackBitmap;
  private readonly open = new Map<number, OpenBatch>();
  private readonly recheck: number[] = [];
  private readonly timesWritten = new Map<number, number>();
  private cursorTrack = 0;
  private issuedBytes = 0;
  private doneBytes = 0;
  private comparedBytes = 0;
  readonly totalBytes: number;

  constructor(
    readonly purpose: ComparePurpose,
    private readonly tracks: TrackBitmap,
    private readonly trackSizeBytes: number,
    private readonly volumeSizeBytes: number,
    private readonly pace: ComparePace,
    readonly startMs: number,
    /** A verify compares a track written while compared again, this many times at most. */
    private readonly maxRechecks: number,
  ) {
    this.differing = new TrackBitmap(tracks.trackCount);
    this.unverified = new TrackBitmap(tracks.trackCount);
    let total = 0;
    for (let t = 0; t < tracks.trackCount; t++) if (tracks.has(t)) total += this.trackBytes(t);
    this.totalBytes = total;
  }

  private trackBytes(track: number): number {
    return Math.min(this.trackSizeBytes, this.volumeSizeBytes - track * this.trackSizeBytes);
  }

  private get allowedBytes(): number {
    return this.pace.batchTracks * this.trackSizeBytes * this.pace.windowBatches;
  }

  /** The batches to start now, as the window and the rate allow; `newId` numbers each. */
  batchesDue(nowMs: number, newId: () => number): CompareBatch[] {
    const allowed = this.pace.rateBytesPerSec * Math.max(0, nowMs - this.startMs) / 1000 + this.allowedBytes;
    const due: CompareBatch[] = [];
    while (this.open.size < this.pace.windowBatches && this.issuedBytes < allowed) {
      const span = this.nextSpan();
      if (span === null) break;
      const batch: OpenBatch = { id: newId(), ...span, local: null, remote: null, written: new Set() };
      for (let t = span.firstTrack; t < span.firstTrack + span.trackCount; t++) this.issuedBytes += this.trackBytes(t);
      this.open.set(batch.id, batch);
      due.push({ id: batch.id, firstTrack: batch.firstTrack, trackCount: batch.trackCount });
    }
    return due;
  }

  /** When batchesDue will have one to give if only the rate stands in the way; null: it waits for answers, or is done. */
  nextBatchAtMs(): number | null {
    const anyLeft = this.recheck.length > 0 || this.cursorTrack < this.tracks.trackCount;
    if (!anyLeft || this.open.size >= this.pace.windowBatches) return null;
    return this.startMs + Math.max(0, this.issuedBytes - this.allowedBytes) * 1000 / this.pace.rateBytesPerSec + 1;
  }

  /** The next run of tracks: the walk first, then the tracks to compare again (spaced out that way). */
  private nextSpan(): { firstTrack: number; trackCount: number } | null {
    if (this.nextSpanLeft()) {
      const count = this.tracks.trackCount;
      const firstTrack = this.cursorTrack;
      while (this.cursorTrack < count && this.tracks.has(this.cursorTrack) && this.cursorTrack - firstTrack < this.pace.batchTracks) this.cursorTrack++;
      return { firstTrack, trackCount: this.cursorTrack - firstTrack };
    }
    // Only once no batch of the walk is open: a track written again meanwhile joins the list.
    if (this.recheck.length === 0 || this.open.size > 0) return null;
    this.recheck.sort((x, y) => x - y);
    const firstTrack = this.recheck.shift()!;
    let trackCount = 1;
    while (this.recheck[0] === firstTrack + trackCount && trackCount < this.pace.batchTracks) {
      this.recheck.shift();
      trackCount++;
    }
    return { firstTrack, trackCount };
  }

  /** This node applied a write to these tracks: an open batch holding one cannot judge it. */
  written(tracks: readonly number[]): void {
    for (const batch of this.open.values()) {
      for (const t of tracks) if (t >= batch.firstTrack && t < batch.firstTrack + batch.trackCount) batch.written.add(t);
    }
  }

  /** This node's checksums of batch `id` (null: its read failed). False: no such batch is open. */
  localSums(id: number, sums: Uint8Array | null): boolean {
    return this.arrived(id, 'local', sums);
  }

  /** The peer's checksums of batch `id` (null: it could not read them). False: no such batch is open. */
  remoteSums(id: number, sums: Uint8Array | null): boolean {
    return this.arrived(id, 'remote', sums);
  }

  private arrived(id: number, side: 'local' | 'remote', sums: Uint8Array | null): boolean {
    const batch = this.open.get(id);
    if (batch === undefined) return false;
    batch[side] = sums === null || sums.length !== batch.trackCount * TRACK_SUM_BYTES ? 'failed' : sums;
    if (batch.local !== null && batch.remote !== null) this.judge(batch);
    return true;
  }

  private judge(batch: OpenBatch): void {
    this.open.delete(batch.id);
    const { local, remote } = batch;
    for (let i = 0; i < batch.trackCount; i++) {
      const t = batch.firstTrack + i;
      const bytes = this.trackBytes(t);
      this.comparedBytes += bytes;
      if (batch.written.has(t) && this.purpose === 'verify') {
        const times = (this.timesWritten.get(t) ?? 0) + 1;
        this.timesWritten.set(t, times);
        if (times <= this.maxRechecks) {
          this.recheck.push(t);
          this.issuedBytes -= bytes; // issued again later
          continue;
        }
        this.unverified.set(t);
      } else if (batch.written.has(t) || local === 'failed' || remote === 'failed' || !sameSum(local!, remote!, i)) {
        this.differing.set(t);
      }
      this.doneBytes += bytes;
    }
  }

  /** Every track was judged. */
  get complete(): boolean {
    return this.open.size === 0 && this.recheck.length === 0 && this.nextSpanLeft() === false;
  }

  /** Moves the walk's cursor to the next track to compare; false when the walk is over. */
  private nextSpanLeft(): boolean {
    while (this.cursorTrack < this.tracks.trackCount && !this.tracks.has(this.cursorTrack)) this.cursorTrack++;
    return this.cursorTrack < this.tracks.trackCount;
  }

  progress(): CompareProgress {
    return {
      totalBytes: this.totalBytes, doneBytes: this.doneBytes, comparedBytes: this.comparedBytes,
      differingTracks: this.differing.count(), unverifiedTracks: this.unverified.count(),
    };
  }
}

function sameSum(a: Uint8Array, b: Uint8Array, index: number): boolean {
  const at = index * TRACK_SUM_BYTES;
  for (let i = at; i < at + TRACK_SUM_BYTES; i++) if (a[i] !== b[i]) return false;
  return true;
}
