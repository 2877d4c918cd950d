// A store is a node's non-volatile media (DESIGN.md vocabulary): a file or block device, or a
// remote disk reached over NBD (seed Fig. 2, "remote disk 46"). The cache hardens into it.
// Every method may be called concurrently; the cache never issues two overlapping writes at once.

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
  /** Make every completed write durable (fdatasync, or NBD FLUSH). */
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** A store failed to open or does not fit the volume; message is one line, for the CLI. */
export class StoreOpenError extends Error {
  override readonly name = 'StoreOpenError';
}
