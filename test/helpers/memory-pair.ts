// In-process pairs for tests: Volumes (the replica core in its real shell) over in-memory stores
// and an in-memory ordered link, with crashes (a node's RAM and in-flight store writes vanish, its
// store and last durable metadata stay) and restarts from that metadata.
import { setTimeout as sleep } from 'node:timers/promises';
import type { TrackerKind } from '../../src/core/notifier.js';
import type { FlushPolicy, LinkMessage, PersistedState, QuorumSettings, Role } from '../../src/core/replica-types.js';
import { PAIR_QUORUM_DEFAULTS } from '../../src/core/replica-types.js';
import { Volume } from '../../src/node/volume.js';
import { realClock, type Clock } from '../../src/node/ports.js';
import { writeRunsEach, type Store } from '../../src/store/store.js';
import type { HardenRun } from '../../src/core/cache-types.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** A store in RAM. `bytes` is the disk; `synced` is what fdatasync made durable. */
export class MemoryStore implements Store {
  readonly description = 'memory';
  readonly bytes: Buffer;
  synced: Buffer;
  writes = 0;
  failWrites = false;
  /** The next this-many reads fail with EIO. */
  failReads = 0;
  /** The next this-many fdatasyncs fail with EIO (and sync nothing). */
  failSyncs = 0;
  /** When each fdatasync was called (Date.now()), failed or not. */
  readonly syncCalls: number[] = [];
  /** While set, store writes wait for it: proves an ack did not wait for any disk. */
  gate: Promise<void> | null = null;
  /** Bumped by a crash: writes issued before it never land. */
  private generation = 0;

  constructor(readonly sizeBytes: number, private readonly writeDelayMs = 1) {
    this.bytes = Buffer.alloc(sizeBytes);
    this.synced = Buffer.alloc(sizeBytes);
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    if (this.failReads > 0) {
      this.failReads--;
      throw new Error('injected read failure');
    }
    return Buffer.from(this.bytes.subarray(offsetBytes, offsetBytes + lengthBytes));
  }

  async write(offsetBytes: number, data: Uint8Array): Promise<void> {
    const generation = this.generation;
    await sleep(this.writeDelayMs);
    if (this.gate) await this.gate;
    if (this.failWrites) throw new Error('injected store failure');
    if (generation !== this.generation) throw new Error('node crashed');
    this.bytes.set(data, offsetBytes);
    this.writes++;
  }

  async writev(offsetBytes: number, buffers: Buffer[]): Promise<void> {
    // Copy now: the views belong to cache lines (which copy-on-write), like a real pwritev would.
    await this.write(offsetBytes, Buffer.concat(buffers));
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    await this.write(offsetBytes, Buffer.alloc(lengthBytes));
  }

  writeRuns(runs: readonly HardenRun[]): Promise<void> {
    return writeRunsEach(this, runs);
  }

  async sync(): Promise<void> {
    this.syncCalls.push(Date.now());
    if (this.failSyncs > 0) {
      this.failSyncs--;
      throw new Error('injected fdatasync failure');
    }
    this.synced = Buffer.from(this.bytes);
  }

  async close(): Promise<void> {}

  /** The node died: writes still in flight are lost (the disk keeps what it had). */
  crash(): void {
    this.generation++;
  }
}

export interface NodeOptions {
  sizeBytes?: number;
  cacheBytes?: number;
  tracker?: TrackerKind;
  flush?: FlushPolicy;
  storeDelayMs?: number;
  maxDirtyAgeMs?: number;
  /** Hardening by range threshold and destage scan (default 2 tracks, every 50 ms). */
  rangeDirtyThresholdTracks?: number;
  destageIntervalMs?: number;
  /** Pause after a store or metadata failure before the retry (the backoff's first step). */
  storeRetryMs?: number;
  /** Issue 12's ack and quorum policies (default: the pair's, quorum off). */
  quorum?: QuorumSettings;
}

/** One node: a store and metadata that outlive the process, and the running Volume. */
/**
 * Node's timers, every one keeping the process alive. A node's hardening timer is a background
 * one (its servers keep a real node alive); a pair in memory has no servers, and a test awaiting
 * a stop that waits out a store retry pause saw the event loop end under CPU load, the pause
 * still pending ("Promise resolution is still pending", test/failover.test.ts).
 */
const testClock: Clock = { nowMs: () => realClock.nowMs(), setTimer: (delayMs, fn) => realClock.setTimer(delayMs, fn, false) };

export class MemoryNode {
  readonly store: MemoryStore;
  /** The last metadata written durably (what a restart finds). */
  persisted: PersistedState | null = null;
  volume: Volume;
  send: (msg: LinkMessage) => boolean = () => true;
  /**
   * Times the Volume asked its link to stop reading (mirror.setReceiving(false)): its cache was
   * full and peer messages waited for room — the back-pressure a real node applies to its socket.
   */
  receivingPauses = 0;
  /** The next this-many metadata saves fail (the file stays as it was). */
  failMetadataSaves = 0;
  private alive = true;

  constructor(readonly name: string, readonly peer: string, readonly role: Role, readonly opts: NodeOptions) {
    this.store = new MemoryStore(opts.sizeBytes ?? 4 * MiB, opts.storeDelayMs ?? 1);
    this.volume = this.start();
  }

  private start(): Volume {
    this.alive = true;
    return new Volume({
      node: this.name, name: 'v', description: this.name, sizeBytes: this.store.sizeBytes, trackSizeBytes: 64 * KiB,
      cacheBytes: this.opts.cacheBytes ?? 1 * MiB, rangeTracks: 4,
      hardening: {
        maxDirtyAgeMs: this.opts.maxDirtyAgeMs ?? 200, destageIntervalMs: this.opts.destageIntervalMs ?? 50,
        rangeDirtyThresholdTracks: this.opts.rangeDirtyThresholdTracks ?? 2,
      },
      store: this.store,
      clock: testClock,
      metadata: {
        persisted: this.persisted,
        save: async (state) => {
          if (this.failMetadataSaves > 0) {
            this.failMetadataSaves--;
            throw new Error('injected metadata write failure');
          }
          if (this.alive) this.persisted = state;
        },
      },
      ...(this.opts.storeRetryMs === undefined ? {} : { tuning: { storeRetryMs: this.opts.storeRetryMs } }),
      mirror: {
        peers: [this.peer], role: this.role, tracker: this.opts.tracker ?? 'destage-scan', flush: this.opts.flush ?? 'memory',
        degraded: 'write-through', quorum: this.opts.quorum ?? PAIR_QUORUM_DEFAULTS, syncRateBytesPerSec: 1024 * MiB,
        send: (_peer, msg) => this.send(msg), setReceiving: (_peer, receiving) => { if (!receiving) this.receivingPauses++; },
      },
    });
  }

  /** kill -9: RAM and in-flight store writes are gone; the Volume is abandoned. */
  crash(): void {
    this.alive = false;
    this.store.crash();
    this.volume.abandon();
  }

  /** Start again over the same store and the last durable metadata. */
  restart(): void {
    this.volume = this.start();
  }
}

/** An ordered in-memory link between two nodes; connect() and cut() like a real one. */
export class MemoryLink {
  connected = false;
  readonly bytes = { data: 0, notice: 0 };
  private epoch = 0;

  constructor(readonly a: MemoryNode, readonly b: MemoryNode) {
    a.send = (msg) => this.carry(msg, b);
    b.send = (msg) => this.carry(msg, a);
  }

  private carry(msg: LinkMessage, to: MemoryNode): boolean {
    if (!this.connected) return true;
    if (msg.type === 'notice') this.bytes.notice += 16 + msg.ranges.length * 4;
    else if (msg.type === 'write' || msg.type === 'syncData') this.bytes.data += 32 + msg.data.length;
    const epoch = this.epoch;
    const volume = to.volume;
    // setImmediate keeps per-direction order (FIFO) and lets the event loop breathe.
    setImmediate(() => { if (this.connected && this.epoch === epoch && to.volume === volume) volume.linkMessage(to.peer, msg); });
    return true;
  }

  connect(): void {
    this.connected = true;
    this.epoch++;
    this.a.volume.linkEstablished(this.b.name);
    this.b.volume.linkEstablished(this.a.name);
  }

  cut(): void {
    if (!this.connected) return;
    this.connected = false;
    this.epoch++;
    this.a.volume.linkDown(this.b.name);
    this.b.volume.linkDown(this.a.name);
  }
}

export function makePair(opts: NodeOptions & { secondaryCacheBytes?: number } = {}): { a: MemoryNode; b: MemoryNode; link: MemoryLink } {
  const a = new MemoryNode('a', 'b', 'primary', opts);
  const b = new MemoryNode('b', 'a', 'secondary', { ...opts, cacheBytes: opts.secondaryCacheBytes ?? opts.cacheBytes });
  return { a, b, link: new MemoryLink(a, b) };
}

export async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

export function pattern(lengthBytes: number, seed: number): Buffer {
  const b = Buffer.alloc(lengthBytes);
  for (let i = 0; i < lengthBytes; i++) b[i] = (seed * 131 + i) % 251;
  return b;
}

export function inSync(a: MemoryNode, b: MemoryNode): boolean {
  return a.volume.peerState === 'in-sync' && b.volume.peerState === 'in-sync';
}
