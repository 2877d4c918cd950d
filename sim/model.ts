// The reference model the reads are checked against: per 512-byte block, the writes a read may
// legally return. Every data block a host writes is stamped with its write id and its block
// number, so every block a read returns can be attributed to exactly one write (or to zeros: the
// initial contents, TRIM and WRITE_ZEROES, which all look alike).
//
// The rule (a register per block, as in linearizability checkers): a read started at time R may
// return write c unless some write d was acknowledged (ok) before R and c had already completed
// before d was issued — then c is definitely overwritten. A write that never completes (lost in a
// crash, failed) stays possible forever, except once a later acknowledged write definitely
// follows it. A write that got an error counts as "completed" for ordering (it cannot take effect
// after its reply) but never as acknowledged: it is no floor for anyone.
//
// "No acknowledged write is lost" is then exactly: every read (and the final stores) returns, per
// block, the last acknowledged write or one concurrent with it.

const BLOCK = 512;
const MAGIC = 0x5442_5357; // 'TBSW'
const FILL_POSITIONS = [12, 100, 255, 400, 507];

export interface WriteRec {
  readonly id: number;
  readonly zero: boolean;
  readonly issuedAt: number;
  completedAt: number; // Infinity until completed
  ok: boolean;
}

/** Fills `count` blocks starting at absolute block `firstBlock` with write `id`'s stamp. */
export function stampedData(id: number, firstBlock: number, count: number): Buffer {
  const buf = Buffer.alloc(count * BLOCK);
  for (let i = 0; i < count; i++) {
    const block = firstBlock + i;
    const at = i * BLOCK;
    buf.fill(fillByte(id, block), at + 12, at + BLOCK - 4);
    buf.writeUInt32BE(MAGIC, at);
    buf.writeUInt32BE(id, at + 4);
    buf.writeUInt32BE(block, at + 8);
    buf.writeUInt32BE(check(id, block), at + BLOCK - 4);
  }
  return buf;
}

function fillByte(id: number, block: number): number {
  return ((id * 7 + block * 13) & 0xff) | 1; // never 0: a stamped block is never all zeros
}

function check(id: number, block: number): number {
  return (Math.imul(id, 0x9e3779b1) ^ Math.imul(block, 0x85ebca6b) ^ MAGIC) >>> 0;
}

/** The write id a block holds: 0 for all zeros, -1 for anything no write could have produced. */
export function decodeBlock(bytes: Uint8Array, at: number, block: number): number {
  // Plain byte reads: this runs for every block of every read and probe, so no views or copies.
  const u32 = (i: number): number => ((bytes[at + i]! << 24) | (bytes[at + i + 1]! << 16) | (bytes[at + i + 2]! << 8) | bytes[at + i + 3]!) >>> 0;
  if (u32(0) !== MAGIC) {
    for (let i = 0; i < BLOCK; i++) if (bytes[at + i] !== 0) return -1;
    return 0;
  }
  const id = u32(4);
  if (u32(8) !== block || u32(BLOCK - 4) !== check(id, block)) return -1;
  const fill = fillByte(id, block);
  for (const p of FILL_POSITIONS) if (bytes[at + p] !== fill) return -1;
  return id;
}

export class Model {
  /** A logical clock: every issue, completion and read start gets a distinct, ordered time. */
  private clock = 0;
  private readonly blocks: WriteRec[][];
  private completionsSincePrune = 0;
  /**
   * The start times of the checks still in flight, each of which will judge what it finds as of
   * its start: reads and FLUSHes (openCheck), and writes until they complete (a FUA's check takes
   * its issue time as the floor). prune() keeps every value any of them may still accept.
   */
  private readonly openChecks = new Set<number>();
  maxIssuedId = 0;

  constructor(readonly blockCount: number) {
    const initial: WriteRec = { id: 0, zero: true, issuedAt: -2, completedAt: -1, ok: true };
    this.blocks = Array.from({ length: blockCount }, () => [initial]);
  }

  now(): number {
    return ++this.clock;
  }

  /**
   * Starts a check that will judge what it finds as of now (a read, a FLUSH): returns its start
   * time. Until closeCheck, pruning keeps every value such a check may accept.
   */
  openCheck(): number {
    const at = this.now();
    this.openChecks.add(at);
    return at;
  }

  closeCheck(at: number): void {
    this.openChecks.delete(at);
  }

  issueWrite(id: number, firstBlock: number, count: number, zero: boolean): WriteRec {
    const rec: WriteRec = { id, zero, issuedAt: this.now(), completedAt: Infinity, ok: false };
    this.openChecks.add(rec.issuedAt);
    for (let b = firstBlock; b < firstBlock + count; b++) this.blocks[b]!.push(rec);
    this.maxIssuedId = Math.max(this.maxIssuedId, id);
    return rec;
  }

  completeWrite(rec: WriteRec, ok: boolean): void {
    if (rec.completedAt !== Infinity) return;
    rec.completedAt = this.now();
    rec.ok = ok;
    // Its FUA check, if any, runs next, before anyone calls prune().
    this.openChecks.delete(rec.issuedAt);
    this.completionsSincePrune++;
  }

  /**
   * Why `got` (a decoded block) is not a legal value for `block` in a read that started at
   * `readStart`, or null when it is.
   */
  explainBlock(block: number, got: number, readStart: number): string | null {
    const list = this.blocks[block]!;
    let floor = -Infinity; // the latest issue time of an ok write completed before the read
    for (const d of list) if (d.ok && d.completedAt < readStart && d.issuedAt > floor) floor = d.issuedAt;
    return this.explainAbove(block, got, floor);
  }

  /** Why `got` is not `rec` or a write that may have followed it (FUA: rec itself is durable). */
  explainNotBefore(block: number, got: number, rec: WriteRec): string | null {
    return this.explainAbove(block, got, rec.issuedAt);
  }

  /** `got` must be a write that had not completed by `floor` (an issue time). */
  private explainAbove(block: number, got: number, floor: number): string | null {
    const list = this.blocks[block]!;
    const allowed = list.filter((c) => !(c.completedAt < floor));
    const match = allowed.some((c) => (got === 0 ? c.zero : c.id === got && !c.zero));
    if (match) return null;
    const fmt = (c: WriteRec): string => `${c.zero ? 'z' : ''}${c.id}${c.completedAt === Infinity ? '?' : c.ok ? '' : '!'}`;
    const gotText = got === -1 ? 'garbage' : got === 0 ? 'zeros' : `write ${got}`;
    return `got ${gotText}; allowed [${allowed.map(fmt).join(' ')}] of [${list.map(fmt).join(' ')}]`;
  }

  /**
   * Forgets writes no check can accept any more: definitely overwritten before the start of the
   * oldest check still in flight (or now). Keeps the per-block lists short. Every kind of check
   * counts, not only reads: a FLUSH judges the store as of its start, so a write completed after
   * it started must not push out the value it covers (seeds 5000598, 5008004, 5010253 failed on
   * exactly that, with the store right and the model wrong).
   */
  prune(): void {
    if (this.completionsSincePrune < 256) return;
    this.completionsSincePrune = 0;
    let oldest = Infinity;
    for (const at of this.openChecks) if (at < oldest) oldest = at;
    for (let b = 0; b < this.blockCount; b++) {
      const list = this.blocks[b]!;
      let floor = -Infinity;
      for (const d of list) if (d.ok && d.completedAt < oldest && d.issuedAt > floor) floor = d.issuedAt;
      if (list.some((c) => c.completedAt < floor)) this.blocks[b] = list.filter((c) => !(c.completedAt < floor));
    }
  }
}
