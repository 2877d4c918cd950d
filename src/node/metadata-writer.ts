// Saving a node's metadata (src/node/ports.ts MetadataPort) again and again until it lands, and
// how those saves are going (status `storeHealth`). Part of the volume's shell (volume.ts).
import { retryBackoffMs } from '../core/backoff.js';
import type { PersistedState } from '../core/replica-types.js';
import type { MetadataPort } from './ports.js';

export interface MetadataWriterOptions {
  metadata: MetadataPort | undefined;
  /** The first retry's delay; it doubles with each failure in a row, up to 32 times this. */
  retryMs: number;
  sleep: (delayMs: number) => Promise<void>;
  /** True once the node is gone: a failed save then fails instead of being tried again. */
  abandoned: () => boolean;
  log: (level: 'error', msg: string, fields: Record<string, unknown>) => void;
}

export class MetadataWriter {
  /** Failed saves in all, in a row now (0: recovered), and the last one's error. */
  readonly health = { failures: 0, failuresInRow: 0, lastError: null as string | null };

  constructor(private readonly opts: MetadataWriterOptions) {}

  /**
   * Writes the metadata, again and again until it lands: what waits for it (hardening after a
   * link loss, a promotion, notices after a failed fdatasync) may not proceed on a save that
   * failed — it would vouch for what the disk does not say — and must not stop for good on one
   * either (issue 10). Backoff from retryMs doubling to 32 times that; logged at the 1st, 2nd,
   * 4th, 8th ... failure in a row, and counted (health).
   */
  async save(state: PersistedState): Promise<void> {
    const { metadata } = this.opts;
    if (metadata === undefined) return;
    for (let failures = 0; ; ) {
      try {
        await metadata.save(state);
        this.health.failuresInRow = 0;
        return;
      } catch (err) {
        if (this.opts.abandoned()) throw err;
        failures++;
        this.health.failures++;
        this.health.failuresInRow = failures;
        this.health.lastError = (err as Error).message;
        const retryInMs = retryBackoffMs(this.opts.retryMs, failures);
        if ((failures & (failures - 1)) === 0) this.opts.log('error', 'metadata write failed: what waits for it (hardening, a promotion, notices) waits; trying again', { error: (err as Error).message, failures, retryInMs });
        await this.opts.sleep(retryInMs);
      }
    }
  }
}
