// The I/O shell around one node's ReplicaCore: turns NBD requests into core events, carries out
// the core's actions (store writes, fdatasync, link sends, host replies) and owns the only timer.
// Everything that decides *what* happens lives in src/core; this file only moves bytes and wakes
// things up. All its I/O goes through ports (src/node/ports.ts), so the simulator (sim/) runs this
// very shell over a simulated clock, store, metadata and link.
import { BLOCK_SIZE_BYTES, type HardenJob, type ReadCounters } from '../core/cache.js';
import type { HardenReason } from '../core/hardening.js';
import { ReplicaCore } from '../core/replica.js';
import { IdRing } from '../core/id-ring.js';
import type { LinkMessage, PeerState, QuorumView, ReplicaAction } from '../core/replica-types.js';
import { PAIR_QUORUM_DEFAULTS } from '../core/replica-types.js';
import { NbdRequestError, type NbdExport } from '../nbd/export.js';
import { releasePayloadOf } from '../nbd/payload-pool.js';
import type { Store, StoreReadStats } from '../store/store.js';
import { realClock, type Clock, type TimerHandle } from './ports.js';
import { trackSums } from './track-sums.js';
import { MetadataWriter } from './metadata-writer.js';
import { AckGateReplies, type PendingReply } from './ack-gate.js';
import type { VerifyReport } from '../core/replica-compare.js';
import { DEFAULT_TUNING, type VolumeCounters, type VolumeOptions, type VolumeStats, type VolumeTuning } from './volume-options.js';

export type { VolumeCounters, VolumeOptions, VolumeStats, VolumeTuning } from './volume-options.js';

/** How often demote checks that the writes in flight have drained. */
const DRAIN_POLL_MS = 5;

interface Pending extends PendingReply {
  /** A host's request: its success waits for the ack gate (the volume's own flush at stop does not). */
  host: boolean;
}

export class Volume implements NbdExport {
  readonly name: string;
  readonly description: string;
  readonly sizeBytes: number;
  readonly core: ReplicaCore;
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly tuning: VolumeTuning;
  /** Requests the core has not answered, by reqId (an IdRing: ids increase, see src/core/id-ring.ts). */
  private readonly pending = new IdRing<Pending>();
  private nextReqId = 1;
  /** Promotions waiting for the peer's confirmation: request id → resolve(error or null). */
  private readonly promotions = new Map<number, (error: string | null) => void>();
  /** Peers whose link this volume asked to stop reading (their inbound stream is held by a full cache). */
  private readonly receivingPaused = new Set<string>();
  private persistChain: Promise<void> = Promise.resolve();
  private readonly startupSaved: Promise<void>;
  /** Data of peer messages passed to the core and not yet known to be applied. */
  private readonly appliedOrHeld: Uint8Array[] = [];
  private abandoned = false;
  private timer: TimerHandle | null = null;
  /** When the armed timer fires (the core's deadline it was armed for), or null. */
  private timerAtMs: number | null = null;
  /**
   * Host requests answered by the core whose success may not be sent yet: with an arbiter, a
   * primary acknowledges only while it holds the lease (ackGate, issue 13 item 3).
   */
  private readonly ackGate: AckGateReplies;
  /** Metadata saves that failed (each retried), and the last one's error: for status. */
  private readonly metadataWriter: MetadataWriter;

  constructor(private readonly opts: VolumeOptions) {
    this.ackGate = new AckGateReplies(opts.ackGate, () => this.core.role === 'primary');
    this.name = opts.name;
    this.description = opts.description;
    this.sizeBytes = opts.sizeBytes;
    this.store = opts.store;
    this.clock = opts.clock ?? realClock;
    const tuning: VolumeTuning = { ...DEFAULT_TUNING, ...opts.tuning };
    this.tuning = tuning;
    this.metadataWriter = new MetadataWriter({
      metadata: opts.metadata, retryMs: tuning.storeRetryMs, sleep: (delayMs) => this.sleep(delayMs),
      abandoned: () => this.abandoned, log: (level, msg, fields) => this.log(level, msg, fields),
    });
    const mirror = opts.mirror;
    this.core = new ReplicaCore({
      node: opts.node ?? 'local',
      peers: mirror?.peers ?? [],
      geometry: { volumeSizeBytes: opts.sizeBytes, trackSizeBytes: opts.trackSizeBytes, capacityBytes: opts.cacheBytes, rangeTracks: opts.rangeTracks },
      hardening: { ...opts.hardening, maxJobBytes: Math.max(tuning.maxJobBytes, opts.trackSizeBytes), pressureFraction: tuning.pressureFraction },
      tracker: mirror?.tracker ?? 'destage-scan',
      flush: mirror?.flush ?? 'disk',
      degraded: mirror?.degraded ?? 'write-through',
      quorum: mirror?.quorum ?? PAIR_QUORUM_DEFAULTS,
      role: mirror?.role ?? 'primary',
      mirrored: mirror !== undefined,
      storeCreatedFresh: opts.storeCreatedFresh === true,
      maxHardensInFlight: tuning.maxHardensInFlight,
      syncChunkBytes: tuning.syncChunkBytes,
      syncWindowChunks: tuning.syncWindowChunks,
      syncRateBytesPerSec: mirror?.syncRateBytesPerSec ?? Number.MAX_SAFE_INTEGER,
      ...(mirror?.syncMinRateBytesPerSec === undefined ? {} : { syncMinRateBytesPerSec: mirror.syncMinRateBytesPerSec }),
      ...(mirror?.verifyRateBytesPerSec === undefined ? {} : { verifyRateBytesPerSec: mirror.verifyRateBytesPerSec }),
      storeRetryMs: tuning.storeRetryMs,
    }, this.now(), opts.metadata?.persisted ?? null);
    // The constructor's actions (the startup metadata write, a log line) run now.
    this.run(() => undefined);
    this.startupSaved = this.persistChain;
  }

  /**
   * Resolves once the metadata this start wrote (its role, epoch, diverging mark) is on disk. A
   * node links to its peer and serves hosts only then: one that crashed before would come back
   * with no metadata, as a fresh store in its config role, after it had acted on a role its peer
   * saw (simulator, metadata faults: two primaries at once after the first save never landed).
   */
  ready(): Promise<void> {
    return this.startupSaved;
  }

  private now(): number {
    return this.clock.nowMs();
  }

  /**
   * The one timer, armed for the core's next deadline after every event (ReplicaCore
   * nextDeadlineMs: the age bound, destage scans, retry pauses, a rate-capped resync): an idle
   * node does not wake at all, a busy one when its work falls due, not on a fixed poll.
   */
  private reschedule(): void {
    const now = this.now();
    const atMs = this.core.nextDeadlineMs(now);
    if (atMs === this.timerAtMs) return;
    this.timer?.cancel();
    this.timer = null;
    this.timerAtMs = atMs;
    if (atMs === null) return;
    // At least a millisecond: a deadline already past runs next, never in a loop of zero delays.
    this.timer = this.clock.setTimer(Math.max(1, Math.ceil(atMs - now)), () => {
      this.timer = null;
      this.timerAtMs = null;
      this.run((t) => this.core.tick(t));
    }, true);
  }

  private stopTimer(): void {
    this.timer?.cancel();
    this.timer = null;
    this.timerAtMs = null;
  }

  /** The secondary's export is read-only: hosts write only to the primary (DESIGN.md). */
  get readOnly(): boolean {
    return this.core.role !== 'primary';
  }

  // ---------------------------------------------------------------- NBD requests

  /** Host reads served (usage metering; writes are the core's counters). */
  readonly hostReads = { ops: 0, bytes: 0 };

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.hostReads.ops++;
    this.hostReads.bytes += lengthBytes;
    const { start, end } = alignOut(offsetBytes, lengthBytes);
    const bytes = await this.readAligned(start, end - start, true);
    return start === offsetBytes && end - start === lengthBytes ? bytes : bytes.subarray(offsetBytes - start, offsetBytes - start + lengthBytes);
  }

  /**
   * Reads through the cache; `onRead` runs in the same synchronous step as the cache overlay. A
   * host read (`hostRead`) keeps what it read from the store in the cache and may read ahead; the
   * resync's reads and read-modify-write edges do not.
   */
  private async readAligned(offsetBytes: number, lengthBytes: number, hostRead: boolean, onRead?: (bytes: Buffer) => void): Promise<Buffer> {
    const cache = this.core.cache;
    const plan = cache.beginRead(offsetBytes, lengthBytes, hostRead);
    let parts: Buffer[] = [];
    if (plan.storeRuns.length > 0) {
      try {
        parts = await Promise.all(plan.storeRuns.map((r) => this.store.read(r.offsetBytes, r.lengthBytes)));
      } catch (err) {
        cache.cancelRead(plan);
        if (this.core.waitingForRoom) this.run((now) => this.core.readDone(now));
        // A bad sector past the request must not fail the host's read: again, without readahead.
        if (plan.aheadBytes > 0) return this.readAligned(offsetBytes, lengthBytes, false, onRead);
        throw err;
      }
    }
    const bytes = cache.finishRead(plan, parts);
    onRead?.(bytes);
    // Only then can the read's pins have kept room from a waiter: no extra event per host read.
    if (plan.storeRuns.length > 0 && this.core.waitingForRoom) this.run((now) => this.core.readDone(now));
    return bytes;
  }

  /** For metrics (twinblock_read_bytes_total, twinblock_readahead_bytes_total). */
  get readCounters(): Readonly<ReadCounters> {
    return this.core.cache.readCounters;
  }

  write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    return this.modify(offsetBytes, data.length, data, false, fua);
  }

  async trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    // TRIM is advisory (proto.md NBD_CMD_TRIM); we zero whole blocks so both nodes read the same,
    // and leave partial blocks at the edges alone.
    const start = Math.ceil(offsetBytes / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
    const end = Math.floor((offsetBytes + lengthBytes) / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
    if (end > start) await this.modify(start, end - start, null, true, fua);
    else if (fua) await this.flush();
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    return this.modify(offsetBytes, lengthBytes, null, false, fua);
  }

  flush(): Promise<void> {
    return this.request((reqId, now) => this.core.hostFlush(reqId, now));
  }

  /** Writes bytes (data) or zeros (null); unaligned edges go through read-modify-write. */
  private modify(offsetBytes: number, lengthBytes: number, data: Buffer | null, trim: boolean, fua: boolean): Promise<void> {
    // Not an async function: that cost every write a second promise.
    if (offsetBytes % BLOCK_SIZE_BYTES === 0 && lengthBytes % BLOCK_SIZE_BYTES === 0) {
      return this.request((reqId, now) => this.core.hostWrite(reqId, offsetBytes, lengthBytes, data, trim, fua, now));
    }
    return this.modifyEdges(offsetBytes, lengthBytes, data, fua);
  }

  private async modifyEdges(offsetBytes: number, lengthBytes: number, data: Buffer | null, fua: boolean): Promise<void> {
    const { start, end } = alignOut(offsetBytes, lengthBytes);
    // Hosts honour our 512-byte minimum block size (NBD_INFO_BLOCK_SIZE), so this is rare; it is
    // not atomic against a concurrent write to the same edge block, which the spec allows.
    const merged = await this.readAligned(start, end - start, false);
    if (data === null) merged.fill(0, offsetBytes - start, offsetBytes - start + lengthBytes);
    else data.copy(merged, offsetBytes - start);
    return this.request((reqId, now) => this.core.hostWrite(reqId, start, end - start, merged, false, fua, now));
  }

  private request(start: (reqId: number, nowMs: number) => void): Promise<void> {
    const reqId = this.nextReqId++;
    const done = new Promise<void>((resolve, reject) => this.pending.set(reqId, { resolve, reject, host: true }));
    try {
      this.run((now) => start(reqId, now));
    } catch (err) {
      this.pending.delete(reqId);
      return Promise.reject(err as Error);
    }
    return done;
  }

  // ---------------------------------------------------------------- link events (from the node)

  linkEstablished(peer: string): void {
    this.run((now) => this.core.linkEstablished(peer, now));
  }

  linkDown(peer: string): void {
    this.run((now) => this.core.linkDown(peer, now));
  }

  linkMessage(peer: string, msg: LinkMessage): void {
    this.run((now) => this.core.linkMessage(peer, msg, now));
    if (msg.type === 'write' || msg.type === 'syncData') this.appliedOrHeld.push(msg.data);
    this.releaseAppliedMessages();
  }

  /**
   * A peer message's data is in the cache (copied) once the core is no longer holding the stream
   * back; only then may its pooled buffer be reused.
   */
  private releaseAppliedMessages(): void {
    if (this.core.inboundBlocked) return;
    for (const data of this.appliedOrHeld) releasePayloadOf(data);
    this.appliedOrHeld.length = 0;
  }

  linkDrained(peer: string): void {
    this.run((now) => this.core.setLinkWritable(peer, true, now));
  }

  // ---------------------------------------------------------------- actions

  /** Feeds one event to the core, then carries out every action it emitted. */
  private run(event: (nowMs: number) => void): void {
    if (this.abandoned) return;
    let actions: ReplicaAction[];
    try {
      event(this.now());
      actions = this.core.takeActions();
    } catch (err) {
      this.coreFailed(err);
      throw err;
    }
    for (const action of actions) this.perform(action);
    if (this.appliedOrHeld.length > 0) this.releaseAppliedMessages();
    if (this.core.inboundBlocked || this.receivingPaused.size > 0) this.pauseBlockedLinks();
    this.ackGate.release();
    this.reschedule();
  }

  /** Stops reading from each peer whose inbound stream the core holds back, and resumes the others. */
  private pauseBlockedLinks(): void {
    for (const peer of this.core.peers) {
      const blocked = peer.inbound.length > 0;
      if (blocked === this.receivingPaused.has(peer.name)) continue;
      if (blocked) this.receivingPaused.add(peer.name);
      else this.receivingPaused.delete(peer.name);
      this.opts.mirror?.setReceiving(peer.name, !blocked);
    }
  }

  private perform(action: ReplicaAction): void {
    switch (action.kind) {
      case 'reply': {
        const p = this.pending.get(action.reqId);
        this.pending.delete(action.reqId);
        if (p === undefined) return;
        if (action.errno !== null) return p.reject(new NbdRequestError(action.errno, action.message ?? action.errno));
        if (!p.host) return p.resolve();
        return this.ackGate.answer(p);
      }
      case 'send':
        if (this.opts.mirror?.send(action.peer, action.msg) === false) this.core.setLinkWritable(action.peer, false, this.now());
        return;
      case 'harden':
        void this.runHardenJob(action.job, action.reason);
        return;
      case 'sync-store':
        this.store.sync().then(
          () => this.run((now) => this.core.storeSynced(action.syncId, null, now)),
          (err: Error) => this.run((now) => this.core.storeSynced(action.syncId, err.message, now)),
        );
        return;
      case 'sync-read':
        this.readAligned(action.offsetBytes, action.lengthBytes, false, (bytes) => this.core.syncChunkRead(action.offsetBytes, bytes, this.now(), action.resyncId))
          .then(() => this.run(() => undefined), (err: Error) => this.run((now) => this.core.syncChunkFailed(action.offsetBytes, action.lengthBytes, err.message, now, action.resyncId)));
        return;
      case 'sum-read': { // hashed in the step the read overlays the cache: later writes may reuse those bytes
        let sums: Uint8Array | null = null;
        this.readAligned(action.offsetBytes, action.lengthBytes, false, (bytes) => { sums = trackSums(bytes, this.opts.trackSizeBytes); })
          .then(() => this.run((now) => this.core.sumsRead(action.readId, sums, now)), () => this.run((now) => this.core.sumsRead(action.readId, null, now)));
        return;
      }
      case 'log':
        this.log(action.level, action.msg, action.fields);
        return;
      case 'promote-done':
        this.promotions.get(action.requestId)?.(action.error);
        this.promotions.delete(action.requestId);
        return;
      case 'persist':
        this.persistChain = this.persistChain.then(() => this.metadataWriter.save(action.state)).then(
          () => this.run((now) => this.core.persistDone(action.token, now)),
          () => undefined, // abandoned (the process died here)
        );
        return;
    }
  }

  private async runHardenJob(job: HardenJob, reason: HardenReason): Promise<void> {
    const started = process.hrtime.bigint();
    // writeRuns settles only once every run of the job has landed or failed, or a stale run could
    // land after the retry's newer data (simulator, seed 6328).
    try {
      await this.store.writeRuns(job.runs);
    } catch (err) {
      this.run((now) => this.core.hardenFailed(job.id, (err as Error).message, now));
      return;
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    this.opts.onHardened?.(job.bytes, job.runs.length, seconds, reason);
    this.run((now) => this.core.hardenDone(job.id, job.bytes, job.runs.length, reason, now));
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void {
    this.opts.log?.(level, msg, fields);
  }

  // ---------------------------------------------------------------- status and lifecycle

  get counters(): VolumeCounters {
    return this.core.counters;
  }

  /**
   * How the node's disk is doing (status `storeHealth`): fdatasync and metadata failures, in all
   * and in a row now (both retried with backoff; 0 in a row: recovered), and whether the store
   * is still trusted for a delta resync (a failed fdatasync ends that until a full resync).
   */
  get storeHealth(): { trustedForDelta: boolean; fsyncFailures: number; fsyncFailuresInRow: number; metadataFailures: number; metadataFailuresInRow: number; lastMetadataError: string | null } {
    const m = this.metadataWriter.health;
    return {
      trustedForDelta: this.core.trustedForDelta, fsyncFailures: this.core.counters.fsyncFailures, fsyncFailuresInRow: this.core.storeSyncFailuresInRow,
      metadataFailures: m.failures, metadataFailuresInRow: m.failuresInRow, lastMetadataError: m.lastError,
    };
  }

  get storeDescription(): string {
    return this.store.description;
  }

  /** How small store reads were served (status `storeReads`); null for stores that do not say. */
  get storeReads(): StoreReadStats | null {
    return this.store.readStats?.() ?? null;
  }

  get peerState(): PeerState {
    return this.core.peerState;
  }

  /** Issue 12: nodes reachable against nodes needed, and whether writes may be answered. */
  get quorum(): QuorumView {
    return this.core.quorum;
  }

  stats(): VolumeStats {
    return { ...this.core.cache.stats(this.now()), waitingWrites: this.core.hardener.blockedWriterCount };
  }

  /**
   * A clean stop (SIGTERM, src/node/node.ts), once the hosts are gone (the NBD server closed):
   * harden everything, leave the link (`leaveLink` closes it; Volume is told the link went down),
   * then close(). A primary hardens *before* it leaves: while the link is up its peer still
   * mirrors it in the same epoch, so if this hardening fails and the process dies anyway (a second
   * signal, systemd's SIGKILL) it is a primary killed in sync, and the peer — which holds every
   * acknowledged write — is the sync source when it returns (src/core/resync.ts: equal histories,
   * the side that did not crash). Leaving first made it a primary alone, which starts a new epoch
   * (DESIGN.md "Failures") before hardening: dying then, it came back as the newer side and
   * resynced its stale store over the peer's copy of the writes its RAM lost (simulator, seeds 551,
   * 782, 875, 1286, 1702). A secondary leaves first: a primary still writing to it would keep it
   * from ever being clean, and a secondary's loss starts no epoch.
   */
  async stop(leaveLink: () => Promise<void>): Promise<void> {
    this.core.beginClose();
    if (this.core.role === 'primary') await this.hardenAll();
    await leaveLink();
    await this.close();
  }

  /**
   * Hardens everything, syncs and closes the store, then records a clean shutdown with the
   * out-of-sync set (issue 5 item 6). New writes get ESHUTDOWN from now on.
   */
  async close(): Promise<void> {
    this.core.beginClose();
    await this.hardenAll();
    this.stopTimer();
    await this.store.close();
    await this.persistChain;
    await this.metadataWriter.save(this.core.persistedState(true));
  }

  /**
   * Hardens every write already admitted (cached, queued for room, or awaiting the peer). A store
   * write that fails does not end the stop: this node may hold acknowledged writes only in its RAM
   * (alone, nobody else holds them), so it logs the failure and tries again after the store retry
   * pause until everything is hardened, or the operator kills it (README "Failures and recovery").
   */
  private async hardenAll(): Promise<void> {
    for (let failures = 0; ; ) {
      try {
        await this.flushLocal();
      } catch (err) {
        if (this.abandoned) throw err;
        failures++;
        // Logged at 1, 2, 4, 8, ... failures: a store that stays dead must not flood the log.
        if ((failures & (failures - 1)) === 0) this.log('error', 'stopping: store write failed while hardening; this node keeps its unhardened data and tries again (signal again to exit at once)', {
          error: (err as Error).message, failures, dirtyTracks: this.core.cache.stats(this.now()).dirtyTracks, retryMs: this.tuning.storeRetryMs,
        });
        await this.sleep(this.tuning.storeRetryMs);
        continue;
      }
      if (this.core.quiescent) return;
      // Writes still awaiting the peer's ack (or cache room): their bytes come later. Polling at
      // once would spin an fdatasync per turn, and in the simulator stop time from advancing
      // (seed 60003989, a primary stopped mid-resync with writes in flight to its peer).
      await this.sleep(DRAIN_POLL_MS);
    }
  }

  /** The core threw: no more events (see VolumeOptions.onFatal). */
  private coreFailed(err: unknown): void {
    this.abandon();
    const onFatal = this.opts.onFatal ?? ((e: unknown) => queueMicrotask(() => { throw e; }));
    onFatal(err);
  }

  /** Tests and the simulator: the process died here (no hardening, no more events or actions). */
  abandon(): void {
    this.abandoned = true;
    this.stopTimer();
  }

  // ---------------------------------------------------------------- roles

  /** Promote to primary; resolves once the new epoch is on disk (before any write is served). */
  async promote(force: boolean, minEpoch = 0): Promise<{ epoch: number }> {
    const requestId = this.nextReqId++;
    const result = this.roleChange((now) => this.core.promote(force, now, requestId, minEpoch));
    if (!result.ok) throw new RoleChangeError(result.error);
    if (result.pending) {
      // Connected: the peer confirms first (two-phase, src/core/replica.ts). A link loss ends the
      // wait at once; a peer whose disk hangs does not answer, so the wait is bounded too.
      const confirmed = new Promise<string | null>((resolve) => this.promotions.set(requestId, resolve));
      const timeoutMs = this.tuning.promoteConfirmTimeoutMs;
      const timer = this.clock.setTimer(timeoutMs, () => this.run(() => this.core.cancelPromotion(`peer did not confirm the promotion within ${timeoutMs} ms`)));
      const error = await confirmed.finally(() => timer.cancel());
      if (error !== null) throw new RoleChangeError(error);
    }
    await this.persistChain;
    return { epoch: this.core.epoch };
  }

  /** Demote to secondary: new writes get EPERM; resolves once in-flight writes have completed. */
  async demote(): Promise<{ epoch: number }> {
    const result = this.roleChange(() => this.core.demote());
    if (!result.ok) throw new RoleChangeError(result.error);
    while (!this.core.writesDrained) await this.sleep(DRAIN_POLL_MS);
    await this.persistChain;
    return { epoch: this.core.epoch };
  }

  /** Sends the replies the ack gate held, if it opens now (the arbiter calls this as its lease changes). */
  releaseHeldReplies(): void {
    this.ackGate.release();
  }

  replyGate(): 'open' | 'wait' | 'never' {
    return this.ackGate.replyGate();
  }

  /** Replies the ack gate holds now. */
  get heldReplyCount(): number {
    return this.ackGate.count;
  }

  /** Runs a role change in the core and returns its verdict (a stopped node refuses). */
  private roleChange<T>(change: (nowMs: number) => T): T {
    if (this.abandoned) throw new RoleChangeError('the node has stopped');
    const verdicts: T[] = [];
    this.run((now) => { verdicts.push(change(now)); });
    return verdicts[0]!;
  }

  /** Starts an online verify against `peer` (null: the only one); refused: RoleChangeError (issue 14 item 4). */
  verify(peer: string | null, resync: boolean): VerifyReport {
    const result = this.roleChange((now) => this.core.startVerify(peer, resync, now));
    if (!result.ok) throw new RoleChangeError(result.error);
    return result.report;
  }

  /** The last online verify, with its progress while it runs (null: none yet). */
  get verifyReport(): VerifyReport | null {
    return this.core.verifyReport(this.now());
  }

  /** Split brain: discard this node's changes; it becomes the target of a resync. */
  async resolveDiscardLocal(): Promise<void> {
    const result = this.roleChange((now) => this.core.resolveDiscardLocal(now));
    if (!result.ok) throw new RoleChangeError(result.error);
    await this.persistChain;
  }

  /** A local harden-everything (FLUSH as a standalone node would do it), for shutdown. */
  private async flushLocal(): Promise<void> {
    await this.sleep(0);
    const reqId = this.nextReqId++;
    const done = new Promise<void>((resolve, reject) => this.pending.set(reqId, { resolve, reject, host: false }));
    this.run((now) => this.core.hostFlushLocal(reqId, now));
    await done;
  }

  private sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimer(delayMs, resolve));
  }
}

/** A refused promote/demote/resolve; the message is for the operator. */
export class RoleChangeError extends Error {
  override readonly name = 'RoleChangeError';
}

function alignOut(offsetBytes: number, lengthBytes: number): { start: number; end: number } {
  const start = Math.floor(offsetBytes / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
  const end = Math.ceil((offsetBytes + lengthBytes) / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
  return { start, end };
}
