// The host: what an NBD client would send. A few concurrent "threads" (the queue depth) each issue
// one request at a time, with a small gap; writes overlap often (a hot span) so concurrent writes
// to the same blocks race through both caches and the link. Requests are 512-aligned, as hosts
// honour our advertised minimum block size (Volume does read-modify-write otherwise, outside the
// core).
import type { Prng } from './prng.js';
import type { SimOptions } from './options.js';

export type OpKind = 'write' | 'fua' | 'zero' | 'trim' | 'read' | 'flush';

export interface HostOp {
  kind: OpKind;
  offsetBytes: number;
  lengthBytes: number;
  /** Reads only: ask the secondary instead of the primary (its export is readable). */
  atSecondary: boolean;
}

const BLOCK = 512;

const weights: [OpKind, number][] = [
  ['write', 44], ['fua', 6], ['zero', 5], ['trim', 4], ['read', 33], ['flush', 8],
];
const totalWeight = weights.reduce((n, [, w]) => n + w, 0);

/** Where the host's last read ended: a third of reads continue from there (a stream, read ahead). */
export interface ReadStream {
  nextReadBytes: number;
}

export function nextOp(prng: Prng, o: SimOptions, stream: ReadStream): HostOp {
  let r = prng.int(totalWeight);
  let kind: OpKind = 'write';
  for (const [k, w] of weights) {
    if (r < w) { kind = k; break; }
    r -= w;
  }
  const volumeBlocks = (o.trackCount * o.trackSizeBytes) / BLOCK;
  // Reads are sometimes whole tracks or more, to cross cached and uncached blocks.
  const maxBlocks = kind === 'read' ? Math.min(volumeBlocks, 3 * o.maxOpBlocks) : o.maxOpBlocks;
  const count = prng.range(1, maxBlocks);
  const hotBlocks = Math.max(count, Math.floor(volumeBlocks / 8));
  const span = prng.chance(o.hotFraction) ? hotBlocks : volumeBlocks;
  let first = prng.int(span - count + 1);
  if (kind === 'read' && prng.chance(0.33) && stream.nextReadBytes / BLOCK + count <= volumeBlocks) first = stream.nextReadBytes / BLOCK;
  if (kind === 'read') stream.nextReadBytes = (first + count) * BLOCK;
  return {
    kind,
    offsetBytes: kind === 'flush' ? 0 : first * BLOCK,
    lengthBytes: kind === 'flush' ? 0 : count * BLOCK,
    atSecondary: kind === 'read' && prng.chance(0.3),
  };
}
