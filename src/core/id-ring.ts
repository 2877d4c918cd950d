// Values keyed by ids handed out in increasing order (request ids, link write seqs) and taken out
// in roughly that order: a ring of slots from the oldest live id. Pure.
//
// Why not a Map: on the write path such a table holds a few dozen entries that come and go, and
// V8's Map rebuilt its hash table each time it shrank below a quarter and grew again, and each
// time deleted entries filled it (~3% of the primary's CPU at 4 KiB QD32, perf: Runtime_MapGrow,
// Runtime_MapShrink and the pages their tables took). Here set, get and delete are an index into
// an array that only grows while the ids in flight span more than it holds.
import { assert } from './assert.js';

const MIN_SLOTS = 16;
/** A ring left this large when it empties starts again from MIN_SLOTS. */
const SHRINK_ABOVE_SLOTS = 4096;

export class IdRing<T> {
  private slots: (T | undefined)[] = new Array<T | undefined>(MIN_SLOTS).fill(undefined);
  /** slots.length - 1 (a power of two less one). */
  private mask = MIN_SLOTS - 1;
  /** No id below this one is live. */
  private first = 0;
  /** One past the highest id set. */
  private end = 0;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** `id` must be above every id set before (ids are handed out in increasing order). */
  set(id: number, value: T): void {
    assert(Number.isSafeInteger(id) && id >= this.end, `ids must increase (${id} after ${this.end - 1})`);
    assert(value !== undefined, 'an IdRing holds no undefined values');
    if (this.count === 0) this.first = id;
    if (id - this.first >= this.slots.length) this.grow(id - this.first + 1);
    this.slots[id & this.mask] = value;
    this.end = id + 1;
    this.count++;
  }

  get(id: number): T | undefined {
    return id >= this.first && id < this.end ? this.slots[id & this.mask] : undefined;
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  delete(id: number): boolean {
    if (this.get(id) === undefined) return false;
    this.slots[id & this.mask] = undefined;
    this.count--;
    if (this.count === 0) this.emptied();
    else if (id === this.first) while (this.slots[this.first & this.mask] === undefined) this.first++;
    return true;
  }

  clear(): void {
    for (let id = this.first; id < this.end; id++) this.slots[id & this.mask] = undefined;
    this.count = 0;
    this.emptied();
  }

  /**
   * Nothing is live: ids start again from the next one set. A ring that grew while one old id
   * stayed (a FLUSH waiting on a slow disk while writes went on) goes back to its first size.
   */
  private emptied(): void {
    this.first = this.end;
    if (this.slots.length > SHRINK_ABOVE_SLOTS) {
      this.slots = new Array<T | undefined>(MIN_SLOTS).fill(undefined);
      this.mask = MIN_SLOTS - 1;
    }
  }

  /** The values by increasing id (the order they were set in). */
  *values(): Generator<T> {
    for (const [, value] of this.entries()) yield value;
  }

  /** [id, value] by increasing id; deleting the current entry while iterating is allowed. */
  *entries(): Generator<[number, T]> {
    for (let id = this.first; id < this.end; id++) {
      const value = this.slots[id & this.mask];
      if (value !== undefined) yield [id, value];
    }
  }

  [Symbol.iterator](): Generator<[number, T]> {
    return this.entries();
  }

  /** Room for `span` ids from `first`: the live slots move to where the larger mask puts them. */
  private grow(span: number): void {
    let length = this.slots.length * 2;
    while (length < span) length *= 2;
    const slots = new Array<T | undefined>(length).fill(undefined);
    const mask = length - 1;
    for (let id = this.first; id < this.end; id++) slots[id & mask] = this.slots[id & this.mask];
    this.slots = slots;
    this.mask = mask;
  }
}
