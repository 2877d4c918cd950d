// The data path's hardening notices (seed Figs. 5-6), a part the data path (replica-data.ts) owns:
// marking what each peer may hold only in its RAM as writes go out (step 62) and come in (step
// 66), running the notifier of each peer's channel (the tracker's cycles: SAVE, SAVE-ACK, destage,
// COMPLETE), queueing the notices each link carries, one frame per run of ranges with the same op,
// and applying the peer's notices to its record (steps 72-80). Its own state lives in the peer
// channels; it reaches the cache, the hardener and the durable-notice queue through the data path.
// Pure and synchronous.
import { assert } from './assert.js';
import type { TrackCache } from './cache.js';
import type { Hardener } from './hardening.js';
import { applyNotice, type NoticeOp, type NotifierAction } from './notifier.js';
import type { PeerChannel } from './peer-channel.js';
import type { DurableRange } from './replica-durable.js';
import type { ReplicaAction, ReplicaCounters, ReplicaSettings } from './replica-types.js';

type Channel = PeerChannel<unknown>;

/** What a hardener waiter is for: a durability op, or a range's destage for one peer's cycle (step 76). */
export type WaiterPurpose = { op: number } | { range: number; peer: string };

/** What the part needs of the data path. */
export interface NoticeHost {
  readonly cache: TrackCache;
  readonly hardener: Hardener;
  readonly channels: readonly Channel[];
  readonly settings: ReplicaSettings;
  readonly counters: ReplicaCounters;
  readonly waiterPurposes: Map<number, WaiterPurpose>;
  nextId: number;
  /** Queue hardening events until an fdatasync makes them true on disk (then the notifiers hear). */
  afterDurable(tracks: number[], ranges: DurableRange[]): void;
  /** An action out, past the send checks (a notice frame is checked as it is built). */
  pushAction(action: ReplicaAction): void;
}

export class NoticePart {
  constructor(private readonly d: NoticeHost) {}

  /**
   * Marks the peer's copy of these tracks as possibly unhardened, and mirrors the mark. Called
   * right after the message carrying them is queued: a notice this starts (a SAVE over the
   * threshold) must follow that message on the link, where the peer marks them (found by the
   * simulator: a SAVE sent ahead of its write left the mark in the peer's current bitmap forever).
   */
  markSent(ch: Channel, tracks: number[], nowMs: number): void {
    for (const t of tracks) ch.record.mark(t);
    this.notifyMarked(ch, tracks, nowMs);
  }

  /**
   * The peer just marked these tracks as ours-maybe-unhardened: mirror the marks. A track that is
   * clean here (initial sync sends hardened data too) counts as hardened at once, or the Fig. 6
   * counter M would wait forever for a harden that never comes.
   */
  notifyMarked(ch: Channel, tracks: number[], nowMs: number): void {
    this.run(ch, ch.notifier.onWriteApplied(tracks, nowMs));
    let clean: number[] | null = null; // rare (an initial sync's hardened data): no array per write
    for (const t of tracks) if (!this.d.cache.isTrackDirty(t)) (clean ??= []).push(t);
    if (clean !== null) this.d.afterDurable(clean, []);
    this.startOverThreshold(ch, tracks);
  }

  run(ch: Channel, actions: NotifierAction[]): void {
    for (const a of actions) {
      if (a.kind === 'send') {
        this.queue(ch, a.notice.op, a.notice.range);
      } else if (a.tracks.length === 0) {
        this.d.afterDurable([], [{ peer: ch.name, range: a.range }]);
      } else {
        // Step 76: harden what was dirty at the ack — every write up to now in those tracks.
        const waiterId = this.d.nextId++;
        this.d.waiterPurposes.set(waiterId, { range: a.range, peer: ch.name });
        this.d.hardener.addWaiter(waiterId, this.d.cache.sequence, a.tracks);
      }
    }
  }

  /**
   * Notices for consecutive ranges with the same op share one frame: ranges, not tracks, keep
   * them cheap. Order on the link is never changed — a SAVE and a CLEAR of one range, or a SAVE and
   * a write, must reach the peer in the order they happened (the mirror swaps at that point).
   */
  private queue(ch: Channel, op: NoticeOp, range: number): void {
    if (!ch.linkIsUp) return;
    if (ch.outNotices !== null && ch.outNotices.op !== op) this.flush(ch);
    ch.outNotices ??= { op, ranges: [] };
    ch.outNotices.ranges.push(range);
  }

  /** Sends the notices queued for `ch` (every peer's when null) as one frame each. */
  flush(only: Channel | null = null): void {
    // Runs before every message sent: no allocation unless a frame goes out.
    if (only !== null) return this.flushOne(only);
    for (const ch of this.d.channels) this.flushOne(ch);
  }

  private flushOne(ch: Channel): void {
    const batch = ch.outNotices;
    if (batch === null) return;
    assert(ch.linkIsUp, 'hardening notices are sent only on a live link (linkDown drops queued ones)');
    ch.outNotices = null;
    this.d.counters.noticesSent += batch.ranges.length;
    this.d.pushAction({ kind: 'send', peer: ch.name, msg: { type: 'notice', op: batch.op, ranges: batch.ranges } });
  }

  startDueCycles(nowMs: number): void {
    const { destageIntervalMs, maxDirtyAgeMs } = this.d.settings.hardening;
    for (const ch of this.d.channels) {
      if (!ch.linkIsUp) continue;
      for (const range of ch.notifier.rangesDue(nowMs - Math.min(destageIntervalMs, maxDirtyAgeMs / 2))) {
        this.run(ch, ch.notifier.startCycle(range)); // step 70 / step 90
      }
    }
  }

  private startOverThreshold(ch: Channel, tracks: number[]): void {
    if (!ch.linkIsUp) return;
    const threshold = this.d.settings.hardening.rangeDirtyThresholdTracks;
    let lastRange = -1;
    for (const t of tracks) {
      const range = this.d.cache.rangeOfTrack(t);
      if (range === lastRange) continue;
      lastRange = range;
      if (ch.notifier.wantsCycle(range) && this.d.cache.dirtyTracksInRange(range) >= threshold) {
        this.run(ch, ch.notifier.startCycle(range));
      }
    }
  }

  /** Hardening notices from `ch`'s peer (seed steps 72-80), and its SAVE-ACKs of our cycles. */
  handle(ch: Channel, op: NoticeOp, ranges: number[]): void {
    this.d.counters.noticesReceived += ranges.length;
    for (const range of ranges) {
      if (range < 0 || range >= ch.record.rangeCount) continue;
      if (op === 'save-ack') {
        if (ch.notifier.rangeState(range) === 'awaiting-ack') this.run(ch, ch.notifier.onSaveAck(range, this.d.cache.dirtyTracksOfRange(range)));
        continue;
      }
      const reply = applyNotice(ch.record, { op, range }); // steps 72-74, 80
      if (reply) this.queue(ch, reply.op, reply.range);
    }
  }
}
