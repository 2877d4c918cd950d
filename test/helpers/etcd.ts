// A real etcd for the arbiter's tests (issue 13 item 7): one or three members on free loopback
// ports, each with a temporary data dir, started by the test and killed with it. etcd comes from
// Debian's etcd-server, installed when missing (tools.ts).
import path from 'node:path';
import { freePort, makeTempDir, startBackground, type BackgroundProcess } from './node-process.js';
import { ensureTools } from './tools.js';

export class EtcdCluster {
  private constructor(
    readonly endpoints: string[],
    private readonly members: Array<{ name: string; args: string[]; clientPort: number; proc: BackgroundProcess | null }>,
  ) {}

  /** `count` members forming one cluster; resolves once every member accepts clients. */
  static async start(count = 1): Promise<EtcdCluster> {
    ensureTools(['etcd']);
    const dir = makeTempDir('twinblock-etcd-');
    const ports: Array<{ client: number; peer: number }> = [];
    for (let i = 0; i < count; i++) ports.push({ client: await freePort(), peer: await freePort() });
    const names = ports.map((_, i) => `m${i}`);
    const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[i]!.peer}`).join(',');
    const members = names.map((name, i) => ({
      name,
      clientPort: ports[i]!.client,
      proc: null as BackgroundProcess | null,
      args: [
        '--name', name, '--data-dir', path.join(dir, name),
        '--listen-client-urls', `http://127.0.0.1:${ports[i]!.client}`, '--advertise-client-urls', `http://127.0.0.1:${ports[i]!.client}`,
        '--listen-peer-urls', `http://127.0.0.1:${ports[i]!.peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${ports[i]!.peer}`,
        '--initial-cluster', initialCluster, '--initial-cluster-state', 'new', '--initial-cluster-token', `twinblock-test-${process.pid}`,
        '--log-level', 'error',
      ],
    }));
    const cluster = new EtcdCluster(members.map((m) => `http://127.0.0.1:${m.clientPort}`), members);
    await Promise.all(members.map((_, i) => cluster.startMember(i)));
    await cluster.waitHealthy();
    return cluster;
  }

  /** Starts member i (again, on its data dir). */
  async startMember(i: number): Promise<void> {
    const m = this.members[i]!;
    m.proc = await startBackground('etcd', m.args, m.clientPort, 30_000);
  }

  /** kill -9 member i. */
  async kill(i: number): Promise<void> {
    const m = this.members[i]!;
    m.proc?.child.kill('SIGKILL');
    await m.proc?.stop();
    m.proc = null;
  }

  /** Some member answers a linearizable read. */
  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const url of this.endpoints) {
        const ok = await fetch(`${url}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: Buffer.from('x').toString('base64') }), signal: AbortSignal.timeout(1000) })
          .then((r) => r.ok, () => false);
        if (ok) return;
      }
      if (Date.now() > deadline) throw new Error(`etcd at ${this.endpoints.join(', ')} not healthy within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop(): Promise<void> {
    for (let i = 0; i < this.members.length; i++) await this.kill(i);
  }
}
