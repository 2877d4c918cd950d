// The floor under issue 11's pair targets: what a bare Node.js mirror costs on these cores, doing
// the same bytes as a twinblock pair and nothing else (issue 11 "Done when": "a measured floor: a
// bare Node.js socket doing the same bytes on the same cores").
//
// Two processes (or, with `bench:floor -- --nodes 3`, a primary and two secondaries), run by
// `bench/floor.ts`:
//   primary    serves NBD to fio (the minimum of the handshake libnbd needs, proto.md "Option
//              haggling"; then simple replies only), copies each WRITE's payload from the socket
//              chunks straight into one preallocated RAM buffer the size of the volume, forwards
//              it to the secondary (a 16-byte header and the bytes, one writev per event-loop turn),
//              and answers the host once the secondary's 4-byte ack comes back;
//   secondary  copies each forwarded payload into its own RAM buffer and acks.
// With --harden each node also writes every payload to its store file (a synchronous pwrite, or
// with --pool `fs.write` through libuv's thread pool as twinblock's harden runs do), without the
// host waiting for it, and fdatasyncs every --fsync-ms: the disk is off the write path, the
// pwrite's and the fdatasync's CPU are not.
//
// A third role, `standalone`, is the floor under the standalone targets (`npm run bench -- --floor`):
// one process serving NBD on a store file as `nbdkit file` does, WRITEs into RAM (answered at
// once, hardened as above), READs from the store file each time (a cache miss: through libuv's
// pool, or with --sync-reads a synchronous pread, the cheapest Node.js has).
//
// What it leaves out is everything that makes twinblock correct: no bitmaps, trackers, notices,
// epochs, checksums, back-pressure, metrics or logging; a later write may overwrite bytes still
// queued for the link. It is a floor, not a design: nothing of src/ is imported.
import { fdatasync, openSync, read, readSync, write, writeSync } from 'node:fs';
import net from 'node:net';

const NBD_REQUEST_MAGIC = 0x25609513;
const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
const NBD_OPT_REPLY_MAGIC = 0x3e889045565a9n;
const NBD_OPT_EXPORT_NAME = 1;
const NBD_OPT_GO = 7;
const NBD_REP_ACK = 1;
const NBD_REP_INFO = 3;
const NBD_REP_ERR_UNSUP = 0x80000001;
const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const NBD_CMD_DISC = 2;
const NBD_CMD_FLUSH = 3;
const EINVAL = 22;
const TRANSMISSION_FLAGS = 1 | 4; // HAS_FLAGS | SEND_FLUSH: FLUSH is answered at once (RAM)
const REQUEST_BYTES = 28;
const FRAME_BYTES = 16; // link: length u32, offset u64, id u32
const ACK_BYTES = 4;

interface Args {
  role: 'primary' | 'secondary' | 'standalone';
  port: number;
  /** primary: the secondaries' link ports (one --peer each). */
  peerPorts: number[];
  /** primary: secondary acks a write waits for before its reply (--acks; default all of them). */
  acksNeeded: number;
  sizeBytes: number;
  /** Harden every payload to this file; null: RAM only. */
  store: string | null;
  /** Harden with fs.write through libuv's thread pool instead of a synchronous pwrite. */
  pool: boolean;
  /** fdatasync the store this often (0: never). */
  fsyncMs: number;
  /** standalone: read the store with a synchronous pread instead of libuv's fs.read. */
  syncReads: boolean;
}

const usage = 'usage: floor-node.js primary|secondary|standalone PORT SIZE_MIB [--peer PORT ...] [--acks N] [--harden STORE [--pool] [--fsync-ms N]] [--sync-reads]';

function parseArgs(argv: string[]): Args {
  const [role, port, sizeMiB, ...rest] = argv;
  if ((role !== 'primary' && role !== 'secondary' && role !== 'standalone') || port === undefined || sizeMiB === undefined) throw new Error(usage);
  const flag = (name: string): string | null => {
    const i = rest.indexOf(name);
    return i < 0 ? null : (rest[i + 1] ?? null);
  };
  const peerPorts = rest.flatMap((a, i) => (a === '--peer' ? [Number(rest[i + 1])] : []));
  const acksNeeded = Number(flag('--acks') ?? peerPorts.length);
  if (role === 'primary' && (peerPorts.length === 0 || !(acksNeeded >= 1 && acksNeeded <= peerPorts.length))) throw new Error(usage);
  return {
    role, port: Number(port), peerPorts, acksNeeded, sizeBytes: Number(sizeMiB) * 1024 * 1024,
    store: flag('--harden'), pool: rest.includes('--pool'), fsyncMs: Number(flag('--fsync-ms') ?? 0), syncReads: rest.includes('--sync-reads'),
  };
}

/** Writes queued in one event-loop turn leave in one writev (as twinblock's connections do). */
function batchedWriter(socket: net.Socket): (piece: Buffer) => void {
  let corked = false;
  const uncork = (): void => { corked = false; socket.uncork(); };
  return (piece) => {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(uncork);
    }
    socket.write(piece);
  };
}

/**
 * Incremental input: `need` bytes of header gathered into a small buffer, then a payload copied
 * from the chunks as they come straight to its place in RAM. One copy per payload byte, no queue.
 */
class Framer {
  private readonly header: Buffer;
  private headerHave = 0;
  private payloadLeft = 0;
  private payloadAt = 0;

  constructor(
    private readonly headerBytes: number,
    private readonly ram: Buffer,
    /** A header is complete: returns the payload length that follows and where it goes in RAM. */
    private readonly onHeader: (header: Buffer) => { lengthBytes: number; offsetBytes: number },
    private readonly onPayload: () => void,
  ) {
    this.header = Buffer.alloc(headerBytes);
  }

  feed(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, chunk.length - at);
        chunk.copy(this.ram, this.payloadAt, at, at + n);
        at += n;
        this.payloadAt += n;
        this.payloadLeft -= n;
        if (this.payloadLeft === 0) this.onPayload();
        continue;
      }
      const n = Math.min(this.headerBytes - this.headerHave, chunk.length - at);
      chunk.copy(this.header, this.headerHave, at, at + n);
      at += n;
      this.headerHave += n;
      if (this.headerHave < this.headerBytes) break;
      this.headerHave = 0;
      const { lengthBytes, offsetBytes } = this.onHeader(this.header);
      this.payloadLeft = lengthBytes;
      this.payloadAt = offsetBytes;
      if (lengthBytes === 0) this.onPayload();
    }
  }
}

/**
 * What a node does with a payload once it is in RAM: nothing, or a pwrite of it to the store file
 * that the write path does not wait for (synchronous, the cheapest Node.js has, or through libuv's
 * thread pool), and an fdatasync every fsyncMs as a node's hardening does.
 */
function hardener(args: Args, ram: Buffer): (offsetBytes: number, lengthBytes: number) => void {
  if (args.store === null) return () => {};
  const fd = openSync(args.store, 'r+');
  if (args.fsyncMs > 0) {
    let syncing = false;
    setInterval(() => {
      if (syncing) return;
      syncing = true;
      fdatasync(fd, () => { syncing = false; });
    }, args.fsyncMs);
  }
  if (!args.pool) return (offsetBytes, lengthBytes) => { writeSync(fd, ram, offsetBytes, lengthBytes, offsetBytes); };
  return (offsetBytes, lengthBytes) => {
    write(fd, ram, offsetBytes, lengthBytes, offsetBytes, (err) => {
      if (err) throw err;
    });
  };
}

function runSecondary(args: Args, ram: Buffer): void {
  const harden = hardener(args, ram);
  net.createServer((socket) => {
    socket.setNoDelay(true);
    const send = batchedWriter(socket);
    let id = 0;
    let lengthBytes = 0;
    let offsetBytes = 0;
    const framer = new Framer(FRAME_BYTES, ram, (h) => {
      lengthBytes = h.readUInt32BE(0);
      offsetBytes = Number(h.readBigUInt64BE(4));
      id = h.readUInt32BE(12);
      return { lengthBytes, offsetBytes };
    }, () => {
      harden(offsetBytes, lengthBytes);
      const ack = Buffer.allocUnsafe(ACK_BYTES);
      ack.writeUInt32BE(id, 0);
      send(ack);
    });
    socket.on('data', (chunk: Buffer) => framer.feed(chunk));
  }).listen(args.port, '127.0.0.1');
}

/** Fixed newstyle negotiation, just enough for libnbd: GO/EXPORT_NAME succeed, the rest is UNSUP. */
function negotiate(socket: net.Socket, sizeBytes: number, done: (rest: Buffer) => void): void {
  const hello = Buffer.alloc(18);
  hello.write('NBDMAGICIHAVEOPT', 0, 'latin1');
  hello.writeUInt16BE(1 | 2, 16); // FIXED_NEWSTYLE | NO_ZEROES
  socket.write(hello);
  let input: Buffer = Buffer.alloc(0);
  let gotClientFlags = false;
  const reply = (option: number, type: number, data: Buffer): void => {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data.length, 16);
    socket.write(Buffer.concat([h, data]));
  };
  const onData = (chunk: Buffer): void => {
    input = Buffer.concat([input, chunk]);
    if (!gotClientFlags) {
      if (input.length < 4) return;
      gotClientFlags = true;
      input = input.subarray(4);
    }
    while (input.length >= 16) {
      const option = input.readUInt32BE(8);
      const length = input.readUInt32BE(12);
      if (input.length < 16 + length) return;
      input = input.subarray(16 + length);
      const info = Buffer.alloc(12);
      info.writeBigUInt64BE(BigInt(sizeBytes), 2);
      info.writeUInt16BE(TRANSMISSION_FLAGS, 10);
      if (option === NBD_OPT_EXPORT_NAME) {
        socket.write(info.subarray(2)); // size, flags (NO_ZEROES: no padding)
      } else if (option === NBD_OPT_GO) {
        reply(option, NBD_REP_INFO, info); // NBD_INFO_EXPORT (type 0)
        reply(option, NBD_REP_ACK, Buffer.alloc(0));
      } else {
        reply(option, NBD_REP_ERR_UNSUP, Buffer.alloc(0));
        continue;
      }
      socket.off('data', onData);
      done(input);
      return;
    }
  };
  socket.on('data', onData);
}

/**
 * NBD service on a store file: WRITE into RAM, answered at once, hardened without waiting; READ
 * from the file (every read a cache miss; standalone only). `onWrite` is what a node does with a
 * WRITE once its payload is in RAM: the primary forwards it, a standalone node answers it.
 */
function serveHosts(args: Args, ram: Buffer, onWrite: (reply: (r: Buffer) => void, cookie: bigint, offsetBytes: number, lengthBytes: number) => void): void {
  const fd = args.role === 'standalone' && args.store !== null ? openSync(args.store, 'r') : -1;
  net.createServer((socket) => {
    socket.setNoDelay(true);
    negotiate(socket, args.sizeBytes, (rest) => {
      const reply = batchedWriter(socket);
      let type = 0;
      let cookie = 0n;
      let offsetBytes = 0;
      let lengthBytes = 0;
      const framer = new Framer(REQUEST_BYTES, ram, (h) => {
        if (h.readUInt32BE(0) !== NBD_REQUEST_MAGIC) throw new Error('bad request magic');
        type = h.readUInt16BE(6);
        cookie = h.readBigUInt64BE(8);
        offsetBytes = Number(h.readBigUInt64BE(16));
        lengthBytes = h.readUInt32BE(24);
        return { lengthBytes: type === NBD_CMD_WRITE ? lengthBytes : 0, offsetBytes };
      }, () => {
        if (type === NBD_CMD_DISC) {
          socket.end();
          return;
        }
        if (type === NBD_CMD_READ && fd >= 0) return readFromStore(fd, args.syncReads, reply, cookie, offsetBytes, lengthBytes);
        if (type !== NBD_CMD_WRITE) {
          // FLUSH succeeds (RAM is where the floor keeps writes); anything else is not served.
          reply(simpleReply(cookie, type === NBD_CMD_FLUSH ? 0 : EINVAL));
          return;
        }
        onWrite(reply, cookie, offsetBytes, lengthBytes);
      });
      socket.on('data', (chunk: Buffer) => framer.feed(chunk));
      if (rest.length > 0) framer.feed(rest);
    });
  }).listen(args.port, '127.0.0.1');
}

/** A READ that misses: the bytes from the store file, then one reply (header and data). */
function readFromStore(fd: number, sync: boolean, reply: (r: Buffer) => void, cookie: bigint, offsetBytes: number, lengthBytes: number): void {
  const out = Buffer.allocUnsafe(16 + lengthBytes);
  simpleReply(cookie, 0).copy(out, 0);
  if (sync) {
    readSync(fd, out, 16, lengthBytes, offsetBytes);
    reply(out);
    return;
  }
  read(fd, out, 16, lengthBytes, offsetBytes, (err) => {
    if (err) throw err;
    reply(out);
  });
}

function runStandalone(args: Args, ram: Buffer): void {
  const harden = hardener(args, ram);
  serveHosts(args, ram, (reply, cookie, offsetBytes, lengthBytes) => {
    harden(offsetBytes, lengthBytes);
    reply(simpleReply(cookie, 0));
  });
}

/**
 * The primary forwards every WRITE to each secondary and answers once `acksNeeded` of them acked
 * it: all of them (as `ack: all`), or a majority with the primary counted (as `ack: quorum`).
 */
function runPrimary(args: Args, ram: Buffer): void {
  const harden = hardener(args, ram);
  /** Per forwarded write: its client, cookie and the acks still missing, by link id. */
  const waiting = new Map<number, { reply: (r: Buffer) => void; cookie: bigint; acksMissing: number }>();
  const onAck = (id: number): void => {
    const w = waiting.get(id);
    if (w === undefined) return; // answered already; a later secondary's ack
    w.acksMissing--;
    if (w.acksMissing > 0) return;
    waiting.delete(id);
    w.reply(simpleReply(w.cookie, 0));
  };
  const links = args.peerPorts.map((peerPort) => {
    const link = net.connect(peerPort, '127.0.0.1');
    link.setNoDelay(true);
    let ackInput: Buffer = Buffer.alloc(0);
    link.on('data', (chunk: Buffer) => {
      ackInput = ackInput.length === 0 ? chunk : Buffer.concat([ackInput, chunk]);
      let at = 0;
      for (; at + ACK_BYTES <= ackInput.length; at += ACK_BYTES) onAck(ackInput.readUInt32BE(at));
      ackInput = ackInput.subarray(at);
    });
    return batchedWriter(link);
  });
  let nextId = 0;
  serveHosts(args, ram, (reply, cookie, offsetBytes, lengthBytes) => {
    harden(offsetBytes, lengthBytes);
    const id = nextId++ >>> 0;
    const frame = Buffer.allocUnsafe(FRAME_BYTES);
    frame.writeUInt32BE(lengthBytes, 0);
    frame.writeBigUInt64BE(BigInt(offsetBytes), 4);
    frame.writeUInt32BE(id, 12);
    const payload = ram.subarray(offsetBytes, offsetBytes + lengthBytes);
    for (const toPeer of links) {
      toPeer(frame);
      toPeer(payload);
    }
    waiting.set(id, { reply, cookie, acksMissing: args.acksNeeded });
  });
}

function simpleReply(cookie: bigint, error: number): Buffer {
  const r = Buffer.allocUnsafe(16);
  r.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  r.writeUInt32BE(error, 4);
  r.writeBigUInt64BE(cookie, 8);
  return r;
}

const args = parseArgs(process.argv.slice(2));
// Touched up front, as a warmed cache is: first-touch page faults are not what the floor measures.
const ram = Buffer.alloc(args.sizeBytes);
if (args.role === 'primary') runPrimary(args, ram);
else if (args.role === 'standalone') runStandalone(args, ram);
else runSecondary(args, ram);
process.stdout.write('ready\n');
