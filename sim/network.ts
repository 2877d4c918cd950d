// The simulated replication links, at the level of whole messages (the frame codec has its own
// tests). Every two nodes have a link of their own (issue 12: a full mesh), and on it one
// connection at a time; per direction a FIFO with a delay, as the real link is one ordered TCP
// stream per direction (DESIGN.md "Write path": every correctness argument leans on it, so the
// simulator must never reorder within a direction).
//
// Faults, and what each looks like to the nodes:
//  - drop (reset or heartbeat timeout): the connection dies. Per direction, a random prefix of the
//    messages in flight still arrives (bytes already in the receiver's kernel), the rest is lost;
//    each live side is told `linkDown` after its own detection delay, and never before the last
//    message it still receives.
//  - partition: a drop, and no reconnect until the partition heals (of one link, or of every link
//    of one node: that node is cut off from the rest).
//  - corrupt frame: a message in flight fails its CRC. The receiver drops the connection the
//    moment it reads it and applies nothing of it or after it (link-codec.ts); the sender notices
//    later. At the message level: never delivered, the link goes down.
//  - node crash: the node's connections die with it; each peer notices after a delay.
//  - stall (three nodes or more): a node stops reading for a while, as a process under SIGSTOP or
//    a machine swapping: messages to it wait (FIFO kept), and its senders meet back-pressure.
// Messages a node sends on a connection that is already dead (it has not noticed yet) are lost.
import type { LinkMessage } from '../src/core/replica-types.js';
import type { Scheduler } from './events.js';
import type { Prng } from './prng.js';
import type { WriteRef } from './provenance.js';

/** Callbacks into the cluster, which routes them to the nodes (by node index). */
export interface LinkHost {
  linkUp(node: number, peer: number, connId: number): void;
  linkDown(node: number, peer: number, connId: number): void;
  deliver(node: number, peer: number, connId: number, msg: LinkMessage, ref: WriteRef | null): void;
  drained(node: number, peer: number, connId: number): void;
  trace(line: string): void;
}

interface InFlight {
  msg: LinkMessage;
  ref: WriteRef | null;
  deliverAt: number;
  lost: boolean;
}

export interface LinkTuning {
  delayMeanMs: number;
  highWater: number;
  detectMeanMs: number;
}

/** Sides of a connection: 0 and 1, the link's two ends in index order. */
type Side = 0 | 1;

class Connection {
  dead = false;
  /** When each side's `linkEstablished` runs; a side that is not up yet receives nothing. */
  readonly upAt: [number, number];
  readonly up: [boolean, boolean] = [false, false];
  /** Each side has been told linkDown (or never came up, or crashed): it is done with us. */
  readonly done: [boolean, boolean] = [false, false];
  /** Indexed by receiver. */
  readonly queues: [InFlight[], InFlight[]] = [[], []];
  readonly lastDeliverAt: [number, number] = [0, 0];
  readonly blocked: [boolean, boolean] = [false, false];

  constructor(readonly id: number, upAt: [number, number]) {
    this.upAt = upAt;
  }
}

/** Node names, by index, as the trace and the volume's config spell them. */
export const NODE_NAMES = 'abcdefgh';

/** The link between two nodes: one connection at a time. */
export class Link {
  private conn: Connection | null = null;
  partitionedUntil = 0;
  connectScheduled = false;
  private readonly names: [string, string];

  constructor(
    readonly ends: readonly [number, number],
    private readonly net: Network,
    private readonly prng: Prng,
  ) {
    this.names = [NODE_NAMES[ends[0]]!, NODE_NAMES[ends[1]]!];
  }

  private get sched(): Scheduler { return this.net.sched; }
  private get host(): LinkHost { return this.net.host; }
  private get tuning(): LinkTuning { return this.net.tuning; }

  /** The side of node `node` on this link. */
  sideOf(node: number): Side {
    return node === this.ends[0] ? 0 : 1;
  }

  /** The live connection both sides are up on, if any. */
  get liveConnId(): number | null {
    const c = this.conn;
    return c !== null && !c.dead && c.up[0] && c.up[1] ? c.id : null;
  }

  /** May a new connection start? Only when both sides have finished with the old one. */
  get idle(): boolean {
    const c = this.conn;
    return c === null || (c.dead && c.done[0] && c.done[1]);
  }

  get partitioned(): boolean {
    return this.sched.nowMs < this.partitionedUntil;
  }

  /** Opens a connection: each side comes up within a couple of ms of the other. */
  connect(): void {
    const id = this.net.nextConnId++;
    const now = this.sched.nowMs;
    const c = new Connection(id, [now + this.prng.int(3), now + this.prng.int(3)]);
    this.conn = c;
    this.host.trace(`link ${id}: connecting${this.net.links.length > 1 ? ` ${this.names.join('-')}` : ''}`);
    for (const side of [0, 1] as const) {
      this.sched.at(c.upAt[side], `up ${this.names[side]} c${id}`, () => {
        if (c.dead) return;
        c.up[side] = true;
        this.host.linkUp(this.ends[side], this.ends[1 - side]!, id);
      });
    }
  }

  /** A node sends on its current connection. False: the send buffer is over the high-water mark. */
  send(fromNode: number, connId: number | null, msg: LinkMessage, ref: WriteRef | null): boolean {
    const c = this.conn;
    const from = this.sideOf(fromNode);
    if (c === null || connId !== c.id || !c.up[from]) return true; // nowhere to go: lost, like a dead socket
    if (c.dead) return true;
    const to: Side = from === 0 ? 1 : 0;
    const now = this.sched.nowMs;
    const slowMs = this.net.slowMs[this.ends[to]]!;
    const deliverAt = Math.max(now + this.prng.delay(this.tuning.delayMeanMs + slowMs), c.lastDeliverAt[to], c.upAt[to], this.net.stalledUntil[this.ends[to]]!);
    c.lastDeliverAt[to] = deliverAt;
    const item: InFlight = { msg, ref, deliverAt, lost: false };
    c.queues[to].push(item);
    this.host.trace(`snd ${this.names[from]}>${this.names[to]} c${c.id} ${describe(msg)}`);
    this.sched.at(deliverAt, `dlv ${this.names[to]} ${describe(msg)}`, () => this.deliverHead(c, to, item));
    if (c.queues[to].length >= this.tuning.highWater) {
      c.blocked[from] = true;
      return false;
    }
    return true;
  }

  private deliverHead(c: Connection, to: Side, item: InFlight): void {
    const q = c.queues[to];
    if (q[0] !== item) throw new Error('network: FIFO order broken');
    q.shift();
    const from: Side = to === 0 ? 1 : 0;
    if (!item.lost) this.host.deliver(this.ends[to], this.ends[from], c.id, item.msg, item.ref);
    if (c.blocked[from] && !c.dead && q.length <= this.tuning.highWater / 2) {
      c.blocked[from] = false;
      this.host.drained(this.ends[from], this.ends[to], c.id);
    }
  }

  /** Reset or timeout: see the file comment. `crashed` is a node that died with the link. */
  drop(reason: string, crashed: number | null = null): void {
    const c = this.conn;
    if (c === null || c.dead) return;
    c.dead = true;
    this.host.trace(`link ${c.id}: ${reason}`);
    const now = this.sched.nowMs;
    for (const side of [0, 1] as const) {
      const gone = crashed === this.ends[side];
      const keep = gone || !c.up[side] ? 0 : this.prng.int(c.queues[side].length + 1);
      this.finishSide(c, side, keep, now + this.prng.delay(this.tuning.detectMeanMs), gone);
    }
  }

  /** The sides a message in flight is on its way to (a corrupt frame could hit one). */
  private corruptibleSides(): Side[] {
    const c = this.conn;
    if (c === null || c.dead) return [];
    return ([0, 1] as const).filter((side) => c.up[side] && c.queues[side].length > 0);
  }

  /** A corrupt frame on its way: it and everything after it are never applied. */
  corrupt(): boolean {
    const c = this.conn;
    const candidates = this.corruptibleSides();
    if (c === null || candidates.length === 0) return false;
    const to = this.prng.pick(candidates);
    const index = this.prng.int(c.queues[to].length);
    const bad = c.queues[to][index]!;
    c.dead = true;
    this.host.trace(`link ${c.id}: corrupt frame to ${this.names[to]} (${describe(bad.msg)})`);
    this.finishSide(c, to, index, bad.deliverAt, false);
    const other: Side = to === 0 ? 1 : 0;
    const keep = c.up[other] ? this.prng.int(c.queues[other].length + 1) : 0;
    this.finishSide(c, other, keep, bad.deliverAt + this.prng.delay(this.tuning.detectMeanMs), false);
    return true;
  }

  /** Has a message in flight that a corrupt frame could hit. */
  get corruptible(): boolean {
    return this.corruptibleSides().length > 0;
  }

  /** Keeps the first `keep` messages to `side`, loses the rest, and tells it linkDown in time. */
  private finishSide(c: Connection, side: Side, keep: number, detectAt: number, crashed: boolean): void {
    const q = c.queues[side];
    q.forEach((item, i) => { if (i >= keep) item.lost = true; });
    if (crashed || !c.up[side]) {
      // It never came up (or died): no linkDown for it, and it is done with this connection.
      c.done[side] = true;
      return;
    }
    const lastKept = keep > 0 ? q[keep - 1]!.deliverAt : 0;
    this.sched.at(Math.max(detectAt, lastKept), `down ${this.names[side]} c${c.id}`, () => {
      c.done[side] = true;
      this.host.linkDown(this.ends[side], this.ends[1 - side]!, c.id);
    });
  }

  /** A crashed node is done with the connection at once (the peer still has to notice). */
  nodeCrashed(node: number): void {
    const c = this.conn;
    if (c === null) return;
    if (!c.dead) this.drop(`node ${NODE_NAMES[node]} crashed`, node);
    else c.done[this.sideOf(node)] = true;
  }

  /** Messages in flight, both directions. */
  inFlight(): number {
    const c = this.conn;
    return c === null ? 0 : c.queues[0].length + c.queues[1].length;
  }
}

/**
 * Every link of the volume. The pair's one link draws from the stream it always did, so a pair's
 * seed replays as before; the links a third node adds draw from streams of their own.
 */
export class Network {
  readonly links: Link[] = [];
  nextConnId = 1;
  /** Per node: deliveries to it wait until then (a stall). */
  readonly stalledUntil: number[];
  constructor(
    readonly sched: Scheduler,
    prng: Prng,
    readonly tuning: LinkTuning,
    readonly host: LinkHost,
    /** Per node: extra mean delay of messages to it (a slow secondary); one entry per node. */
    readonly slowMs: readonly number[],
    extraLinksPrng: Prng | null,
  ) {
    const nodeCount = slowMs.length;
    this.stalledUntil = new Array<number>(nodeCount).fill(0);
    for (let i = 0; i < nodeCount; i++) {
      for (let j = i + 1; j < nodeCount; j++) {
        const first = this.links.length === 0;
        this.links.push(new Link([i, j], this, first ? prng : extraLinksPrng!.fork()));
      }
    }
  }

  /** The link between nodes `i` and `j`. */
  link(i: number, j: number): Link {
    const [lo, hi] = i < j ? [i, j] : [j, i];
    for (const l of this.links) if (l.ends[0] === lo && l.ends[1] === hi) return l;
    throw new Error(`network: no link ${i}-${j}`);
  }

  /** The pair's one link (a volume of two nodes). */
  get pairLink(): Link {
    return this.links[0]!;
  }

  send(from: number, to: number, connId: number | null, msg: LinkMessage, ref: WriteRef | null): boolean {
    return this.link(from, to).send(from, connId, msg, ref);
  }

  nodeCrashed(node: number): void {
    for (const l of this.links) if (l.ends[0] === node || l.ends[1] === node) l.nodeCrashed(node);
  }

  /** The links of node `node`. */
  linksOf(node: number): Link[] {
    return this.links.filter((l) => l.ends[0] === node || l.ends[1] === node);
  }

  /** Messages in flight on every link, for the trace and for quiescence. */
  inFlight(): number {
    return this.links.reduce((n, l) => n + l.inFlight(), 0);
  }
}

/** A compact message label for the trace. */
export function describe(msg: LinkMessage): string {
  switch (msg.type) {
    case 'write': return `write#${msg.seq}@${msg.offsetBytes}+${msg.data.length}`;
    case 'zero': return `zero#${msg.seq}@${msg.offsetBytes}+${msg.lengthBytes}`;
    case 'writeAck': return `ack#${msg.seq}`;
    case 'notice': return `${msg.op}[${msg.ranges.join(',')}]`;
    case 'syncData': return `sync@${msg.offsetBytes}+${msg.data.length}`;
    case 'flushReq': return `flushReq#${msg.id}`;
    case 'flushAck': return `flushAck#${msg.id}${msg.ok ? '' : '!'}`;
    default: return msg.type;
  }
}
