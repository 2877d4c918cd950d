// Three nodes of one volume as real processes, full mesh (issue 12), for the process tests of
// several secondaries and of the arbiter.
import assert from 'node:assert/strict';
import { freePort, makeTempDir, pollNodes, startNode, type ConfigSpec, type NodeProcess } from './node-process.js';

export const NAMES = ['a', 'b', 'c'] as const;
export type Name = (typeof NAMES)[number];
export const MiB = 1024 * 1024;
export const SIZE_BYTES = 32 * MiB;

export interface PeerJson { node: string; connected: boolean; state: string; outOfSyncTracks: number; resyncBytesSent: number }
export interface StatusJson { role: string; ack: string; quorum: { have: number; need: number; ok: boolean }; peers: PeerJson[] }

export class Trio {
  readonly nodes = new Map<Name, NodeProcess>();

  private constructor(readonly dir: string, readonly config: ConfigSpec) {}

  static async create(overrides: Record<string, unknown>, cache = '16MiB'): Promise<Trio> {
    const dir = makeTempDir('twinblock-trio-');
    // Distinct ports: freePort() may hand out a port it gave before (it closes its probe).
    const ports = new Set<number>();
    while (ports.size < 3 * NAMES.length) ports.add(await freePort());
    const free = [...ports];
    const nodes: ConfigSpec['nodes'] = {};
    NAMES.forEach((name, i) => {
      const [nbd, admin, link] = free.slice(3 * i, 3 * i + 3);
      nodes[name] = { nbd: `127.0.0.1:${nbd}`, admin: `127.0.0.1:${admin}`, store: `${dir}/${name}.img`, cache, link: `127.0.0.1:${link}` } as ConfigSpec['nodes'][string];
    });
    const config: ConfigSpec = {
      size: `${SIZE_BYTES / MiB}MiB`, trackSize: '64KiB', rangeTracks: 16, maxDirtyAgeMs: 2000, destageIntervalMs: 300, flush: 'memory',
      heartbeatTimeoutMs: 500, secret: 'twinblock three node test secret', primary: 'a', nodes, ...overrides,
    };
    const trio = new Trio(dir, config);
    // The acceptors first (the lower name dials): c accepts from a and b, b from a.
    for (const name of ['c', 'b', 'a'] as const) await trio.start(name);
    return trio;
  }

  async start(name: Name): Promise<void> {
    this.nodes.set(name, await startNode({ config: this.config, nodeName: name, dir: this.dir, startTimeoutMs: 20_000 }));
  }

  node(name: Name): NodeProcess {
    const n = this.nodes.get(name);
    assert.ok(n !== undefined && !n.hasExited, `node ${name} is not running`);
    return n;
  }

  async status(name: Name): Promise<StatusJson> {
    return (await this.node(name).status()) as unknown as StatusJson;
  }

  logs(): string {
    return [...this.nodes.values()].map((n) => `--- ${n.name}\n${n.stderr.slice(-3000)}`).join('\n');
  }

  async waitFor(what: string, check: () => Promise<{ ok: boolean; detail: string }>, timeoutMs = 30_000): Promise<void> {
    const running = [...this.nodes.values()].filter((n) => !n.hasExited);
    await pollNodes(what, running, check, () => this.logs(), timeoutMs, 100);
  }

  /**
   * The primary mirrors every other node, and each of them knows it: the resync into it has ended
   * on its side too (its syncDone read). Killing the primary before that leaves a secondary with
   * an unfinished resync, which a plain promote rightly refuses.
   */
  async waitMirrored(): Promise<void> {
    await this.waitFor('a in-sync with b and c, and they with a', async () => {
      const views = await Promise.all(NAMES.map(async (name) => [name, (await this.status(name)).peers] as const));
      const ok = views.every(([name, peers]) => peers.every((p) => p.state === 'in-sync' || (name !== 'a' && p.node !== 'a')));
      return { ok, detail: JSON.stringify(views.map(([name, peers]) => [name, peers.map((p) => [p.node, p.state])])) };
    }, 60_000);
  }

  async stopAll(): Promise<void> {
    for (const n of this.nodes.values()) await n.stop();
  }
}

