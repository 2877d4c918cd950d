// A TCP proxy on 127.0.0.1 for cutting and stalling a replication link in process tests (issue 5
// item 9). The dialing node's config points its peer's link address at the proxy; the proxy
// forwards every byte both ways until told otherwise:
//
//   drop()  — a cable pulled with a reset: every proxied connection is destroyed on both sides at
//             once, and new connections are closed as soon as they arrive, until heal().
//   stall() — a black hole: connections stay open but no byte is forwarded either way (the proxy
//             stops reading, so the kernel buffers fill and the nodes see silence, not a reset);
//             new connections are accepted and held the same way. Only a heartbeat timeout can
//             tell the nodes the link is gone.
//   heal()  — forward again. Stalled connections resume (bytes the kernel buffered flow on, and a
//             side that gave up meanwhile closes its half, which the proxy then passes on).
//
// The proxy never parses or changes bytes: what arrives is exactly what was sent, or nothing.
import net from 'node:net';

export type ProxyMode = 'forward' | 'drop' | 'stall';

interface Pipe {
  id: number;
  client: net.Socket;
  upstream: net.Socket;
}

export class FaultProxy {
  port = 0;
  /** Connections accepted so far (including the ones closed at once while dropping). */
  accepted = 0;
  /** Bytes forwarded client→upstream and upstream→client, over all connections. */
  forwardedBytes = { toTarget: 0, toClient: 0 };
  private modeValue: ProxyMode = 'forward';
  private server: net.Server | null = null;
  private readonly pipes = new Set<Pipe>();

  /** targetPort: where the real listener is (may be set before the first connection arrives). */
  constructor(public targetPort: number, private readonly targetHost = '127.0.0.1') {}

  get mode(): ProxyMode {
    return this.modeValue;
  }

  /** Open proxied connections right now. */
  get openConnections(): number {
    return this.pipes.size;
  }

  /** Listen on a free port (or the given one); resolves to the port. */
  async start(port = 0): Promise<number> {
    const server = net.createServer((client) => this.onClient(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    server.on('error', () => {});
    this.server = server;
    this.port = (server.address() as net.AddressInfo).port;
    return this.port;
  }

  /** Destroy every connection (both sides) and refuse new ones until heal(). */
  drop(): void {
    this.modeValue = 'drop';
    for (const pipe of [...this.pipes]) this.closePipe(pipe);
  }

  /** Stop forwarding without closing anything, until heal(). */
  stall(): void {
    this.modeValue = 'stall';
    for (const pipe of this.pipes) {
      pipe.client.pause();
      pipe.upstream.pause();
    }
  }

  /** Forward again. */
  heal(): void {
    this.modeValue = 'forward';
    for (const pipe of this.pipes) {
      pipe.client.resume();
      pipe.upstream.resume();
    }
  }

  async close(): Promise<void> {
    for (const pipe of [...this.pipes]) this.closePipe(pipe);
    const server = this.server;
    this.server = null;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private onClient(client: net.Socket): void {
    this.accepted++;
    client.on('error', () => {});
    if (this.modeValue === 'drop') {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
    upstream.on('error', () => {});
    const pipe: Pipe = { id: this.accepted, client, upstream };
    this.pipes.add(pipe);
    if (this.modeValue === 'stall') {
      client.pause();
      upstream.pause();
    }
    // Either side closing (or failing) closes the other: a proxy holds no half-open connection.
    client.on('close', () => this.closePipe(pipe));
    upstream.on('close', () => this.closePipe(pipe));
    this.forward(pipe, client, upstream, 'toTarget');
    this.forward(pipe, upstream, client, 'toClient');
  }

  /** from → to, honouring back-pressure and the stall (a paused socket emits no data). */
  private forward(pipe: Pipe, from: net.Socket, to: net.Socket, counter: 'toTarget' | 'toClient'): void {
    from.on('data', (chunk: Buffer) => {
      if (!this.pipes.has(pipe)) return;
      this.forwardedBytes[counter] += chunk.length;
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => {
          if (this.modeValue !== 'stall') from.resume();
        });
      }
    });
  }

  private closePipe(pipe: Pipe): void {
    if (!this.pipes.delete(pipe)) return;
    // resetAndDestroy sends RST (a reset, as a pulled cable with a router in between reports);
    // it exists on Node 20 for TCP sockets.
    for (const s of [pipe.client, pipe.upstream]) {
      if (typeof (s as net.Socket & { resetAndDestroy?: () => void }).resetAndDestroy === 'function' && !s.destroyed && s.readyState !== 'opening') {
        s.resetAndDestroy();
      } else {
        s.destroy();
      }
    }
  }
}
