// Reused buffers for WRITE payloads. A payload that straddles socket chunks is copied once into a
// buffer of its exact size; allocating that afresh for every request made page faults the main
// cost of 1 MiB writes on a VM (docs/benchmarks.md: fresh memory was ~60× slower to fill than
// reused memory). Only buffers this pool handed out come back to it, and only once the request
// is answered: by then the cache (and the replication link, whose peer acknowledged it) are done
// with the bytes.

/** At most this much memory waits in the pool. */
const MAX_POOLED_BYTES = 64 * 1024 * 1024;
/**
 * Smaller payloads come from Node's own pool slab (Buffer.allocUnsafe below 4 KiB); pooling
 * them gains nothing. From 4 KiB on each would be an ArrayBuffer of its own, and since sockets
 * read into reused memory (src/node/socket-input.ts) every payload is copied out of it: a fresh
 * buffer per 4 KiB write would bring back the churn that reading into reused memory removed.
 */
const MIN_POOLED_BYTES = 4096;

const freeBySize = new Map<number, Buffer[]>();
const issued = new WeakSet<Buffer>();
/** Pooled buffers by their memory, so a view into one (a decoded message's data) finds it. */
const byMemory = new WeakMap<ArrayBufferLike, Buffer>();
let pooledBytes = 0;

export function acquirePayload(lengthBytes: number): Buffer {
  if (lengthBytes < MIN_POOLED_BYTES) return Buffer.allocUnsafe(lengthBytes);
  const reused = freeBySize.get(lengthBytes)?.pop();
  if (reused !== undefined) {
    pooledBytes -= lengthBytes;
    issued.add(reused);
    return reused;
  }
  // allocUnsafeSlow: a buffer of its own memory (never a slice of Node's shared pool slab).
  const fresh = Buffer.allocUnsafeSlow(lengthBytes);
  issued.add(fresh);
  byMemory.set(fresh.buffer, fresh);
  return fresh;
}

/** Give back the pooled buffer a view was cut from (a link message's data); others are ignored. */
export function releasePayloadOf(view: Uint8Array): void {
  const buffer = byMemory.get(view.buffer);
  if (buffer !== undefined) releasePayload(buffer);
}

/** Give a payload back once nothing refers to its bytes any more; other buffers are ignored. */
export function releasePayload(buffer: Buffer | null): void {
  if (buffer === null || !issued.has(buffer)) return;
  issued.delete(buffer);
  if (pooledBytes + buffer.length > MAX_POOLED_BYTES) return;
  const list = freeBySize.get(buffer.length) ?? [];
  list.push(buffer);
  freeBySize.set(buffer.length, list);
  pooledBytes += buffer.length;
}
