// The track cache's data shapes (src/core/cache.ts): its geometry, a line, and what it hands the
// shell — harden jobs and their runs, read plans, stats. Pure.

export const BLOCK_SIZE_BYTES = 512;

export interface CacheGeometry {
  volumeSizeBytes: number;
  trackSizeBytes: number;
  capacityBytes: number;
  rangeTracks: number;
}

/** A line of the cache: one track (internal to the cache; evicted lines are reused, SpareLines). */
export interface TrackLine {
  track: number;
  lengthBytes: number; // trackSizeBytes, or less for the volume's last track
  data: Buffer | null; // null: every valid block is zero
  readonly valid: Uint8Array;
  readonly dirty: Uint8Array;
  dirtyBlocks: number;
  /** Global write sequence when the oldest unhardened write of this line landed. */
  dirtySeq: number;
  /** Time the oldest unhardened write of this line landed. */
  dirtySinceMs: number;
  /** Set while a harden job holds a snapshot of this line; marks blocks written meanwhile. */
  rewritten: Uint8Array | null;
  /** The array `rewritten` points to while a job runs (allocated once per line). */
  readonly rewrittenSpare: Uint8Array;
  /**
   * The buffer a harden job's runs view (the line's data when the job was taken), while it lasts.
   * A write copies the line only while `data` is still this buffer (copy-on-write, once per job);
   * when the job ends the buffer goes back to the pool if the line has moved on to a copy.
   */
  hardenBuffer: Buffer | null;
  rewrittenSeq: number;
  rewrittenSinceMs: number;
  chargeBytes: number;
}

/**
 * One store write of a harden job. `buffers` are views of the lines' bytes as they were when the
 * job was taken (a write to a hardening line copies the line first: copy-on-write), to be written
 * back to back at offsetBytes; null means write zeros. `data` is the same bytes as one buffer.
 */
export interface HardenRun {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly buffers: Buffer[] | null;
  readonly data: Buffer | null;
}

export interface HardenJob {
  readonly id: number;
  readonly tracks: number[];
  readonly runs: HardenRun[];
  readonly bytes: number;
}

/**
 * Parts of a read the cache cannot serve; the shell reads them from the store. The runs may go
 * past the request (readahead), never before it.
 */
export interface ReadPlan {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly storeRuns: { offsetBytes: number; lengthBytes: number }[];
  readonly firstTrack: number;
  /** Last pinned track: the request's, or the readahead's when there is one. */
  readonly lastTrack: number;
  /** A host read: its store bytes fill the cache (and storeRuns may read ahead past the request). */
  readonly fill: boolean;
  /** Bytes of storeRuns past the request (readahead). */
  readonly aheadBytes: number;
}

/** Host reads' bytes by where they came from, and bytes read ahead (metrics). */
export interface ReadCounters {
  cacheBytes: number;
  storeBytes: number;
  readaheadBytes: number;
}

export interface CacheStats {
  /** Lines in the cache, zero lines (TRIM, WRITE_ZEROES, a resync of zeros) included. */
  cachedTracks: number;
  /** Lines holding a data buffer: what takes RAM beyond bookkeeping. */
  dataTracks: number;
  dirtyTracks: number;
  dirtyBytes: number;
  chargedBytes: number;
  capacityBytes: number;
  hardeningTracks: number;
  oldestDirtyAgeMs: number;
}
