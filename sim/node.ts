// One simulated node: a ReplicaCore, its simulated store, and a shell that does what
// src/node/volume.ts does — carry out the core's actions, feed completions back — but with the
// simulated clock, store and link, so every interleaving is a function of the seed.
//
// Kept deliberately close to Volume: a harden job completes when all its runs are on the store
// (and fails at the first failed run, like Promise.all); a sync-read reads through the cache
// (beginRead → store → finishRead) and calls syncChunkRead in that same step; a read with nothing
// to fetch from the store finishes synchronously. Where the simulator differs (no real timers, no
// sockets), it says so.
import type { HardenJob } from '../src/core/cache.js';
import type { HardenReason } from '../src/core/hardening.js';
import { ReplicaCore, type ReplicaSettings } from '../src/core/replica.js';
import type { LinkMessage, PersistedState, ReplicaAction, ReplyErrno, Role } from '../src/core/replica-types.js';
import { SimStore } from './disk.js';
import { Owner, type Scheduler } from './events.js';
import type { NodeOptions, SimOptions } from './options.js';
import type { Prng } from './prng.js';
import { Provenance, type WriteRef } from './provenance.js';

/** A byte span of the volume. */
interface Span {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** What a node needs from the cluster around it. */
export interface NodeHost {
  readonly sched: Scheduler;
  /** Sends on the node's current connection; false = over the high-water mark. */
  send(from: SimNode, msg: LinkMessage, ref: WriteRef | null): boolean;
  reply(node: SimNode, reqId: number, errno: ReplyErrno | null): void;
  /** The secondary applied (and acked) write `seq` of sender incarnation `from`: it marked it. */
  writeAcked(node: SimNode, from: number, seq: number): void;
  /** The primary applied and sent a write: its copy of it, to be marked when acked. */
  writeSent(node: SimNode, seq: number, ref: WriteRef): void;
  trace(line: string): void;
  newIncarnation(): number;
  /** Test-only hook: lets a mutant wrap the core (see sim/mutants.ts). */
  wrapCore?: (core: ReplicaCore, node: SimNode) => void;
  /** Shell-side fixes assumed for reported bugs (sim/fixes.ts, `--assume-fix`). */
  readonly shellFixes: ReadonlySet<string>;
}

const BLOCK = 512;

export class SimNode {
  core: ReplicaCore | null = null;
  owner = new Owner('none');
  incarnation = 0;
  /** The connection this incarnation has been told is up, and not yet told is down. */
  liveConn: number | null = null;
  readonly store: SimStore;
  readonly prov: Provenance;
  readonly name: string;
  private readonly prng: Prng;
  /** Delivered write seq → the incarnation that sent it (acks name only the seq). */
  private readonly senderOfSeq = new Map<number, number>();
  /** Promotions waiting for the peer's confirmation: request id → the operator's continuation. */
  private readonly promotions = new Map<number, (error: string | null) => void>();
  private nextPromoteId = 1;
  /** A clean shutdown in progress: what to call once the node is down; null otherwise. */
  private stopping: (() => void) | null = null;
  /** The shutdown's local FLUSHes (negative request ids, never the host's). */
  private localFlushId = 0;
  /** Host writes applied in the current event; those not mirrored are nobody's mark. */
  private localApplies: Span[] = [];
  /** Metadata writes, one at a time in order, as Volume chains them. */
  private readonly persistQueue: { token: number; state: PersistedState }[] = [];
  private persistInFlight: { token: number; state: PersistedState } | null = null;

  constructor(readonly index: 0 | 1, private readonly opts: SimOptions, private readonly host: NodeHost, prng: Prng) {
    this.name = 'ab'[index]!;
    this.prng = prng;
    const size = opts.trackCount * opts.trackSizeBytes;
    this.store = new SimStore(size, opts.powerLoss);
    this.prov = new Provenance(size / BLOCK);
  }

  private get nodeOpts(): NodeOptions {
    return this.opts.nodes[this.index];
  }

  get alive(): boolean {
    return this.core !== null;
  }

  /** Up and not shutting down: may be connected to its peer. */
  get connectable(): boolean {
    return this.core !== null && this.stopping === null;
  }

  private get sched(): Scheduler {
    return this.host.sched;
  }

  /**
   * Starts (or restarts, after a crash) a fresh core over this node's store and its last durable
   * metadata. `configRole` is the config's role, used only by a fresh store.
   */
  start(configRole: Role): void {
    this.incarnation = this.host.newIncarnation();
    this.owner = new Owner(`${this.name}${this.incarnation}`);
    const persisted = this.store.meta === null ? null : structuredClone(this.store.meta);
    this.core = new ReplicaCore(this.settings(configRole), this.sched.nowMs, persisted);
    this.host.wrapCore?.(this.core, this);
    this.liveConn = null;
    this.localApplies = [];
    this.host.trace(`${this.name}: start #${this.incarnation} as ${this.core.role}, epoch ${this.core.epoch}`);
    this.flushActions();
    this.scheduleTick();
  }

  private settings(role: Role): ReplicaSettings {
    const o = this.opts;
    return {
      node: this.name, peer: this.index === 0 ? 'b' : 'a',
      geometry: {
        volumeSizeBytes: o.trackCount * o.trackSizeBytes, trackSizeBytes: o.trackSizeBytes,
        capacityBytes: this.nodeOpts.cacheTracks * o.trackSizeBytes, rangeTracks: o.rangeTracks,
      },
      hardening: {
        maxDirtyAgeMs: o.maxDirtyAgeMs, destageIntervalMs: o.destageIntervalMs, rangeDirtyThresholdTracks: o.rangeDirtyThresholdTracks,
        maxJobBytes: o.maxJobTracks * o.trackSizeBytes, pressureFraction: o.pressureFraction,
      },
      tracker: o.tracker, flush: o.flush, degraded: o.degraded, role, mirrored: true,
      maxHardensInFlight: o.maxHardensInFlight, syncChunkBytes: o.syncChunkTracks * o.trackSizeBytes,
      syncWindowChunks: o.syncWindowChunks, syncRateBytesPerSec: o.syncRateBytesPerSec, storeRetryMs: o.storeRetryMs,
    };
  }

  /** Same cadence as Volume: often enough that the age bound holds to within a few percent. */
  private scheduleTick(): void {
    const tickMs = Math.max(10, Math.min(100, Math.floor(this.opts.maxDirtyAgeMs / 10)));
    this.sched.after(tickMs, `tick ${this.name}`, () => {
      this.run((core, now) => core.tick(now));
      this.scheduleTick();
    }, this.owner);
  }

  /**
   * SIGTERM, as node.ts stops a node: the link goes first (the caller drops it), then what
   * Volume.close does — refuse new host writes, a local FLUSH until quiescent, then the metadata
   * with the clean-shutdown flag and the out-of-sync set. `stopped` runs once the node is down.
   */
  stopCleanly(stopped: () => void): void {
    if (this.core === null || this.stopping !== null) return;
    this.stopping = stopped;
    this.host.trace(`${this.name}: SIGTERM`);
    // node.ts closes the link before the volume: the core hears of it at once.
    if (this.liveConn !== null) this.linkDown(this.liveConn);
    this.run((core) => core.beginClose());
    this.flushUntilQuiescent();
  }

  private flushUntilQuiescent(): void {
    const core = this.core;
    if (core === null) return; // crashed meanwhile
    if (core.quiescent && this.persistInFlight === null && this.persistQueue.length === 0) return this.finishStop(core);
    const reqId = --this.localFlushId;
    this.run((c, now) => c.hostFlushLocal(reqId, now));
  }

  private finishStop(core: ReplicaCore): void {
    const stopped = this.stopping!;
    this.store.meta = structuredClone(core.persistedState(true));
    this.goDown('STOPPED (clean shutdown)');
    stopped();
  }

  /** kill -9: the core, its cache and everything in flight are gone; the store keeps what landed. */
  crash(): void {
    if (this.opts.powerLoss && this.prng.chance(0.5)) this.store.crashPower();
    else this.store.crashProcess(this.prng);
    // The metadata file is replaced by rename: the write in flight happened entirely or not at all.
    if (this.persistInFlight !== null && this.prng.chance(0.5)) this.store.meta = structuredClone(this.persistInFlight.state);
    this.goDown('CRASH');
  }

  private goDown(how: string): void {
    this.owner.cancelled = true;
    this.stopping = null;
    this.persistInFlight = null;
    this.persistQueue.length = 0;
    this.core = null;
    this.liveConn = null;
    const promotions = [...this.promotions.values()];
    this.promotions.clear();
    for (const done of promotions) done('node crashed');
    this.prov.reset();
    this.senderOfSeq.clear();
    this.host.trace(`${this.name}: ${how}`);
  }

  /**
   * POST /promote: the core decides, at once or (connected) once the peer confirmed; `done` gets
   * the verdict (null: now primary). Volume then waits for the metadata, which we model as-is.
   */
  promote(force: boolean, done: (error: string | null) => void): void {
    const requestId = this.nextPromoteId++;
    let result: ReturnType<ReplicaCore['promote']> | null = null;
    this.run((core, now) => { result = core.promote(force, now, requestId); });
    const verdict = result as ReturnType<ReplicaCore['promote']> | null;
    if (verdict === null) return done('node is down');
    if (!verdict.ok) return done(verdict.error);
    if (!verdict.pending) return done(null);
    this.promotions.set(requestId, done);
  }

  /** POST /demote: new writes get EPERM; Volume then waits for writesDrained. */
  demote(): { ok: true } | { ok: false; error: string } {
    let result: { ok: true } | { ok: false; error: string } = { ok: false, error: 'node is down' };
    this.run((core) => { result = core.demote(); });
    return result;
  }

  /**
   * Feeds one event to the core, then carries out every action it emitted. `hostWrite` names the
   * span of a host write this event submits, so we can tell which of it went into the cache now.
   */
  run(event: (core: ReplicaCore, nowMs: number) => void, hostWrite?: { offsetBytes: number; lengthBytes: number }): void {
    const core = this.core;
    if (core === null) return;
    const queuedBefore = core.queuedHostPieces.slice();
    event(core, this.sched.nowMs);
    this.localApplies = this.hostPiecesApplied(core, queuedBefore, hostWrite);
    this.flushActions();
  }

  /** Host write pieces that went into the cache during the event (queued ones wait for room). */
  private hostPiecesApplied(core: ReplicaCore, before: Span[], hostWrite?: { offsetBytes: number; lengthBytes: number }): Span[] {
    const queue = core.queuedHostPieces;
    const still = new Set(queue);
    const applied: Span[] = before.filter((p) => !still.has(p)).map((p) => ({ offsetBytes: p.offsetBytes, lengthBytes: p.lengthBytes }));
    if (hostWrite !== undefined && core.role === 'primary') {
      // Its pieces are contiguous and only a suffix of them can still be queued.
      const mine = queue.filter((p) => !before.includes(p));
      const end = mine.length > 0 ? mine[0]!.offsetBytes : hostWrite.offsetBytes + hostWrite.lengthBytes;
      if (end > hostWrite.offsetBytes) applied.push({ offsetBytes: hostWrite.offsetBytes, lengthBytes: end - hostWrite.offsetBytes });
    }
    return applied;
  }

  /** Like Volume.run's loop; a synchronous sync-read feeds the core again, so drain until empty. */
  private flushActions(): void {
    for (;;) {
      const core = this.core;
      if (core === null) return;
      const actions = core.takeActions();
      this.resolveApplied(actions);
      if (actions.length === 0) return;
      for (const a of actions) this.perform(a);
    }
  }

  /**
   * Brings the provenance up to what the core applied in this event, before the actions (a harden
   * job among them snapshots those blocks): peer data taken off the inbound queue, and host writes
   * that went into the cache without being mirrored (their `send` would set them otherwise).
   */
  private resolveApplied(actions: ReplicaAction[]): void {
    const { queued, headAppliedBytes } = this.core!.heldInbound;
    this.prov.resolveApplied(queued, headAppliedBytes, this.core!.role === 'secondary');
    if (this.localApplies.length === 0) return;
    const sent = new Set<number>();
    for (const a of actions) if (a.kind === 'send' && (a.msg.type === 'write' || a.msg.type === 'zero')) sent.add(a.msg.offsetBytes);
    for (const span of this.localApplies) if (!sent.has(span.offsetBytes)) this.prov.setSpan(span.offsetBytes, span.lengthBytes, null);
    this.localApplies = [];
  }

  private perform(action: ReplicaAction): void {
    switch (action.kind) {
      case 'reply':
        // The shutdown's own FLUSH: again until nothing is left (after a pause if the store failed).
        if (action.reqId < 0) return this.sched.after(action.errno === null ? 1 : this.opts.storeRetryMs, `${this.name} shutdown flush`, () => this.flushUntilQuiescent(), this.owner);
        return this.host.reply(this, action.reqId, action.errno);
      case 'send': return this.performSend(action.msg);
      case 'harden': return this.runHardenJob(action.job, action.reason);
      case 'sync-store': return this.runStoreSync(action.syncId);
      case 'sync-read': return this.runSyncRead(action.offsetBytes, action.lengthBytes, action.resyncId);
      case 'persist': return this.queuePersist(action.token, action.state);
      case 'promote-done': {
        const done = this.promotions.get(action.requestId);
        this.promotions.delete(action.requestId);
        return done?.(action.error);
      }
      case 'log':
        this.host.trace(`${this.name}: ${action.level} ${action.msg}${action.fields ? ' ' + JSON.stringify(action.fields) : ''}`);
        return;
    }
  }

  private performSend(msg: LinkMessage): void {
    const conn = this.liveConn ?? -1;
    let wireRef: WriteRef | null = null;
    if (msg.type === 'write' || msg.type === 'zero') {
      // Step 62: we mark the peer's copy before sending, so the receiver's copy is marked by us.
      // Our own copy is marked by the peer only once it applies the write (step 66), i.e. acks.
      const local: WriteRef = { conn, markedBy: null, what: `${this.name}#${msg.seq}` };
      this.prov.setSpan(msg.offsetBytes, msg.type === 'zero' ? msg.lengthBytes : msg.data.length, local);
      this.host.writeSent(this, msg.seq, local);
      wireRef = { conn, markedBy: this.incarnation, what: `${this.name}#${msg.seq}` };
    } else if (msg.type === 'syncData') {
      wireRef = { conn, markedBy: this.incarnation, what: `${this.name}:sync@${msg.offsetBytes}` };
    } else if (msg.type === 'writeAck') {
      const from = this.senderOfSeq.get(msg.seq);
      this.senderOfSeq.delete(msg.seq);
      if (from !== undefined) this.host.writeAcked(this, from, msg.seq);
    }
    if (!this.host.send(this, msg, wireRef)) this.core?.setLinkWritable(false, this.sched.nowMs);
  }

  private runHardenJob(job: HardenJob, reason: HardenReason): void {
    this.host.trace(`${this.name}: harden j${job.id} ${reason} tracks ${job.tracks.join(',')}`);
    this.prov.hardenStarted(job);
    let left = job.runs.length;
    let failed = false;
    let reported = false;
    for (const run of job.runs) {
      const { id, fails } = this.store.begin(run.offsetBytes, run.data, run.lengthBytes);
      this.sched.after(this.prng.delay(this.nodeOpts.storeWriteMeanMs), `${this.name} store-write j${job.id}`, () => {
        this.store.complete(id, !fails);
        left--;
        if (fails) failed = true;
        // Volume waits for every run to settle (Promise.allSettled) before it reports a failure.
        if (failed && !reported && left === 0) {
          reported = true;
          this.prov.hardenFailed(job.id);
          this.run((core, now) => core.hardenFailed(job.id, 'injected EIO', now));
          return;
        }
        if (failed || left > 0) return;
        this.prov.hardenDone(job.id);
        this.host.trace(`${this.name}: hardened j${job.id}`);
        this.run((core, now) => core.hardenDone(job.id, job.bytes, job.runs.length, reason, now));
      }, this.owner);
    }
  }

  private runStoreSync(syncId: number): void {
    const token = this.store.beginSync();
    this.sched.after(this.prng.delay(this.nodeOpts.storeSyncMeanMs), `${this.name} fsync`, () => {
      this.store.completeSync(token);
      this.run((core) => core.storeSynced(syncId, true));
    }, this.owner);
  }

  private runSyncRead(offsetBytes: number, lengthBytes: number, resyncId: number): void {
    const core = this.core;
    if (core !== null && this.store.failNextSyncReads > 0) {
      const plan = core.cache.beginRead(offsetBytes, lengthBytes);
      if (plan.storeRuns.length > 0) {
        // The store says EIO, as Volume.readAligned reports it: the plan is cancelled, the core told.
        this.store.failNextSyncReads--;
        this.sched.after(this.prng.delay(this.nodeOpts.storeReadMeanMs), `${this.name} store-read @${offsetBytes}+${lengthBytes} fails`, () => {
          core.cache.cancelRead(plan);
          this.run((c, now) => c.syncChunkFailed(offsetBytes, lengthBytes, 'injected EIO', now, resyncId));
        }, this.owner);
        return;
      }
      core.cache.cancelRead(plan);
    }
    this.read(offsetBytes, lengthBytes, (bytes, c, now) => c.syncChunkRead(offsetBytes, bytes, now, resyncId));
  }

  /** Volume chains metadata writes: each starts when the previous one is durable. */
  private queuePersist(token: number, state: PersistedState): void {
    this.persistQueue.push({ token, state: structuredClone(state) });
    this.startPersist();
  }

  private startPersist(): void {
    if (this.persistInFlight !== null) return;
    const next = this.persistQueue.shift();
    if (next === undefined) return;
    this.persistInFlight = next;
    this.sched.after(1 + this.prng.delay(this.nodeOpts.storeSyncMeanMs), `${this.name} persist t${next.token}`, () => {
      this.store.meta = next.state;
      this.persistInFlight = null;
      this.run((core, now) => core.persistDone(next.token, now));
      this.startPersist();
    }, this.owner);
  }

  /**
   * Reads through the cache, as Volume.readAligned: `done` runs in the same step as finishRead.
   * With nothing to fetch from the store it all happens now, synchronously.
   */
  read(offsetBytes: number, lengthBytes: number, done: (bytes: Buffer, core: ReplicaCore, nowMs: number) => void): void {
    const core = this.core;
    if (core === null) return;
    const plan = core.cache.beginRead(offsetBytes, lengthBytes);
    const finish = (): void => {
      const parts = plan.storeRuns.map((r) => this.store.read(r.offsetBytes, r.lengthBytes));
      const bytes = core.cache.finishRead(plan, parts);
      done(bytes, core, this.sched.nowMs);
    };
    if (plan.storeRuns.length === 0) return finish();
    this.sched.after(this.prng.delay(this.nodeOpts.storeReadMeanMs), `${this.name} store-read @${offsetBytes}+${lengthBytes}`, () => {
      finish();
      this.flushActions();
    }, this.owner);
  }

  /** The node's whole view of the volume (cache over store), read synchronously: for probes. */
  viewNow(): Buffer {
    const core = this.core!;
    const size = this.store.sizeBytes;
    const plan = core.cache.beginRead(0, size);
    return core.cache.finishRead(plan, plan.storeRuns.map((r) => this.store.read(r.offsetBytes, r.lengthBytes)));
  }

  // ---------------------------------------------------------------- link events

  linkUp(connId: number): void {
    this.liveConn = connId;
    this.run((core, now) => core.linkEstablished(now));
  }

  linkDown(connId: number): void {
    if (this.liveConn !== connId) return;
    this.liveConn = null;
    this.run((core, now) => {
      // A core that forgets the messages it held back (they were never acked) leaves our account
      // of them behind too: drop the unapplied tail.
      const before = core.heldInbound.queued;
      core.linkDown(now);
      const after = core.heldInbound.queued;
      if (after < before) this.prov.forgetQueued(before - after);
    });
  }

  deliver(connId: number, msg: LinkMessage, ref: WriteRef | null): void {
    if (this.liveConn !== connId || this.core === null) return;
    this.prov.delivered(msg, ref);
    if ((msg.type === 'write' || msg.type === 'zero') && ref?.markedBy != null) this.senderOfSeq.set(msg.seq, ref.markedBy);
    this.run((core, now) => core.linkMessage(msg, now));
  }

  drained(connId: number): void {
    if (this.liveConn !== connId) return;
    this.run((core, now) => core.setLinkWritable(true, now));
  }
}

