// Hardening notices: how a node tells its peer which ranges it has hardened, so the peer can clear
// its record of them (seed Figs. 5 and 6). One HardeningNotifier per node, about its own hardening;
// the peer's side is tracker-independent (PeerUnhardenedRecord: `save` = step 72 / Fig. 6 toggle,
// `clear` = step 80 / "clear the old bitmap at M = 0").
//
// Theory of operation, per range:
//   destage-scan (Fig. 5): idle → send SAVE (step 70) → on SAVE-ACK (74), harden every track of the
//     range dirty at the ack (76; the shell waits for writes up to the ack sequence) → send CLEAR
//     (78) → idle. A range wants a cycle once anything was written to it since its last SAVE.
//   toggle-counter (Fig. 6): a mirror of the peer's record; each hardened track clears its mirror
//     bit without any notice (N--). A cycle sends SAVE ("about to toggle", step 90), swaps the
//     mirror (M = N of the old bitmap, step 94), then counts M down as old-marked tracks are
//     hardened or re-marked by a write (steps 96-104); at M = 0 (step 110) it sends CLEAR.
//   selective: as destage-scan, but on SAVE-ACK it hardens only tracks marked both in the old
//     mirror bitmap and dirty in the local cache.
//
// Where the mirror swaps: exactly at the point of the ordered write stream where the peer saves
// its current bitmap, so both sides put the same writes in "old". The primary sends the writes,
// and the peer saves after every write sent before the SAVE: the primary swaps when it sends SAVE.
// The secondary receives the writes, and the primary's SAVE-ACK follows every write it sent before
// saving: the secondary swaps when SAVE-ACK arrives. (DESIGN.md: the FIFO link is what makes it so.)
//
// Pure: actions out, no I/O.
import { assert } from './assert.js';
import { PeerUnhardenedRecord } from './peer-record.js';

export type TrackerKind = 'destage-scan' | 'toggle-counter' | 'selective';

export type NoticeOp = 'save' | 'save-ack' | 'clear';
export interface Notice {
  op: NoticeOp;
  range: number;
}

export type NotifierAction =
  | { kind: 'send'; notice: Notice }
  /** Harden these tracks (writes up to now), then call rangeHardened(range). */
  | { kind: 'harden-range'; range: number; tracks: number[] };

type RangeState = 'idle' | 'awaiting-ack' | 'hardening' | 'counting';

export class HardeningNotifier {
  /** toggle-counter and selective: our copy of the peer's record of us. */
  private readonly mirror: PeerUnhardenedRecord | null;
  private readonly state: RangeState[];
  /** Written since the last SAVE: the range has marks on the peer that a cycle would clear. */
  private readonly written: Uint8Array;
  /** Fig. 6 counters: N = marks in the current mirror bitmap, M = old marks left. */
  private readonly n: Int32Array;
  private readonly m: Int32Array;
  /** Per range: did this cycle's mirror swap happen at SAVE (we sent writes then)? Roles may change mid-cycle. */
  private readonly swappedAtSave: Uint8Array;
  /** When a range first wanted a cycle (for the interval trigger). */
  private readonly wantedSinceMs: Float64Array;
  /**
   * At or before the earliest wantedSinceMs of a range that wants a cycle (null: none wants
   * one), kept in O(1) per write and made exact by rangesDue: what nextDueSinceMs reports.
   */
  private earliestWantedBoundMs: number | null = null;
  noticesSent = 0;

  constructor(
    readonly kind: TrackerKind,
    readonly trackCount: number,
    readonly rangeTracks: number,
    /** True on the primary (it sends the writes); decides where the mirror swaps. */
    private sendsWrites: boolean,
  ) {
    const rangeCount = Math.ceil(trackCount / rangeTracks);
    this.mirror = kind === 'destage-scan' ? null : new PeerUnhardenedRecord(trackCount, rangeTracks);
    this.state = new Array<RangeState>(rangeCount).fill('idle');
    this.written = new Uint8Array(rangeCount);
    this.n = new Int32Array(rangeCount);
    this.m = new Int32Array(rangeCount);
    this.wantedSinceMs = new Float64Array(rangeCount).fill(-1);
    this.swappedAtSave = new Uint8Array(rangeCount);
  }

  get rangeCount(): number {
    return this.state.length;
  }

  setSendsWrites(sendsWrites: boolean): void {
    this.sendsWrites = sendsWrites;
  }

  rangeOf(track: number): number {
    return Math.floor(track / this.rangeTracks);
  }

  /** A mirrored write (or sync data) was applied to these tracks here: the peer marks them too. */
  onWriteApplied(tracks: number[], nowMs: number): NotifierAction[] {
    const actions: NotifierAction[] = [];
    for (const t of tracks) {
      const range = this.rangeOf(t);
      if (this.wantedSinceMs[range]! < 0) {
        this.wantedSinceMs[range] = nowMs;
        this.earliestWantedBoundMs ??= nowMs;
      }
      this.written[range] = 1;
      if (this.mirror === null) continue;
      // Fig. 6 steps 96-102: a track not yet in the new bitmap is marked there; if it was in the
      // old one it no longer needs hardening for the old bitmap's sake (M--).
      if (this.mirror.mark(t)) this.n[range]++;
      if (this.kind === 'toggle-counter' && this.mirror.clearOldTrack(t)) this.decrementM(range, actions);
    }
    return actions;
  }

  /** Hardening made these tracks clean (every write in them is on the store). */
  onTracksClean(tracks: number[]): NotifierAction[] {
    const actions: NotifierAction[] = [];
    if (this.mirror === null) return actions;
    for (const t of tracks) {
      const range = this.rangeOf(t);
      // Steps 104-106: clear the new bit (N--); otherwise step 100-102 on the old bit (M--).
      if (this.mirror.clearCurrentTrack(t)) this.n[range]--;
      else if (this.kind === 'toggle-counter' && this.mirror.clearOldTrack(t)) this.decrementM(range, actions);
    }
    return actions;
  }

  private decrementM(range: number, actions: NotifierAction[]): void {
    this.m[range]--;
    assert(this.m[range]! >= 0, 'toggle counter M went negative');
    if (this.m[range] === 0 && this.state[range] === 'counting') this.finishCycle(range, actions);
  }

  /** Does this range have marks the peer should be told about? */
  wantsCycle(range: number): boolean {
    // Every tracker needs a cycle after any write, even if LRU hardened it since: the peer still
    // has the mark, and only a SAVE/CLEAR pair removes it.
    return this.state[range] === 'idle' && this.written[range] === 1;
  }

  /** Marks in the current mirror (toggle-counter N), or 0: the threshold trigger. */
  pendingTracks(range: number): number {
    return this.n[range] ?? 0;
  }

  /** Ranges that want a cycle and have wanted one since at or before `sinceMs`. */
  rangesDue(sinceMs: number): number[] {
    const out: number[] = [];
    let earliestLeft: number | null = null;
    for (let r = 0; r < this.state.length; r++) {
      const since = this.wantedSinceMs[r]!;
      if (since < 0 || !this.wantsCycle(r)) continue;
      if (since <= sinceMs) out.push(r);
      else if (earliestLeft === null || since < earliestLeft) earliestLeft = since;
    }
    this.earliestWantedBoundMs = earliestLeft;
    return out;
  }

  /**
   * At or before the time the first range began wanting a cycle that has not been started (null:
   * none): a range falls due `delay` after it. A lower bound, exact after each rangesDue.
   */
  get earliestWantedSinceMs(): number | null {
    return this.earliestWantedBoundMs;
  }

  /** Starts a cycle (destage scan or toggle) for an idle range: step 70 / step 90. */
  startCycle(range: number): NotifierAction[] {
    assert(this.state[range] === 'idle', `range ${range} already in a cycle`);
    this.state[range] = 'awaiting-ack';
    this.written[range] = 0;
    this.wantedSinceMs[range] = -1;
    this.swappedAtSave[range] = this.sendsWrites ? 1 : 0;
    if (this.sendsWrites) this.swapMirror(range);
    return [this.send('save', range)];
  }

  /** The peer saved its current bitmap as old (step 74 / step 92). */
  onSaveAck(range: number, dirtyTracksOfRange: number[]): NotifierAction[] {
    assert(this.state[range] === 'awaiting-ack', `unexpected SAVE-ACK for range ${range}`);
    if (this.swappedAtSave[range] === 0) this.swapMirror(range);
    const actions: NotifierAction[] = [];
    if (this.kind === 'toggle-counter') {
      this.state[range] = 'counting';
      if (this.m[range] === 0) this.finishCycle(range, actions);
      return actions;
    }
    this.state[range] = 'hardening';
    // destage-scan: every dirty track of the range; selective: only old-mirror tracks among them.
    const tracks = this.mirror === null ? dirtyTracksOfRange : dirtyTracksOfRange.filter((t) => this.mirror!.isOld(t));
    actions.push({ kind: 'harden-range', range, tracks });
    return actions;
  }

  /** The tracks of a harden-range action are hardened (step 76 done). */
  rangeHardened(range: number): NotifierAction[] {
    assert(this.state[range] === 'hardening', `range ${range} was not being destaged`);
    const actions: NotifierAction[] = [];
    this.finishCycle(range, actions);
    return actions;
  }

  /** Step 78 / step 110: tell the peer to clear the old bitmap of the range. */
  private finishCycle(range: number, actions: NotifierAction[]): void {
    this.mirror?.clearOld(range);
    this.m[range] = 0;
    this.state[range] = 'idle';
    // Written during the cycle: it wants the next one, due from then (rangesDue left it out of
    // the bound while it was busy).
    const since = this.wantedSinceMs[range]!;
    if (since >= 0) this.earliestWantedBoundMs = Math.min(this.earliestWantedBoundMs ?? since, since);
    actions.push(this.send('clear', range));
  }

  private swapMirror(range: number): void {
    if (this.mirror === null) return;
    // Step 94: the old bitmap is locked with M = N marks; the new one starts at N = 0.
    this.mirror.saveCurrentAsOld(range);
    this.m[range] = this.n[range]!;
    this.n[range] = 0;
  }

  private send(op: NoticeOp, range: number): NotifierAction {
    this.noticesSent++;
    return { kind: 'send', notice: { op, range } };
  }

  /**
   * The link dropped or came up: cycles in progress are void (the peer's record became part of
   * the resync set, and a new link starts from the dirty tracks each side announces).
   */
  reset(): void {
    this.state.fill('idle');
    this.written.fill(0);
    this.wantedSinceMs.fill(-1);
    this.earliestWantedBoundMs = null;
    this.n.fill(0);
    this.m.fill(0);
    this.mirror?.reset();
  }

  rangeState(range: number): RangeState {
    return this.state[range]!;
  }

  /** For tests and the simulator: the mirror's view of the peer's united bitmap. */
  mirrorUnited(track: number): boolean {
    return this.mirror?.isUnited(track) ?? false;
  }
}

/** The peer's side of a notice: tracker-independent (steps 72-74 and 80). */
export function applyNotice(record: PeerUnhardenedRecord, notice: Notice): Notice | null {
  if (notice.op === 'save') {
    record.saveCurrentAsOld(notice.range);
    return { op: 'save-ack', range: notice.range };
  }
  if (notice.op === 'clear') record.clearOld(notice.range);
  return null;
}
