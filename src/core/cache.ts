// The volatile track cache (DESIGN.md "cache"; seed Fig. 1, cache 32).
//
// Theory of operation
// -------------------
// The volume is cut into tracks of `trackSizeBytes` (one cache line, and later one bitmap bit).
// A line holds per-block masks (block = 512 bytes, the NBD minimum block size we advertise):
//   valid[b] — the cache holds the current bytes of block b;
//   dirty[b] — those bytes are not yet hardened (written to the store).
// A sub-track write only sets valid+dirty for the blocks it covers, so it never reads the store
// (DESIGN.md "Write path"); a read takes valid blocks from the cache and the rest from the store.
//
// A line whose `data` is null holds zeros in every valid block: TRIM and WRITE_ZEROES over whole
// tracks cost no data memory, and harden as store zero-writes ("zero runs").
//
// Hardening takes a *snapshot* of the dirty runs of some lines (views of their buffers; a write to
// a line while its job runs copies the line first, so the store write stays stable), marks those
// lines `hardening` so no second job touches them (the store never sees two overlapping writes at
// once), and on completion clears the dirty blocks that were not written again meanwhile
// (`rewritten`). Adjacent dirty runs of neighbouring tracks coalesce into one store write, which
// also spans a short clean gap the cache holds valid (src/core/harden-runs.ts).
//
// Reads (issue 11): a host read that misses takes the blocks from the store, and they stay as
// valid, clean blocks of their lines when there is room, so the next read of them is served from
// RAM. Reads fill only free room (they evict nothing), lines that only reads filled sit in their
// own LRU and are evicted before lines hosts wrote, and no read takes room while a write waits.
// A host read that starts where the previous one ended also reads ahead (src/core/cache-reads.ts).
// Only reads the shell marks as host reads fill: a resync's scan of the volume would only push
// out what hosts use.
//
// Capacity: every line is charged against `capacityBytes` (a full line when it holds data, a small
// fixed cost for a zero line). When a write needs room and no clean, unpinned line can be evicted,
// `write` returns false and changes nothing: the caller waits for hardening (back-pressure), so
// memory stays bounded and no write ever fails for lack of room.
//
// Pure: no I/O, no clocks. Time (`nowMs`) is an argument; the shell does the store I/O.
import { assert } from './assert.js';
import { BLOCK_SIZE_BYTES, type CacheGeometry, type CacheStats, type HardenJob, type ReadCounters, type ReadPlan, type TrackLine } from './cache-types.js';
import { JobChoice, snapshotRuns } from './harden-runs.js';
import { HardenHolds } from './harden-holds.js';
import { LineBufferPool, SpareLines } from './line-buffer-pool.js';
import { CacheReads } from './cache-reads.js';

// The shapes the cache hands out are part of its interface: importers need only this file.
export { BLOCK_SIZE_BYTES } from './cache-types.js';
export type { CacheGeometry, CacheStats, HardenJob, HardenRun, ReadCounters, ReadPlan } from './cache-types.js';

/** Charge of a line that holds no data buffer (zeros): bookkeeping only. */
const ZERO_LINE_CHARGE_BYTES = 1024;

export class TrackCache {
  readonly geometry: CacheGeometry;
  readonly trackCount: number;
  readonly rangeCount: number;
  private readonly lines = new Map<number, TrackLine>();
  /** Clean lines a host wrote, least recently used first (Map keeps insertion order). */
  private readonly cleanLru = new Map<number, TrackLine>();
  /** Clean lines only reads filled, least recently used first: evicted before cleanLru. */
  private readonly readLru = new Map<number, TrackLine>();
  /** Where evictFor looks, in order: lines only reads filled go first. */
  private readonly evictionOrder = [this.readLru, this.cleanLru];
  /** A write found no room and has not succeeded since: reads fill nothing until one does. */
  private roomRefused = false;
  /** Dirty lines, roughly oldest first. */
  private readonly dirtyLines = new Map<number, TrackLine>();
  private readonly hardeningJobs = new Map<number, HardenJob>();
  /** Tracks that must not be hardened yet (src/core/harden-holds.ts). */
  private readonly hardenHolds = new HardenHolds();
  /** The read side: plans, pins, overlay, readahead and fill (src/core/cache-reads.ts). */
  private readonly reads: CacheReads;
  private readonly rangeDirtyTracks: Uint32Array;
  /** Full-track buffers of evicted lines, reused for new lines. */
  private readonly bufferPool: LineBufferPool;
  /** Evicted full-track lines, reused by lineFor. */
  private readonly spareLines: SpareLines;
  private chargedBytes = 0;
  /** Charge of the dirty lines: the pressure signal, kept incrementally (writes are hot). */
  private dirtyChargeBytes = 0;
  /** See oldestDirtyBound. */
  private oldestDirtyBoundMs: number | null = null;
  private writeSeq = 0;
  private nextJobId = 1;

  constructor(geometry: CacheGeometry) {
    const { volumeSizeBytes, trackSizeBytes, capacityBytes, rangeTracks } = geometry;
    assert(volumeSizeBytes > 0 && volumeSizeBytes % BLOCK_SIZE_BYTES === 0, 'volume size must be a positive multiple of 512');
    assert(trackSizeBytes >= BLOCK_SIZE_BYTES && (trackSizeBytes & (trackSizeBytes - 1)) === 0, 'trackSize must be a power of two ≥ 512');
    assert(capacityBytes >= 2 * trackSizeBytes, 'cache must hold at least two tracks');
    assert(rangeTracks >= 1, 'rangeTracks must be ≥ 1');
    this.geometry = { ...geometry };
    this.trackCount = Math.ceil(volumeSizeBytes / trackSizeBytes);
    this.rangeCount = Math.ceil(this.trackCount / rangeTracks);
    this.rangeDirtyTracks = new Uint32Array(this.rangeCount);
    this.bufferPool = new LineBufferPool(trackSizeBytes, capacityBytes / 4);
    this.spareLines = new SpareLines(trackSizeBytes, Math.ceil(capacityBytes / 4 / trackSizeBytes));
    this.reads = new CacheReads({
      geometry: this.geometry,
      line: (track) => this.lines.get(track),
      // No write waits for room, and dirty data leaves room for what a fill may bring.
      mayFillReads: (aheadBytes) => !this.roomRefused && this.dirtyChargeBytes + aheadBytes <= this.geometry.capacityBytes / 2,
      fillTrack: (track, fromBytes, toBytes, bytes) => this.fillTrack(track, fromBytes, toBytes, bytes),
    });
  }

  /** The current write sequence: every write and zero bumps it. Flush waits are expressed in it. */
  get sequence(): number {
    return this.writeSeq;
  }

  rangeOfTrack(track: number): number {
    return Math.floor(track / this.geometry.rangeTracks);
  }

  dirtyTracksInRange(range: number): number {
    return this.rangeDirtyTracks[range] ?? 0;
  }

  // ---------------------------------------------------------------- writes

  /**
   * Puts `data` at `offsetBytes` (both 512-aligned) into the cache, dirty. Returns false, changing
   * nothing, when the cache has no room: the caller retries after hardening frees lines.
   */
  write(offsetBytes: number, data: Uint8Array, nowMs: number): boolean {
    return this.apply(offsetBytes, data.length, nowMs, data);
  }

  /** TRIM and WRITE_ZEROES: zero runs in the cache, hardened as store zero-writes. */
  writeZeroes(offsetBytes: number, lengthBytes: number, nowMs: number): boolean {
    return this.apply(offsetBytes, lengthBytes, nowMs, null);
  }

  private apply(offsetBytes: number, lengthBytes: number, nowMs: number, data: Uint8Array | null): boolean {
    this.assertAlignedInVolume(offsetBytes, lengthBytes);
    if (lengthBytes === 0) return true;
    this.roomRefused = !this.makeRoom(offsetBytes, lengthBytes, data !== null);
    if (this.roomRefused) return false;
    const seq = ++this.writeSeq;
    const { trackSizeBytes } = this.geometry;
    const endBytes = offsetBytes + lengthBytes;
    for (let pos = offsetBytes; pos < endBytes;) {
      const track = Math.floor(pos / trackSizeBytes);
      const lineStart = track * trackSizeBytes;
      const line = this.lineFor(track);
      const chunkEnd = Math.min(endBytes, lineStart + line.lengthBytes);
      this.fillLine(line, pos - lineStart, chunkEnd - pos, data === null ? null : data.subarray(pos - offsetBytes, chunkEnd - offsetBytes));
      this.markDirty(line, (pos - lineStart) / BLOCK_SIZE_BYTES, (chunkEnd - lineStart) / BLOCK_SIZE_BYTES, seq, nowMs);
      pos = chunkEnd;
    }
    return true;
  }

  /** Copies bytes (or zeros) into a line, keeping the line's data representation right. */
  private fillLine(line: TrackLine, startInLine: number, lengthBytes: number, bytes: Uint8Array | null): void {
    const wholeLine = startInLine === 0 && lengthBytes === line.lengthBytes;
    if (line.data !== null && line.data === line.hardenBuffer && !(wholeLine && bytes === null)) {
      // Copy-on-write: a harden job holds views of this buffer; give the line its own copy (once:
      // later writes during the same job go to the copy).
      const copy = this.bufferPool.take(line.lengthBytes);
      line.data.copy(copy);
      line.data = copy;
    }
    if (bytes === null) {
      if (wholeLine) {
        this.setLineData(line, null);
      } else if (line.data !== null) {
        line.data.fill(0, startInLine, startInLine + lengthBytes);
      }
      // data === null: the valid blocks are already zeros; the new ones are zeros too.
      return;
    }
    if (line.data === null) {
      // A zero line (or a fresh one) gets a buffer; zero-filled only if it holds valid zeros.
      const buffer = this.bufferPool.take(line.lengthBytes);
      if (line.valid.includes(1) && !wholeLine) buffer.fill(0);
      this.setLineData(line, buffer);
    }
    (line.data as Buffer).set(bytes, startInLine);
  }

  private setLineData(line: TrackLine, data: Buffer | null): void {
    // A buffer a harden job still writes to the store goes back to the pool when the job ends.
    if (line.data !== null && line.data !== data && line.data !== line.hardenBuffer) this.bufferPool.give(line.data);
    const charge = data === null ? ZERO_LINE_CHARGE_BYTES : line.lengthBytes;
    this.chargedBytes += charge - line.chargeBytes;
    if (line.dirtyBlocks > 0) this.dirtyChargeBytes += charge - line.chargeBytes;
    line.chargeBytes = charge;
    line.data = data;
  }

  private markDirty(line: TrackLine, firstBlock: number, endBlock: number, seq: number, nowMs: number): void {
    const wasDirty = line.dirtyBlocks > 0;
    for (let b = firstBlock; b < endBlock; b++) {
      line.valid[b] = 1;
      if (line.dirty[b] === 0) {
        line.dirty[b] = 1;
        line.dirtyBlocks++;
      }
    }
    if (line.rewritten !== null) {
      if (!line.rewritten.includes(1)) {
        line.rewrittenSeq = seq;
        line.rewrittenSinceMs = nowMs;
      }
      line.rewritten.fill(1, firstBlock, endBlock);
    }
    if (!wasDirty) {
      line.dirtySeq = seq;
      line.dirtySinceMs = nowMs;
      this.oldestDirtyBoundMs ??= nowMs;
      this.cleanLru.delete(line.track);
      this.dirtyLines.set(line.track, line);
      this.dirtyChargeBytes += line.chargeBytes;
      this.rangeDirtyTracks[this.rangeOfTrack(line.track)]++;
    }
  }

  private lineFor(track: number): TrackLine {
    const existing = this.lines.get(track);
    if (existing !== undefined) {
      // Touch: most recent; a line reads filled is a written line from now on. A dirty line is in
      // neither list (most writes under load land in one: two hash lookups saved).
      if (existing.dirtyBlocks === 0 && (this.cleanLru.delete(track) || this.readLru.delete(track))) this.cleanLru.set(track, existing);
      return existing;
    }
    const lengthBytes = Math.min(this.geometry.trackSizeBytes, this.geometry.volumeSizeBytes - track * this.geometry.trackSizeBytes);
    const line = this.spareLines.take(track, lengthBytes, ZERO_LINE_CHARGE_BYTES);
    this.chargedBytes += ZERO_LINE_CHARGE_BYTES;
    this.lines.set(track, line);
    this.cleanLru.set(track, line);
    return line;
  }

  /**
   * Frees enough clean lines for a write over [offsetBytes, +lengthBytes). Returns false when the
   * cache cannot make room without hardening first. Computes the worst-case extra charge first, so
   * a write either fits whole or changes nothing.
   */
  private makeRoom(offsetBytes: number, lengthBytes: number, needsData: boolean): boolean {
    const { trackSizeBytes } = this.geometry;
    const firstTrack = Math.floor(offsetBytes / trackSizeBytes);
    const lastTrack = Math.floor((offsetBytes + lengthBytes - 1) / trackSizeBytes);
    let extraBytes = 0;
    for (let t = firstTrack; t <= lastTrack; t++) {
      const line = this.lines.get(t);
      const charge = line?.chargeBytes ?? 0;
      extraBytes += Math.max(0, (needsData ? trackSizeBytes : ZERO_LINE_CHARGE_BYTES) - charge);
    }
    return this.evictFor(extraBytes, firstTrack, lastTrack);
  }

  /**
   * Evicts clean, unpinned lines outside [firstTrack, lastTrack] (about to be used), those only
   * reads filled first, until `extraBytes` more fit. True when they do.
   */
  private evictFor(extraBytes: number, firstTrack: number, lastTrack: number): boolean {
    // Most writes fit at once: then no iterator over the lists is made.
    const room = this.geometry.capacityBytes - extraBytes;
    for (const lru of this.evictionOrder) {
      if (this.chargedBytes <= room) return true;
      for (const line of lru.values()) {
        if (this.chargedBytes <= room) return true;
        if (line.track >= firstTrack && line.track <= lastTrack) continue;
        if (this.reads.isPinned(line.track)) continue;
        this.evict(line);
      }
    }
    return this.chargedBytes <= room;
  }

  private evict(line: TrackLine): void {
    assert(line.dirtyBlocks === 0 && line.rewritten === null, 'evicting a dirty or hardening line');
    this.cleanLru.delete(line.track);
    this.readLru.delete(line.track);
    this.lines.delete(line.track);
    this.chargedBytes -= line.chargeBytes;
    this.bufferPool.give(line.data);
    line.data = null;
    this.spareLines.give(line);
  }

  // ---------------------------------------------------------------- reads

  /** See CacheReads.beginRead (src/core/cache-reads.ts). */
  beginRead(offsetBytes: number, lengthBytes: number, hostRead = false): ReadPlan {
    this.assertAlignedInVolume(offsetBytes, lengthBytes);
    return this.reads.beginRead(offsetBytes, lengthBytes, hostRead);
  }

  /** See CacheReads.finishRead. */
  finishRead(plan: ReadPlan, storeData: Buffer[]): Buffer {
    return this.reads.finishRead(plan, storeData);
  }

  /** A read whose store I/O failed: release its pins. */
  cancelRead(plan: ReadPlan): void {
    this.reads.cancelRead(plan);
  }

  /** Host reads' bytes from the cache and the store, and bytes read ahead. */
  get readCounters(): Readonly<ReadCounters> {
    return this.reads.counters;
  }

  /** Fills the blocks of [fromBytes, toBytes) of a track the cache does not hold; false: no room. */
  private fillTrack(track: number, fromBytes: number, toBytes: number, bytes: Buffer): boolean {
    if (this.roomRefused) return false;
    let line = this.lines.get(track);
    if (line?.data === null || line === undefined) {
      const lengthBytes = Math.min(this.geometry.trackSizeBytes, this.geometry.volumeSizeBytes - track * this.geometry.trackSizeBytes);
      // Only into free room: evicting for a fill thrashed. A random 4 KiB read over a volume twice
      // the cache fills each new line with one block yet is charged a whole track, so the cache
      // held ~3% of what it could and every miss paid for a line (randread QD32 fell from ~29k to
      // ~22k IOPS, docs/benchmarks.md). Writes evict read lines first, which frees room again.
      if (this.chargedBytes + lengthBytes - (line?.chargeBytes ?? 0) > this.geometry.capacityBytes) return false;
      if (line === undefined) {
        line = this.spareLines.take(track, lengthBytes, ZERO_LINE_CHARGE_BYTES);
        this.chargedBytes += ZERO_LINE_CHARGE_BYTES;
        this.lines.set(track, line);
        this.readLru.set(track, line);
      }
      const buffer = this.bufferPool.take(lengthBytes);
      if (line.valid.includes(1)) buffer.fill(0); // its valid blocks are zeros
      this.setLineData(line, buffer);
    } else if (this.readLru.delete(track)) {
      this.readLru.set(track, line); // touch: most recent
    }
    // Blocks valid by now were written during the read: newer than the store's bytes, kept.
    const data = line.data as Buffer;
    const lineStart = track * this.geometry.trackSizeBytes;
    const endBlock = (toBytes - lineStart) / BLOCK_SIZE_BYTES;
    for (let b = (fromBytes - lineStart) / BLOCK_SIZE_BYTES; b < endBlock;) {
      if (line.valid[b] === 1) { b++; continue; }
      const first = b;
      while (b < endBlock && line.valid[b] === 0) line.valid[b++] = 1;
      const at = first * BLOCK_SIZE_BYTES;
      bytes.copy(data, at, lineStart + at - fromBytes, lineStart + b * BLOCK_SIZE_BYTES - fromBytes);
    }
    return true;
  }

  // ---------------------------------------------------------------- hardening

  /**
   * Builds a harden job from the dirty runs of `tracks` (ascending, skipping clean lines and lines
   * already being hardened), coalescing neighbours. Stops adding tracks past `maxBytes`.
   * Returns null when there is nothing to harden.
   */
  takeHardenJob(tracks: Iterable<number>, maxBytes: number): HardenJob | null {
    const job = new JobChoice(maxBytes);
    for (const t of tracks) {
      const line = this.lines.get(t);
      if (line !== undefined && this.canHarden(line) && job.add(line)) break;
    }
    return this.startHardenJob(job);
  }

  /**
   * takeHardenJob over the dirty tracks not being hardened, oldest first (LRU pressure). Walks the
   * dirty lines itself: a generator here allocated a result object per track it passed, and under
   * pressure it passes every line already being hardened first.
   */
  takeOldestHardenJob(maxBytes: number): HardenJob | null {
    const job = new JobChoice(maxBytes);
    for (const line of this.dirtyLines.values()) if (this.canHarden(line) && job.add(line)) break;
    return this.startHardenJob(job);
  }

  private canHarden(line: TrackLine): boolean {
    return line.dirtyBlocks > 0 && line.rewritten === null && !this.hardenHolds.isHeld(line.track);
  }

  private startHardenJob({ lines: chosen, bytes }: JobChoice): HardenJob | null {
    if (chosen.length === 0) return null;
    chosen.sort((a, b) => a.track - b.track);
    const runs = snapshotRuns(chosen, this.geometry.trackSizeBytes);
    for (const line of chosen) {
      line.rewritten = line.rewrittenSpare.fill(0);
      line.hardenBuffer = line.data;
    }
    const job: HardenJob = { id: this.nextJobId++, tracks: chosen.map((l) => l.track), runs, bytes };
    this.hardeningJobs.set(job.id, job);
    return job;
  }

  /**
   * The store holds the job's runs: clear what was not written again meanwhile. Returns the tracks
   * that are now clean (every write in them hardened), for the toggle-counter tracker (Fig. 6).
   */
  completeHarden(jobId: number): number[] {
    const job = this.hardeningJobs.get(jobId);
    assert(job !== undefined, `unknown harden job ${jobId}`);
    this.hardeningJobs.delete(jobId);
    const cleaned: number[] = [];
    for (const track of job.tracks) {
      const line = this.lines.get(track);
      assert(line !== undefined && line.rewritten !== null, 'hardening line vanished');
      const rewritten = line.rewritten;
      this.endHarden(line);
      line.dirtyBlocks = 0;
      for (let b = 0; b < line.dirty.length; b++) {
        line.dirty[b] = rewritten[b]!;
        line.dirtyBlocks += rewritten[b]!;
      }
      this.dirtyLines.delete(track);
      if (line.dirtyBlocks === 0) {
        this.rangeDirtyTracks[this.rangeOfTrack(track)]--;
        this.dirtyChargeBytes -= line.chargeBytes;
        this.cleanLru.set(track, line);
        cleaned.push(track);
      } else {
        // Everything before the snapshot is hardened: the line's age restarts at its first rewrite.
        line.dirtySeq = line.rewrittenSeq;
        line.dirtySinceMs = line.rewrittenSinceMs;
        this.oldestDirtyBoundMs = Math.min(this.oldestDirtyBoundMs ?? line.dirtySinceMs, line.dirtySinceMs);
        this.dirtyLines.set(track, line);
      }
    }
    return cleaned;
  }

  /** The store write failed: the lines stay dirty (and keep their age), to be retried. */
  abandonHarden(jobId: number): void {
    const job = this.hardeningJobs.get(jobId);
    assert(job !== undefined, `unknown harden job ${jobId}`);
    this.hardeningJobs.delete(jobId);
    for (const track of job.tracks) {
      const line = this.lines.get(track);
      if (line !== undefined) this.endHarden(line);
    }
  }

  /** A harden job is over (its store writes all settled): release the line's snapshot. */
  private endHarden(line: TrackLine): void {
    if (line.hardenBuffer !== null && line.hardenBuffer !== line.data) this.bufferPool.give(line.hardenBuffer);
    line.hardenBuffer = null;
    line.rewritten = null;
  }

  // ---------------------------------------------------------------- queries for the policy

  /** Dirty tracks whose oldest unhardened write is at or before `seq` (hardening or not). */
  *dirtyTracksUpToSeq(seq: number): Generator<number> {
    for (const line of this.dirtyLines.values()) if (line.dirtySeq <= seq) yield line.track;
  }

  /** True when no track holds a write with sequence ≤ `seq` unhardened (a FLUSH is satisfied). */
  hardenedUpTo(seq: number): boolean {
    for (const line of this.dirtyLines.values()) if (line.dirtySeq <= seq) return false;
    return true;
  }

  /** True when none of `tracks` holds a write with sequence ≤ `seq` unhardened (a FUA is satisfied). */
  tracksHardenedUpTo(tracks: number[], seq: number): boolean {
    return tracks.every((t) => {
      const line = this.dirtyLines.get(t);
      return line === undefined || line.dirtySeq > seq;
    });
  }

  tracksOf(offsetBytes: number, lengthBytes: number): number[] {
    const out: number[] = [];
    for (let t = this.firstTrackOf(offsetBytes), last = this.lastTrackOf(offsetBytes, lengthBytes); t <= last; t++) out.push(t);
    return out;
  }

  private firstTrackOf(offsetBytes: number): number {
    return Math.floor(offsetBytes / this.geometry.trackSizeBytes);
  }

  /** The last track of [offsetBytes, +lengthBytes); the first when lengthBytes is 0. */
  private lastTrackOf(offsetBytes: number, lengthBytes: number): number {
    return Math.floor((offsetBytes + Math.max(lengthBytes, 1) - 1) / this.geometry.trackSizeBytes);
  }

  /** The tracks of [offsetBytes, +lengthBytes) may not be hardened until released (src/core/harden-holds.ts). */
  holdHardening(offsetBytes: number, lengthBytes: number): void {
    this.hardenHolds.hold(this.firstTrackOf(offsetBytes), this.lastTrackOf(offsetBytes, lengthBytes));
  }

  releaseHardening(offsetBytes: number, lengthBytes: number): void {
    this.hardenHolds.release(this.firstTrackOf(offsetBytes), this.lastTrackOf(offsetBytes, lengthBytes));
  }

  releaseAllHolds(): void {
    this.hardenHolds.clear();
  }

  /** Every dirty track, as a bitmap of `trackCount` bits (the state exchange at link-up). */
  dirtyTracks(): number[] {
    return [...this.dirtyLines.keys()];
  }

  isTrackDirty(track: number): boolean {
    return this.dirtyLines.has(track);
  }

  /** Dirty tracks of one range (for threshold hardening and destage scans). */
  dirtyTracksOfRange(range: number): number[] {
    const { rangeTracks } = this.geometry;
    const out: number[] = [];
    const end = Math.min(this.trackCount, (range + 1) * rangeTracks);
    for (let t = range * rangeTracks; t < end; t++) {
      const line = this.lines.get(t);
      if (line !== undefined && line.dirtyBlocks > 0) out.push(t);
    }
    return out;
  }

  /** Ranges with at least one dirty track. */
  dirtyRanges(): number[] {
    const out: number[] = [];
    this.rangeDirtyTracks.forEach((n, r) => { if (n > 0) out.push(r); });
    return out;
  }

  /** Fraction of capacity charged by dirty lines: the pressure signal. */
  dirtyFraction(): number {
    return this.dirtyChargeBytes / this.geometry.capacityBytes;
  }

  /** Dirty tracks not being hardened whose oldest unhardened write landed at or before `sinceMs`. */
  *dirtyTracksDirtySince(sinceMs: number): Generator<number> {
    for (const line of this.dirtyLines.values()) if (line.rewritten === null && line.dirtySinceMs <= sinceMs) yield line.track;
  }

  /** Exact, O(dirty lines): also makes oldestDirtyBoundMs exact. */
  oldestDirtySinceMs(): number | null {
    let oldest: number | null = null;
    for (const line of this.dirtyLines.values()) if (oldest === null || line.dirtySinceMs < oldest) oldest = line.dirtySinceMs;
    this.oldestDirtyBoundMs = oldest;
    return oldest;
  }

  /**
   * At or before the oldest dirty line's dirtySinceMs (null: nothing dirty since the last exact
   * look), in O(1): the shell's next wake-up for the age bound is computed from it on every event.
   */
  get oldestDirtyBound(): number | null {
    return this.dirtyLines.size === 0 ? null : this.oldestDirtyBoundMs;
  }

  stats(nowMs: number): CacheStats {
    let dirtyBytes = 0;
    for (const line of this.dirtyLines.values()) dirtyBytes += line.dirtyBlocks * BLOCK_SIZE_BYTES;
    let hardeningTracks = 0;
    for (const job of this.hardeningJobs.values()) hardeningTracks += job.tracks.length;
    let dataTracks = 0;
    for (const line of this.lines.values()) if (line.data !== null) dataTracks++;
    const oldest = this.oldestDirtySinceMs();
    return {
      cachedTracks: this.lines.size,
      dataTracks,
      dirtyTracks: this.dirtyLines.size,
      dirtyBytes,
      chargedBytes: this.chargedBytes,
      capacityBytes: this.geometry.capacityBytes,
      hardeningTracks,
      oldestDirtyAgeMs: oldest === null ? 0 : Math.max(0, nowMs - oldest),
    };
  }

  /** Self-check of the bookkeeping (tests and the simulator call it after every step). */
  checkInvariants(): void {
    let charged = 0;
    const perRange = new Uint32Array(this.rangeCount);
    for (const line of this.lines.values()) {
      charged += line.chargeBytes;
      let dirty = 0;
      line.dirty.forEach((d, b) => { dirty += d; assert(d === 0 || line.valid[b] === 1, 'dirty block not valid'); });
      assert(dirty === line.dirtyBlocks, 'dirtyBlocks count drifted');
      assert((dirty > 0) === this.dirtyLines.has(line.track), 'dirty list out of step');
      const inClean = this.cleanLru.has(line.track);
      const inRead = this.readLru.has(line.track);
      assert((dirty === 0) === (inClean || inRead) && !(inClean && inRead), 'clean lists out of step');
      if (dirty > 0) perRange[this.rangeOfTrack(line.track)]++;
    }
    assert(charged === this.chargedBytes, 'charge drifted');
    let dirtyCharge = 0;
    for (const line of this.dirtyLines.values()) {
      dirtyCharge += line.chargeBytes;
      // The hardener skips its O(dirty lines) age look while this bound says nothing is due.
      assert(this.oldestDirtyBoundMs !== null && this.oldestDirtyBoundMs <= line.dirtySinceMs, 'oldest-dirty bound after a dirty line');
    }
    assert(dirtyCharge === this.dirtyChargeBytes, 'dirty charge drifted');
    perRange.forEach((n, r) => assert(n === this.rangeDirtyTracks[r], `range ${r} dirty count drifted`));
    this.hardenHolds.checkInvariants();
  }

  private assertAlignedInVolume(offsetBytes: number, lengthBytes: number): void {
    assert(offsetBytes % BLOCK_SIZE_BYTES === 0 && lengthBytes % BLOCK_SIZE_BYTES === 0, 'cache I/O must be 512-aligned');
    assert(offsetBytes >= 0 && offsetBytes + lengthBytes <= this.geometry.volumeSizeBytes, 'cache I/O past the end of the volume');
  }
}
