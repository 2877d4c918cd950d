// The host side of the simulation: issues the workload (sim/workload.ts) to whichever node is
// primary now, records every write in the reference model, and checks what comes back — reads
// against the model, FLUSH and FUA against the stores (DESIGN.md "Durability policy").
import type { ReplyErrno } from '../src/core/replica-types.js';
import type { Scheduler } from './events.js';
import { explainImage, explainLoose, explainNotBefore, SimFailure } from './invariants.js';
import { Model, stampedData, type WriteRec } from './model.js';
import { channelOf, type SimNode } from './node.js';
import type { SimOptions } from './options.js';
import type { Prng } from './prng.js';
import { nextOp, type HostOp } from './workload.js';

interface Pending {
  op: HostOp;
  node: SimNode;
  thread: number;
  rec: WriteRec | null;
  /** Model time when the request was issued (the read start, the flush start). */
  issuedAt: number;
  /** Some peer was in sync by the node's own account (a FLUSH with `flush: memory` is then answered from RAM). */
  anyInSyncAtIssue: boolean;
  /** Per node index: the live connection to it, if the node saw it in sync then; else null. */
  linksAtIssue: (number | null)[];
  /** The epoch the node was primary in when it accepted the request. */
  epochAtIssue: number;
  /** Every node's incarnation then (a peer held the write at its ack only if it has not died since). */
  incarnationsAtIssue: number[];
}

/** What the host needs to know about the volume. */
export interface HostView {
  readonly sched: Scheduler;
  readonly nodes: readonly SimNode[];
  readonly opts: SimOptions;
  /** The live connection between nodes `i` and `j` both are up on, or null. */
  linkConn(i: number, j: number): number | null;
  trace(line: string): void;
  /** `node` acknowledged a write it accepted as primary in `epoch` (one primary per epoch). */
  writeAcknowledged(node: SimNode, epoch: number): void;
  /** A check failed in a promise continuation (a reply, a read): the run fails with it. */
  fail(err: unknown): void;
}

export class Host {
  readonly model: Model;
  private readonly pending = new Map<number, Pending>();
  private readonly blockSize = 512;
  private nextReqId = 1;
  private nextWriteId = 1;
  private issued = 0;
  private threadsDone = 0;
  private readonly readStream = { nextReadBytes: 0 };
  readonly counts = { writes: 0, reads: 0, flushes: 0, failedWrites: 0, strictReads: 0 };

  constructor(private readonly view: HostView, private readonly prng: Prng) {
    const o = view.opts;
    this.model = new Model((o.trackCount * o.trackSizeBytes) / this.blockSize);
  }

  start(): void {
    for (let t = 0; t < this.view.opts.hostQueueDepth; t++) this.next(t);
  }

  get finished(): boolean {
    return this.threadsDone === this.view.opts.hostQueueDepth;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** The node serving host writes now: up (not shutting down: its NBD server is closed) and primary. */
  primary(): SimNode | null {
    return this.view.nodes.find((n) => n.connectable && n.core?.role === 'primary') ?? null;
  }

  private next(thread: number): void {
    if (this.issued >= this.view.opts.hostOps) {
      this.threadsDone++;
      return;
    }
    const op = nextOp(this.prng, this.view.opts, this.readStream);
    const primary = this.primary();
    if (primary === null) {
      // No primary right now (crashed, failover pending): the host retries, as a client would.
      this.view.sched.after(5, `host${thread} waits`, () => this.next(thread));
      return;
    }
    const secondaries = this.view.nodes.filter((n) => n !== primary && n.connectable && n.core?.role === 'secondary');
    // Among three nodes or more, any secondary's read-only export (issue 12 item 5).
    const secondary = secondaries.length > 1 ? this.prng.pick(secondaries) : secondaries[0] ?? null;
    const target = op.atSecondary && secondary !== null ? secondary : primary;
    this.issued++;
    this.issue(op, target, thread);
  }

  private done(thread: number): void {
    this.view.sched.after(this.prng.delay(this.view.opts.hostGapMeanMs), `host${thread}`, () => this.next(thread));
  }

  private issue(op: HostOp, node: SimNode, thread: number): void {
    const core = node.core!;
    const reqId = this.nextReqId++;
    const firstBlock = op.offsetBytes / this.blockSize;
    const count = op.lengthBytes / this.blockSize;
    const base = {
      op, node, thread, epochAtIssue: core.epoch,
      anyInSyncAtIssue: core.peers.some((ch) => ch.state === 'in-sync'),
      linksAtIssue: this.view.nodes.map((n) => (n !== node && channelOf(core, n.name).state === 'in-sync' ? this.view.linkConn(node.index, n.index) : null)),
      incarnationsAtIssue: this.view.nodes.map((n) => n.incarnation),
    };
    if (op.kind === 'read') return this.issueRead(reqId, op, node, thread, base);
    if (op.kind === 'flush') {
      this.counts.flushes++;
      this.pending.set(reqId, { ...base, rec: null, issuedAt: this.model.openCheck() });
      this.view.trace(`host: flush r${reqId} → ${node.name}`);
      return this.answer(node, reqId, node.submit(op, null));
    }
    this.counts.writes++;
    const id = this.nextWriteId++;
    const zero = op.kind === 'zero' || op.kind === 'trim';
    const rec = this.model.issueWrite(id, firstBlock, count, zero);
    this.pending.set(reqId, { ...base, rec, issuedAt: rec.issuedAt });
    const data = zero ? null : stampedData(id, firstBlock, count);
    this.view.trace(`host: ${op.kind} w${id} r${reqId} @${firstBlock}+${count} → ${node.name}`);
    this.answer(node, reqId, node.submit(op, data));
  }

  /** The node's reply, whenever it comes (never, if the node dies first). */
  private answer(node: SimNode, reqId: number, reply: Promise<ReplyErrno | null>): void {
    reply.then((errno) => this.reply(node, reqId, errno)).catch((err: unknown) => this.view.fail(err));
  }

  private issueRead(reqId: number, op: HostOp, node: SimNode, thread: number, base: Omit<Pending, 'rec' | 'issuedAt'>): void {
    this.counts.reads++;
    const readStart = this.model.openCheck();
    // Strict at the primary; at the secondary only while both are in sync on this very link —
    // otherwise it may legally lag (it has not heard of the link loss the primary acted on) —
    // and, among three nodes or more, only with `ack: all` (with `ack: quorum` a majority
    // acknowledges a write this secondary may not hold yet).
    const strict = node.core!.role === 'primary' || (this.view.nodes.length === 2 ? this.mirroredNow() : this.view.opts.quorum.ack === 'all' && this.secondariesInSync().includes(node));
    this.pending.set(reqId, { ...base, rec: null, issuedAt: readStart });
    node.read(op.offsetBytes, op.lengthBytes).then((bytes) => {
      if (!this.pending.delete(reqId)) return;
      this.model.closeCheck(readStart);
      if (bytes === null) {
        // The store failed the read (an injected EIO): the host gets an error, which is allowed.
        this.view.trace(`host: read r${reqId} from ${node.name}: EIO`);
        this.done(thread);
        return;
      }
      const first = op.offsetBytes / this.blockSize;
      const why = strict ? explainImage(this.model, bytes, first, readStart) : explainLoose(this.model, bytes, first);
      if (strict) this.counts.strictReads++;
      if (why !== null) {
        throw new SimFailure(`read r${reqId} at ${node.name} (${strict ? 'strict' : 'stale allowed'}) of blocks ${first}+${bytes.length / this.blockSize}: ${why} — an acknowledged write is lost or a read returned garbage`);
      }
      this.done(thread);
    }).catch((err: unknown) => this.view.fail(err));
  }

  /** Nodes `a` and `b` are in sync, each by its own account, on one live link. */
  inSyncWith(a: SimNode, b: SimNode): boolean {
    const conn = this.view.linkConn(a.index, b.index);
    if (conn === null || a.liveConnTo(b.index) !== conn || b.liveConnTo(a.index) !== conn || a.core === null || b.core === null) return false;
    return channelOf(a.core, b.name).state === 'in-sync' && channelOf(b.core, a.name).state === 'in-sync';
  }

  /** The secondaries in sync with the primary now (none without a primary). */
  secondariesInSync(): SimNode[] {
    const primary = this.primary();
    return primary === null ? [] : this.view.nodes.filter((n) => n !== primary && this.inSyncWith(primary, n));
  }

  /**
   * A pair: both nodes in sync on one live link (the secondary holds every acknowledged write).
   * Three nodes or more: every secondary is in sync with the primary.
   */
  mirroredNow(): boolean {
    const nodes = this.view.nodes;
    if (nodes.length === 2) return this.inSyncWith(nodes[0]!, nodes[1]!);
    return this.secondariesInSync().length === nodes.length - 1;
  }

  /** A node's reply to a write or FLUSH. */
  reply(node: SimNode, reqId: number, errno: ReplyErrno | null): void {
    const p = this.pending.get(reqId);
    if (p === undefined || p.node !== node) return;
    this.pending.delete(reqId);
    const ok = errno === null;
    this.view.trace(`host: reply r${reqId} from ${node.name}: ${errno ?? 'ok'}`);
    if (p.rec !== null) {
      this.model.completeWrite(p.rec, ok);
      if (!ok) this.counts.failedWrites++;
      if (ok) this.view.writeAcknowledged(node, p.epochAtIssue);
      if (ok && p.op.kind === 'fua' && this.view.opts.flush === 'disk') this.checkDurable(node, reqId, p, 'FUA', p.issuedAt);
      // DESIGN.md "Durability policy": a primary without its peer and `degraded: write-through`
      // answers a write only once it is hardened (one copy in RAM is not durable). The reply comes
      // in the step that completed the write, so the core's state now is its state then.
      const alone = node.core !== null && node.core.role === 'primary' && !node.core.mirroring;
      if (ok && alone && this.view.opts.degraded === 'write-through') this.checkDurable(node, reqId, p, 'degraded write-through write', p.issuedAt);
      // With `quorum: off` a primary left alone serves writes alone (degraded), whatever the ack policy.
      if (ok && this.view.opts.quorum.policy === 'majority') this.checkQuorumHolds(node, reqId, p, p.rec);
    } else if (p.op.kind === 'flush' && ok) {
      const inMemoryOnly = p.anyInSyncAtIssue && this.view.opts.flush === 'memory';
      if (!inMemoryOnly) this.checkDurable(node, reqId, p, 'FLUSH', p.issuedAt);
    }
    if (p.rec === null) this.model.closeCheck(p.issuedAt);
    this.model.prune();
    this.done(p.thread);
  }

  /**
   * Issue 12, `quorum: majority`: a write is answered only once a majority of the configured
   * nodes holds it (in a pair, both). So counting the primary, the peers alive
   * since the write was issued (a crash may take what its RAM held after its ack) that hold this
   * write or a later one in their cache or store, and the peers that died since (they may have
   * held it), must make a majority — a primary that answered it with fewer (the links down, a
   * partition) did not keep that promise.
   */
  private checkQuorumHolds(node: SimNode, reqId: number, p: Pending, rec: WriteRec): void {
    const nodes = this.view.nodes;
    const need = Math.floor(nodes.length / 2) + 1;
    let held = 1;
    const lacking: string[] = [];
    for (const peer of nodes) {
      if (peer === node) continue;
      if (!peer.alive || peer.incarnation !== p.incarnationsAtIssue[peer.index]) { held++; continue; }
      const bytes = peer.viewNow(p.op.offsetBytes, p.op.lengthBytes);
      const why = explainNotBefore(this.model, bytes, p.op.offsetBytes / this.blockSize, rec);
      if (why === null) held++;
      else lacking.push(`node ${peer.name} does not hold it: ${why}`);
    }
    if (held < need) throw new SimFailure(`write r${reqId} answered ok by ${node.name} with quorum ${this.view.opts.quorum.policy}/ack ${this.view.opts.quorum.ack}, but only ${held} of ${nodes.length} nodes may hold it (${need} needed): ${lacking.join('; ')} (a primary without quorum acknowledged a write)`);
  }

  /**
   * FLUSH: every write completed before it was issued is on the store (and on the peer's too with
   * `flush: disk` while mirrored throughout). FUA: this write's blocks are on the store.
   */
  private checkDurable(node: SimNode, reqId: number, p: Pending, what: string, asOf: number): void {
    const whole = what === 'FLUSH';
    const first = whole ? 0 : p.op.offsetBytes / this.blockSize;
    const len = whole ? node.store.sizeBytes : p.op.lengthBytes;
    const stores = [node];
    // With `flush: disk` the FLUSH reached every peer it saw in sync, still in sync on that link.
    for (const peer of this.view.nodes) {
      const conn = p.linksAtIssue[peer.index];
      const mirroredThroughout = this.view.opts.flush === 'disk' && peer !== node && conn != null
        && conn === this.view.linkConn(node.index, peer.index) && this.inSyncWith(node, peer);
      if (mirroredThroughout) stores.push(peer);
    }
    for (const n of stores) {
      const bytes = n.store.peek(first * this.blockSize, len);
      const why = p.rec === null ? explainImage(this.model, bytes, first, asOf) : explainNotBefore(this.model, bytes, first, p.rec);
      if (why !== null) throw new SimFailure(`${what} r${reqId} answered ok by ${node.name} but node ${n.name}'s store lacks a write it covers: ${why} (DESIGN.md "Durability policy")`);
    }
  }

  /** The node crashed: its requests never get an answer; writes among them may or may not land. */
  nodeCrashed(node: SimNode): void {
    for (const [reqId, p] of [...this.pending]) {
      if (p.node !== node) continue;
      this.pending.delete(reqId);
      if (p.rec !== null) this.model.completeWrite(p.rec, false);
      else this.model.closeCheck(p.issuedAt);
      this.done(p.thread);
    }
  }
}
