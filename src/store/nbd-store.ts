// A store on a remote disk reached over NBD (seed Fig. 2, "remote disk 46"; DESIGN.md: a store
// may be an nbd://host:port/export URI). One pipelined NbdClient connection; large requests are
// split so no single request nears the server's maximum payload (proto.md "Size constraints").
import { NbdClient, parseNbdUri } from '../nbd/client.js';
import { StoreOpenError, writeRunsEach, type Store } from './store.js';
import type { HardenRun } from '../core/cache-types.js';

/**
 * Largest READ/WRITE we send, even when the server allows 32 MiB: chunks of this size keep the
 * link busy with several requests in flight and bound the memory of any one reply.
 */
const maxChunkBytes = 4 * 1024 * 1024;
/**
 * Largest WRITE_ZEROES effect length per request. It carries no payload, but the length field is
 * 32 bits and a server MAY answer oversize requests EOVERFLOW (proto.md "Size constraints").
 */
const maxZeroRequestBytes = 1024 * 1024 * 1024;

export async function openNbdStore(uri: string, sizeBytes: number): Promise<Store> {
  let client: NbdClient;
  try {
    client = await NbdClient.connect(parseNbdUri(uri));
  } catch (err) {
    throw new StoreOpenError(`NBD store ${uri}: ${(err as Error).message}`);
  }
  const refusal = client.sizeBytes !== sizeBytes
    ? `NBD store ${uri} is ${client.sizeBytes} bytes but the volume size is ${sizeBytes} bytes`
    : client.readOnly ? `NBD store ${uri} is read-only; a store must be writable` : null;
  if (refusal !== null) {
    await client.disconnect();
    throw new StoreOpenError(refusal);
  }
  return new NbdStore(client, uri);
}

class NbdStore implements Store {
  readonly sizeBytes: number;
  /** Request size for READ/WRITE: within the server's maximum and a multiple of its minimum block. */
  private readonly chunkBytes: number;
  private readonly zeroChunkBytes: number;
  private zeroBuffer: Buffer | null = null;

  constructor(private readonly client: NbdClient, readonly description: string) {
    this.sizeBytes = client.sizeBytes;
    const { minimumBytes, maximumBytes } = client.blockSize;
    this.chunkBytes = alignDown(Math.min(maximumBytes, maxChunkBytes), minimumBytes);
    this.zeroChunkBytes = alignDown(maxZeroRequestBytes, minimumBytes);
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    if (lengthBytes <= this.chunkBytes) return this.client.read(offsetBytes, lengthBytes);
    const result = Buffer.allocUnsafe(lengthBytes);
    await Promise.all(pieces(lengthBytes, this.chunkBytes).map(async ([at, n]) => {
      (await this.client.read(offsetBytes + at, n)).copy(result, at);
    }));
    return result;
  }

  /** Pieces of one run go as concurrent NBD writes: they do not overlap, so order is free. */
  async writev(offsetBytes: number, buffers: Buffer[]): Promise<void> {
    let at = offsetBytes;
    const writes: Promise<void>[] = [];
    for (const b of buffers) {
      writes.push(this.write(at, b));
      at += b.length;
    }
    await Promise.all(writes);
  }

  async write(offsetBytes: number, data: Uint8Array): Promise<void> {
    await Promise.all(pieces(data.length, this.chunkBytes).map(([at, n]) =>
      this.client.write(offsetBytes + at, data.subarray(at, at + n))));
  }

  writeRuns(runs: readonly HardenRun[]): Promise<void> {
    return writeRunsEach(this, runs);
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    if (this.client.canWriteZeroes) {
      // NO_HOLE: the store must stay provisioned so later hardening cannot fail with ENOSPC.
      await Promise.all(pieces(lengthBytes, this.zeroChunkBytes).map(([at, n]) =>
        this.client.writeZeroes(offsetBytes + at, n, { noHole: true })));
      return;
    }
    this.zeroBuffer ??= Buffer.alloc(this.chunkBytes);
    const zeros = this.zeroBuffer;
    await Promise.all(pieces(lengthBytes, this.chunkBytes).map(([at, n]) =>
      this.client.write(offsetBytes + at, zeros.subarray(0, n))));
  }

  /**
   * NBD_CMD_FLUSH covers every write already answered (proto.md "NBD_CMD_FLUSH"). A server that
   * does not advertise SEND_FLUSH offers no way to ask for more than its write replies: we
   * treat those as durable (as the Linux nbd driver does), since nothing better is possible.
   */
  async sync(): Promise<void> {
    if (this.client.canFlush) await this.client.flush();
  }

  close(): Promise<void> {
    return this.client.disconnect();
  }
}

function alignDown(value: number, alignment: number): number {
  return Math.max(alignment, value - (value % alignment));
}

/** [offset within the range, length] pieces of at most pieceBytes covering lengthBytes. */
function pieces(lengthBytes: number, pieceBytes: number): [number, number][] {
  const out: [number, number][] = [];
  for (let at = 0; at < lengthBytes; at += pieceBytes) out.push([at, Math.min(pieceBytes, lengthBytes - at)]);
  return out;
}
