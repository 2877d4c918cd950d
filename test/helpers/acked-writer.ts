// The host side of a fault test: a writer that knows exactly which writes were acknowledged, and
// the model it keeps of what each block of the volume may hold.
//
// The writer (AckedWriter) drives our own NBD client with many writes in flight, each with a
// unique random payload, never two at once on the same 4 KiB block. A block's model is the last
// acknowledged payload plus the payloads whose fate is unknown (in flight when the connection
// died); a read-back must match one of them, byte for byte.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { NbdClient, NbdReplyError } from '../../src/nbd/client.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const BLOCK_BYTES = 4 * KiB;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------ block model

/** What each 4 KiB block of the volume may hold. */
export class BlockModel {
  /** Last acknowledged payload per block (null: never written, reads as zeros). */
  readonly acked: (Buffer | null)[];
  /** Payloads whose write was in flight when its connection died: they may or may not have landed. */
  readonly uncertain: Buffer[][];
  /** Blocks with a write in flight right now (the writer never overlaps two writes). */
  readonly busy: Uint8Array;

  constructor(readonly volumeBytes: number) {
    const blocks = volumeBytes / BLOCK_BYTES;
    this.acked = new Array<Buffer | null>(blocks).fill(null);
    this.uncertain = Array.from({ length: blocks }, () => []);
    this.busy = new Uint8Array(blocks);
  }

  get blockCount(): number {
    return this.acked.length;
  }

  /** Blocks ever written or attempted. */
  touchedBlocks(): number[] {
    const out: number[] = [];
    for (let b = 0; b < this.blockCount; b++) if (this.acked[b] !== null || this.uncertain[b]!.length > 0) out.push(b);
    return out;
  }

  /** Blocks whose last acknowledged payload is known (written and acknowledged at least once). */
  ackedBlockCount(): number {
    return this.acked.reduce((n, a) => n + (a === null ? 0 : 1), 0);
  }

  /** Tracks (of trackBytes) holding any written or attempted block. */
  touchedTracks(trackBytes: number): Set<number> {
    return new Set(this.touchedBlocks().map((b) => Math.floor((b * BLOCK_BYTES) / trackBytes)));
  }

  /**
   * Compare bytes read at offset with the model. Returns a description of each mismatching block
   * (up to `limit`), the blocks whose content is one of their uncertain payloads, and the blocks
   * that hold their last acknowledged payload (zeros where nothing was written do not count: a
   * check of a model nothing was acknowledged into proves nothing).
   */
  check(offset: number, bytes: Buffer, limit = 10): { mismatches: string[]; mismatchCount: number; landedUncertain: number; checkedBlocks: number; ackedBlocks: number } {
    const zeros = Buffer.alloc(BLOCK_BYTES);
    const mismatches: string[] = [];
    let mismatchCount = 0;
    let landedUncertain = 0;
    let checkedBlocks = 0;
    let ackedBlocks = 0;
    for (let at = 0; at + BLOCK_BYTES <= bytes.length; at += BLOCK_BYTES) {
      const block = (offset + at) / BLOCK_BYTES;
      const got = bytes.subarray(at, at + BLOCK_BYTES);
      const expected = this.acked[block] ?? zeros;
      checkedBlocks++;
      if (got.equals(expected)) {
        if (this.acked[block] !== null) ackedBlocks++;
        continue;
      }
      if (this.uncertain[block]!.some((u) => got.equals(u))) {
        landedUncertain++;
        continue;
      }
      mismatchCount++;
      if (mismatches.length < limit) {
        const what = this.acked[block] === null ? 'never acknowledged (expected zeros)' : 'expected its last acknowledged write';
        const isZero = got.equals(zeros);
        mismatches.push(`block ${block} (offset ${block * BLOCK_BYTES}): ${what}, ${this.uncertain[block]!.length} uncertain; got ${isZero ? 'zeros' : got.subarray(0, 16).toString('hex') + '…'}`);
      }
    }
    return { mismatches, mismatchCount, landedUncertain, checkedBlocks, ackedBlocks };
  }

  /** After a check: what the survivor holds is now the truth (uncertain payloads are settled). */
  settle(offset: number, bytes: Buffer): void {
    for (let at = 0; at + BLOCK_BYTES <= bytes.length; at += BLOCK_BYTES) {
      const block = (offset + at) / BLOCK_BYTES;
      if (this.uncertain[block]!.length === 0) continue;
      const got = Buffer.from(bytes.subarray(at, at + BLOCK_BYTES));
      this.acked[block] = got.equals(Buffer.alloc(BLOCK_BYTES)) && this.acked[block] === null ? null : got;
      this.uncertain[block] = [];
    }
  }

  get uncertainBlocks(): number {
    return this.uncertain.reduce((n, u) => n + (u.length > 0 ? 1 : 0), 0);
  }
}

/** Read the whole volume through NBD (1 MiB reads, 8 in flight) and check it against the model. */
export async function verifyVolume(uri: string, model: BlockModel, opts: { settle?: boolean } = {}): Promise<{ mismatches: string[]; mismatchCount: number; landedUncertain: number; checkedBlocks: number; ackedBlocks: number }> {
  const client = await NbdClient.connect(uri);
  const total = { mismatches: [] as string[], mismatchCount: 0, landedUncertain: 0, checkedBlocks: 0, ackedBlocks: 0 };
  try {
    const offsets: number[] = [];
    for (let off = 0; off < model.volumeBytes; off += MiB) offsets.push(off);
    const worker = async (): Promise<void> => {
      for (let off = offsets.shift(); off !== undefined; off = offsets.shift()) {
        const bytes = await client.read(off, Math.min(MiB, model.volumeBytes - off));
        const r = model.check(off, bytes);
        total.mismatches.push(...r.mismatches.slice(0, Math.max(0, 10 - total.mismatches.length)));
        total.mismatchCount += r.mismatchCount;
        total.landedUncertain += r.landedUncertain;
        total.checkedBlocks += r.checkedBlocks;
        total.ackedBlocks += r.ackedBlocks;
        if (opts.settle === true) model.settle(off, bytes);
      }
    };
    await Promise.all(Array.from({ length: 8 }, () => worker()));
  } finally {
    await client.disconnect().catch(() => undefined);
  }
  return total;
}

/** Check a store file (after a clean stop) against the model; every block must be exact. */
export function verifyStoreFile(file: string, model: BlockModel): { mismatches: string[]; mismatchCount: number; ackedBlocks: number } {
  const fd = openSync(file, 'r');
  const out = { mismatches: [] as string[], mismatchCount: 0, ackedBlocks: 0 };
  try {
    const buf = Buffer.alloc(MiB);
    for (let off = 0; off < model.volumeBytes; off += MiB) {
      const n = readSync(fd, buf, 0, MiB, off);
      const r = model.check(off, buf.subarray(0, n));
      out.mismatchCount += r.mismatchCount + r.landedUncertain;
      out.ackedBlocks += r.ackedBlocks;
      if (r.landedUncertain > 0 && out.mismatches.length < 10) out.mismatches.push(`${r.landedUncertain} blocks near ${off} hold an unsettled uncertain payload`);
      out.mismatches.push(...r.mismatches.slice(0, Math.max(0, 10 - out.mismatches.length)));
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

/** Null when the two files are byte-identical, else where they first differ and how many 4 KiB blocks differ. */
export function compareStores(fileA: string, fileB: string): string | null {
  const fa = openSync(fileA, 'r');
  const fb = openSync(fileB, 'r');
  try {
    const x = Buffer.alloc(MiB);
    const y = Buffer.alloc(MiB);
    let first = -1;
    let differingBlocks = 0;
    for (let off = 0; ; off += MiB) {
      const nx = readSync(fa, x, 0, MiB, off);
      const ny = readSync(fb, y, 0, MiB, off);
      if (nx !== ny) return `${fileA} and ${fileB} differ in length (at ${off + Math.min(nx, ny)})`;
      if (nx === 0) break;
      if (x.subarray(0, nx).equals(y.subarray(0, ny))) continue;
      for (let at = 0; at < nx; at += BLOCK_BYTES) {
        if (!x.subarray(at, at + BLOCK_BYTES).equals(y.subarray(at, at + BLOCK_BYTES))) {
          differingBlocks++;
          if (first < 0) first = off + at;
        }
      }
    }
    return first < 0 ? null : `${path.basename(fileA)} and ${path.basename(fileB)} differ in ${differingBlocks} blocks of 4 KiB, first at byte ${first}`;
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

// ------------------------------------------------------------------------------------ writer

export interface WriterOptions {
  /** Writes in flight at once. */
  depth?: number;
  /** [start, end) byte range the writer stays in (4 KiB aligned). */
  region?: [number, number];
  /** Largest write, in 4 KiB blocks (each write is 1..maxBlocks blocks). */
  maxBlocks?: number;
  /** Stop issuing after this many writes were issued. */
  maxWrites?: number;
}

export interface WriterStats {
  issued: number;
  acked: number;
  ackedBytes: number;
  /** Writes that failed with an NBD error reply on a live connection (the writer stops at the first). */
  errors: string[];
  errnos: string[];
  /** Writes whose connection died under them. */
  lost: number;
  connectionDied: boolean;
  /** Date.now() of the first and last acknowledgement. */
  firstAckAt: number | null;
  lastAckAt: number | null;
}

/**
 * Many concurrent writes with unique payloads through one NBD connection. A write counts as
 * acknowledged only when its promise resolves; if the connection dies, every write still in flight
 * becomes an uncertain payload for its blocks and the writer stops issuing.
 */
export class AckedWriter {
  readonly stats: WriterStats = { issued: 0, acked: 0, ackedBytes: 0, errors: [], errnos: [], lost: 0, connectionDied: false, firstAckAt: null, lastAckAt: null };
  private running = false;
  /** Tracks (of trackBytes) written by acknowledged writes. */
  readonly ackedTracks = new Set<number>();
  private readonly depth: number;
  private readonly region: [number, number];
  private readonly maxBlocks: number;
  private readonly maxWrites: number;
  private loops: Promise<void>[] = [];
  /** Acknowledgement times (ms since start) — for "writes kept being served while degraded". */
  readonly ackTimes: number[] = [];
  readonly startedAt = Date.now();

  constructor(readonly client: NbdClient, readonly model: BlockModel, opts: WriterOptions = {}, private readonly trackBytes = 64 * KiB) {
    this.depth = opts.depth ?? 16;
    this.region = opts.region ?? [0, model.volumeBytes];
    this.maxBlocks = opts.maxBlocks ?? 4;
    this.maxWrites = opts.maxWrites ?? Number.POSITIVE_INFINITY;
  }

  static async open(uri: string, model: BlockModel, opts: WriterOptions = {}): Promise<AckedWriter> {
    return new AckedWriter(await NbdClient.connect(uri), model, opts);
  }

  start(): this {
    this.running = true;
    this.loops = Array.from({ length: this.depth }, () => this.loop());
    return this;
  }

  /** Stop issuing and wait for every write in flight to settle; returns the stats. */
  async stop(): Promise<WriterStats> {
    this.running = false;
    await Promise.all(this.loops);
    return this.stats;
  }

  /** Stop issuing, wait, and disconnect (a live connection only). */
  async close(): Promise<WriterStats> {
    const stats = await this.stop();
    if (!stats.connectionDied) await this.client.disconnect().catch(() => undefined);
    return stats;
  }

  /** Acknowledgements in [fromMs, toMs) of Date.now(). */
  acksBetween(fromMs: number, toMs: number): number {
    return this.ackTimes.filter((t) => t + this.startedAt >= fromMs && t + this.startedAt < toMs).length;
  }

  /** Resolves once `count` more writes were acknowledged after now (or rejects after timeoutMs). */
  async waitAcks(count: number, timeoutMs = 20_000): Promise<void> {
    const target = this.stats.acked + count;
    const deadline = Date.now() + timeoutMs;
    while (this.stats.acked < target) {
      if (Date.now() > deadline) throw new Error(`writer: only ${this.stats.acked - (target - count)} of ${count} acknowledgements within ${timeoutMs} ms (errors: ${this.stats.errors.slice(0, 3).join('; ')}, connectionDied ${this.stats.connectionDied})`);
      if (!this.running || this.stats.connectionDied) throw new Error(`writer stopped before enough acknowledgements (errors: ${this.stats.errors.slice(0, 3).join('; ')}, connectionDied ${this.stats.connectionDied})`);
      await sleep(10);
    }
  }

  private pickBlocks(): [number, number] | null {
    const [from, to] = this.region;
    const firstBlock = from / BLOCK_BYTES;
    const blocks = (to - from) / BLOCK_BYTES;
    for (let tries = 0; tries < 20; tries++) {
      const n = 1 + Math.floor(Math.random() * this.maxBlocks);
      if (n > blocks) continue;
      const start = firstBlock + Math.floor(Math.random() * (blocks - n + 1));
      let free = true;
      for (let b = start; b < start + n; b++) if (this.model.busy[b] !== 0) free = false;
      if (free) return [start, n];
    }
    return null;
  }

  private async loop(): Promise<void> {
    while (this.running && !this.stats.connectionDied && this.stats.issued < this.maxWrites) {
      const pick = this.pickBlocks();
      if (pick === null) {
        await sleep(1);
        continue;
      }
      const [start, n] = pick;
      const data = randomBytes(n * BLOCK_BYTES);
      for (let b = start; b < start + n; b++) this.model.busy[b] = 1;
      this.stats.issued++;
      try {
        await this.client.write(start * BLOCK_BYTES, data);
        for (let i = 0; i < n; i++) {
          this.model.acked[start + i] = data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES);
          this.model.uncertain[start + i] = [];
        }
        this.stats.acked++;
        for (let t = Math.floor((start * BLOCK_BYTES) / this.trackBytes); t <= Math.floor(((start + n) * BLOCK_BYTES - 1) / this.trackBytes); t++) this.ackedTracks.add(t);
        this.stats.ackedBytes += data.length;
        const now = Date.now();
        this.stats.firstAckAt ??= now;
        this.stats.lastAckAt = now;
        this.ackTimes.push(now - this.startedAt);
      } catch (err) {
        // Refused before it was applied (EPERM: not primary; ESHUTDOWN: stopping): it must never
        // show up. Any other failure may or may not have landed.
        const refused = err instanceof NbdReplyError && (err.errno === 'EPERM' || err.errno === 'ESHUTDOWN');
        if (!refused) for (let i = 0; i < n; i++) this.model.uncertain[start + i]!.push(data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES));
        if (err instanceof NbdReplyError) {
          this.stats.errors.push(`write ${start * BLOCK_BYTES}+${data.length}: ${err.errno}: ${err.message}`);
          this.stats.errnos.push(err.errno);
          this.running = false; // an error reply ends the run: the test decides whether it was expected
        } else {
          this.stats.lost++;
          this.stats.connectionDied = true;
        }
      } finally {
        for (let b = start; b < start + n; b++) this.model.busy[b] = 0;
      }
    }
  }
}
