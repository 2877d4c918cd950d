// One simulated node: the production shell (src/node/volume.ts, the replica core inside it) over
// the simulated ports — the clock and timers of the seeded scheduler (sim/events.ts), the store and
// metadata of sim/disk.ts, and the link of sim/network.ts — so the code the invariants judge is the
// code that runs in production. Nothing here decides what the node does; this file holds:
//  - the port glue: the link port's send (and the inbound events back into Volume), and the
//    lifecycle a process has around its Volume: start over the store and last durable metadata,
//    kill -9 (the incarnation's pending I/O and timers are cancelled with its Owner: Volume is
//    abandoned), SIGTERM (Volume.stop, as src/node/node.ts stops a node);
//  - the observation the invariants need (sim/provenance.ts: which write each unhardened block
//    holds and who marked it), taken by wrapping a few core methods the way the mutants do.
import type { ReplicaCore } from '../src/core/replica.js';
import type { LinkMessage, ReplicaAction, ReplyErrno, Role } from '../src/core/replica-types.js';
import { NbdRequestError } from '../src/nbd/export.js';
import { Volume } from '../src/node/volume.js';
import { SimMetadata, SimStore } from './disk.js';
import { Owner, simClock, type Scheduler } from './events.js';
import type { NodeOptions, SimOptions } from './options.js';
import type { Prng } from './prng.js';
import { Provenance, type WriteRef } from './provenance.js';
import { NODE_NAMES } from './network.js';
import type { DataChannel } from '../src/core/replica-data.js';
import { staleStream } from '../src/core/replica-apply.js';
import type { HostOp } from './workload.js';

/** A byte span of the volume. */
interface Span {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** What a node needs from the cluster around it. */
export interface NodeHost {
  readonly sched: Scheduler;
  /** Sends on the node's current connection to `to`; false = over the high-water mark. */
  send(from: SimNode, to: number, msg: LinkMessage, ref: WriteRef | null): boolean;
  /** The secondary applied (and acked) write `seq` of sender incarnation `from`: it marked it. */
  writeAcked(node: SimNode, from: number, seq: number): void;
  /** The primary applied and sent a write to `to`: its copy of it, to be marked when that peer acks. */
  writeSent(node: SimNode, to: number, seq: number, refs: WriteRef[]): void;
  trace(line: string): void;
  newIncarnation(): number;
  /** The node's core threw: the run fails with that error. */
  fail(err: unknown): void;
  /** A node's startup metadata landed: it may link and serve now. */
  nodeReady(): void;
  /** Test-only hook: lets a mutant wrap the core (see sim/mutants.ts). */
  wrapCore?: (core: ReplicaCore, node: SimNode) => void;
  /** Shell-side fixes assumed for reported bugs (sim/fixes.ts, `--assume-fix`). */
  readonly shellFixes: ReadonlySet<string>;
}

const BLOCK = 512;
/** The message a store error carries (sim/disk.ts): the only error a host may legitimately see. */
const INJECTED_EIO = 'injected EIO';

export class SimNode {
  volume: Volume | null = null;
  owner = new Owner('none');
  incarnation = 0;
  /** This node's first incarnation: the only one that starts on an empty disk. */
  private firstIncarnation: number | null = null;
  /** Per peer (by node index): the connection this incarnation has been told is up, and not yet told is down. */
  readonly liveConns: (number | null)[];
  readonly store: SimStore;
  readonly prov: Provenance;
  readonly name: string;
  private readonly prng: Prng;
  private metadata: SimMetadata | null = null;
  /** Delivered write `peer:seq` → the incarnation that sent it (acks name only the seq). */
  private readonly senderOfSeq = new Map<string, number>();
  /** Operator requests (promote, demote) waiting for Volume's answer; a crash answers them. */
  private readonly waiting = new Set<(error: string | null) => void>();
  /** Among them, the promotions: answered as soon as the core is primary (see promote). */
  private readonly promoting = new Set<(error: string | null) => void>();
  /** And the demotions: answered as soon as the core is secondary with its writes drained. */
  private readonly demoting = new Set<(error: string | null) => void>();
  /** A clean shutdown (Volume.stop) in progress. */
  private stopping = false;
  /** This incarnation's startup metadata is on disk (Volume.ready): node.ts links and serves only then. */
  private ready = false;
  /** ... and Volume said its hardening failed and it is trying again. */
  private stopRetrying = false;
  /** The host write being submitted right now, so we can tell which of it went into the cache. */
  private hostWrite: Span | null = null;
  /** The core's queue of host write pieces waiting for room, as of its last batch of actions. */
  private queuedBefore: Span[] = [];
  /** The core's writes held for quorum before this event: those gone since were sent again. */
  private awaitingBefore = 0;
  /** Writes the core is about to send → what the copy on the wire holds (see afterEvent). */
  private readonly wireRefs = new WeakMap<LinkMessage, string>();
  /** The other nodes of the volume, by name (the config's `nodes:`, this one left out). */
  readonly peerNames: readonly string[];

  constructor(readonly index: number, nodeCount: number, private readonly opts: SimOptions, private readonly host: NodeHost, prng: Prng, faultPrng: Prng) {
    this.name = NODE_NAMES[index]!;
    this.liveConns = new Array<number | null>(nodeCount).fill(null);
    this.peerNames = [...NODE_NAMES.slice(0, nodeCount)].filter((n) => n !== this.name);
    this.prng = prng;
    const size = opts.trackCount * opts.trackSizeBytes;
    this.store = new SimStore(this.name, size, opts.powerLoss, host.sched, prng, this.nodeOpts, faultPrng, opts.storage);
    this.prov = new Provenance(size / BLOCK);
  }

  private get nodeOpts(): NodeOptions {
    return this.opts.nodes[this.index]!;
  }

  get core(): ReplicaCore | null {
    return this.volume?.core ?? null;
  }

  get alive(): boolean {
    return this.volume !== null;
  }

  /** Up, its startup metadata on disk (Volume.ready), and not shutting down: links and serves hosts. */
  get connectable(): boolean {
    return this.volume !== null && this.ready && !this.stopping;
  }

  private get sched(): Scheduler {
    return this.host.sched;
  }

  /**
   * Starts (or restarts, after a crash) a fresh Volume over this node's store and its last durable
   * metadata, as src/node/node.ts does. `configRole` is the config's role, used only by a fresh store.
   */
  start(configRole: Role): void {
    this.incarnation = this.host.newIncarnation();
    this.firstIncarnation ??= this.incarnation;
    const owner = new Owner(`${this.name}${this.incarnation}`);
    this.owner = owner;
    this.store.owner = owner;
    this.metadata = new SimMetadata(this.store, this.sched, this.prng, this.nodeOpts, owner);
    this.liveConns.fill(null);
    this.queuedBefore = [];
    this.awaitingBefore = 0;
    const o = this.opts;
    const volume = new Volume({
      node: this.name, name: 'sim', description: `sim node ${this.name}`,
      sizeBytes: this.store.sizeBytes, trackSizeBytes: o.trackSizeBytes,
      cacheBytes: this.nodeOpts.cacheTracks * o.trackSizeBytes, rangeTracks: o.rangeTracks,
      hardening: { maxDirtyAgeMs: o.maxDirtyAgeMs, destageIntervalMs: o.destageIntervalMs, rangeDirtyThresholdTracks: o.rangeDirtyThresholdTracks },
      store: this.store,
      metadata: this.metadata,
      // A node's first start is on a disk created empty (zeros), as a file store made sparse.
      storeCreatedFresh: this.incarnation === this.firstIncarnation,
      mirror: {
        peers: [...this.peerNames], role: configRole, tracker: o.tracker, flush: o.flush, degraded: o.degraded, quorum: o.quorum,
        syncRateBytesPerSec: o.syncRateBytesPerSec,
        // Every simulated resync yields to host writes (issue 14 item 6), down to a quarter of its rate.
        syncMinRateBytesPerSec: o.syncRateBytesPerSec / 4,
        send: (peer, msg) => this.send(peer, msg),
        // The simulated link has no socket to stop reading: the core holds its inbound stream itself.
        setReceiving: () => undefined,
      },
      log: (level, msg, fields) => {
        if (msg.startsWith('stopping: store write failed')) this.stopRetrying = true;
        this.host.trace(`${this.name}: ${level} ${msg}${fields ? ' ' + JSON.stringify(fields) : ''}`);
      },
      onFatal: (err) => this.host.fail(err),
      clock: simClock(this.sched, owner, `${this.name} timer`),
      tuning: {
        maxHardensInFlight: o.maxHardensInFlight, maxJobBytes: o.maxJobTracks * o.trackSizeBytes, pressureFraction: o.pressureFraction,
        storeRetryMs: o.storeRetryMs, syncChunkBytes: o.syncChunkTracks * o.trackSizeBytes, syncWindowChunks: o.syncWindowChunks,
      },
    });
    this.volume = volume;
    this.ready = false;
    void volume.ready().then(() => {
      if (this.owner !== owner) return;
      this.ready = true;
      this.host.nodeReady();
    });
    this.observe(volume.core);
    this.host.wrapCore?.(volume.core, this);
    this.host.trace(`${this.name}: start #${this.incarnation} as ${volume.core.role}, epoch ${volume.core.epoch}`);
  }

  /**
   * SIGTERM, as node.ts stops a node once its NBD server closed: Volume.stop, which hardens a
   * primary's data while its link is still up and then calls `leaveLink` (the caller drops the
   * connection; we tell Volume the link went down, as node.ts does). `stopped(clean)` runs once
   * the node is down: clean, or the stop failed and the process exited 1 (the CLI's "stop failed")
   * with what it held — a crash.
   *
   * A store write failing while it hardens no longer fails the stop: Volume retries until all is
   * hardened. It used to fail it, after a primary had left its link first and started a new epoch
   * alone: dead with writes only in its RAM, it came back the newer side and resynced its stale
   * store over the peer's copy of them (seeds 551, 782, 875, 1286, 1702; with nobody promoted,
   * the pair also waited forever with two secondaries: 1202, 1320, 1966).
   */
  stopCleanly(leaveLink: () => void, stopped: (clean: boolean) => void): void {
    const volume = this.volume;
    if (volume === null || this.stopping) return;
    this.stopping = true;
    this.stopRetrying = false;
    this.host.trace(`${this.name}: SIGTERM`);
    const owner = this.owner;
    volume.stop(async () => {
      if (this.owner !== owner) return;
      const conns = [...this.liveConns];
      leaveLink();
      conns.forEach((conn, peer) => { if (conn !== null) this.linkDown(peer, conn); });
    }).then(() => {
      if (this.owner !== owner) return;
      this.goDown('STOPPED (clean shutdown)');
      stopped(true);
    }, (err: Error) => {
      if (this.owner !== owner) return;
      this.host.trace(`${this.name}: stop failed (${err.message}): exit 1`);
      this.crash(false); // the process exits; the machine keeps its power and page cache
      stopped(false);
    });
  }

  /** A clean stop is under way and its hardening has met a store failure (it keeps trying). */
  get stopStuck(): boolean {
    return this.stopping && this.stopRetrying;
  }

  /**
   * kill -9: Volume, its cache and everything in flight are gone; the store keeps what landed.
   * With `mayLosePower` (and power loss on in the seed) it is a power loss half the time.
   */
  crash(mayLosePower = true): void {
    const powerLoss = mayLosePower && this.opts.powerLoss && this.prng.chance(0.5);
    if (powerLoss) this.store.crashPower(this.prng);
    else this.store.crashProcess(this.prng);
    this.metadata?.crash(this.prng, powerLoss);
    this.goDown(powerLoss ? 'CRASH (power loss)' : 'CRASH');
  }

  private goDown(how: string): void {
    this.owner.cancelled = true;
    this.volume?.abandon();
    this.volume = null;
    this.metadata = null;
    this.stopping = false;
    this.stopRetrying = false;
    this.liveConns.fill(null);
    this.hostWrite = null;
    this.queuedBefore = [];
    this.awaitingBefore = 0;
    const waiting = [...this.waiting];
    this.waiting.clear();
    this.promoting.clear();
    this.demoting.clear();
    for (const done of waiting) done('node crashed');
    this.prov.reset();
    this.senderOfSeq.clear();
    this.host.trace(`${this.name}: ${how}`);
  }

  // ---------------------------------------------------------------- operator (admin actions)

  /**
   * POST /promote: `done` gets the verdict (null: now primary). The operator counts the failover
   * done, and faults may strike again, the moment the core is primary, before Volume's answer
   * (which waits for the new epoch to be on disk): a crash right then is one more single failure
   * the pair must survive, and the window where the peer may not know the new epoch yet (seed
   * 1101's shape, the mutant promote-unconfirmed).
   */
  promote(force: boolean, done: (error: string | null) => void): void {
    this.adminAction((v) => v.promote(force), done, this.promoting);
  }

  /**
   * POST /demote: `done` gets the verdict once the writes in flight drained (null: ok). As with
   * promote, the operator moves on when the core is there (secondary, drained), not when Volume's
   * answer comes (after the role is on disk): a switchover tool that promotes the other side at
   * once leaves the peer the least time to learn the new epoch (seed 3337's shape).
   */
  demote(done: (error: string | null) => void): void {
    this.adminAction((v) => v.demote(), done, this.demoting);
  }

  private adminAction(action: (volume: Volume) => Promise<unknown>, done: (error: string | null) => void, also?: Set<(error: string | null) => void>): void {
    const volume = this.volume;
    if (volume === null) return done('node is down');
    // node.ts starts its admin server once the node is ready: until then the request finds no one.
    if (!this.ready) return done('node is starting');
    const answer = (error: string | null): void => {
      also?.delete(answer);
      if (this.waiting.delete(answer)) done(error);
    };
    this.waiting.add(answer);
    also?.add(answer);
    action(volume).then(() => answer(null), (err: Error) => answer(err.message));
  }

  // ---------------------------------------------------------------- host requests (NBD)

  /** A host write, FUA, WRITE_ZEROES or TRIM through Volume; resolves to its reply. */
  submit(op: HostOp, data: Buffer | null): Promise<ReplyErrno | null> {
    const volume = this.volume!;
    const { offsetBytes, lengthBytes } = op;
    if (op.kind !== 'flush') this.hostWrite = { offsetBytes, lengthBytes };
    let done: Promise<void>;
    try {
      if (op.kind === 'flush') done = volume.flush();
      else if (op.kind === 'zero') done = volume.writeZeroes(offsetBytes, lengthBytes, false);
      else if (op.kind === 'trim') done = volume.trim(offsetBytes, lengthBytes, false);
      else done = volume.write(offsetBytes, data!, op.kind === 'fua');
    } finally {
      this.hostWrite = null;
    }
    return done.then(() => null, (err: unknown) => {
      if (err instanceof NbdRequestError) return err.errno as ReplyErrno;
      throw err;
    });
  }

  /** A host read through Volume; resolves to null when the store failed it (EIO to the host). */
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer | null> {
    return this.volume!.read(offsetBytes, lengthBytes).catch((err: Error) => {
      if (err.message === INJECTED_EIO) return null;
      throw err;
    });
  }

  /** The node's view of the volume (cache over store; by default all of it), read synchronously: for probes. */
  viewNow(offsetBytes = 0, lengthBytes = this.store.sizeBytes): Buffer {
    const core = this.core!;
    const plan = core.cache.beginRead(offsetBytes, lengthBytes);
    return core.cache.finishRead(plan, plan.storeRuns.map((r) => this.store.peek(r.offsetBytes, r.lengthBytes)));
  }

  // ---------------------------------------------------------------- the link port

  /** Volume's send: the provenance the copy on the wire carries, then the simulated network. */
  private send(peer: string, msg: LinkMessage): boolean {
    const to = this.indexOf(peer);
    const conn = this.liveConns[to] ?? -1;
    let wireRef: WriteRef | null = null;
    const what = this.wireRefs.get(msg);
    if (what !== undefined) wireRef = { marks: new Map([[this.incarnation, conn]]), what };
    else if (msg.type === 'syncData') {
      wireRef = { marks: new Map([[this.incarnation, conn]]), what: `${this.name}:sync@${msg.offsetBytes}` };
    } else if (msg.type === 'writeAck') {
      const key = `${peer}:${msg.seq}`;
      const from = this.senderOfSeq.get(key);
      this.senderOfSeq.delete(key);
      if (from !== undefined) this.host.writeAcked(this, from, msg.seq);
    }
    return this.host.send(this, to, msg, wireRef);
  }

  private indexOf(peer: string): number {
    const i = NODE_NAMES.indexOf(peer);
    if (i < 0 || i === this.index) throw new Error(`sim: ${this.name} has no peer ${peer}`);
    return i;
  }

  /** The connection to node `peer` this incarnation is up on, or null. */
  liveConnTo(peer: number): number | null {
    return this.liveConns[peer]!;
  }

  linkUp(peer: number, connId: number): void {
    this.liveConns[peer] = connId;
    this.volume?.linkEstablished(NODE_NAMES[peer]!);
  }

  linkDown(peer: number, connId: number): void {
    if (this.liveConns[peer] !== connId) return;
    this.liveConns[peer] = null;
    this.volume?.linkDown(NODE_NAMES[peer]!);
  }

  deliver(peer: number, connId: number, msg: LinkMessage, ref: WriteRef | null): void {
    if (this.liveConns[peer] !== connId || this.volume === null) return;
    const name = NODE_NAMES[peer]!;
    this.prov.delivered(name, msg, ref);
    if ((msg.type === 'write' || msg.type === 'zero') && ref !== null) {
      for (const sender of ref.marks.keys()) this.senderOfSeq.set(`${name}:${msg.seq}`, sender);
    }
    this.volume.linkMessage(name, msg);
  }

  drained(peer: number, connId: number): void {
    if (this.liveConns[peer] !== connId) return;
    this.volume?.linkDrained(NODE_NAMES[peer]!);
  }

  // ---------------------------------------------------------------- observation (sim/provenance.ts)

  /**
   * Keeps the provenance in step with what the core does, by wrapping the core's own methods:
   * after each event (Volume takes its actions once per event) the provenance catches up with what
   * the core applied, before the actions run (a harden job among them snapshots those blocks); a
   * harden's completion and a link loss update it as they reach the core.
   */
  private observe(core: ReplicaCore): void {
    const mine = (): boolean => this.volume?.core === core;
    const takeActions = core.takeActions.bind(core);
    core.takeActions = () => {
      const actions = takeActions();
      if (mine()) this.afterEvent(core, actions);
      return actions;
    };
    const linkDown = core.linkDown.bind(core);
    core.linkDown = (peer: string, nowMs: number) => {
      // A core that forgets the messages it held back (they were never acked) leaves our account
      // of them behind too: drop the unapplied tail.
      const ch = channelOf(core, peer);
      const before = ch.inbound.length;
      linkDown(peer, nowMs);
      const after = ch.inbound.length;
      if (mine() && after < before) this.prov.forgetQueued(peer, before - after);
    };
    // Data the core drops unapplied: the tail of a stream this node left (replica-apply.ts staleStream).
    const link = (core as unknown as { link: LinkObservation }).link;
    const processInbound = link.processInbound.bind(link);
    link.processInbound = (ch: DataChannel, msg: LinkMessage, nowMs: number): boolean => {
      const data = msg.type === 'write' || msg.type === 'zero' || msg.type === 'syncData' || msg.type === 'syncZero';
      if (mine() && data && staleStream(core.peers, ch, core.epochHistory)) this.prov.ignored(msg);
      return processInbound(ch, msg, nowMs);
    };
    const hardenDone = core.hardenDone.bind(core);
    core.hardenDone = (jobId, ...rest) => {
      if (mine()) {
        this.prov.hardenDone(jobId);
        this.host.trace(`${this.name}: hardened j${jobId}`);
      }
      hardenDone(jobId, ...rest);
    };
    const hardenFailed = core.hardenFailed.bind(core);
    core.hardenFailed = (jobId, ...rest) => {
      if (mine()) this.prov.hardenFailed(jobId);
      hardenFailed(jobId, ...rest);
    };
  }

  private afterEvent(core: ReplicaCore, actions: ReplicaAction[]): void {
    const applied = this.hostPiecesApplied(core, this.queuedBefore, this.hostWrite);
    this.hostWrite = null;
    this.queuedBefore = core.queuedHostPieces.slice();
    let resent = Math.max(0, this.awaitingBefore - core.awaitingQuorumCount);
    this.awaitingBefore = core.awaitingQuorumCount;
    this.resolveApplied(core, actions, applied);
    if (core.role === 'primary') for (const answer of [...this.promoting]) answer(null);
    if (core.role === 'secondary' && core.writesDrained) for (const answer of [...this.demoting]) answer(null);
    // In the order Volume carries them out: a harden job after a send snapshots the sent write.
    // One write goes to every peer receiving writes as one message (replica-acks.ts mirror).
    const local = new Map<LinkMessage, WriteRef[]>();
    for (const a of actions) {
      if (a.kind === 'send' && (a.msg.type === 'write' || a.msg.type === 'zero')) {
        let refs = local.get(a.msg);
        // Writes sent again once quorum returned go before any new one (DataPath.drainHostQueue).
        if (refs === undefined) local.set(a.msg, refs = this.writeSending(a.msg, resent-- > 0));
        this.host.writeSent(this, this.indexOf(a.peer), a.msg.seq, refs);
      }
      if (a.kind !== 'harden') continue;
      this.host.trace(`${this.name}: harden j${a.job.id} ${a.reason} tracks ${a.job.tracks.join(',')}`);
      this.prov.hardenStarted(a.job);
    }
  }

  /** Our copy of a write we send: its references, to be marked by each peer's ack. */
  private writeSending(msg: Extract<LinkMessage, { type: 'write' | 'zero' }>, again: boolean): WriteRef[] {
    // Step 62: we mark the peer's copy before sending, so the receiver's copy is marked by us.
    // Our own copy is marked by the peer only once it applies the write (step 66), i.e. acks.
    // A write sent again (held for quorum) is the bytes applied here before, some hardened since:
    // the blocks still unhardened keep their references (a harden job in flight compares them),
    // and the peer's ack of this copy marks them.
    const lengthBytes = msg.type === 'zero' ? msg.lengthBytes : msg.data.length;
    const what = `${this.name}#${msg.seq}`;
    this.wireRefs.set(msg, what);
    if (again) return this.prov.liveRefs(msg.offsetBytes, lengthBytes);
    const local: WriteRef = { marks: new Map(), what };
    this.prov.setSpan(msg.offsetBytes, lengthBytes, local);
    return [local];
  }

  /** Host write pieces that went into the cache during the event (queued ones wait for room). */
  private hostPiecesApplied(core: ReplicaCore, before: Span[], hostWrite: Span | null): Span[] {
    const queue = core.queuedHostPieces;
    const still = new Set(queue);
    const applied: Span[] = before.filter((p) => !still.has(p)).map((p) => ({ offsetBytes: p.offsetBytes, lengthBytes: p.lengthBytes }));
    if (hostWrite !== null && core.role === 'primary') {
      // Its pieces are contiguous and only a suffix of them can still be queued.
      const mine = queue.filter((p) => !before.includes(p));
      const end = mine.length > 0 ? mine[0]!.offsetBytes : hostWrite.offsetBytes + hostWrite.lengthBytes;
      if (end > hostWrite.offsetBytes) applied.push({ offsetBytes: hostWrite.offsetBytes, lengthBytes: end - hostWrite.offsetBytes });
    }
    return applied;
  }

  /**
   * Brings the provenance up to what the core applied in this event: peer data taken off the
   * inbound queue, and host writes that went into the cache without being mirrored (their `send`
   * would set them otherwise).
   */
  private resolveApplied(core: ReplicaCore, actions: ReplicaAction[], localApplies: Span[]): void {
    for (const ch of core.peers) this.prov.resolveApplied(ch.name, ch.inbound.length, ch.inbound.headAppliedBytes, core.role === 'secondary');
    if (localApplies.length === 0) return;
    const sent = new Set<number>();
    for (const a of actions) if (a.kind === 'send' && (a.msg.type === 'write' || a.msg.type === 'zero')) sent.add(a.msg.offsetBytes);
    for (const span of localApplies) if (!sent.has(span.offsetBytes)) this.prov.setSpan(span.offsetBytes, span.lengthBytes, null);
  }
}

/** The link half's members the observation wraps (compile-time privacy only, as in sim/mutants.ts). */
interface LinkObservation {
  processInbound(ch: DataChannel, msg: LinkMessage, nowMs: number): boolean;
}

/** The core's channel to `peer` (core.peers: one per other node). */
export function channelOf(core: ReplicaCore, peer: string): DataChannel {
  const ch = core.peers.find((c) => c.name === peer);
  if (ch === undefined) throw new Error(`sim: no channel to ${peer}`);
  return ch;
}
