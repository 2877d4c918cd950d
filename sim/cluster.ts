// One simulated run: two nodes, the link between them, a host, and a fault injector, all driven by
// one seeded PRNG and one event queue (DESIGN.md "Testing layers" 2; the shape of TigerBeetle's
// VOPR: a safety phase with faults, then a liveness phase without them).
//
//  1. faults: the host runs its workload while the injector drops, partitions and corrupts the
//     link, crashes and restarts nodes and fails store writes. Never more than one failure that
//     could lose data at once: a node may crash only while its peer is up (and the primary only
//     while the pair is in sync); that is the seed's promise — any *single* failure.
//  2. heal: no new faults; partitions heal, crashed nodes restart. Within `livenessLimitMs` of
//     simulated time the pair must be back in sync: link up, both in-sync, nothing dirty, both
//     records empty, stores byte-identical, and every block the last acknowledged write.
//
// Invariants run after every step (sim/invariants.ts); the first violation ends the run with the
// seed, the step and the tail of the trace. The nodes run the production shell (src/node/volume.ts),
// which is asynchronous: a step is one event plus every promise continuation it set off, all run
// before the checks (a macrotask turn drains them; nothing in a run waits on real I/O or time).
import type { ReplicaCore } from '../src/core/replica.js';
import type { LinkMessage } from '../src/core/replica-types.js';
import { Scheduler } from './events.js';
import { Faults } from './faults.js';
import { Host } from './host.js';
import { checkCoverage, explainImage, firstDifference, SimFailure } from './invariants.js';
import { Network, type LinkHost } from './network.js';
import { SimNode, type NodeHost } from './node.js';
import { describeOptions, drawOptions, type OptionOverrides, type SimOptions } from './options.js';
import { Prng } from './prng.js';
import type { WriteRef } from './provenance.js';

export interface RunHooks {
  /** Prints every trace line as it happens (--verbose). */
  onTrace?: (line: string) => void;
  /** Test-only: wraps each new core (a deliberate mutant, sim/mutants.ts). */
  wrapCore?: (core: ReplicaCore, node: SimNode) => void;
  /** Shell-side fixes assumed for reported bugs (sim/fixes.ts). */
  shellFixes?: ReadonlySet<string>;
  overrides?: OptionOverrides;
}

export interface RunResult {
  seed: number;
  ok: boolean;
  failure: string | null;
  steps: number;
  simMs: number;
  /** FNV-1a of every trace line: equal for equal runs (the replay check). */
  traceHash: number;
  tail: string[];
  options: string;
  stats: Record<string, number>;
}

const TAIL_LINES = 80;
const MAX_STEPS = 3_000_000;
/** The workload (a few hundred requests) must finish within this much simulated time. */
const MAX_FAULT_PHASE_MS = 120_000;
/**
 * With `quorum: majority` a primary cut off from its peer answers no write (issue 12): under a
 * seed's heaviest fault rates the workload may then not finish while faults go on, as specified.
 * Such seeds stop their faults after this long and must then finish and converge (liveness).
 */
const QUORUM_FAULT_PHASE_MS = 60_000;
/** Failover probe cadence, in steps: reading the secondary's whole view is the costly check. */
const PROBE_EVERY_STEPS = 40;
const CORE_SELF_CHECK_EVERY_STEPS = 8;

export class Cluster implements NodeHost, LinkHost {
  readonly sched = new Scheduler();
  readonly opts: SimOptions;
  readonly nodes: readonly [SimNode, SimNode];
  readonly network: Network;
  readonly host: Host;
  readonly faults: Faults;
  readonly shellFixes: ReadonlySet<string>;
  wrapCore?: (core: ReplicaCore, node: SimNode) => void;
  private readonly connectPrng: Prng;
  private phase: 'faults' | 'heal' = 'faults';
  private healDeadline = Infinity;
  private incarnations = 0;
  private hash = 0x811c9dc5;
  private readonly tail: string[] = [];
  private readonly sentRefs = new Map<string, WriteRef[]>();
  private readonly primaryOfEpoch = new Map<number, string>();
  /** The first check that failed inside a promise continuation (or a rejection nobody handled). */
  private asyncFailure: unknown = null;
  readonly stats: Record<string, number> = {
    crashes: 0, cleanRestarts: 0, stopKills: 0, drops: 0, partitions: 0, corrupts: 0, promotions: 0, switchovers: 0, probes: 0, connects: 0,
  };

  constructor(readonly seed: number, private readonly hooks: RunHooks = {}) {
    const root = new Prng(seed);
    this.opts = drawOptions(root.fork(), hooks.overrides);
    const faultPrng = root.fork();
    this.connectPrng = root.fork();
    this.shellFixes = hooks.shellFixes ?? new Set();
    if (hooks.wrapCore) this.wrapCore = hooks.wrapCore;
    const o = this.opts;
    this.network = new Network(this.sched, root.fork(), { delayMeanMs: o.linkDelayMeanMs, highWater: o.linkHighWater, detectMeanMs: o.detectMeanMs }, this);
    // The storage faults draw from a stream of their own, so their rates leave a seed's other draws as they were.
    const storageRoot = new Prng((seed ^ 0x5bd1e995) >>> 0);
    this.nodes = [new SimNode(0, o, this, root.fork(), storageRoot.fork()), new SimNode(1, o, this, root.fork(), storageRoot.fork())];
    this.host = new Host({
      sched: this.sched, nodes: this.nodes, opts: o,
      liveConnId: () => this.network.liveConnId,
      trace: (line) => this.trace(line),
      writeAcknowledged: (node, epoch) => this.writeAcknowledged(node, epoch),
      fail: (err) => this.fail(err),
    }, root.fork());
    this.faults = new Faults(this, faultPrng);
  }

  get healing(): boolean {
    return this.phase === 'heal';
  }

  configRole(node: SimNode): 'primary' | 'secondary' {
    return node.index === 0 ? 'primary' : 'secondary';
  }

  async run(): Promise<RunResult> {
    this.trace(`seed ${this.seed}: ${describeOptions(this.opts)}`);
    let failure: string | null = null;
    // A rejection the shell did not handle would crash a real node: here it fails the run.
    const onUnhandled = (err: unknown): void => this.fail(err);
    process.on('unhandledRejection', onUnhandled);
    try {
      this.nodes[0].start('primary');
      this.nodes[1].start('secondary');
      this.maybeConnect();
      this.host.start();
      this.faults.schedule();
      await settle();
      this.throwIfFailed();
      failure = await this.loop();
    } catch (err) {
      failure = err instanceof SimFailure ? err.message : `exception: ${(err as Error).stack ?? String(err)}`;
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    if (failure !== null) this.trace(`FAILED at step ${this.sched.steps}, t=${this.sched.nowMs}ms: ${failure}`);
    return {
      seed: this.seed, ok: failure === null, failure, steps: this.sched.steps, simMs: this.sched.nowMs,
      traceHash: this.hash >>> 0, tail: [...this.tail], options: describeOptions(this.opts),
      stats: { ...this.stats, ...this.host.counts, ...this.storageFaultCounts() },
    };
  }

  /** The storage faults both stores injected, by kind. */
  private storageFaultCounts(): Record<string, number> {
    const total: Record<string, number> = {};
    for (const n of this.nodes) for (const [k, v] of Object.entries(n.store.faultCounts)) total[k] = (total[k] ?? 0) + v;
    return total;
  }

  /** Runs steps until the pair converges after the faults, or a check fails (its message). */
  private async loop(): Promise<string | null> {
    while (this.sched.steps < MAX_STEPS) {
      if (this.sched.nowMs > MAX_FAULT_PHASE_MS && this.phase === 'faults') {
        return `liveness: the workload did not finish in ${MAX_FAULT_PHASE_MS} ms simulated (${this.host.inFlight} requests in flight; ${this.syncSummary()})`;
      }
      const label = this.sched.step();
      if (label === null) return `the event queue ran dry (nothing left to happen, yet not converged: ${this.syncSummary()})`;
      await settle();
      this.throwIfFailed();
      this.trace(label);
      this.checkStep();
      if (this.phase === 'faults' && this.host.finished) this.startHeal();
      if (this.phase === 'faults' && this.opts.quorum.policy === 'majority' && this.sched.nowMs > QUORUM_FAULT_PHASE_MS) this.startHeal();
      if (this.phase === 'heal') {
        if (this.converged()) return null;
        if (this.sched.nowMs > this.healDeadline) return `liveness: not in sync ${this.opts.livenessLimitMs}ms after the faults stopped (${this.syncSummary()})`;
      }
    }
    return `step limit ${MAX_STEPS} reached`;
  }

  // ---------------------------------------------------------------- invariants

  fail(err: unknown): void {
    this.asyncFailure ??= err;
  }

  private throwIfFailed(): void {
    if (this.asyncFailure !== null) throw this.asyncFailure;
  }

  private checkStep(): void {
    const [a, b] = this.nodes;
    // The cache's own bookkeeping check walks every line: sampled, it still catches drift within
    // a few steps, and the run's own checks below run every step.
    if (this.sched.steps % CORE_SELF_CHECK_EVERY_STEPS === 0) {
      a.core?.checkInvariants();
      b.core?.checkInvariants();
    }
    checkCoverage(a, b, this.opts.trackSizeBytes);
    checkCoverage(b, a, this.opts.trackSizeBytes);
    if (a.core?.role === 'primary' && b.core?.role === 'primary') {
      throw new SimFailure(`two primaries at once (epochs ${a.core.epoch} and ${b.core.epoch}) without a forced promotion`);
    }
    if (this.sched.steps % PROBE_EVERY_STEPS === 0) this.failoverProbe();
  }

  /**
   * "If the primary died right now": while both are in sync on one link, the secondary's view
   * (its cache over its store) must hold every acknowledged write — it is all a promoted
   * secondary would have. Checked directly, before failover itself can be driven.
   */
  private failoverProbe(): void {
    if (!this.host.mirroredNow()) return;
    const secondary = this.nodes.find((n) => n.core!.role === 'secondary');
    if (secondary === undefined) return;
    this.stats.probes!++;
    const why = explainImage(this.host.model, secondary.viewNow(), 0, this.host.model.now());
    if (why !== null) throw new SimFailure(`failover probe: node ${secondary.name} is in sync, but if its primary died now it would lack an acknowledged write: ${why}`);
  }

  /** Never two primaries accepting writes in one epoch. */
  private writeAcknowledged(node: SimNode, epoch: number): void {
    const prev = this.primaryOfEpoch.get(epoch);
    if (prev !== undefined && prev !== node.name) throw new SimFailure(`two primaries in epoch ${epoch}: ${prev} and ${node.name} both acknowledged writes`);
    this.primaryOfEpoch.set(epoch, node.name);
  }

  private converged(): boolean {
    const [a, b] = this.nodes;
    const conn = this.network.liveConnId;
    if (a.core === null || b.core === null || conn === null || a.liveConn !== conn || b.liveConn !== conn) return false;
    const [ac, bc] = [a.core, b.core];
    if ((ac.role === 'primary') === (bc.role === 'primary')) return false;
    if (ac.peerState !== 'in-sync' || bc.peerState !== 'in-sync' || !ac.quiescent || !bc.quiescent) return false;
    if (this.host.inFlight > 0) return false;
    if (ac.record.unitedCount() > 0 || bc.record.unitedCount() > 0) return false;
    if (ac.outOfSync.count() > 0 || bc.outOfSync.count() > 0) return false;
    // In sync and quiescent: nothing is dirty or in flight, so the stores must match now.
    const diff = firstDifference(a.store.bytes, b.store.bytes);
    if (diff >= 0) throw new SimFailure(`in sync and quiescent, but the stores differ at block ${diff} (DESIGN.md: replicas byte-identical after resync)`);
    const why = explainImage(this.host.model, a.store.bytes, 0, this.host.model.now());
    if (why !== null) throw new SimFailure(`after resync the stores lack an acknowledged write: ${why}`);
    this.trace(`converged: in sync, quiescent, records empty, stores identical`);
    return true;
  }

  private syncSummary(): string {
    return this.nodes.map((n) => {
      const c = n.core;
      if (c === null) return `${n.name}: down`;
      const s = c.cache.stats(this.sched.nowMs);
      return `${n.name}: ${c.role} ${c.peerState} link=${n.liveConn} dirty=${s.dirtyTracks} united=${c.record.unitedCount()} oos=${c.outOfSync.count()} quiescent=${c.quiescent}`;
    }).join('; ') + `; host in flight ${this.host.inFlight}; net in flight ${this.network.inFlight()}`;
  }

  // ---------------------------------------------------------------- phases and reconnects

  private startHeal(): void {
    this.phase = 'heal';
    this.healDeadline = this.sched.nowMs + this.opts.livenessLimitMs;
    this.network.partitionedUntil = 0;
    this.trace('faults stop: heal');
    for (const n of this.nodes) n.store.faultsOn = false;
    for (const n of this.nodes) if (!n.alive) this.sched.after(1, `restart ${n.name}`, () => this.faults.restart(n));
    this.maybeConnect();
  }

  /** Reconnects after a backoff once both nodes are up, the old link is finished and no partition. */
  maybeConnect(): void {
    if (this.network.connectScheduled) return;
    const ready = (): boolean => this.nodes.every((n) => n.connectable) && !this.network.partitioned && this.network.idle;
    if (!ready()) return;
    this.network.connectScheduled = true;
    this.sched.after(1 + this.connectPrng.delay(this.opts.reconnectMeanMs), 'connect', () => {
      this.network.connectScheduled = false;
      if (!ready()) return this.maybeConnect();
      this.stats.connects!++;
      this.network.connect();
    });
  }

  // ---------------------------------------------------------------- NodeHost and LinkHost

  send(from: SimNode, msg: LinkMessage, ref: WriteRef | null): boolean {
    return this.network.send(from.index, from.liveConn, msg, ref);
  }

  writeSent(node: SimNode, seq: number, refs: WriteRef[]): void {
    this.sentRefs.set(`${node.incarnation}:${seq}`, refs);
  }

  writeAcked(node: SimNode, from: number, seq: number): void {
    const key = `${from}:${seq}`;
    const refs = this.sentRefs.get(key);
    if (refs === undefined) return;
    this.sentRefs.delete(key);
    for (const ref of refs) ref.markedBy = node.incarnation;
  }

  nodeReady(): void {
    this.maybeConnect();
  }

  newIncarnation(): number {
    return ++this.incarnations;
  }

  linkUp(node: number, connId: number): void {
    this.nodes[node].linkUp(connId);
  }

  linkDown(node: number, connId: number): void {
    this.nodes[node].linkDown(connId);
    this.maybeConnect();
  }

  deliver(node: number, connId: number, msg: LinkMessage, ref: WriteRef | null): void {
    this.nodes[node].deliver(connId, msg, ref);
  }

  drained(node: number, connId: number): void {
    this.nodes[node].drained(connId);
  }

  trace(line: string): void {
    const text = `${this.sched.nowMs} ${line}`;
    let h = this.hash;
    for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
    this.hash = h;
    this.tail.push(text);
    if (this.tail.length > TAIL_LINES) this.tail.shift();
    this.hooks.onTrace?.(text);
  }
}

export function runSeed(seed: number, hooks: RunHooks = {}): Promise<RunResult> {
  return new Cluster(seed, hooks).run();
}

/** Lets every promise continuation queued so far run (and those they queue): one macrotask turn. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
