// The host side of the simulation: issues the workload (sim/workload.ts) to whichever node is
// primary now, records every write in the reference model, and checks what comes back — reads
// against the model, FLUSH and FUA against the stores (DESIGN.md "Durability policy").
import type { PeerState, ReplyErrno } from '../src/core/replica-types.js';
import type { Scheduler } from './events.js';
import { explainImage, explainLoose, explainNotBefore, SimFailure } from './invariants.js';
import { Model, stampedData, type WriteRec } from './model.js';
import type { SimNode } from './node.js';
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
  peerStateAtIssue: PeerState;
  linkAtIssue: number | null;
  /** The epoch the node was primary in when it accepted the request. */
  epochAtIssue: number;
  /** The other node's incarnation then (it held the write at its ack only if it has not died since). */
  peerIncarnationAtIssue: number;
}

/** What the host needs to know about the pair. */
export interface HostView {
  readonly sched: Scheduler;
  readonly nodes: readonly [SimNode, SimNode];
  readonly opts: SimOptions;
  /** The live connection both nodes are up on, or null. */
  liveConnId(): number | null;
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
    const secondary = this.view.nodes.find((n) => n !== primary && n.connectable && n.core?.role === 'secondary') ?? null;
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
    const base = { op, node, thread, peerStateAtIssue: core.peerState, linkAtIssue: this.view.liveConnId(), epochAtIssue: core.epoch, peerIncarnationAtIssue: this.peerOf(node).incarnation };
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
    // otherwise it may legally lag (it has not heard of the link loss the primary acted on).
    const strict = node.core!.role === 'primary' || this.mirroredNow();
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

  /** Both nodes in sync on one live link: the secondary holds every acknowledged write. */
  mirroredNow(): boolean {
    const [a, b] = this.view.nodes;
    const conn = this.view.liveConnId();
    return conn !== null && a.liveConn === conn && b.liveConn === conn && a.core?.peerState === 'in-sync' && b.core?.peerState === 'in-sync';
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
      if (ok && this.view.opts.quorum.policy === 'majority') this.checkQuorumHolds(node, reqId, p, p.rec);
    } else if (p.op.kind === 'flush' && ok) {
      const inMemoryOnly = p.peerStateAtIssue === 'in-sync' && this.view.opts.flush === 'memory';
      if (!inMemoryOnly) this.checkDurable(node, reqId, p, 'FLUSH', p.issuedAt);
    }
    if (p.rec === null) this.model.closeCheck(p.issuedAt);
    this.model.prune();
    this.done(p.thread);
  }

  private peerOf(node: SimNode): SimNode {
    return this.view.nodes.find((n) => n !== node)!;
  }

  /**
   * Issue 12, `quorum: majority`: a write is answered only once a majority holds it, in a pair both
   * nodes. So the peer, alive since the write was issued (a crash may take what its RAM held after
   * its ack), must hold this write or a later one in its cache or store — a primary that answered
   * it alone (the link down, a partition) did not keep that promise.
   */
  private checkQuorumHolds(node: SimNode, reqId: number, p: Pending, rec: WriteRec): void {
    const peer = this.peerOf(node);
    if (!peer.alive || peer.incarnation !== p.peerIncarnationAtIssue) return;
    const bytes = peer.viewNow(p.op.offsetBytes, p.op.lengthBytes);
    const why = explainNotBefore(this.model, bytes, p.op.offsetBytes / this.blockSize, rec);
    if (why !== null) throw new SimFailure(`write r${reqId} answered ok by ${node.name} with quorum: majority, but node ${peer.name} does not hold it: ${why} (a primary without quorum acknowledged a write)`);
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
    const peer = this.peerOf(node);
    const mirroredThroughout = this.view.opts.flush === 'disk' && p.peerStateAtIssue === 'in-sync' && p.linkAtIssue !== null
      && p.linkAtIssue === this.view.liveConnId() && this.mirroredNow();
    if (mirroredThroughout) stores.push(peer);
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
