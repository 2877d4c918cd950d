// Reused buffers for WRITE payloads. A payload that straddles socket chunks is copied once into a
// buffer of its exact size; allocating that afresh for every request made page faults the main
// cost of 1 MiB writes on a VM (docs/benchmarks.md: fresh memory was ~60× slower to fill than
// reused memory). Only buffers this pool handed out come back to it, and only once nothing refers
// to their bytes: the request is answered (the cache copied them), and every link frame that
// carries them without a copy was written to its socket (src/link/connection.ts holds them until
// then). With `ack: quorum` a write is answered before a slower peer's frame has left; the core
// used to copy such payloads (9% of the primary's CPU at 1 MiB with three nodes).

/** At most this much memory waits in the pool. */
const MAX_POOLED_BYTES = 64 * 1024 * 1024;
/**
 * Smaller payloads come from Node's own pool slab (Buffer.allocUnsafe below 4 KiB); pooling
 * them gains nothing. From 4 KiB on each would be an ArrayBuffer of its own, and since sockets
 * read into reused memory (src/node/socket-input.ts) every payload is copied out of it: a fresh
 * buffer per 4 KiB write would bring back the churn that reading into reused memory removed.
 */
const MIN_POOLED_BYTES = 4096;

/**
 * A pooled buffer and how many hold it now (the request, and frames not yet written); 0 while it
 * waits in the pool or after it left it. A field, not a WeakMap entry per holder change: every
 * WeakMap set costs V8 an ephemeron write barrier, ~2% of a node's CPU at 4 KiB QD32 (perf).
 */
interface Pooled {
  readonly buffer: Buffer;
  holders: number;
}

const freeBySize = new Map<number, Pooled[]>();
/** Pooled buffers by their memory, so a view into one (a decoded message's data) finds it. */
const byMemory = new WeakMap<ArrayBufferLike, Pooled>();
let pooledBytes = 0;

export function acquirePayload(lengthBytes: number): Buffer {
  if (lengthBytes < MIN_POOLED_BYTES) return Buffer.allocUnsafe(lengthBytes);
  const reused = freeBySize.get(lengthBytes)?.pop();
  if (reused !== undefined) {
    pooledBytes -= lengthBytes;
    reused.holders = 1;
    return reused.buffer;
  }
  // allocUnsafeSlow: a buffer of its own memory (never a slice of Node's shared pool slab).
  const fresh: Pooled = { buffer: Buffer.allocUnsafeSlow(lengthBytes), holders: 1 };
  byMemory.set(fresh.buffer.buffer, fresh);
  return fresh.buffer;
}

/** Give back the pooled buffer a view was cut from (a link message's data); others are ignored. */
export function releasePayloadOf(view: Uint8Array): void {
  const pooled = byMemory.get(view.buffer);
  if (pooled !== undefined) release(pooled);
}

/**
 * One more holder of the pooled buffer a view was cut from (a frame about to be written without a
 * copy): returns that buffer, to release once done with, or null for a buffer not from the pool.
 */
export function holdPayloadOf(view: Uint8Array): Buffer | null {
  const pooled = byMemory.get(view.buffer);
  if (pooled === undefined || pooled.holders === 0) return null;
  pooled.holders++;
  return pooled.buffer;
}

/** A holder is done with a payload: it goes back to the pool once the last one is; others are ignored. */
export function releasePayload(buffer: Buffer | null): void {
  const pooled = buffer === null ? undefined : byMemory.get(buffer.buffer);
  if (pooled !== undefined && pooled.buffer === buffer) release(pooled);
}

function release(pooled: Pooled): void {
  if (pooled.holders === 0) return; // not handed out (in the pool, or dropped from it)
  if (--pooled.holders > 0) return;
  const { length } = pooled.buffer;
  if (pooledBytes + length > MAX_POOLED_BYTES) return;
  const list = freeBySize.get(length) ?? [];
  list.push(pooled);
  freeBySize.set(length, list);
  pooledBytes += length;
}
