// The WRITE payload pool (src/nbd/payload-pool.ts): a buffer goes back to the pool only once its
// last holder is done. The NBD server holds it until it answers the request; a link frame that
// carries it without a copy holds it until the socket has written it (src/link/connection.ts).
// With `ack: quorum` the answer can come first, and a buffer reused while a frame to a slower peer
// still waited carried the next write's bytes to that peer (docs/benchmarks.md "Three nodes").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { acquirePayload, holdPayloadOf, releasePayload } from '../src/nbd/payload-pool.js';

const SIZE = 256 * 1024;

test('a payload is reused only once every holder released it', () => {
  const first = acquirePayload(SIZE);
  const held = holdPayloadOf(first.subarray(100, 200)); // a frame's view of it
  assert.equal(held, first);
  releasePayload(first); // the request is answered
  const second = acquirePayload(SIZE);
  assert.notEqual(second, first, 'still held by the frame: not handed out again');
  releasePayload(held);
  const third = acquirePayload(SIZE);
  assert.equal(third, first, 'the last holder released it: reused');
  assert.equal(holdPayloadOf(new Uint8Array(SIZE)), null, 'a buffer the pool did not hand out has no holders');
  releasePayload(second);
  releasePayload(third);
  releasePayload(third); // a second release of a returned buffer is ignored
  assert.equal(acquirePayload(SIZE) === acquirePayload(SIZE), false, 'never handed out twice');
});

test('a frame queued behind a peer that does not read keeps its payload until the socket took it', async () => {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const accepted = once(server, 'connection');
  const client = net.connect(port, '127.0.0.1');
  await once(client, 'connect');
  const [peer] = (await accepted) as [net.Socket];
  peer.pause(); // the slow secondary: nothing is read, the frame waits in our send buffer
  try {
    const filler = Buffer.alloc(16 * 1024 * 1024);
    client.write(filler); // more than the kernel buffers take
    const payload = acquirePayload(SIZE);
    payload.fill(0x5a);
    const held = holdPayloadOf(payload);
    let written = false;
    client.write(payload, () => { written = true; releasePayload(held); });
    releasePayload(payload); // answered before the frame left
    assert.equal(written, false, 'the frame is still queued');
    const next = acquirePayload(SIZE);
    assert.notEqual(next, payload, 'its buffer is not handed to the next write');
    releasePayload(next);
    let got = 0;
    const tail = Buffer.alloc(SIZE);
    peer.on('data', (chunk: Buffer) => {
      const from = Math.max(0, got - filler.length);
      const end = got + chunk.length - filler.length;
      if (end > 0) chunk.copy(tail, from, Math.max(0, filler.length - got));
      got += chunk.length;
    });
    peer.resume();
    while (got < filler.length + SIZE) await once(peer, 'data');
    assert.equal(written, true);
    assert.ok(tail.every((b) => b === 0x5a), 'the peer got the bytes the frame was sent with');
  } finally {
    client.destroy();
    peer.destroy();
    server.close();
  }
});
