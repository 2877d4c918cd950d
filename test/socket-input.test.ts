// Sockets that read into reused memory (src/node/socket-input.ts): an accepted connection re-made
// over its handle, and a dialled one, carry bytes intact both ways; their bytes arrive marked
// transient (so the test fails if a Node release stops the adoption from working, rather than
// silently falling back to a fresh chunk per read); and the server's count of connections still
// drops to zero, so server.close() completes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { adoptReusingMemory, connectReusingMemory, onSocketBytes } from '../src/node/socket-input.js';

const totalBytes = 4 * 1024 * 1024;

/** Collects a socket's bytes (copied: the memory is reused) until `bytes` have arrived. */
function collect(socket: net.Socket, bytes: number): Promise<{ data: Buffer; transient: boolean[] }> {
  const parts: Buffer[] = [];
  const transient: boolean[] = [];
  let got = 0;
  return new Promise((resolve) => {
    onSocketBytes(socket, (chunk, isTransient) => {
      parts.push(Buffer.from(chunk));
      transient.push(isTransient);
      got += chunk.length;
      if (got >= bytes) resolve({ data: Buffer.concat(parts), transient });
    });
  });
}

test('adopted and dialled sockets read into reused memory and carry 4 MiB intact both ways', async () => {
  const toServer = randomBytes(totalBytes);
  const toClient = randomBytes(totalBytes);
  let serverSide: Promise<{ data: Buffer; transient: boolean[] }> | null = null;
  const server = net.createServer({ pauseOnConnect: true }, (accepted) => {
    const socket = adoptReusingMemory(accepted);
    serverSide = collect(socket, totalBytes);
    socket.write(toClient);
    void serverSide.then(() => socket.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const client = connectReusingMemory({ host: '127.0.0.1', port });
  // Listen for the close now: once the server has all its bytes it ends, and the client may close before we would get to it.
  const clientClosed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  const clientSide = collect(client, totalBytes);
  client.write(toServer);
  const received = await clientSide;
  await new Promise((resolve) => setTimeout(resolve, 0));
  const atServer = await serverSide!;
  assert.ok(received.data.equals(toClient), 'the client received the server\'s bytes intact');
  assert.ok(atServer.data.equals(toServer), 'the server received the client\'s bytes intact');
  assert.ok(received.transient.length > 1 && received.transient.every(Boolean), 'the dialled socket read into reused memory');
  assert.ok(atServer.transient.length > 1 && atServer.transient.every(Boolean), 'the adopted socket read into reused memory');
  client.end();
  await clientClosed;
  // The adopted connection gave its slot back: close() completes.
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
});

test('a socket from elsewhere still delivers its bytes, not marked transient', async () => {
  const server = net.createServer((socket) => socket.end(Buffer.from('hello')));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const got = await collect(client, 5);
  assert.equal(got.data.toString(), 'hello');
  assert.deepEqual(got.transient, [false]);
  client.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
