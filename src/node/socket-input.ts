// Socket input into reused memory (issue 11 item 4). By default Node reads every socket into a
// fresh 64 KiB ArrayBuffer per read. At a few hundred MiB/s that churn of external memory made V8
// run whole mark-compacts many times a second on both nodes (1 MiB writes: 70-100 in 10 s, the
// collector up to a third of a node's time; docs/benchmarks.md). With `onread` Node reads into
// one buffer of ours instead and hands us the bytes, valid only until we return: the decoders copy
// what they keep (src/core/byte-queue.ts, transient chunks).
//
// A client socket takes `onread` when it is made. An accepted one cannot (net.Server has no such
// option), so a server that wants it accepts with `pauseOnConnect` (nothing read yet) and the
// connection is re-made over the same handle with `onread`; the accepted Socket object is then
// destroyed without its handle, which also gives its slot back to the server's count. This
// relies on `Socket#_handle`, Node's long-standing private field: test/socket-input.test.ts
// fails if a Node release changes it.
import net from 'node:net';

/** One read's worth of memory per socket: libuv asks for 64 KiB per read. */
const receiveBufferBytes = 64 * 1024;

/** Takes received bytes; `transient`: the memory is reused once this returns. */
export type BytesSink = (bytes: Buffer, transient: boolean) => void;

const sinks = new WeakMap<net.Socket, { sink: BytesSink }>();

function onreadOptions(holder: { sink: BytesSink }): net.OnReadOpts {
  return {
    buffer: Buffer.allocUnsafe(receiveBufferBytes),
    callback: (bytesRead: number, buffer: Uint8Array) => {
      const b = buffer as Buffer;
      holder.sink(b.subarray(0, bytesRead), true);
      return true;
    },
  };
}

/** Connects, reading into reused memory (deliver the bytes with onSocketBytes). */
export function connectReusingMemory(opts: { host: string; port: number }): net.Socket {
  const holder = { sink: unclaimed };
  const socket = net.connect({ ...opts, onread: onreadOptions(holder) });
  sinks.set(socket, holder);
  return socket;
}

/**
 * The same connection as `accepted` (from a server made with pauseOnConnect: true), now reading
 * into reused memory. If the handle is already gone (the peer hung up at once) `accepted` is
 * returned as it is and reads the ordinary way.
 */
export function adoptReusingMemory(accepted: net.Socket, allowHalfOpen = false): net.Socket {
  const internal = accepted as unknown as { _handle: unknown };
  const handle = internal._handle;
  if (handle === null || handle === undefined) return accepted;
  const holder = { sink: unclaimed };
  const options = { handle, allowHalfOpen, readable: true, writable: true, onread: onreadOptions(holder) };
  const socket = new net.Socket(options as net.SocketConstructorOpts);
  internal._handle = null;
  accepted.destroy();
  sinks.set(socket, holder);
  return socket;
}

/** Where a socket's bytes go: transient for sockets made above, Node's own chunks otherwise. */
export function onSocketBytes(socket: net.Socket, sink: BytesSink): void {
  const holder = sinks.get(socket);
  if (holder !== undefined) holder.sink = sink;
  else socket.on('data', (chunk: Buffer) => sink(chunk, false));
}

function unclaimed(): void {
  throw new Error('socket bytes arrived before onSocketBytes() gave them a place');
}
