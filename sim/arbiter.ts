// The arbiter's simulator (issue 13 item 6): the real election and fencing decisions
// (src/core/arbiter.ts, one ArbiterCore per node) against a simulated etcd, under seeded faults,
// in simulated time. What it models around them is kept small on purpose: etcd (keys, leases that
// lapse on etcd's clock and are revoked on its 500 ms tick, compare-and-swap), the request delays
// and timeouts between each node and etcd, the links between nodes (heartbeats, the dead-peer
// deadline, reconnects, a resync before a returning node is in sync), and the data only as which
// node holds which acknowledged write.
//
// Faults: partitions between any node and etcd and between any two nodes, etcd down, a node frozen
// (SIGSTOP) for up to 5 s, a crash of one node at a time (it returns as secondary and resyncs),
// clocks that run up to 4% fast or slow (the core's margin is 5%).
//
// Invariants, checked at every acknowledgement and promotion:
//   - never two primaries acknowledging in overlapping time: the epochs of acknowledgements never
//     go down in real time, and one epoch is one node's;
//   - a node that promotes holds every write acknowledged so far (no stale secondary wins).
// Then a heal phase without faults: within 20 s one node must acknowledge writes again.
//
// Mutants (sim/arbiter-main.ts --mutant): acking after lease loss, promoting without the
// transaction, promoting a stale secondary. Each must be caught.
import { ArbiterCore, type ArbiterOp, type ArbiterRecord, type ArbiterResult, type LocalView } from '../src/core/arbiter.js';
import { Prng } from './prng.js';

export type ArbiterMutant = 'ack-after-lease-loss' | 'promote-without-cas' | 'promote-stale';
export const arbiterMutants: readonly ArbiterMutant[] = ['ack-after-lease-loss', 'promote-without-cas', 'promote-stale'];

const TICK_MS = 5;
const TTL_MS = 2000;
const HEARTBEAT_TIMEOUT_MS = 1000;
const REQUEST_TIMEOUT_MS = 500;
const ETCD_REVOKE_TICK_MS = 500;
const FAULT_PHASE_MS = 60_000;
const HEAL_LIMIT_MS = 20_000;

interface Lease { id: number; expiresAtMs: number }

/** etcd, as the arbiter sees it: two keys and the leases, on etcd's own (the real) clock. */
class SimEtcd {
  leader: { node: string; epoch: number; lease: number } | null = null;
  state: { epoch: number; primary: string; electable: string[]; rev: number } | null = null;
  private rev = 1;
  private nextLease = 1;
  readonly leases = new Map<number, Lease>();
  /** The lease each node's client holds (the shell's EtcdClient.leaseId). */
  readonly clientLease = new Map<string, number>();
  down = false;

  record(): ArbiterRecord {
    return {
      leader: this.leader === null ? null : { node: this.leader.node, epoch: this.leader.epoch },
      state: this.state === null ? null : { epoch: this.state.epoch, primary: this.state.primary, electable: [...this.state.electable], modRevision: this.state.rev },
    };
  }

  /** Lapsed leases go on etcd's revoke tick, with the leader key attached. */
  revokeExpired(nowMs: number): void {
    for (const [id, lease] of this.leases) {
      if (lease.expiresAtMs > nowMs) continue;
      this.leases.delete(id);
      if (this.leader?.lease === id) this.leader = null;
    }
  }

  apply(node: string, op: ArbiterOp, nowMs: number, skipCas: boolean): ArbiterResult {
    switch (op.kind) {
      case 'read':
        return { kind: 'read', record: this.record() };
      case 'claim': {
        this.release(node);
        const id = this.nextLease++;
        this.leases.set(id, { id, expiresAtMs: nowMs + TTL_MS });
        this.clientLease.set(node, id);
        const stateOk = op.expectStateRevision === 0 ? this.state === null : this.state?.rev === op.expectStateRevision;
        if (!skipCas && (this.leader !== null || !stateOk)) {
          this.release(node);
          return { kind: 'claim-refused', record: this.record() };
        }
        this.leader = { node, epoch: op.epoch, lease: id };
        this.state = { epoch: op.epoch, primary: node, electable: [...op.electable], rev: ++this.rev };
        return { kind: 'claimed', record: this.record() };
      }
      case 'renew': {
        const lease = this.leases.get(this.clientLease.get(node) ?? -1);
        if (lease === undefined) return { kind: 'renewed', remainingMs: 0 };
        lease.expiresAtMs = nowMs + TTL_MS;
        return { kind: 'renewed', remainingMs: TTL_MS };
      }
      case 'set-electable': {
        const mine = this.leader !== null && this.leader.lease === this.clientLease.get(node);
        if (this.state?.rev !== op.expectStateRevision || !mine) return { kind: 'electable-refused', record: this.record() };
        this.state = { ...this.state, epoch: op.epoch, electable: [...op.electable], rev: ++this.rev };
        this.leader = { ...this.leader!, epoch: op.epoch };
        return { kind: 'electable-set', record: this.record() };
      }
      case 'release':
        this.release(node);
        return { kind: 'released' };
    }
  }

  private release(node: string): void {
    const id = this.clientLease.get(node);
    if (id === undefined) return;
    this.clientLease.delete(node);
    this.leases.delete(id);
    if (this.leader?.lease === id) this.leader = null;
  }
}

interface Request { op: ArbiterOp; sentLocalMs: number; answerAtMs: number; result: ArbiterResult | null }

class SimArbiterNode {
  core: ArbiterCore;
  alive = true;
  frozenUntilMs = 0;
  role: 'primary' | 'secondary';
  epoch: number;
  /** Acknowledged writes this node holds (by id). */
  holds = new Set<number>();
  /** Resync in progress until this time (null: none). */
  resyncUntilMs: number | null = null;
  inSync = true;
  /** Started cleanly, or in sync with a primary since its crash: its data is whole (arbiter-shell). */
  whole = true;
  request: Request | null = null;
  /** A promotion running in the shell, done at this time. */
  promotingUntilMs: number | null = null;
  promoteEpoch = 0;
  readonly clockRate: number;
  readonly clockOffsetMs: number;

  constructor(readonly name: string, readonly peers: string[], role: 'primary' | 'secondary', prng: Prng, readonly mutant: ArbiterMutant | null) {
    this.role = role;
    this.epoch = 1;
    this.clockRate = 0.96 + prng.float() * 0.08;
    this.clockOffsetMs = prng.int(1_000_000);
    this.core = this.newCore();
  }

  newCore(): ArbiterCore {
    const core = new ArbiterCore({
      node: this.name, peers: this.peers, leaseTtlMs: TTL_MS, renewIntervalMs: Math.floor(TTL_MS / 3), pollIntervalMs: TTL_MS / 4,
      fastPollIntervalMs: TTL_MS / 20, clockRateMargin: 0.05, guardMs: 100, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, autoFailover: true, electableAll: false,
    });
    if (this.mutant === 'ack-after-lease-loss') {
      // The mutant forgets the deadline: a leader acknowledges whatever its clock says.
      core.mayAcknowledge = (_now, local) => local.role === 'primary' && core.state === 'leader';
    }
    if (this.mutant === 'promote-stale') {
      // The mutant campaigns as if it were always electable.
      const poll = core.poll.bind(core);
      core.poll = (now, local) => {
        const state = core.record?.state;
        if (state != null && !state.electable.includes(this.name)) state.electable.push(this.name);
        return poll(now, local);
      };
    }
    return core;
  }

  localMs(realMs: number): number {
    return this.clockOffsetMs + realMs * this.clockRate;
  }

  frozen(realMs: number): boolean {
    return realMs < this.frozenUntilMs;
  }
}

export interface ArbiterRunResult { seed: number; ok: boolean; failure: string | null; acks: number; promotions: number; trace: string[] }

export class ArbiterSim {
  private readonly prng: Prng;
  private readonly etcd = new SimEtcd();
  private readonly nodes: SimArbiterNode[];
  private nowMs = 0;
  /** Links between nodes: up, and when each side last heard the other. */
  private readonly linkUp = new Map<string, boolean>();
  private readonly lastHeard = new Map<string, number>();
  private readonly cutFromEtcd = new Set<string>();
  private readonly cutLinks = new Set<string>();
  private nextWrite = 1;
  private readonly acked: Array<{ id: number; node: string; epoch: number; atMs: number }> = [];
  private lastAck: { node: string; epoch: number } | null = null;
  private readonly epochNode = new Map<number, string>();
  private failure: string | null = null;
  private promotions = 0;
  private readonly trace: string[] = [];
  private faultsUntilMs = FAULT_PHASE_MS;

  constructor(readonly seed: number, readonly mutant: ArbiterMutant | null = null) {
    this.prng = new Prng(seed);
    const count = 2 + this.prng.int(2);
    const names = ['a', 'b', 'c'].slice(0, count);
    this.nodes = names.map((n, i) => new SimArbiterNode(n, names.filter((x) => x !== n), i === 0 ? 'primary' : 'secondary', this.prng.fork(), mutant));
    for (const x of names) for (const y of names) if (x < y) this.linkUp.set(`${x}${y}`, true);
  }

  private log(line: string): void {
    this.trace.push(`${(this.nowMs / 1000).toFixed(3)}s ${line}`);
    if (this.trace.length > 400) this.trace.shift();
  }

  private fail(why: string): void {
    this.failure ??= `${why} (seed ${this.seed}${this.mutant === null ? '' : `, mutant ${this.mutant}`}, at ${(this.nowMs / 1000).toFixed(3)} s)`;
  }

  private key(x: string, y: string): string {
    return x < y ? `${x}${y}` : `${y}${x}`;
  }

  private node(name: string): SimArbiterNode {
    return this.nodes.find((n) => n.name === name)!;
  }

  /** Can x hear y now (both running, no partition between them)? */
  private reaches(x: SimArbiterNode, y: SimArbiterNode): boolean {
    return x.alive && y.alive && !y.frozen(this.nowMs) && !this.cutLinks.has(this.key(x.name, y.name));
  }

  /** What node x's shell would tell its core now. */
  private view(x: SimArbiterNode): LocalView {
    return {
      role: x.role, epoch: x.epoch, mayPromote: x.resyncUntilMs === null && x.whole,
      peers: x.peers.map((name) => {
        const p = this.node(name);
        const up = this.linkUp.get(this.key(x.name, name)) === true;
        const heard = this.lastHeard.get(`${x.name}<${name}`) ?? -Infinity;
        return { name, linkUp: up, role: up ? p.role : null, inSync: up && p.inSync && x.role === 'primary', echoedSentAtMs: up ? x.localMs(heard - 1) : null, splitBrain: false };
      }),
    };
  }

  run(): ArbiterRunResult {
    const healEnd = FAULT_PHASE_MS + HEAL_LIMIT_MS;
    let lastAckAtMs = 0;
    for (; this.nowMs < healEnd && this.failure === null; this.nowMs += TICK_MS) {
      if (this.nowMs < this.faultsUntilMs) this.inject();
      else if (this.nowMs === this.faultsUntilMs) this.heal();
      if (this.nowMs % ETCD_REVOKE_TICK_MS === 0) this.etcd.revokeExpired(this.nowMs);
      this.links();
      for (const n of this.nodes) this.stepNode(n);
      const before = this.acked.length;
      for (const n of this.nodes) this.hostWrites(n);
      if (this.acked.length > before) lastAckAtMs = this.nowMs;
      if (this.nowMs > this.faultsUntilMs + 1000 && lastAckAtMs >= this.faultsUntilMs + 1000) break; // live again
    }
    if (this.failure === null && lastAckAtMs < this.faultsUntilMs) this.fail(`no node acknowledged a write within ${HEAL_LIMIT_MS / 1000} s of the faults ending`);
    return { seed: this.seed, ok: this.failure === null, failure: this.failure, acks: this.acked.length, promotions: this.promotions, trace: this.trace };
  }

  /** Heartbeats, dead-peer deadlines, reconnects and resyncs. */
  private links(): void {
    for (const x of this.nodes) for (const y of this.nodes) if (x !== y && this.reaches(x, y) && !x.frozen(this.nowMs)) this.lastHeard.set(`${x.name}<${y.name}`, this.nowMs);
    for (const [k, up] of this.linkUp) {
      const [x, y] = [this.node(k[0]!), this.node(k[1]!)];
      const silent = (a: SimArbiterNode, b: SimArbiterNode): boolean => !a.frozen(this.nowMs) && this.nowMs - (this.lastHeard.get(`${a.name}<${b.name}`) ?? -Infinity) >= HEARTBEAT_TIMEOUT_MS;
      if (up && (!x.alive || !y.alive || silent(x, y) || silent(y, x))) {
        this.linkUp.set(k, false);
        this.log(`link ${k} down`);
        for (const n of [x, y]) if (n.role === 'secondary') n.inSync = false;
        // A primary that loses a peer takes a new epoch of its own (replica-link markDiverging).
        // Its peers still in sync take the new history at once (they hold every write of it).
        for (const n of [x, y]) {
          if (n.role !== 'primary' || !n.alive || n.frozen(this.nowMs)) continue;
          n.epoch++;
          for (const p of this.nodes) if (p !== n && p.inSync && p.role === 'secondary' && this.linkUp.get(this.key(n.name, p.name)) === true) p.epoch = n.epoch;
        }
      } else if (!up && this.reaches(x, y) && this.reaches(y, x) && !x.frozen(this.nowMs) && this.prng.int(40) === 0) {
        this.linkUp.set(k, true);
        this.log(`link ${k} up`);
      }
      // A secondary not in sync with the primary it is linked to gets a resync from it, if that
      // primary has the newest history: the one etcd names (a fenced primary that has not
      // heard yet meets the others as a split brain, and is resynced once it demotes).
      if (this.linkUp.get(k) !== true) continue;
      for (const [p, s] of [[x, y], [y, x]] as const) {
        if (this.isSource(p) && s.role === 'secondary' && !s.inSync && s.resyncUntilMs === null) s.resyncUntilMs = this.nowMs + 50 + this.prng.int(300);
      }
    }
    for (const s of this.nodes) {
      if (s.resyncUntilMs === null || this.nowMs < s.resyncUntilMs || s.frozen(this.nowMs)) continue;
      const source = this.nodes.find((p) => this.isSource(p) && this.linkUp.get(this.key(p.name, s.name)) === true);
      s.resyncUntilMs = null;
      if (source === undefined || s.role !== 'secondary') continue;
      s.holds = new Set(source.holds);
      s.epoch = source.epoch;
      s.inSync = true;
      s.whole = true;
      this.log(`${s.name} in sync with ${source.name}`);
    }
  }

  /** A resync source: a live primary with the newest history, the one etcd names. */
  private isSource(p: SimArbiterNode): boolean {
    return p.alive && p.role === 'primary' && this.etcd.state?.primary === p.name;
  }

  private stepNode(n: SimArbiterNode): void {
    if (!n.alive || n.frozen(this.nowMs)) return;
    const local = n.localMs(this.nowMs);
    if (n.promotingUntilMs !== null && this.nowMs >= n.promotingUntilMs) this.finishPromotion(n);
    const req = n.request;
    if (req !== null && this.nowMs >= req.answerAtMs) {
      n.request = null;
      n.core.done(req.result ?? { kind: 'unreachable', error: 'timeout' }, req.sentLocalMs, local, this.view(n));
      this.perform(n);
    }
    if (n.request === null) {
      const op = n.core.poll(local, this.view(n));
      this.perform(n);
      if (op !== null) this.send(n, op, local);
    }
  }

  /** The request reaches etcd after a delay, or times out (a partition, etcd down). */
  private send(n: SimArbiterNode, op: ArbiterOp, local: number): void {
    const there = 1 + this.prng.int(15);
    const back = 1 + this.prng.int(15);
    const cut = this.cutFromEtcd.has(n.name) || this.etcd.down;
    if (cut) {
      n.request = { op, sentLocalMs: local, answerAtMs: this.nowMs + REQUEST_TIMEOUT_MS, result: null };
      return;
    }
    const result = this.etcd.apply(n.name, op, this.nowMs + there, this.mutant === 'promote-without-cas');
    if (op.kind !== 'read') this.log(`${n.name} ${op.kind}${op.kind === 'claim' ? ` epoch ${op.epoch}` : ''} → ${result.kind}`);
    n.request = { op, sentLocalMs: local, answerAtMs: this.nowMs + there + back, result };
  }

  private perform(n: SimArbiterNode): void {
    for (const a of n.core.takeActions()) {
      if (a.kind === 'promote') {
        n.promotingUntilMs = this.nowMs + 5 + this.prng.int(20);
        n.promoteEpoch = a.epoch;
      } else if (a.kind === 'demote') {
        this.log(`${n.name} demotes: ${a.reason}`);
        n.role = 'secondary';
        n.inSync = false;
      } else if (a.kind === 'discard-local') {
        n.inSync = false;
      }
    }
  }

  private finishPromotion(n: SimArbiterNode): void {
    n.promotingUntilMs = null;
    if (n.resyncUntilMs !== null) {
      n.core.promoted('a resync into this node has not finished', n.localMs(this.nowMs));
      this.perform(n);
      return;
    }
    const missing = this.acked.filter((w) => !n.holds.has(w.id));
    if (missing.length > 0) this.fail(`${n.name} promoted at epoch ${n.promoteEpoch} lacking ${missing.length} acknowledged write(s), e.g. write ${missing[0]!.id} acknowledged by ${missing[0]!.node}`);
    n.role = 'primary';
    n.epoch = Math.max(n.epoch + 1, n.promoteEpoch);
    n.inSync = true;
    this.promotions++;
    this.log(`${n.name} promoted at epoch ${n.epoch}`);
    for (const p of this.nodes) if (p !== n) p.inSync = false;
    n.core.promoted(null, n.localMs(this.nowMs));
    this.perform(n);
  }

  /** A host writes to each node that thinks it is primary; it is answered only as the gate says. */
  private hostWrites(n: SimArbiterNode): void {
    if (!n.alive || n.frozen(this.nowMs) || n.role !== 'primary') return;
    const view = this.view(n);
    // ack: all waits for every connected in-sync peer; a frozen one holds the write back.
    const holders = n.peers.map((name) => this.node(name)).filter((p) => this.linkUp.get(this.key(n.name, p.name)) === true && p.inSync && p.role === 'secondary');
    if (holders.some((p) => p.frozen(this.nowMs) || !p.alive)) return;
    if (!n.core.mayAcknowledge(n.localMs(this.nowMs), view)) return;
    const id = this.nextWrite++;
    n.holds.add(id);
    for (const p of holders) p.holds.add(id);
    const owner = this.epochNode.get(n.epoch);
    if (owner !== undefined && owner !== n.name) this.fail(`epoch ${n.epoch} acknowledged by ${owner} and by ${n.name}`);
    this.epochNode.set(n.epoch, n.name);
    if (this.lastAck !== null && n.epoch < this.lastAck.epoch) this.fail(`${n.name} acknowledged at epoch ${n.epoch} after ${this.lastAck.node} acknowledged at epoch ${this.lastAck.epoch}: two primaries acknowledging in overlapping time`);
    this.lastAck = { node: n.name, epoch: n.epoch };
    this.acked.push({ id, node: n.name, epoch: n.epoch, atMs: this.nowMs });
  }

  /** Seeded faults, one data-losing failure at a time. */
  private inject(): void {
    const r = this.prng.int(10_000);
    const pick = (): SimArbiterNode => this.nodes[this.prng.int(this.nodes.length)]!;
    if (r < 4) {
      const n = pick();
      if (!n.alive) return;
      n.frozenUntilMs = this.nowMs + 200 + this.prng.int(4800);
      this.log(`${n.name} frozen until ${(n.frozenUntilMs / 1000).toFixed(3)} s`);
    } else if (r < 8) {
      const n = pick();
      if (this.cutFromEtcd.has(n.name)) this.cutFromEtcd.delete(n.name);
      else this.cutFromEtcd.add(n.name);
      this.log(`${n.name} ${this.cutFromEtcd.has(n.name) ? 'cut from' : 'reaches'} etcd`);
    } else if (r < 11) {
      const [x, y] = [pick(), pick()];
      if (x === y) return;
      const k = this.key(x.name, y.name);
      if (this.cutLinks.has(k)) this.cutLinks.delete(k);
      else this.cutLinks.add(k);
      this.log(`link ${k} ${this.cutLinks.has(k) ? 'partitioned' : 'healed'}`);
    } else if (r < 13) {
      this.etcd.down = !this.etcd.down;
      this.log(`etcd ${this.etcd.down ? 'down' : 'up'}`);
    } else if (r < 15) {
      this.crashOne();
    }
    for (const n of this.nodes) if (!n.alive && this.prng.int(400) === 0) this.restart(n);
  }

  /** A crash, only while every node is up and every secondary in sync: one failure at a time. */
  private crashOne(): void {
    const primaries = this.nodes.filter((n) => n.role === 'primary');
    if (primaries.length !== 1 || !this.isSource(primaries[0]!)) return;
    if (!this.nodes.every((n) => n.alive && !n.frozen(this.nowMs) && (n.role === 'primary' || n.inSync))) return;
    const n = this.nodes[this.prng.int(this.nodes.length)]!;
    // The primary only while etcd lists a secondary in sync as electable: a primary cut from etcd
    // cannot list a returning one, and its crash then would be a second failure (nobody may take
    // over without a person: safe, not live).
    const electable = this.etcd.state?.electable ?? [];
    if (n.role === 'primary' && !this.nodes.some((p) => p !== n && p.inSync && p.whole && electable.includes(p.name))) return;
    n.alive = false;
    n.request = null;
    n.promotingUntilMs = null;
    this.log(`${n.name} crashes (${n.role})`);
  }

  private restart(n: SimArbiterNode): void {
    n.alive = true;
    n.role = 'secondary';
    n.inSync = false;
    n.holds = new Set();
    n.whole = false;
    n.core = n.newCore();
    this.etcd.clientLease.delete(n.name);
    this.log(`${n.name} restarts as secondary`);
  }

  private heal(): void {
    this.cutFromEtcd.clear();
    this.cutLinks.clear();
    this.etcd.down = false;
    for (const n of this.nodes) {
      n.frozenUntilMs = 0;
      if (!n.alive) this.restart(n);
    }
    this.log('faults end');
  }
}
