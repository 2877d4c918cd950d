// The invariants, checked after every simulated step (and the expensive ones at chosen moments).
// Each failure names what broke in the words of DESIGN.md, so a failing seed's last line says
// which promise the code did not keep.
import type { Model, WriteRec } from './model.js';
import { decodeBlock } from './model.js';
import { channelOf, type SimNode } from './node.js';

export class SimFailure extends Error {
  override readonly name = 'SimFailure';
}

const BLOCK = 512;

/**
 * Fig. 3: every node `p` that marked a write `h` holds unhardened has the track in its united
 * bitmap of `h` (its record of what `h` may hold only in RAM). A write `p` marked on a connection
 * it has since lost is covered by its out-of-sync set of `h` instead (linkDown moves the united
 * bitmap there; a new connection starts a new record). Among three nodes or more, every peer
 * that acked a primary's write marked it.
 */
export function checkCoverage(h: SimNode, nodes: readonly SimNode[], trackSizeBytes: number): void {
  const hc = h.core;
  if (hc === null || h.prov.live === 0) return;
  const blocksPerTrack = trackSizeBytes / BLOCK;
  const src = h.prov.src;
  for (let b = 0; b < src.length; b++) {
    const ref = src[b];
    if (ref == null) continue;
    const t = Math.floor(b / blocksPerTrack);
    if (!hc.cache.isTrackDirty(t)) {
      throw new SimFailure(`provenance: node ${h.name} block ${b} (track ${t}) holds ${ref.what} unhardened by the shell's account, but the cache says the track is clean`);
    }
    for (const [incarnation, conn] of ref.marks) {
      const p = nodes.find((n) => n.incarnation === incarnation);
      const pc = p?.core ?? null;
      if (p === undefined || pc === null || p === h) continue;
      const ch = channelOf(pc, h.name);
      if (ch.record.isUnited(t)) continue;
      const sameConn = conn === p.liveConnTo(h.index);
      if (!sameConn && ch.outOfSync.has(t)) continue;
      throw new SimFailure(
        `bitmap coverage: node ${h.name} holds track ${t} unhardened (block ${b}, ${ref.what}, marked on link ${conn}) ` +
        `but node ${p.name}'s united bitmap lacks it${sameConn ? '' : ' and so does its out-of-sync set'}: ` +
        `if ${h.name} failed now, ${p.name} would not resend it`,
      );
    }
  }
}

/**
 * Every block of `bytes` (a whole-volume image or a read of [firstBlock, …)) is a value the model
 * allows for a read that started at `readStart`. Returns the first violation, or null.
 */
export function explainImage(model: Model, bytes: Uint8Array, firstBlock: number, readStart: number): string | null {
  const count = bytes.length / BLOCK;
  for (let i = 0; i < count; i++) {
    const block = firstBlock + i;
    const got = decodeBlock(bytes, i * BLOCK, block);
    const why = model.explainBlock(block, got, readStart);
    if (why !== null) return `block ${block}: ${why}`;
  }
  return null;
}

/** Every block of `bytes` is write `rec` or one that may have followed it (FUA durability). */
export function explainNotBefore(model: Model, bytes: Uint8Array, firstBlock: number, rec: WriteRec): string | null {
  const count = bytes.length / BLOCK;
  for (let i = 0; i < count; i++) {
    const block = firstBlock + i;
    const why = model.explainNotBefore(block, decodeBlock(bytes, i * BLOCK, block), rec);
    if (why !== null) return `block ${block}: ${why}`;
  }
  return null;
}

/** A stale secondary may return old data, but never bytes no write produced, nor a future write. */
export function explainLoose(model: Model, bytes: Uint8Array, firstBlock: number): string | null {
  const count = bytes.length / BLOCK;
  for (let i = 0; i < count; i++) {
    const got = decodeBlock(bytes, i * BLOCK, firstBlock + i);
    if (got === -1) return `block ${firstBlock + i}: garbage (no write produced these bytes)`;
    if (got > model.maxIssuedId) return `block ${firstBlock + i}: write ${got} was never issued`;
  }
  return null;
}

/** The first differing block of two stores, or -1. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.compare(a, b) === 0) return -1;
  for (let i = 0; i < a.length; i += BLOCK) {
    if (Buffer.compare(a.subarray(i, i + BLOCK), b.subarray(i, i + BLOCK)) !== 0) return i / BLOCK;
  }
  return -1;
}
