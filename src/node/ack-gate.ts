// The replies an ack gate holds (issue 13: with an arbiter, a primary acknowledges a host write
// only while it holds the leader lease), a part Volume (volume.ts) owns. A reply the gate does not
// let out waits here, in order, until the gate opens, or fails (EIO) once this node is no longer
// primary: its write is then on the volume or not, as a failed write's may be.
import { NbdRequestError } from '../nbd/export.js';

/** A request's outcome, to settle once its reply may go out. */
export interface PendingReply {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class AckGateReplies {
  private readonly held: PendingReply[] = [];

  /** `gate`: may a reply go out now (absent: always); `isPrimary`: is this node still primary. */
  constructor(private readonly gate: (() => boolean) | undefined, private readonly isPrimary: () => boolean) {}

  /** Settle `reply` now if the gate is open and nothing is held before it; else hold it. */
  answer(reply: PendingReply): void {
    if (this.gate === undefined || (this.held.length === 0 && this.gate())) return reply.resolve();
    this.held.push(reply);
  }

  /** Sends the held replies if the gate opens now; fails them once this node is not primary. */
  release(): void {
    if (this.held.length === 0) return;
    if (!this.isPrimary()) {
      for (const p of this.held.splice(0)) p.reject(new NbdRequestError('EIO', 'this node stopped being primary before the write could be acknowledged'));
      return;
    }
    if (this.gate?.() !== true) return;
    for (const p of this.held.splice(0)) p.resolve();
  }

  /**
   * NbdExport.replyGate: the same gate, asked again as a batch of replies is about to reach the
   * socket; a node that is no longer primary drops the connection rather than send them.
   */
  replyGate(): 'open' | 'wait' | 'never' {
    if (this.gate === undefined) return 'open';
    if (!this.isPrimary()) return 'never';
    return this.gate() ? 'open' : 'wait';
  }

  get count(): number {
    return this.held.length;
  }
}
