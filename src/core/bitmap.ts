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
    let n = 0;
    for (let t = firstTrack; t < endTrack; t++) if (this.has(t)) n++;
    return n;
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

function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}
