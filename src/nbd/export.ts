// What the NBD server serves: one export backed by a node's volume (cache + store). The server
// checks bounds and flags (NBD proto.md "Request types", "Error values") before it calls these,
// so an implementation sees only in-range, well-formed requests.

/** errno names the NBD wire protocol can carry (proto.md "Error values"). */
export type NbdErrno = 'EPERM' | 'EIO' | 'ENOMEM' | 'EINVAL' | 'ENOSPC' | 'EOVERFLOW' | 'ENOTSUP' | 'ESHUTDOWN';

/** Throw this from an export method to answer the request with a specific NBD error. */
export class NbdRequestError extends Error {
  override readonly name = 'NbdRequestError';
  constructor(readonly errno: NbdErrno, message: string) {
    super(message);
  }
}

export interface NbdExport {
  readonly name: string;
  readonly description: string;
  readonly sizeBytes: number;
  /** When true the server advertises NBD_FLAG_READ_ONLY and answers writes EPERM itself. */
  readonly readOnly: boolean;
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  /** fua: NBD_CMD_FLAG_FUA, the write must be durable before the promise resolves. */
  write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void>;
  writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void>;
  /**
   * May acknowledgements of writes (and FLUSH) reach the socket now? Asked when a batch of
   * replies holding one is about to be written: `wait` keeps the batch, `never` drops the
   * connection instead (its writes stay unacknowledged). Absent: always. The arbiter's lease check
   * (issue 13) is made here too, or a primary frozen between answering and writing (one batch,
   * an event-loop turn) would let them out after its lease lapsed.
   */
  replyGate?(): 'open' | 'wait' | 'never';
}

/** Per-request observation for metrics; the server calls it once per answered request. */
export interface NbdRequestObserver {
  requestDone(command: string, bytes: number, latencySeconds: number, errno: NbdErrno | null): void;
  connectionOpened(): void;
  connectionClosed(reason: string): void;
}
