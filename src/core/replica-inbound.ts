// The peer's message stream as this node applies it, a part the replica core owns. The link is
// one ordered stream (DESIGN.md "Write path"): a message that finds the cache full holds back every
// later one, and a write larger than the room goes in piece by piece while it waits at the head.
// The bytes already applied belong to that head message: when it leaves the stream (applied whole,
// or dropped whole), they go with it. Pure; the core passes in how to apply one message.
import { assert } from './assert.js';
import type { LinkMessage } from './replica-types.js';

/** Applies one message; false when it must wait for cache room (it keeps its place). */
export type ApplyMessage = (msg: LinkMessage) => boolean;

export class InboundStream {
  private readonly held: LinkMessage[] = [];
  /** Bytes of the head message already in the cache. */
  private appliedBytes = 0;

  /** Messages held back for cache room. */
  get length(): number {
    return this.held.length;
  }

  get headAppliedBytes(): number {
    return this.appliedBytes;
  }

  /** A new message: applied now if nothing is held back, else queued behind what is. */
  offer(msg: LinkMessage, apply: ApplyMessage): void {
    assert(this.held.length > 0 || this.appliedBytes === 0, 'applied bytes without a held message');
    if (this.held.length > 0) {
      this.held.push(msg);
      return;
    }
    if (apply(msg)) this.appliedBytes = 0;
    else this.held.push(msg);
  }

  /** Applies held messages in order while room allows. */
  drain(apply: ApplyMessage): void {
    while (this.held.length > 0 && apply(this.held[0]!)) {
      this.held.shift();
      this.appliedBytes = 0;
    }
  }

  /** A piece of the head message is in the cache. */
  noteApplied(bytes: number): void {
    assert(bytes > 0, 'an applied piece has bytes');
    this.appliedBytes += bytes;
  }

  /** The link dropped: its held messages must never be applied after a new link resets the records. */
  clear(): void {
    this.held.length = 0;
    this.appliedBytes = 0;
  }
}
