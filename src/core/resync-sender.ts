// The resync source's reads and sends, a part the link half (replica-link.ts) owns: it starts a
// resync plan (src/core/resync.ts) on a peer channel, asks the shell for the chunks due within
// the plan's window and rate, sends each chunk as it is read, and retries a failed read after a
// pause. The link half decides whom to resync with what, and ends the resync (syncDone, the
// persisted state) once the plan is complete. Pure and synchronous.
import { TrackBitmap } from './bitmap.js';
import { earlierMs } from './backoff.js';
import type { DataChannel as Channel, DataPath, ReplicaSettings } from './replica-data.js';
import { ResyncPlan, type SyncPace, type SyncProgress } from './resync.js';
import { isAllZero } from './zero.js';

/**
 * What a resync is and why (the log says so): `full` sends every track; `initial` is a new peer's
 * first sync, not a recovery, and is said calmly (issue 14 item 8).
 */
export interface ResyncPlanSpec {
  full: boolean;
  reason: string;
  initial?: boolean;
}

/**
 * While yielding to host writes (resync-throttle.ts): one read of at most 64 KiB in flight, so a
 * host write waits behind at most that much resync data on the link, and the event loops handle
 * the resync in small pieces (bench:resync-yield: two 128 KiB reads gave host writes a p99 of
 * 2.2-2.5x their p99 without a resync; one of 64 KiB, 2.0x).
 */
const YIELD_CHUNK_BYTES = 64 * 1024;
const YIELD_WINDOW_CHUNKS = 1;

export class ResyncSender {
  constructor(private readonly data: DataPath, private readonly settings: ReplicaSettings) {}

  /**
   * Starts resyncing `tracks` into `ch`'s peer: syncStart, then the first reads. `comparedBytes`:
   * a checksum resync's compare phase (replica-compare.ts) already sent syncStart, compared that
   * many bytes, and found `tracks` to differ.
   */
  start(ch: Channel, tracks: TrackBitmap, { full, reason, initial = false }: ResyncPlanSpec, nowMs: number, comparedBytes: number | null = null): void {
    const { volumeSizeBytes, trackSizeBytes } = this.settings.geometry;
    const { syncChunkBytes, syncWindowChunks, syncRateBytesPerSec, syncMinRateBytesPerSec } = this.settings;
    const yields = syncMinRateBytesPerSec !== undefined && syncMinRateBytesPerSec < syncRateBytesPerSec;
    const pace: SyncPace = {
      chunkBytes: syncChunkBytes, windowChunks: syncWindowChunks, rateBytesPerSec: syncRateBytesPerSec,
      ...(yields ? { yieldTo: { floorBytesPerSec: syncMinRateBytesPerSec, yieldChunkBytes: YIELD_CHUNK_BYTES, yieldWindowChunks: YIELD_WINDOW_CHUNKS } } : {}),
    };
    ch.resync = new ResyncPlan(tracks, trackSizeBytes, volumeSizeBytes, pace, nowMs, this.data.nextId++, full);
    if (comparedBytes !== null) {
      this.data.emit({ kind: 'log', level: 'info', msg: 'checksums compared: sending the tracks that differ', fields: { tracks: ch.resync.trackCount, bytes: ch.resync.totalBytes, comparedBytes } });
    } else {
      ch.event('resyncStarted');
      // The seq tells a secondary target where in this stream the resync puts it (stream-position.ts).
      this.data.send(ch, { type: 'syncStart', totalBytes: ch.resync.totalBytes, seq: this.data.role === 'primary' ? this.data.sendSeq : 0, compare: false });
      const msg = initial ? 'initial sync of a new peer started' : full ? 'full resync of the peer started' : 'resync of the out-of-sync tracks started';
      this.data.emit({ kind: 'log', level: full && !initial ? 'warn' : 'info', msg, fields: { tracks: ch.resync.trackCount, bytes: ch.resync.totalBytes, reason } });
    }
    this.pump(ch, nowMs);
  }

  /** A rate-capped or paused resync's next read (null: none, or it waits for the link to drain). */
  deadlineMs(nowMs: number): number | null {
    let at: number | null = null;
    for (const ch of this.data.channels) {
      if (ch.resync === null || !ch.linkWritable) continue;
      at = earlierMs(at, ch.resync.nextReadAtMs(nowMs));
    }
    return at;
  }

  /** Every resync this node sends: the reads now due. */
  pumpAll(nowMs: number): void {
    for (const ch of this.data.channels) this.pump(ch, nowMs);
  }

  pump(ch: Channel, nowMs: number): void {
    const plan = ch.resync;
    if (plan === null || !ch.linkWritable) return;
    for (const chunk of plan.readsDue(nowMs)) {
      this.data.emit({ kind: 'sync-read', offsetBytes: chunk.offsetBytes, lengthBytes: chunk.lengthBytes, resyncId: plan.id });
    }
  }

  /**
   * The shell read a resync chunk (cache overlaid on store). It must call this in the same
   * synchronous step as the cache's finishRead: the chunk then reflects every write applied so
   * far, and every later write follows it on the ordered link. Returns the channel it went to
   * (null: that resync ended meanwhile).
   */
  chunkRead(offsetBytes: number, data: Uint8Array, nowMs: number, resyncId: number): Channel | null {
    // A read issued by an earlier resync (before a link loss) must not count for this one
    // (simulator, seed 679: a chunk counted twice and the last one never sent).
    const ch = this.resyncing(resyncId);
    const plan = ch?.resync ?? null;
    if (ch === null || plan === null || ch.state !== 'resyncing') return null; // the link dropped meanwhile
    // Sparse volumes are mostly zeros: a zero chunk crosses the link as its extent only.
    this.data.send(ch, isAllZero(data) ? { type: 'syncZero', offsetBytes, lengthBytes: data.length } : { type: 'syncData', offsetBytes, data });
    this.data.notices.markSent(ch, this.data.cache.tracksOf(offsetBytes, data.length), nowMs);
    plan.chunkSent(data.length);
    this.data.counters.syncBytesSent += data.length;
    ch.resyncBytesSent += data.length;
    this.pump(ch, nowMs);
    return ch;
  }

  /** The channel whose resync `resyncId` is running (null: it ended, e.g. with its link). */
  private resyncing(resyncId: number): Channel | null {
    return this.data.channels.find((ch) => ch.resync?.id === resyncId) ?? null;
  }

  /**
   * A resync read failed (the store said EIO, say). The chunk goes back to the front of the plan
   * and the resync pauses for storeRetryMs, then reads it again: a transient error costs a pause,
   * never a resync stuck until the next link-up; a lasting one keeps saying so in the log.
   */
  chunkFailed(offsetBytes: number, lengthBytes: number, message: string, nowMs: number, resyncId: number): void {
    const plan = this.resyncing(resyncId)?.resync ?? null;
    if (plan === null) return;
    plan.chunkFailed({ offsetBytes, lengthBytes }, nowMs + this.settings.storeRetryMs);
    this.data.emit({ kind: 'log', level: 'error', msg: 'resync read failed: retrying', fields: { offsetBytes, lengthBytes, error: message, retryInMs: this.settings.storeRetryMs } });
  }

  /** The resync with `ch`'s peer, either way, or null. */
  status(ch: Channel, nowMs: number): SyncProgress | null {
    if (ch.resync !== null) return ch.resync.progress(nowMs);
    if (ch.intake.active && ch.state === 'resyncing') return ch.intake.progress(this.settings.geometry.trackSizeBytes);
    return null;
  }
}

/**
 * Among three or more nodes: the tracks a secondary other than `target` may lack (its
 * out-of-sync set, and the tracks of writes it has not acknowledged yet): the writes above the
 * held seq. A resync sends them too, as its target counts what it receives as above it
 * (stream-position.ts) and the promotion survey fetches only the union of such tracks; a track
 * the target already held was not resent, so its position left it out, and a later promotion
 * kept a write there on one secondary only (simulator, three nodes, seed 10002340: replicas
 * that differed after a failed FUA).
 */
export function tracksOthersMayLack(d: DataPath, target: Channel | null): TrackBitmap {
  const tracks = new TrackBitmap(d.cache.trackCount);
  for (const other of d.channels) {
    if (other === target) continue;
    tracks.addAll(other.outOfSync);
    for (const piece of other.pendingAcks.values()) for (const t of d.cache.tracksOf(piece.offsetBytes, piece.lengthBytes)) tracks.set(t);
  }
  return tracks;
}
