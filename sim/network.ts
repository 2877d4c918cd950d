// The simulated replication link, at the level of whole messages (the frame codec has its own
// tests). One connection at a time between the two nodes; per direction a FIFO with a delay, as
// the real link is one ordered TCP stream per direction (DESIGN.md "Write path": every correctness
// argument leans on it, so the simulator must never reorder within a direction).
//
// Faults, and what each looks like to the nodes:
//  - drop (reset or heartbeat timeout): the connection dies. Per direction, a random prefix of the
//    messages in flight still arrives (bytes already in the receiver's kernel), the rest is lost;
//    each live side is told `linkDown` after its own detection delay, and never before the last
//    message it still receives.
//  - partition: a drop, and no reconnect until the partition heals.
//  - corrupt frame: a message in flight fails its CRC. The receiver drops the connection the
//    moment it reads it and applies nothing of it or after it (link-codec.ts); the sender notices
//    later. At the message level: never delivered, the link goes down.
//  - node crash: the connection dies with the node; its peer notices after a delay.
// Messages a node sends on a connection that is already dead (it has not noticed yet) are lost.
import type { LinkMessage } from '../src/core/replica-types.js';
import type { Scheduler } from './events.js';
import type { Prng } from './prng.js';
import type { WriteRef } from './provenance.js';

/** Callbacks into the cluster, which routes them to the nodes. */
export interface LinkHost {
  linkUp(node: number, connId: number): void;
  linkDown(node: number, connId: number): void;
  deliver(node: number, connId: number, msg: LinkMessage, ref: WriteRef | null): void;
  drained(node: number, connId: number): void;
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

export class Network {
  private conn: Connection | null = null;
  private nextConnId = 1;
  partitionedUntil = 0;
  connectScheduled = false;

  constructor(private readonly sched: Scheduler, private readonly prng: Prng, private readonly tuning: LinkTuning, private readonly host: LinkHost) {}

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

  /** Opens a connection: each side comes up within a couple of ms of the other. */
  connect(): void {
    const id = this.nextConnId++;
    const now = this.sched.nowMs;
    const c = new Connection(id, [now + this.prng.int(3), now + this.prng.int(3)]);
    this.conn = c;
    this.host.trace(`link ${id}: connecting`);
    for (const side of [0, 1] as const) {
      this.sched.at(c.upAt[side], `up ${'ab'[side]} c${id}`, () => {
        if (c.dead) return;
        c.up[side] = true;
        this.host.linkUp(side, id);
      });
    }
  }

  /** A node sends on its current connection. False: the send buffer is over the high-water mark. */
  send(from: number, connId: number | null, msg: LinkMessage, ref: WriteRef | null): boolean {
    const c = this.conn;
    if (c === null || connId !== c.id || !c.up[from]) return true; // nowhere to go: lost, like a dead socket
    if (c.dead) return true;
    const to = 1 - from;
    const now = this.sched.nowMs;
    const deliverAt = Math.max(now + this.prng.delay(this.tuning.delayMeanMs), c.lastDeliverAt[to], c.upAt[to]);
    c.lastDeliverAt[to] = deliverAt;
    const item: InFlight = { msg, ref, deliverAt, lost: false };
    c.queues[to].push(item);
    this.host.trace(`snd ${'ab'[from]}>${'ab'[to]} c${c.id} ${describe(msg)}`);
    this.sched.at(deliverAt, `dlv ${'ab'[to]} ${describe(msg)}`, () => this.deliverHead(c, to, item));
    if (c.queues[to].length >= this.tuning.highWater) {
      c.blocked[from] = true;
      return false;
    }
    return true;
  }

  private deliverHead(c: Connection, to: number, item: InFlight): void {
    const q = c.queues[to];
    if (q[0] !== item) throw new Error('network: FIFO order broken');
    q.shift();
    if (!item.lost) this.host.deliver(to, c.id, item.msg, item.ref);
    const from = 1 - to;
    if (c.blocked[from] && !c.dead && q.length <= this.tuning.highWater / 2) {
      c.blocked[from] = false;
      this.host.drained(from, c.id);
    }
  }

  /** Reset or timeout: see the file comment. `crashed` is a side that died with the link. */
  drop(reason: string, crashed: number | null = null): void {
    const c = this.conn;
    if (c === null || c.dead) return;
    c.dead = true;
    this.host.trace(`link ${c.id}: ${reason}`);
    const now = this.sched.nowMs;
    for (const side of [0, 1] as const) {
      const keep = side === crashed || !c.up[side] ? 0 : this.prng.int(c.queues[side].length + 1);
      this.finishSide(c, side, keep, now + this.prng.delay(this.tuning.detectMeanMs), side === crashed);
    }
  }

  /** A corrupt frame on the way to `to`: it and everything after it are never applied. */
  corrupt(): boolean {
    const c = this.conn;
    if (c === null || c.dead) return false;
    const candidates = ([0, 1] as const).filter((side) => c.up[side] && c.queues[side].length > 0);
    if (candidates.length === 0) return false;
    const to = this.prng.pick(candidates);
    const index = this.prng.int(c.queues[to].length);
    const bad = c.queues[to][index]!;
    c.dead = true;
    this.host.trace(`link ${c.id}: corrupt frame to ${'ab'[to]} (${describe(bad.msg)})`);
    this.finishSide(c, to, index, bad.deliverAt, false);
    const other = 1 - to;
    const keep = c.up[other] ? this.prng.int(c.queues[other].length + 1) : 0;
    this.finishSide(c, other, keep, bad.deliverAt + this.prng.delay(this.tuning.detectMeanMs), false);
    return true;
  }

  /** Keeps the first `keep` messages to `side`, loses the rest, and tells it linkDown in time. */
  private finishSide(c: Connection, side: number, keep: number, detectAt: number, crashed: boolean): void {
    const q = c.queues[side];
    q.forEach((item, i) => { if (i >= keep) item.lost = true; });
    if (crashed || !c.up[side]) {
      // It never came up (or died): no linkDown for it, and it is done with this connection.
      c.done[side] = true;
      return;
    }
    const lastKept = keep > 0 ? q[keep - 1]!.deliverAt : 0;
    this.sched.at(Math.max(detectAt, lastKept), `down ${'ab'[side]} c${c.id}`, () => {
      c.done[side] = true;
      this.host.linkDown(side, c.id);
    });
  }

  /** A crashed node is done with the connection at once (the peer still has to notice). */
  nodeCrashed(side: number): void {
    const c = this.conn;
    if (c === null) return;
    if (!c.dead) this.drop(`node ${'ab'[side]} crashed`, side);
    else c.done[side] = true;
  }

  get partitioned(): boolean {
    return this.sched.nowMs < this.partitionedUntil;
  }

  /** Messages in flight per direction, for the trace and for quiescence. */
  inFlight(): number {
    const c = this.conn;
    return c === null ? 0 : c.queues[0].length + c.queues[1].length;
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
