// A pure harness for several ReplicaCores (issue 12's volumes of 3 to 8 nodes, before the shell
// runs them): each node is a core and a store in memory, every link a pair of FIFO queues the test
// delivers by hand. No sockets, timers or promises: the core's actions are carried out in a
// work list, one at a time, so a test decides exactly which message arrives when (a slow peer is
// one whose queue the test does not deliver). Store writes, fdatasyncs and metadata saves complete
// at once unless the node's `holdHardens` is set.
import { trackSums } from '../../src/node/track-sums.js';
import assert from 'node:assert/strict';
import { ReplicaCore } from '../../src/core/replica.js';
import type { HardenJob } from '../../src/core/cache-types.js';
import type { HardenReason } from '../../src/core/hardening.js';
import type { LinkMessage, PersistedState, QuorumSettings, ReplicaAction, ReplicaSettings } from '../../src/core/replica-types.js';

export const KiB = 1024;
const TRACK_BYTES = 64 * KiB;

export interface ClusterNode {
  readonly name: string;
  core: ReplicaCore;
  /** The metadata as last saved (saves land at once). */
  persisted: PersistedState | null;
  readonly store: Uint8Array;
  /** Harden jobs wait here instead of completing (finishHardens completes them). */
  holdHardens: boolean;
  readonly heldHardens: { job: HardenJob; reason: HardenReason }[];
  readonly logs: string[];
}

/** A host request's answer: 'pending', 'ok', or the errno; and how many replies it got (one, or a bug). */
export interface Answer { state: string; replies: number }

export class CoreCluster {
  readonly nodes = new Map<string, ClusterNode>();
  /** Messages in flight, per directed link "from>to". */
  private readonly queues = new Map<string, LinkMessage[]>();
  private readonly up = new Set<string>();
  private readonly answers = new Map<string, Map<number, Answer>>();
  /** Host payloads of writes not yet answered (the NBD server reuses a payload's buffer once answered). */
  private readonly payloads = new Map<string, Map<number, Uint8Array>>();
  private readonly work: (() => void)[] = [];
  private nextReqId = 1;
  nowMs = 0;

  /** `names[0]` starts primary on a fresh store; the others secondary. */
  constructor(names: string[], quorum: QuorumSettings, volumeBytes = 1024 * KiB, cacheBytes = 512 * KiB) {
    for (const name of names) {
      const settings: ReplicaSettings = {
        node: name, peers: names.filter((n) => n !== name), role: name === names[0] ? 'primary' : 'secondary', mirrored: names.length > 1,
        tracker: 'destage-scan', flush: 'memory', degraded: 'write-back', quorum,
        geometry: { volumeSizeBytes: volumeBytes, trackSizeBytes: TRACK_BYTES, rangeTracks: 4, capacityBytes: cacheBytes },
        hardening: { maxDirtyAgeMs: 1e9, destageIntervalMs: 20, rangeDirtyThresholdTracks: 100, maxJobBytes: 1024 * KiB, pressureFraction: 1 },
        maxHardensInFlight: 4, syncChunkBytes: TRACK_BYTES, syncWindowChunks: 4, syncRateBytesPerSec: 1e12, storeRetryMs: 100,
      };
      const core = new ReplicaCore(settings, 0, null);
      this.nodes.set(name, { name, core, persisted: null, store: new Uint8Array(volumeBytes), holdHardens: false, heldHardens: [], logs: [] });
      this.answers.set(name, new Map());
      this.payloads.set(name, new Map());
      this.work.push(() => this.takeActions(name));
    }
    this.settle();
  }

  node(name: string): ClusterNode {
    const n = this.nodes.get(name);
    assert.ok(n !== undefined, `no node ${name}`);
    return n;
  }

  private key(from: string, to: string): string {
    return `${from}>${to}`;
  }

  private linkKey(a: string, b: string): string {
    return [a, b].sort().join('|');
  }

  /** Brings the link between a and b up (both sides exchange their state next). */
  connect(a: string, b: string): void {
    this.up.add(this.linkKey(a, b));
    this.queues.set(this.key(a, b), []);
    this.queues.set(this.key(b, a), []);
    this.event(a, (c) => c.linkEstablished(b, this.nowMs));
    this.event(b, (c) => c.linkEstablished(a, this.nowMs));
  }

  /** Cuts the link between a and b: what was in flight on it is lost. */
  cut(a: string, b: string): void {
    this.up.delete(this.linkKey(a, b));
    this.queues.delete(this.key(a, b));
    this.queues.delete(this.key(b, a));
    this.event(a, (c) => c.linkDown(b, this.nowMs));
    this.event(b, (c) => c.linkDown(a, this.nowMs));
  }

  isUp(a: string, b: string): boolean {
    return this.up.has(this.linkKey(a, b));
  }

  /** Messages from → to still undelivered. */
  inFlight(from: string, to: string): readonly LinkMessage[] {
    return this.queues.get(this.key(from, to)) ?? [];
  }

  /** Delivers what is queued from → to, or its first `count` messages (and what each causes on the receiver's side, not beyond). */
  deliver(from: string, to: string, count = Infinity): void {
    const q = this.queues.get(this.key(from, to));
    for (let n = 0; n < count && q !== undefined && q.length > 0; n++) {
      const msg = q.shift()!;
      this.event(to, (c) => c.linkMessage(from, msg, this.nowMs));
    }
  }

  /** Delivers every link's messages, except those from or to the nodes in `slow`, until none move. */
  settle(slow: readonly string[] = []): void {
    for (let rounds = 0; rounds < 10_000; rounds++) {
      this.runWork();
      let moved = false;
      for (const k of [...this.queues.keys()]) {
        const [from, to] = k.split('>') as [string, string];
        if (slow.includes(from) || slow.includes(to) || (this.queues.get(k)?.length ?? 0) === 0) continue;
        this.deliver(from, to);
        moved = true;
      }
      if (!moved && this.work.length === 0) return;
    }
    assert.fail('the cluster never settled');
  }

  /** A host write of `data` at `offsetBytes` on `name`; its answer fills in as the test delivers. */
  write(name: string, offsetBytes: number, data: Uint8Array): Answer {
    const reqId = this.nextReqId++;
    const answer = { state: 'pending', replies: 0 };
    this.answers.get(name)!.set(reqId, answer);
    const payload = Uint8Array.from(data); // the host's buffer: poisoned once answered (perform)
    this.payloads.get(name)!.set(reqId, payload);
    this.event(name, (c) => c.hostWrite(reqId, offsetBytes, payload.length, payload, false, false, this.nowMs));
    return answer;
  }

  /** Hardens everything `name` holds in its cache (as a clean stop does), `slow` nodes' links undelivered; returns its answer. */
  hardenAll(name: string, slow: readonly string[] = []): Answer {
    const reqId = this.nextReqId++;
    const answer = { state: 'pending', replies: 0 };
    this.answers.get(name)!.set(reqId, answer);
    this.event(name, (c) => c.hostFlushLocal(reqId, this.nowMs));
    this.settle(slow);
    return answer;
  }

  /** Ticks `times` times by `stepMs`, settling after each (a resync paces its reads by time). */
  run(times: number, stepMs = 1): void {
    for (let i = 0; i < times; i++) {
      this.tick(stepMs);
      this.settle();
    }
  }

  /** The volume's bytes as `name` serves them: its cache over its store. */
  read(name: string, offsetBytes: number, lengthBytes: number): Buffer {
    const n = this.node(name);
    const plan = n.core.cache.beginRead(offsetBytes, lengthBytes, false);
    const parts = plan.storeRuns.map((r) => Buffer.from(n.store.subarray(r.offsetBytes, r.offsetBytes + r.lengthBytes)));
    return n.core.cache.finishRead(plan, parts);
  }

  /**
   * kill -9 and start again: RAM (cache, links, messages in flight) is gone; the store and the
   * last saved metadata remain. The node comes back secondary, its links down.
   */
  restart(name: string): void {
    const n = this.node(name);
    this.runWork(); // store writes and saves already issued land first (none may reach the new core)
    for (const other of this.nodes.keys()) {
      if (other === name || !this.isUp(name, other)) continue;
      this.up.delete(this.linkKey(name, other));
      this.queues.delete(this.key(name, other));
      this.queues.delete(this.key(other, name));
      this.event(other, (c) => c.linkDown(name, this.nowMs));
    }
    n.heldHardens.length = 0;
    n.core = new ReplicaCore(n.core.settings, this.nowMs, n.persisted);
    this.takeActions(name);
    this.settle();
  }

  /** Completes the harden jobs `name` holds back. */
  finishHardens(name: string): void {
    const n = this.node(name);
    for (const { job, reason } of n.heldHardens.splice(0)) this.work.push(() => this.harden(n, job, reason));
    this.settle();
  }

  /** `twinblock promote [--force]` on `name`: the core's answer. */
  promote(name: string, force: boolean): { ok: true; pending: boolean } | { ok: false; error: string } {
    let result: ReturnType<ReplicaCore['promote']> | null = null;
    this.event(name, (c) => { result = c.promote(force, this.nowMs); });
    this.settle();
    return result!;
  }

  tick(deltaMs: number): void {
    this.nowMs += deltaMs;
    for (const name of this.nodes.keys()) this.event(name, (c) => c.tick(this.nowMs));
  }

  /** Feeds one event to a node's core and queues the actions it emitted. */
  event(name: string, fn: (core: ReplicaCore) => void): void {
    fn(this.node(name).core);
    this.takeActions(name);
  }

  /** Completes the store writes, fdatasyncs, saves and resync reads issued so far (no message moves). */
  runWork(): void {
    for (let job = this.work.shift(); job !== undefined; job = this.work.shift()) job();
  }

  private takeActions(name: string): void {
    for (const action of this.node(name).core.takeActions()) this.perform(name, action);
  }

  private perform(name: string, action: ReplicaAction): void {
    const n = this.node(name);
    switch (action.kind) {
      case 'send':
        // A frame leaves with the bytes it had when sent (the shell holds a host payload until the
        // socket has taken them: src/link/connection.ts); the queue is the network after that.
        if (this.isUp(name, action.peer)) this.queues.get(this.key(name, action.peer))!.push(action.msg.type === 'write' ? { ...action.msg, data: Uint8Array.from(action.msg.data) } : action.msg);
        return;
      case 'reply': {
        const answer = this.answers.get(name)!.get(action.reqId);
        if (answer === undefined) return;
        answer.state = action.errno ?? 'ok';
        answer.replies++;
        // As the NBD server does, the payload's buffer is reused once answered (and written):
        // poisoned here, so a write the core sends from it after answering carries other bytes.
        this.payloads.get(name)!.get(action.reqId)?.fill(0xee);
        this.payloads.get(name)!.delete(action.reqId);
        return;
      }
      case 'harden':
        if (n.holdHardens) n.heldHardens.push({ job: action.job, reason: action.reason });
        else this.work.push(() => this.harden(n, action.job, action.reason));
        return;
      case 'sync-store':
        this.work.push(() => this.event(name, (c) => c.storeSynced(action.syncId, null, this.nowMs)));
        return;
      case 'persist':
        n.persisted = action.state;
        this.work.push(() => this.event(name, (c) => c.persistDone(action.token, this.nowMs)));
        return;
      case 'sync-read':
        this.work.push(() => this.event(name, (c) => c.syncChunkRead(action.offsetBytes, this.read(name, action.offsetBytes, action.lengthBytes), this.nowMs, action.resyncId)));
        return;
      case 'sum-read': // issue 14 items 4-5: checksums of tracks as the node serves them
        this.work.push(() => this.event(name, (c) => c.sumsRead(action.readId, trackSums(this.read(name, action.offsetBytes, action.lengthBytes), c.settings.geometry.trackSizeBytes), this.nowMs)));
        return;
      case 'log':
        n.logs.push(`${action.level} ${action.msg}`);
        return;
      case 'promote-done':
        n.logs.push(`promote-done ${action.error ?? 'ok'}`);
        return;
    }
  }

  private harden(n: ClusterNode, job: HardenJob, reason: HardenReason): void {
    for (const run of job.runs) {
      const bytes = run.data ?? (run.buffers === null ? null : Buffer.concat(run.buffers));
      if (bytes === null) n.store.fill(0, run.offsetBytes, run.offsetBytes + run.lengthBytes);
      else n.store.set(bytes.subarray(0, run.lengthBytes), run.offsetBytes);
    }
    this.event(n.name, (c) => c.hardenDone(job.id, job.bytes, job.runs.length, reason, this.nowMs));
  }
}

/** `lengthBytes` of a byte pattern that differs with `seed`. */
export function pattern(lengthBytes: number, seed: number): Buffer {
  const b = Buffer.alloc(lengthBytes);
  for (let i = 0; i < lengthBytes; i++) b[i] = (i * 31 + seed * 7 + 1) & 0xff;
  return b;
}
