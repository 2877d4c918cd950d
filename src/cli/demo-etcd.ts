// `twinblock demo --arbiter` (issue 13 item 8): an etcd of the demo's own, from the etcd found on
// PATH, on free loopback ports with its data under the demo's directory; stopped with the demo.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export interface DemoEtcd {
  url: string;
  dataDir: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** Starts etcd, or throws one line saying what to install. */
export async function startDemoEtcd(dir: string): Promise<DemoEtcd> {
  if (spawnSync('sh', ['-c', 'command -v etcd'], { stdio: 'ignore' }).status !== 0) {
    throw new Error('--arbiter: no etcd on PATH: install it (Debian: apt-get install etcd-server), or run without --arbiter');
  }
  const [client, peer] = [await freePort(), await freePort()];
  const dataDir = path.join(dir, 'etcd');
  mkdirSync(dataDir, { recursive: true });
  const url = `http://127.0.0.1:${client}`;
  const child: ChildProcess = spawn('etcd', [
    '--name', 'demo', '--data-dir', dataDir, '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
    '--initial-cluster', `demo=http://127.0.0.1:${peer}`, '--log-level', 'error',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (c: string) => { stderr = (stderr + c).slice(-2000); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await fetch(`${url}/v3/kv/range`, { method: 'POST', body: '{"key":"eA=="}', signal: AbortSignal.timeout(500) }).then((r) => r.ok, () => false);
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`--arbiter: etcd did not start: ${stderr.trim().split('\n').pop() ?? 'no output'}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url, dataDir,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
