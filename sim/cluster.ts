// One simulated run: two nodes (or three to five: issue 12), the links between them, a host, and a
// fault injector, all driven by one seeded PRNG and one event queue (DESIGN.md "Testing layers" 2;
// the shape of TigerBeetle's VOPR: a safety phase with faults, then a liveness phase without them).
//
//  1. faults: the host runs its workload while the injector drops, partitions and corrupts the
//     link, crashes and restarts nodes and fails store writes. Never more than one failure that
//     could lose data at once: a node may crash only while its peers are up (and the primary only
//     while enough secondaries are in sync to hold every acknowledged write: one for `ack: all`,
//     a majority with it for `ack: quorum`); that is the seed's promise — any *single* failure.
//  2. heal: no new faults; partitions heal, crashed nodes restart. Within `livenessLimitMs` of
//     simulated time the volume must be back in sync: every link up, every secondary in sync with
//     the one primary, nothing dirty, every record empty, stores byte-identical, and every block
//     the last acknowledged write.
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
import { Network, NODE_NAMES, type LinkHost } from './network.js';
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
  readonly nodes: readonly SimNode[];
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
  /** `sender incarnation:peer:seq` → our copy of a write sent, marked when that peer acks it. */
  private readonly sentRefs = new Map<string, { refs: WriteRef[]; from: number }>();
  private readonly primaryOfEpoch = new Map<number, string>();
  /** The first check that failed inside a promise continuation (or a rejection nobody handled). */
  private asyncFailure: unknown = null;
  readonly stats: Record<string, number> = {
    crashes: 0, cleanRestarts: 0, stopKills: 0, drops: 0, partitions: 0, corrupts: 0, promotions: 0, switchovers: 0, probes: 0, connects: 0, nodeStalls: 0,
  };

  constructor(readonly seed: number, private readonly hooks: RunHooks = {}) {
    const root = new Prng(seed);
    this.opts = drawOptions(root.fork(), hooks.overrides);
    const faultPrng = root.fork();
    this.connectPrng = root.fork();
    this.shellFixes = hooks.shellFixes ?? new Set();
    if (hooks.wrapCore) this.wrapCore = hooks.wrapCore;
    const o = this.opts;
    const count = o.nodes.length;
    // A third node's links draw from a stream of their own: a pair's seed replays as it always did.
    const extraLinks = count > 2 ? new Prng((seed ^ 0x27d4eb2f) >>> 0) : null;
    this.network = new Network(this.sched, root.fork(), { delayMeanMs: o.linkDelayMeanMs, highWater: o.linkHighWater, detectMeanMs: o.detectMeanMs }, this, o.nodes.map((n) => n.slowLinkMs), extraLinks);
    // The storage faults draw from a stream of their own, so their rates leave a seed's other draws as they were.
    const storageRoot = new Prng((seed ^ 0x5bd1e995) >>> 0);
    const nodes = [new SimNode(0, count, o, this, root.fork(), storageRoot.fork()), new SimNode(1, count, o, this, root.fork(), storageRoot.fork())];
    this.nodes = nodes;
    this.host = new Host({
      sched: this.sched, nodes: this.nodes, opts: o,
      linkConn: (i, j) => this.network.link(i, j).liveConnId,
      trace: (line) => this.trace(line),
      writeAcknowledged: (node, epoch) => this.writeAcknowledged(node, epoch),
      fail: (err) => this.fail(err),
    }, root.fork());
    for (let i = 2; i < count; i++) nodes.push(new SimNode(i, count, o, this, root.fork(), storageRoot.fork()));
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
      for (const n of this.nodes) n.start(this.configRole(n));
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

  /** Runs steps until the volume converges after the faults, or a check fails (its message). */
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
    // The cache's own bookkeeping check walks every line: sampled, it still catches drift within
    // a few steps, and the run's own checks below run every step.
    if (this.sched.steps % CORE_SELF_CHECK_EVERY_STEPS === 0) for (const n of this.nodes) n.core?.checkInvariants();
    for (const n of this.nodes) checkCoverage(n, this.nodes, this.opts.trackSizeBytes);
    const primaries = this.nodes.filter((n) => n.core?.role === 'primary');
    if (primaries.length > 1) {
      throw new SimFailure(`two primaries at once (${primaries.map((n) => `${n.name} epoch ${n.core!.epoch}`).join(', ')}) without a forced promotion`);
    }
    if (this.sched.steps % PROBE_EVERY_STEPS === 0) this.failoverProbe();
  }

  /**
   * "If the primary died right now": a secondary in sync with it on a live link must hold every
   * acknowledged write in its view (its cache over its store) — it is all a promoted secondary
   * would have. Checked directly, before failover itself can be driven. With `ack: quorum` among
   * three nodes or more an in-sync secondary may lag (a majority acknowledged without it): the
   * promotion fetches from the most current node first, and the host's checks cover that.
   */
  private failoverProbe(): void {
    if (this.nodes.length > 2 && this.opts.quorum.ack === 'quorum') return;
    const inSync = this.nodes.length === 2
      ? (this.host.mirroredNow() ? this.nodes.filter((n) => n.core!.role === 'secondary') : [])
      : this.host.secondariesInSync();
    for (const secondary of inSync) {
      this.stats.probes!++;
      const why = explainImage(this.host.model, secondary.viewNow(), 0, this.host.model.now());
      if (why !== null) throw new SimFailure(`failover probe: node ${secondary.name} is in sync, but if its primary died now it would lack an acknowledged write: ${why}`);
    }
  }

  /** Never two primaries accepting writes in one epoch. */
  private writeAcknowledged(node: SimNode, epoch: number): void {
    const prev = this.primaryOfEpoch.get(epoch);
    if (prev !== undefined && prev !== node.name) throw new SimFailure(`two primaries in epoch ${epoch}: ${prev} and ${node.name} both acknowledged writes`);
    this.primaryOfEpoch.set(epoch, node.name);
  }

  private converged(): boolean {
    if (this.nodes.some((n) => n.core === null)) return false;
    for (const l of this.network.links) {
      const conn = l.liveConnId;
      const [i, j] = l.ends;
      if (conn === null || this.nodes[i]!.liveConnTo(j) !== conn || this.nodes[j]!.liveConnTo(i) !== conn) return false;
    }
    const primaries = this.nodes.filter((n) => n.core!.role === 'primary');
    if (primaries.length !== 1) return false;
    const primary = primaries[0]!;
    // Every secondary is in sync with the primary; two secondaries have no data between them.
    const channels = this.nodes.flatMap((n) => n.core!.peers.map((ch) => ({ ch, withPrimary: n === primary || ch.name === primary.name })));
    if (channels.some(({ ch, withPrimary }) => (withPrimary ? ch.state !== 'in-sync' : ch.state === 'split-brain'))) return false;
    if (this.nodes.some((n) => !n.core!.quiescent) || this.host.inFlight > 0) return false;
    // A secondary's out-of-sync set of another secondary (kept from a time it was primary) is
    // only a hint for a later promotion: the primary's sets are the ones that must be drained.
    if (channels.some(({ ch, withPrimary }) => ch.record.unitedCount() > 0 || (withPrimary && ch.outOfSync.count() > 0))) return false;
    // In sync and quiescent: nothing is dirty or in flight, so the stores must match now.
    const [a] = this.nodes;
    for (const b of this.nodes.slice(1)) {
      const diff = firstDifference(a!.store.bytes, b.store.bytes);
      if (diff >= 0) throw new SimFailure(`in sync and quiescent, but the stores of ${a!.name} and ${b.name} differ at block ${diff} (DESIGN.md: replicas byte-identical after resync)`);
    }
    const why = explainImage(this.host.model, a!.store.bytes, 0, this.host.model.now());
    if (why !== null) throw new SimFailure(`after resync the stores lack an acknowledged write: ${why}`);
    this.trace(`converged: in sync, quiescent, records empty, stores identical`);
    return true;
  }

  private syncSummary(): string {
    return this.nodes.map((n) => {
      const c = n.core;
      if (c === null) return `${n.name}: down`;
      const s = c.cache.stats(this.sched.nowMs);
      const peers = c.peers.map((ch) => `${ch.name}:${ch.state} link=${n.liveConnTo(NODE_NAMES.indexOf(ch.name))} united=${ch.record.unitedCount()} oos=${ch.outOfSync.count()}`).join(' ');
      return `${n.name}: ${c.role} epoch ${c.epoch} dirty=${s.dirtyTracks} quiescent=${c.quiescent} [${peers}]`;
    }).join('; ') + `; host in flight ${this.host.inFlight}; net in flight ${this.network.inFlight()}`;
  }

  // ---------------------------------------------------------------- phases and reconnects

  private startHeal(): void {
    this.phase = 'heal';
    this.healDeadline = this.sched.nowMs + this.opts.livenessLimitMs;
    for (const l of this.network.links) l.partitionedUntil = 0;
    this.network.stalledUntil.fill(0);
    this.trace('faults stop: heal');
    for (const n of this.nodes) n.store.faultsOn = false;
    for (const n of this.nodes) if (!n.alive) this.sched.after(1, `restart ${n.name}`, () => this.faults.restart(n));
    this.maybeConnect();
  }

  /** Reconnects each link after a backoff once both its nodes are up, its old connection is finished and no partition. */
  maybeConnect(): void {
    for (const link of this.network.links) {
      if (link.connectScheduled) continue;
      const [i, j] = link.ends;
      const ready = (): boolean => this.nodes[i]!.connectable && this.nodes[j]!.connectable && !link.partitioned && link.idle;
      if (!ready()) continue;
      link.connectScheduled = true;
      this.sched.after(1 + this.connectPrng.delay(this.opts.reconnectMeanMs), 'connect', () => {
        link.connectScheduled = false;
        if (!ready()) return this.maybeConnect();
        this.stats.connects!++;
        link.connect();
      });
    }
  }

  // ---------------------------------------------------------------- NodeHost and LinkHost

  send(from: SimNode, to: number, msg: LinkMessage, ref: WriteRef | null): boolean {
    return this.network.send(from.index, to, from.liveConnTo(to), msg, ref);
  }

  writeSent(node: SimNode, to: number, seq: number, refs: WriteRef[]): void {
    this.sentRefs.set(`${node.incarnation}:${NODE_NAMES[to]}:${seq}`, { refs, from: node.index });
  }

  writeAcked(node: SimNode, from: number, seq: number): void {
    const key = `${from}:${node.name}:${seq}`;
    const sent = this.sentRefs.get(key);
    if (sent === undefined) return;
    this.sentRefs.delete(key);
    // The ack goes back on the connection the write came in on: the peer marked it there (step 66).
    const conn = node.liveConnTo(sent.from) ?? -1;
    for (const ref of sent.refs) ref.marks.set(node.incarnation, conn);
  }

  nodeReady(): void {
    this.maybeConnect();
  }

  newIncarnation(): number {
    return ++this.incarnations;
  }

  linkUp(node: number, peer: number, connId: number): void {
    this.nodes[node]!.linkUp(peer, connId);
  }

  linkDown(node: number, peer: number, connId: number): void {
    this.nodes[node]!.linkDown(peer, connId);
    this.maybeConnect();
  }

  deliver(node: number, peer: number, connId: number, msg: LinkMessage, ref: WriteRef | null): void {
    this.nodes[node]!.deliver(peer, connId, msg, ref);
  }

  drained(node: number, peer: number, connId: number): void {
    this.nodes[node]!.drained(peer, connId);
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
