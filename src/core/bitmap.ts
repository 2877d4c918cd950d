// A bitmap with one bit per track (seed Fig. 3, bits 54). Pure.

export class TrackBitmap {
  private readonly words: Uint32Array;

  constructor(readonly trackCount: number) {
    this.words = new Uint32Array(Math.ceil(trackCount / 32));
  }

  has(track: number): boolean {
    return (this.words[track >>> 5]! & (1 << (track & 31))) !== 0;
  }

  /** Sets the bit; true if it was clear. */
  set(track: number): boolean {
    const i = track >>> 5;
    const bit = 1 << (track & 31);
    const before = this.words[i]!;
    this.words[i] = before | bit;
    return (before & bit) === 0;
  }

  /** Clears the bit; true if it was set. */
  clear(track: number): boolean {
    const i = track >>> 5;
    const bit = 1 << (track & 31);
    const before = this.words[i]!;
    this.words[i] = before & ~bit;
    return (before & bit) !== 0;
  }

  /** Sets every track's bit. */
  setAll(): void {
    for (let t = 0; t < this.trackCount; t++) this.set(t);
  }

  /** Sets every bit set in `other` (same track count): the union, in place. */
  addAll(other: TrackBitmap): void {
    for (let i = 0; i < this.words.length; i++) this.words[i]! |= other.words[i]!;
  }

  clearSpan(firstTrack: number, endTrack: number): void {
    for (let t = firstTrack; t < endTrack; t++) this.clear(t);
  }

  countSpan(firstTrack: number, endTrack: number): number {
    return countWords(this.words, null, firstTrack, endTrack);
  }

  /** Tracks set in this bitmap OR in `other` (same track count) within [firstTrack, endTrack). */
  countUnionSpan(other: TrackBitmap, firstTrack: number, endTrack: number): number {
    return countWords(this.words, other.words, firstTrack, endTrack);
  }

  /** Tracks set in [firstTrack, endTrack), ascending. */
  tracksInSpan(firstTrack: number, endTrack: number): number[] {
    const out: number[] = [];
    for (let t = firstTrack; t < endTrack; t++) if (this.has(t)) out.push(t);
    return out;
  }

  count(): number {
    let n = 0;
    for (const w of this.words) n += popcount32(w);
    return n;
  }

  /** The raw words, for persistence (out-of-sync sets) and wire transfer. */
  toBytes(): Uint8Array {
    return new Uint8Array(this.words.buffer.slice(0));
  }

  static fromBytes(trackCount: number, bytes: Uint8Array): TrackBitmap {
    const bitmap = new TrackBitmap(trackCount);
    new Uint8Array(bitmap.words.buffer).set(bytes.subarray(0, bitmap.words.byteLength));
    return bitmap;
  }
}

/**
 * Bits set in [firstTrack, endTrack) of `a` (OR `b`), a word at a time in the middle: status and
 * the dashboard count every range of the volume a few times a second, and a 1 TiB volume of 64 KiB
 * tracks has 16 Mi of them.
 */
function countWords(a: Uint32Array, b: Uint32Array | null, firstTrack: number, endTrack: number): number {
  const bit = (t: number): number => ((a[t >>> 5]! | (b === null ? 0 : b[t >>> 5]!)) >>> (t & 31)) & 1;
  let n = 0;
  let t = firstTrack;
  for (; t < endTrack && (t & 31) !== 0; t++) n += bit(t);
  for (; t + 32 <= endTrack; t += 32) n += popcount32((a[t >>> 5]! | (b === null ? 0 : b[t >>> 5]!)) >>> 0);
  for (; t < endTrack; t++) n += bit(t);
  return n;
}

function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}
