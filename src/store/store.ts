// A store is a node's non-volatile media (DESIGN.md vocabulary): a file or block device, or a
// remote disk reached over NBD (seed Fig. 2, "remote disk 46"). The cache hardens into it.
// Every method may be called concurrently; the cache never issues two overlapping writes at once.
import type { HardenRun } from '../core/cache-types.js';

export interface Store {
  /** Size of the store in bytes; equals the volume size. */
  readonly sizeBytes: number;
  /** Human-readable, for logs and status: a path or an nbd:// URI. */
  readonly description: string;
  /** True when opening created it just now (a new, empty store: any old metadata is stale). */
  readonly createdFresh?: boolean;
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  write(offsetBytes: number, data: Uint8Array): Promise<void>;
  /** Writes the buffers back to back from offsetBytes (one pwritev for a file store). */
  writev(offsetBytes: number, buffers: Buffer[]): Promise<void>;
  writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void>;
  /**
   * Writes a harden job's runs, all at once. Settles only when every run has landed or failed
   * (a failed job is retried, and a stale run landing after the retry's newer data would undo it:
   * simulator, seed 6328), rejecting with the first error.
   */
  writeRuns(runs: readonly HardenRun[]): Promise<void>;
  /** Make every completed write durable (fdatasync, or NBD FLUSH). */
  sync(): Promise<void>;
  close(): Promise<void>;
  /** How small reads have been served (a file store's inline read gate); absent: not tracked. */
  readStats?(): StoreReadStats;
}

/**
 * A file store reads small spans on the event loop while they come from the page cache, and sends
 * them to libuv's pool once they look like device reads (src/core/inline-io-gate.ts). On a busy
 * machine a preempted read looks slow too: these say whether reads were served inline.
 */
export interface StoreReadStats {
  /** Reads done with a pread on the event loop, and those slower than the gate's slowMs. */
  inlineReads: number;
  slowInlineReads: number;
  /** Times the gate sent reads to the pool for a backoff; of those, on a read slower than its hardSlowMs that followed another slow one. */
  gateCloses: number;
  gateClosesOnVerySlowRead: number;
  /** Small reads go inline now (false: in the pool until the backoff ends). */
  inlineNow: boolean;
}

/** writeRuns for any store: one call per run, settled together. */
export async function writeRunsEach(store: Store, runs: readonly HardenRun[]): Promise<void> {
  const results = await Promise.allSettled(runs.map((r) => (r.buffers === null
    ? store.writeZeroes(r.offsetBytes, r.lengthBytes)
    : store.writev(r.offsetBytes, r.buffers))));
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure !== undefined) throw failure.reason;
}

/** A store failed to open or does not fit the volume; message is one line, for the CLI. */
export class StoreOpenError extends Error {
  override readonly name = 'StoreOpenError';
}
