// Checksum comparisons with a peer, a part the link half (replica-link.ts) owns (issue 14 items
// 4-5): the online verify a primary runs against one in-sync secondary, the compare phase of a
// checksum resync, and, on the other side, the answers to a peer's sumReq. The plan of one
// comparison and why a track written meanwhile is never judged on its checksums is in
// track-compare.ts; this part starts the batches, routes the checksums (the shell reads and
// hashes the tracks: `sum-read`), ends or aborts a comparison and keeps the last verify's result.
// It never starts the resync that follows: the link half does, once a comparison is complete
// (ReplicaCore routes the events and asks it). Pure and synchronous.
import { TrackBitmap } from './bitmap.js';
import { earlierMs } from './backoff.js';
import { MAX_SUM_TRACKS } from './link-messages.js';
import type { DataChannel as Channel, DataPath, ReplicaSettings } from './replica-data.js';
import type { LinkMessage } from './replica-types.js';
import type { SyncProgress } from './resync.js';
import type { ResyncPlanSpec } from './resync-sender.js';
import { TrackCompare, type ComparePace } from './track-compare.js';

/** Bytes of tracks per batch (one sumReq, one read on each side). */
const COMPARE_BATCH_BYTES = 1024 * 1024;
const COMPARE_WINDOW_BATCHES = 4;
/** A verify compares a track written while it was compared again, at most this often. */
const VERIFY_MAX_RECHECKS = 3;
/** Offsets of differing tracks a verify lists (status, log): the count is always exact. */
const MAX_OFFSETS_LISTED = 4096;
/** Offsets in the log line of a verify's end. */
const MAX_OFFSETS_LOGGED = 32;

/** An online verify, running or ended (/status `verify`, `twinblock verify`). */
export interface VerifyReport {
  id: number;
  peer: string;
  state: 'running' | 'done' | 'aborted';
  /** Differing tracks become out of sync for the peer and are resent. */
  resync: boolean;
  startedAtMs: number;
  endedAtMs: number | null;
  totalBytes: number;
  /** Bytes of tracks judged so far. */
  doneBytes: number;
  /** Bytes whose checksums were compared, a track compared again counted again. */
  comparedBytes: number;
  rateBytesPerSec: number;
  differingTracks: number;
  /** Byte offsets of the differing tracks, ascending (at most MAX_OFFSETS_LISTED). */
  differingOffsets: number[];
  /** Tracks written every time they were compared: neither equal nor differing. */
  unverifiedTracks: number;
  /** Why it was aborted. */
  reason: string | null;
}

/** What a complete comparison found: the tracks to send (resync), or the verify's differences. */
export interface CompareOutcome {
  purpose: 'verify' | 'resync';
  differing: TrackBitmap;
  comparedBytes: number;
  /** The resync it belongs to (resync only). */
  spec: ResyncPlanSpec | null;
  /** The verify asked for a resync of what differs. */
  resync: boolean;
}

type SumRead = { answer: string; reqId: number } | { own: string };

export class ComparePart {
  /** The shell's reads of checksums in flight: an answer to a peer's sumReq, or a batch of ours. */
  private readonly reads = new Map<number, SumRead>();
  /** The last verify (running or ended) and its comparison while it runs. */
  private verify: { report: VerifyReport; compare: TrackCompare | null } | null = null;
  /** A resync target waits for its first fdatasync since a crash, and the sumReqs held meanwhile. */
  private syncAwaited = false;
  private readonly held: { ch: Channel; msg: Extract<LinkMessage, { type: 'sumReq' }> }[] = [];
  /** Peers that answered a sumReq of the running comparison without checksums (logged once). */
  private readonly peerRefusedBefore = new Set<string>();
  /** The resync spec of each channel's compare phase. */
  private readonly resyncSpecs = new Map<string, ResyncPlanSpec>();

  constructor(private readonly data: DataPath, private readonly settings: ReplicaSettings) {}

  private pace(rateBytesPerSec: number): ComparePace {
    const batchTracks = Math.max(1, Math.min(MAX_SUM_TRACKS, Math.floor(COMPARE_BATCH_BYTES / this.settings.geometry.trackSizeBytes)));
    return { batchTracks, windowBatches: COMPARE_WINDOW_BATCHES, rateBytesPerSec };
  }

  private newCompare(purpose: 'verify' | 'resync', tracks: TrackBitmap, rateBytesPerSec: number, nowMs: number): TrackCompare {
    const { trackSizeBytes, volumeSizeBytes } = this.settings.geometry;
    return new TrackCompare(purpose, tracks, trackSizeBytes, volumeSizeBytes, this.pace(rateBytesPerSec), nowMs, purpose === 'verify' ? VERIFY_MAX_RECHECKS : 0);
  }

  // ================================================================ starting

  /**
   * An online verify of every track against `peer` (null: the only peer). Refused (the reason)
   * unless this node is primary, the peer is connected and in sync, and no verify runs. Starts no
   * batch: the caller pumps.
   */
  startVerify(peer: string | null, resync: boolean, nowMs: number): { ok: true; report: VerifyReport } | { ok: false; error: string } {
    if (!this.settings.mirrored) return { ok: false, error: 'a standalone node has no peer to verify against' };
    if (peer === null && this.data.channels.length > 1) return { ok: false, error: `name the peer to verify against (one of ${this.data.channels.map((c) => c.name).join(', ')})` };
    const ch = peer === null ? this.data.channels[0]! : this.data.channels.find((c) => c.name === peer);
    if (ch === undefined) return { ok: false, error: `no peer named ${peer}: this node's peers are ${this.data.channels.map((c) => c.name).join(', ')}` };
    if (this.data.role !== 'primary') return { ok: false, error: 'verify runs on the primary (it compares its tracks with a secondary\'s)' };
    if (!ch.linkIsUp || ch.state !== 'in-sync') return { ok: false, error: `${ch.name} is ${ch.state}${ch.linkIsUp ? '' : ' (not connected)'}: a verify needs a peer in sync` };
    if (this.verify?.report.state === 'running') return { ok: false, error: `a verify against ${this.verify.report.peer} is running` };
    const all = new TrackBitmap(this.data.cache.trackCount);
    all.setAll();
    const rate = this.settings.verifyRateBytesPerSec ?? this.settings.syncRateBytesPerSec;
    ch.compare = this.newCompare('verify', all, rate, nowMs);
    this.peerRefusedBefore.delete(ch.name);
    const report: VerifyReport = {
      id: this.data.nextId++, peer: ch.name, state: 'running', resync, startedAtMs: nowMs, endedAtMs: null, totalBytes: ch.compare.totalBytes,
      doneBytes: 0, comparedBytes: 0, rateBytesPerSec: 0, differingTracks: 0, differingOffsets: [], unverifiedTracks: 0, reason: null,
    };
    this.verify = { report, compare: ch.compare };
    this.data.emit({ kind: 'log', level: 'info', msg: 'online verify started', fields: { peer: ch.name, bytes: report.totalBytes, rateBytesPerSec: rate, resync } });
    // The caller pumps its first batches (ReplicaCore.startVerify), and acts if that completes it.
    return { ok: true, report: { ...report } };
  }

  /**
   * The compare phase of a checksum resync into `ch`'s peer (issue 14 item 5): syncStart (its
   * `compare` flag tells the target that not every track named will be rewritten), then batches
   * of checksums; the link half sends what differs once complete.
   */
  startResync(ch: Channel, tracks: TrackBitmap, spec: ResyncPlanSpec, nowMs: number): void {
    this.abort(ch, 'a resync of the peer started', nowMs); // a verify is for a peer in sync only
    ch.compare = this.newCompare('resync', tracks, this.settings.syncRateBytesPerSec, nowMs);
    this.peerRefusedBefore.delete(ch.name);
    this.resyncSpecs.set(ch.name, spec);
    ch.event('resyncStarted');
    this.data.send(ch, { type: 'syncStart', totalBytes: ch.compare.totalBytes, seq: this.data.role === 'primary' ? this.data.sendSeq : 0, compare: true });
    const msg = spec.initial === true ? 'initial sync of a new peer started' : 'full resync of the peer started';
    this.data.emit({ kind: 'log', level: spec.initial === true ? 'info' : 'warn', msg, fields: { tracks: tracks.count(), bytes: ch.compare.totalBytes, reason: spec.reason, checksums: true } });
    this.pump(ch, nowMs);
  }

  // ================================================================ batches

  pumpAll(nowMs: number): Channel[] {
    const done: Channel[] = [];
    for (const ch of this.data.channels) if (this.pump(ch, nowMs)) done.push(ch);
    return done;
  }

  /** Starts the batches now due on `ch`; true when its comparison is complete. */
  pump(ch: Channel, nowMs: number): boolean {
    const compare = ch.compare;
    if (compare === null) return false;
    if (compare.purpose === 'verify' && !this.verifyMayGoOn(ch, nowMs)) return false;
    if (!ch.linkWritable) return compare.complete;
    for (const batch of compare.batchesDue(nowMs, () => this.data.nextId++)) {
      this.data.send(ch, { type: 'sumReq', id: batch.id, firstTrack: batch.firstTrack, trackCount: batch.trackCount });
      this.reads.set(batch.id, { own: ch.name });
      this.emitRead(batch.id, batch.firstTrack, batch.trackCount);
    }
    return compare.complete;
  }

  private emitRead(readId: number, firstTrack: number, trackCount: number): void {
    const { trackSizeBytes, volumeSizeBytes } = this.settings.geometry;
    const offsetBytes = firstTrack * trackSizeBytes;
    this.data.emit({ kind: 'sum-read', readId, offsetBytes, lengthBytes: Math.min(trackCount * trackSizeBytes, volumeSizeBytes - offsetBytes) });
  }

  /** A verify goes on only while this node is primary and the peer in sync; otherwise it ends here. */
  private verifyMayGoOn(ch: Channel, nowMs: number): boolean {
    if (this.data.role === 'primary' && ch.linkIsUp && ch.state === 'in-sync') return true;
    this.abort(ch, this.data.role !== 'primary' ? 'this node is no longer primary' : `${ch.name} is ${ch.state}`, nowMs);
    return false;
  }

  /** When a rate-capped comparison may start its next batch (null: none waits on time). */
  deadlineMs(): number | null {
    let at: number | null = null;
    for (const ch of this.data.channels) if (ch.compare !== null && ch.linkWritable) at = earlierMs(at, ch.compare.nextBatchAtMs());
    return at;
  }

  // ================================================================ checksums in

  /** The peer asks for checksums (in link order): this node reads and hashes them through its cache. */
  onSumRequest(ch: Channel, msg: Extract<LinkMessage, { type: 'sumReq' }>): void {
    const refused = (): void => this.data.send(ch, { type: 'sumReply', id: msg.id, ok: false, sums: new Uint8Array(0) });
    if (msg.trackCount < 1 || msg.firstTrack + msg.trackCount > this.data.cache.trackCount) {
      this.data.emit({ kind: 'log', level: 'warn', msg: 'checksum request out of range: refused', fields: { peer: ch.name, firstTrack: msg.firstTrack, trackCount: msg.trackCount } });
      return refused();
    }
    const { trackSizeBytes, volumeSizeBytes } = this.settings.geometry;
    if (ch.intake.active) ch.intake.answered(Math.min(msg.trackCount * trackSizeBytes, volumeSizeBytes - msg.firstTrack * trackSizeBytes));
    // A resync target vouches only for what is on its disk: not if it lost a writeback, not before
    // an fdatasync of its own after a crash (held until then), nor for tracks written since its
    // last one. Else a track equal in its page cache was skipped, then lost to a power loss, and
    // no bitmap had it (simulator, seed 271).
    if (ch.intake.active && this.syncAwaited) return void this.held.push({ ch, msg });
    if (ch.intake.active && (ch.intake.refusesSums || this.unsynced(msg.firstTrack, msg.trackCount))) return refused();
    const readId = this.data.nextId++;
    this.reads.set(readId, { answer: ch.name, reqId: msg.id });
    this.emitRead(readId, msg.firstTrack, msg.trackCount);
  }

  /** A resync target that crashed: an fdatasync first (a local op nobody awaits), then sums. */
  syncBeforeSums(): void {
    if (this.data.storeSyncedSinceStart || this.syncAwaited) return;
    this.syncAwaited = true;
    this.data.startOp({ internal: 'syncBeforeSums' }, { seq: this.data.cache.sequence, tracks: [] }, null);
  }

  /**
   * An fdatasync ended: once one succeeded, the sumReqs held for it are answered, in order; if one
   * failed, they are refused (their tracks are sent) rather than held for good.
   */
  storeSynced(ok: boolean): void {
    if (!this.syncAwaited || (ok && !this.data.storeSyncedSinceStart)) return;
    this.syncAwaited = false;
    for (const { ch, msg } of this.held.splice(0)) {
      if (!ok) ch.intake.refusesSums = true;
      if (ch.linkIsUp && ch.intake.active) this.onSumRequest(ch, msg);
    }
  }

  private unsynced(firstTrack: number, trackCount: number): boolean {
    const awaitingSync = new Set(this.data.durable.tracks);
    for (let t = firstTrack; t < firstTrack + trackCount; t++) if (this.data.cache.isTrackDirty(t) || awaitingSync.has(t)) return true;
    return false;
  }

  /**
   * The shell read and hashed the tracks of read `readId` (sums null: the read failed). An answer
   * goes to the peer that asked, if its link still lives; a batch of ours is judged once the
   * peer's half is in too. Returns the channel whose comparison this completed.
   */
  sumsRead(readId: number, sums: Uint8Array | null, nowMs: number): Channel | null {
    const read = this.reads.get(readId);
    if (read === undefined) return null; // its link or its comparison ended meanwhile
    this.reads.delete(readId);
    if ('answer' in read) {
      const ch = this.data.channelOf(read.answer);
      if (ch.linkIsUp) this.data.send(ch, { type: 'sumReply', id: read.reqId, ok: sums !== null, sums: sums ?? new Uint8Array(0) });
      return null;
    }
    const ch = this.data.channelOf(read.own);
    if (sums === null) this.data.emit({ kind: 'log', level: 'error', msg: 'checksum read failed: the tracks count as differing', fields: { peer: ch.name } });
    return ch.compare?.localSums(readId, sums) === true ? this.advanced(ch, nowMs) : null;
  }

  /** The peer's checksums of one of our batches. Returns `ch` when its comparison is complete. */
  onSumReply(ch: Channel, msg: Extract<LinkMessage, { type: 'sumReply' }>, nowMs: number): Channel | null {
    if (!msg.ok && !this.peerRefusedBefore.has(ch.name)) this.data.emit({ kind: 'log', level: 'warn', msg: 'the peer gave no checksums for some tracks (a read failed, or its store lost a writeback): they are sent', fields: { peer: ch.name } });
    if (!msg.ok) this.peerRefusedBefore.add(ch.name);
    return ch.compare?.remoteSums(msg.id, msg.ok ? msg.sums : null) === true ? this.advanced(ch, nowMs) : null;
  }

  private advanced(ch: Channel, nowMs: number): Channel | null {
    return this.pump(ch, nowMs) ? ch : null;
  }

  // ================================================================ ending

  /**
   * Ends `ch`'s complete comparison and says what it found. A verify's result is kept (status)
   * and logged; a resync's spec goes back to the link half with the tracks to send.
   */
  finish(ch: Channel, nowMs: number): CompareOutcome {
    const compare = ch.compare!;
    ch.compare = null;
    const comparedBytes = compare.progress().comparedBytes;
    ch.resyncBytesCompared += compare.purpose === 'resync' ? comparedBytes : 0;
    if (compare.purpose === 'resync') {
      const spec = this.resyncSpecs.get(ch.name) ?? null;
      this.resyncSpecs.delete(ch.name);
      return { purpose: 'resync', differing: compare.differing, comparedBytes, spec, resync: false };
    }
    const report = this.settleVerify('done', null, nowMs);
    const fields = { peer: ch.name, differingTracks: report.differingTracks, offsets: report.differingOffsets.slice(0, MAX_OFFSETS_LOGGED), unverifiedTracks: report.unverifiedTracks, bytes: report.totalBytes, ms: nowMs - report.startedAtMs };
    if (report.differingTracks > 0) this.data.emit({ kind: 'log', level: 'warn', msg: 'online verify found tracks that differ', fields: { ...fields, resync: report.resync } });
    else this.data.emit({ kind: 'log', level: 'info', msg: 'online verify done: no track differs', fields });
    return { purpose: 'verify', differing: compare.differing, comparedBytes, spec: null, resync: report.resync };
  }

  /** A comparison with `ch` ends unfinished (its link dropped, its peer was promoted, ...). */
  abort(ch: Channel, reason: string, nowMs: number): void {
    const compare = ch.compare;
    for (const [id, read] of this.reads) if (('own' in read ? read.own : read.answer) === ch.name) this.reads.delete(id);
    for (let i = this.held.length - 1; i >= 0; i--) if (this.held[i]!.ch === ch) this.held.splice(i, 1);
    if (compare === null) return;
    ch.compare = null;
    this.resyncSpecs.delete(ch.name);
    if (compare.purpose === 'resync') {
      ch.resyncBytesCompared += compare.progress().comparedBytes;
      return;
    }
    this.settleVerify('aborted', reason, nowMs);
    this.data.emit({ kind: 'log', level: 'warn', msg: 'online verify aborted', fields: { peer: ch.name, reason } });
  }

  private settleVerify(state: 'done' | 'aborted', reason: string | null, nowMs: number): VerifyReport {
    const v = this.verify!;
    v.report = this.reportOf(v.report, v.compare!, nowMs);
    v.report.state = state;
    v.report.endedAtMs = nowMs;
    v.report.reason = reason;
    v.compare = null;
    return v.report;
  }

  private reportOf(base: VerifyReport, compare: TrackCompare, nowMs: number): VerifyReport {
    const p = compare.progress();
    const offsets: number[] = [];
    const { trackSizeBytes } = this.settings.geometry;
    for (let t = 0; t < compare.differing.trackCount && offsets.length < MAX_OFFSETS_LISTED; t++) if (compare.differing.has(t)) offsets.push(t * trackSizeBytes);
    const elapsedSec = Math.max(0.001, (nowMs - base.startedAtMs) / 1000);
    return {
      ...base, doneBytes: p.doneBytes, comparedBytes: p.comparedBytes, rateBytesPerSec: Math.round(p.comparedBytes / elapsedSec),
      differingTracks: p.differingTracks, differingOffsets: offsets, unverifiedTracks: p.unverifiedTracks,
    };
  }

  /** The last verify, with its progress while it runs; null before the first. */
  verifyReport(nowMs: number): VerifyReport | null {
    const v = this.verify;
    if (v === null) return null;
    return v.compare === null ? { ...v.report } : this.reportOf(v.report, v.compare, nowMs);
  }

  /** A checksum resync's compare phase, for status (`peers[].sync`, phase `compare`). */
  resyncProgress(ch: Channel, nowMs: number): SyncProgress | null {
    const compare = ch.compare;
    if (compare === null || compare.purpose !== 'resync') return null;
    const p = compare.progress();
    const elapsedSec = Math.max(0.001, (nowMs - compare.startMs) / 1000);
    const rate = p.doneBytes / elapsedSec;
    const left = p.totalBytes - p.doneBytes;
    return {
      totalBytes: p.totalBytes, doneBytes: p.doneBytes, tracksLeft: Math.ceil(left / this.settings.geometry.trackSizeBytes), rateBytesPerSec: Math.round(rate),
      etaSeconds: rate > 0 ? Math.ceil(left / rate) : null, full: true, phase: 'compare', comparedBytes: p.comparedBytes, differingTracks: p.differingTracks,
    };
  }
}
