// Read-only peeks into ReplicaCore's private queues. The core exposes `inboundBlocked` and
// `writesDrained`, but the simulator's account of which write each cached block holds (the
// bitmap-coverage invariant, sim/provenance.ts) must know exactly which queued messages and host
// write pieces went into the cache in a step: a sync chunk is applied without any action to
// observe, and a harden job emitted in the same step snapshots it. If the core renames these,
// this file is the one place to follow (it throws rather than guess).
import type { ReplicaCore } from '../src/core/replica.js';

export interface Span {
  offsetBytes: number;
  lengthBytes: number;
}

/** Messages the core still holds back for cache room, and how much of the first is in already. */
export function inboundQueue(core: ReplicaCore): { queued: number; headAppliedBytes: number } {
  const peek = core as unknown as { inbound?: unknown; inboundAppliedBytes?: unknown };
  if (!Array.isArray(peek.inbound) || typeof peek.inboundAppliedBytes !== 'number') {
    throw new Error('sim: ReplicaCore no longer has `inbound` / `inboundAppliedBytes`; update sim/peek.ts');
  }
  return { queued: peek.inbound.length, headAppliedBytes: peek.inboundAppliedBytes };
}

/** The core's host write pieces waiting for cache room, oldest first. */
export function hostQueue(core: ReplicaCore): Span[] {
  const q = (core as unknown as { hostQueue?: unknown }).hostQueue;
  if (!Array.isArray(q)) throw new Error('sim: ReplicaCore no longer has a `hostQueue` array; update sim/peek.ts');
  return q as Span[];
}
