// A store on a local file or block device: positional reads and writes, fdatasync when durability
// is asked for (FLUSH, FUA, shutdown). A missing file is created sparse at the volume size; an
// existing file of another size is an error, never silently truncated or grown: a wrong path in a
// config must not destroy someone's disk image.
import fs from 'node:fs';
import { StoreOpenError, type Store, type StoreReadStats } from './store.js';
import type { HardenRun } from '../core/cache-types.js';
import { InlineIoGate } from '../core/inline-io-gate.js';

/** Largest single pwrite of zeros; zero runs longer than this are written in pieces. */
const ZERO_CHUNK_BYTES = 1024 * 1024;
const zeroChunk = Buffer.alloc(ZERO_CHUNK_BYTES);

export async function openFileStore(path: string, sizeBytes: number): Promise<Store> {
  let fd: number;
  let created: boolean;
  try {
    ({ fd, created } = await openOrCreate(path, sizeBytes));
  } catch (err) {
    if (err instanceof StoreOpenError) throw err;
    throw new StoreOpenError(`store ${path}: ${(err as Error).message}`);
  }
  try {
    const actualBytes = await deviceOrFileSize(fd, path);
    if (actualBytes !== sizeBytes) {
      throw new StoreOpenError(`store ${path} is ${actualBytes} bytes but the volume size is ${sizeBytes} bytes (not resizing it; fix size or the path)`);
    }
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  return new FileStore(fd, path, sizeBytes, created);
}

async function openOrCreate(path: string, sizeBytes: number): Promise<{ fd: number; created: boolean }> {
  try {
    return { fd: await fsCall<number>((cb) => fs.open(path, 'r+', cb)), created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // 'wx' fails if someone created it meanwhile: we never truncate an existing file.
  const fd = await fsCall<number>((cb) => fs.open(path, 'wx+', cb));
  await fsCall<void>((cb) => fs.ftruncate(fd, sizeBytes, cb)); // sparse: no blocks allocated
  return { fd, created: true };
}

async function deviceOrFileSize(fd: number, path: string): Promise<number> {
  const st = await fsCall<fs.Stats>((cb) => fs.fstat(fd, cb));
  if (st.isFile()) return st.size;
  if (st.isBlockDevice()) {
    // Node has no BLKGETSIZE64 ioctl; sysfs gives the size in 512-byte sectors.
    const major = Math.floor(st.rdev / 256) & 0xfff;
    const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
    const sectors = Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim());
    return sectors * 512;
  }
  throw new StoreOpenError(`store ${path} is neither a regular file nor a block device`);
}

function fsCall<T>(start: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => start((err, value) => (err ? reject(err) : resolve(value))));
}

class FileStore implements Store {
  private closed = false;
  /** Whether a small read may be a pread on this thread (page cache) or goes to libuv's pool. */
  readonly readGate = new InlineIoGate();

  constructor(private readonly fd: number, readonly description: string, readonly sizeBytes: number, readonly createdFresh: boolean) {}

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(lengthBytes);
    const startMs = performance.now();
    if (!this.readGate.allows(lengthBytes, startMs)) return this.readInto(buf, 0, lengthBytes, offsetBytes).then(() => buf);
    // A small read on this thread while such reads come from the page cache (src/core/inline-io-gate.ts).
    let n: number;
    try {
      n = fs.readSync(this.fd, buf, 0, lengthBytes, offsetBytes);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const endMs = performance.now();
    this.readGate.done(endMs - startMs, endMs);
    if (n === lengthBytes) return Promise.resolve(buf);
    return this.readInto(buf, n, lengthBytes - n, offsetBytes + n).then(() => buf);
  }

  private async readInto(buf: Buffer, at: number, lengthBytes: number, offsetBytes: number): Promise<void> {
    while (lengthBytes > 0) {
      const n = await fsCall<number>((cb) => fs.read(this.fd, buf, at, lengthBytes, offsetBytes, cb));
      if (n === 0) {
        buf.fill(0, at, at + lengthBytes); // past EOF of a sparse file reads as zeros
        return;
      }
      at += n;
      offsetBytes += n;
      lengthBytes -= n;
    }
  }

  async write(offsetBytes: number, data: Uint8Array): Promise<void> {
    let at = 0;
    while (at < data.length) {
      const n = await fsCall<number>((cb) => fs.write(this.fd, data, at, data.length - at, offsetBytes + at, cb));
      at += n;
    }
  }

  async writev(offsetBytes: number, buffers: Buffer[]): Promise<void> {
    if (buffers.length === 1) return this.write(offsetBytes, buffers[0]!);
    const total = buffers.reduce((n, b) => n + b.length, 0);
    const written = await fsCall<number>((cb) => fs.writev(this.fd, buffers, offsetBytes, cb));
    if (written < total) await this.finishShortWrite(offsetBytes, buffers, total, written);
  }

  /** A short pwrite(v) on a regular file is rare (signals, full disk): finish with plain writes. */
  private finishShortWrite(offsetBytes: number, buffers: Buffer[], totalBytes: number, writtenBytes: number): Promise<void> {
    return this.write(offsetBytes + writtenBytes, Buffer.concat(buffers, totalBytes).subarray(writtenBytes));
  }

  /**
   * A harden job's runs: every pwrite/pwritev goes to libuv at once, with one promise for the job
   * rather than a promise, a closure and a settled-result object per run (a random 4 KiB load has
   * one run per host write on both nodes: that garbage was a sixth of the nodes' allocations).
   */
  writeRuns(runs: readonly HardenRun[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let left = runs.length;
      let firstError: Error | null = null;
      const settle = (err: Error | null): void => {
        if (err !== null) firstError ??= err;
        if (--left > 0) return;
        if (firstError === null) resolve();
        else reject(firstError);
      };
      if (left === 0) return resolve();
      for (const run of runs) this.startRun(run, settle);
    });
  }

  private startRun(run: HardenRun, settle: (err: Error | null) => void): void {
    const { buffers, offsetBytes, lengthBytes } = run;
    if (buffers === null) {
      this.writeZeroes(offsetBytes, lengthBytes).then(() => settle(null), settle);
      return;
    }
    const done = (err: NodeJS.ErrnoException | null, written: number): void => {
      if (err !== null) return settle(err);
      if (written === lengthBytes) return settle(null);
      this.finishShortWrite(offsetBytes, buffers, lengthBytes, written).then(() => settle(null), settle);
    };
    try {
      if (buffers.length === 1) fs.write(this.fd, buffers[0]!, 0, lengthBytes, offsetBytes, done);
      else fs.writev(this.fd, buffers, offsetBytes, done);
    } catch (err) {
      settle(err as Error); // bad arguments throw at once; the job still settles as a whole
    }
  }

  /**
   * Zeros, skipping pieces that already read as zeros: a sparse file's holes read back at memory
   * speed, and not writing zeros over them keeps the file sparse (Node cannot punch holes, so
   * TRIM and the zero runs of a resync would otherwise allocate every block they touch).
   */
  async writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    for (let done = 0; done < lengthBytes; done += ZERO_CHUNK_BYTES) {
      const n = Math.min(ZERO_CHUNK_BYTES, lengthBytes - done);
      const current = await this.read(offsetBytes + done, n);
      if (current.equals(zeroChunk.subarray(0, n))) continue;
      await this.write(offsetBytes + done, zeroChunk.subarray(0, n));
    }
  }

  sync(): Promise<void> {
    return fsCall<void>((cb) => fs.fdatasync(this.fd, cb));
  }

  readStats(): StoreReadStats {
    const g = this.readGate;
    return { inlineReads: g.inline, slowInlineReads: g.slow, gateCloses: g.closes, gateClosesOnVerySlowRead: g.hardCloses, inlineNow: g.allows(1, performance.now()) };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await fsCall<void>((cb) => fs.close(this.fd, cb));
  }
}
