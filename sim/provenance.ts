// Which write each unhardened block of a node's cache holds, and whether the peer has marked it:
// the ground truth the bitmap-coverage invariant is checked against.
//
// The seed's claim (Fig. 3 text): "there are no tracks that have not been hardened on subsystem 22
// whose corresponding bits are not marked in the union of bitmaps 50 and 52 held by subsystem 24".
// Not every dirty track counts, though (test/trackers.test.ts, checkCovered): the peer can only
// have marked a write it has seen. The primary marks at send (step 62), so every block the
// secondary applied from the link counts at once; the secondary marks on receipt (step 66), so a
// block the primary holds counts only once the secondary has applied (and acked) that write — a
// write still on the wire was never acknowledged, and losing it is allowed.
//
// So per block we keep a WriteRef: who marked the write, each on the connection it marked it on
// (none yet: not marked). Among three nodes or more a primary's copy is marked by every peer
// that acked it, each in its own record of this node. The shell sets it in the order the core applies
// writes, and a harden job clears exactly the blocks it snapshotted unless a newer write replaced
// them meanwhile — the same rule as the cache's `rewritten` mask, at block granularity.
import type { HardenJob } from '../src/core/cache.js';
import type { LinkMessage } from '../src/core/replica-types.js';

export interface WriteRef {
  /** Incarnation id of each node whose record holds the mark → the connection it marked it on. */
  readonly marks: Map<number, number>;
  readonly what: string;
}

const BLOCK = 512;

interface ShadowEntry {
  msg: LinkMessage;
  ref: WriteRef | null;
  /** Bytes of it our account has applied so far. */
  appliedBytes: number;
}

export class Provenance {
  readonly src: (WriteRef | null)[];
  /** Blocks of src that are not null: the coverage check skips a node with none (most steps). */
  live = 0;
  /** Per peer: data delivered to this node whose application we have not seen yet (it may wait for room). */
  private readonly shadows = new Map<string, ShadowEntry[]>();
  private readonly jobs = new Map<number, [number, WriteRef][]>();
  /** Data the core consumed without applying it (the tail of a stream this node left). */
  private readonly ignoredMsgs = new WeakSet<LinkMessage>();

  constructor(readonly blockCount: number) {
    this.src = new Array<WriteRef | null>(blockCount).fill(null);
  }

  setSpan(offsetBytes: number, lengthBytes: number, ref: WriteRef | null): void {
    const first = offsetBytes / BLOCK;
    const end = first + lengthBytes / BLOCK;
    for (let b = first; b < end; b++) this.set(b, ref);
  }

  /** The distinct references the span's unhardened blocks hold now. */
  liveRefs(offsetBytes: number, lengthBytes: number): WriteRef[] {
    const first = offsetBytes / BLOCK;
    const end = first + lengthBytes / BLOCK;
    const refs = new Set<WriteRef>();
    for (let b = first; b < end; b++) if (this.src[b] != null) refs.add(this.src[b]!);
    return [...refs];
  }

  private set(block: number, ref: WriteRef | null): void {
    const before = this.src[block];
    if (before == null && ref !== null) this.live++;
    else if (before != null && ref === null) this.live--;
    this.src[block] = ref;
  }

  /** A message reached this node; the core applies its inbound stream in order, maybe later. */
  delivered(peer: string, msg: LinkMessage, ref: WriteRef | null): void {
    let shadow = this.shadows.get(peer);
    if (shadow === undefined) this.shadows.set(peer, shadow = []);
    shadow.push({ msg, ref, appliedBytes: 0 });
  }

  /**
   * After a step: `queued` messages are still held back in the core's inbound queue (waiting for
   * cache room), so every earlier one has been applied, in the order they arrived. The head of the
   * queue may be partly applied already (`headAppliedBytes`): a message larger than half the
   * receiver's cache goes in piece by piece. `receiving`: the node is secondary, so it applies data.
   */
  resolveApplied(peer: string, queued: number, headAppliedBytes: number, receiving: boolean): void {
    const shadow = this.shadows.get(peer);
    if (shadow === undefined) return;
    const upTo = Math.max(0, shadow.length - queued);
    // A node that is not secondary (any more) ignores volume data from its peer: it is consumed
    // from the queue but lands nowhere.
    for (let i = 0; i < upTo; i++) if (receiving) this.applyEntry(shadow[i]!, Infinity);
    if (upTo > 0) shadow.splice(0, upTo);
    const head = shadow[0];
    if (queued > 0 && head !== undefined && headAppliedBytes > head.appliedBytes) this.applyEntry(head, headAppliedBytes);
  }

  /** The core consumes `msg` without applying it. */
  ignored(msg: LinkMessage): void {
    this.ignoredMsgs.add(msg);
  }

  /** Sets the source of the entry's bytes from where we left off up to `endBytes` of it. */
  private applyEntry(e: ShadowEntry, endBytes: number): void {
    const { msg, ref } = e;
    if (ref === null || this.ignoredMsgs.has(msg)) return;
    let length = 0;
    if (msg.type === 'write' || msg.type === 'syncData') length = msg.data.length;
    else if (msg.type === 'zero') length = msg.lengthBytes;
    else return;
    const end = Math.min(length, endBytes);
    if (end > e.appliedBytes) this.setSpan(msg.offsetBytes + e.appliedBytes, end - e.appliedBytes, ref);
    e.appliedBytes = end;
  }

  /** The core dropped the last `count` messages it held back, unapplied. */
  forgetQueued(peer: string, count: number): void {
    const shadow = this.shadows.get(peer);
    if (shadow !== undefined) shadow.length = Math.max(0, shadow.length - count);
  }

  /** The core snapshotted these blocks into a store write. */
  hardenStarted(job: HardenJob): void {
    const snap: [number, WriteRef][] = [];
    for (const run of job.runs) {
      const first = run.offsetBytes / BLOCK;
      const end = first + run.lengthBytes / BLOCK;
      for (let b = first; b < end; b++) {
        const ref = this.src[b];
        if (ref) snap.push([b, ref]);
      }
    }
    this.jobs.set(job.id, snap);
  }

  /** The job is on the store: its blocks are hardened unless written again since. */
  hardenDone(jobId: number): void {
    for (const [b, ref] of this.jobs.get(jobId) ?? []) if (this.src[b] === ref) this.set(b, null);
    this.jobs.delete(jobId);
  }

  hardenFailed(jobId: number): void {
    this.jobs.delete(jobId);
  }

  /** The node crashed: its cache, and everything we knew about it, is gone. */
  reset(): void {
    this.src.fill(null);
    this.live = 0;
    this.shadows.clear();
    this.jobs.clear();
  }
}
