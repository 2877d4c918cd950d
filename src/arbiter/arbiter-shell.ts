// The arbiter's I/O shell (issue 13): runs src/core/arbiter.ts against etcd (etcd.ts) for one
// node. It asks the core what to request, requests it, hands the answer back, and carries out
// what the core decides: promote or demote the volume, log. It also gives the volume its ack
// gate, so that a reply is sent only while the core says this node may acknowledge.
//
// Its clock is performance.now(): monotonic, and still running while the process is stopped
// (SIGSTOP), which is what a lease deadline must be measured on.
import { performance } from 'node:perf_hooks';
import { ArbiterCore, type ArbiterAction, type ArbiterOp, type ArbiterResult, type LocalView } from '../core/arbiter.js';
import { RoleChangeError, type Volume } from '../node/volume.js';
import { EtcdClient } from './etcd.js';

export interface ArbiterConfig {
  etcd: string[];
  leaseTtlMs: number;
  prefix: string;
  autoFailover: boolean;
}

export interface ArbiterStatus {
  endpoints: string[];
  connected: boolean;
  leader: string | null;
  leaseRemainingMs: number;
  epoch: number | null;
  state: string;
  electable: string[];
  autoFailover: boolean;
  lastError: string | null;
}

export interface ArbiterShellOptions {
  config: ArbiterConfig;
  node: string;
  peers: string[];
  volumeName: string;
  heartbeatTimeoutMs: number;
  /** `ack: quorum`: every node stays electable (ArbiterSettings.electableAll). */
  ackQuorum: boolean;
  volume: Volume;
  /**
   * The node started from a clean shutdown. One that crashed lost what it held only in RAM, and
   * may still be listed as electable: it may not claim until it has been in sync since.
   */
  cleanStart: boolean;
  /** Local send time (performance.now()) of the newest heartbeat each peer echoed on its current link. */
  echoedSentAtMs: (peer: string) => number | null;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/** A third of the TTL: two renewals may fail before the lease can lapse. */
const RENEW_FRACTION = 1 / 3;
const CLOCK_RATE_MARGIN = 0.05;
const GUARD_MS = 100;

export class ArbiterShell {
  readonly core: ArbiterCore;
  private readonly etcd: EtcdClient;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private busy = false;
  /** Started cleanly, or in sync with a peer since (see cleanStart). */
  private whole: boolean;
  /** An operator's promote waits for the core's operator-claim-ended. */
  private operatorWaiter: ((error: string | null) => void) | null = null;
  /** A demote the core asked for, until it is done. */
  private demoting: Promise<void> | null = null;

  constructor(private readonly opts: ArbiterShellOptions) {
    this.whole = opts.cleanStart;
    const ttl = opts.config.leaseTtlMs;
    this.core = new ArbiterCore({
      node: opts.node, peers: opts.peers, leaseTtlMs: ttl, renewIntervalMs: Math.floor(ttl * RENEW_FRACTION),
      pollIntervalMs: Math.floor(ttl / 4), fastPollIntervalMs: Math.floor(ttl / 20), clockRateMargin: CLOCK_RATE_MARGIN, guardMs: GUARD_MS,
      heartbeatTimeoutMs: opts.heartbeatTimeoutMs, autoFailover: opts.config.autoFailover, electableAll: opts.ackQuorum,
    });
    this.etcd = new EtcdClient({
      endpoints: opts.config.etcd, prefix: opts.config.prefix, volume: opts.volumeName, leaseTtlMs: ttl,
      requestTimeoutMs: Math.max(200, Math.floor(ttl * RENEW_FRACTION * 0.75)),
    });
  }

  private now(): number {
    return performance.now();
  }

  /** The node as the core needs to see it, read now. */
  localView(): LocalView {
    const core = this.opts.volume.core;
    if (!this.whole && core.peers.some((ch) => ch.state === 'in-sync')) this.whole = true;
    return {
      role: core.role,
      epoch: core.epoch,
      mayPromote: this.whole && !core.incompleteResync && !core.peers.some((ch) => ch.intake.active),
      peers: core.peers.map((ch) => ({
        name: ch.name, linkUp: ch.linkIsUp, role: ch.peerRole, inSync: ch.state === 'in-sync',
        echoedSentAtMs: ch.linkIsUp ? this.opts.echoedSentAtMs(ch.name) : null, splitBrain: ch.state === 'split-brain',
      })),
    };
  }

  /** The volume's ack gate: read at the moment a reply would go out. */
  readonly mayAcknowledge = (): boolean => this.core.mayAcknowledge(this.now(), this.localView());

  /**
   * Starts, and resolves once etcd has been read (or after two lease TTLs without an answer): a
   * node that comes back primary while etcd names another demotes itself before hosts reach it,
   * so it never applies a write the new primary lacks (issue 13 item 8).
   */
  async start(): Promise<void> {
    this.step();
    const deadline = this.now() + 2 * this.opts.config.leaseTtlMs;
    while (this.core.record === null && this.now() < deadline && !this.stopped) await new Promise((r) => setTimeout(r, 20));
    if (this.core.record === null) {
      this.opts.log('warn', 'arbiter: etcd not reached at start: serving, with no write acknowledged until it is (or the failsafe holds)', { endpoints: this.opts.config.etcd, error: this.core.lastError });
    }
    while (this.demoting !== null) await this.demoting;
  }

  /** One round: the core's next request, if any; then sleep until it may have another. */
  private step(): void {
    if (this.stopped || this.busy) return;
    this.clearTimer();
    const op = this.core.poll(this.now(), this.localView());
    this.perform();
    if (op === null) return this.arm();
    this.busy = true;
    const sentAtMs = this.now();
    void this.request(op).then((result) => {
      this.busy = false;
      if (this.stopped) return;
      this.core.done(result, sentAtMs, this.now(), this.localView());
      this.perform();
      this.opts.volume.releaseHeldReplies();
      this.step();
    });
  }

  private arm(): void {
    // Also wake at the lease deadline and a little after: held replies fail or go, and the failsafe
    // is re-judged, without a host event to prompt it.
    const delayMs = Math.max(1, Math.min(this.core.nextWakeMs() - this.now(), this.opts.config.leaseTtlMs / 8));
    this.timer = setTimeout(() => {
      this.timer = null;
      this.opts.volume.releaseHeldReplies();
      this.step();
    }, delayMs);
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private async request(op: ArbiterOp): Promise<ArbiterResult> {
    try {
      switch (op.kind) {
        case 'read':
          return { kind: 'read', record: await this.etcd.read() };
        case 'claim': {
          const r = await this.etcd.claim(this.opts.node, op.epoch, op.expectStateRevision, op.electable);
          return { kind: r.ok ? 'claimed' : 'claim-refused', record: r.record };
        }
        case 'renew':
          return { kind: 'renewed', remainingMs: await this.etcd.renew() };
        case 'set-electable': {
          const r = await this.etcd.setElectable(this.opts.node, op.epoch, op.electable, op.expectStateRevision);
          return { kind: r.ok ? 'electable-set' : 'electable-refused', record: r.record };
        }
        case 'release':
          await this.etcd.release();
          return { kind: 'released' };
      }
    } catch (err) {
      return { kind: 'unreachable', error: err instanceof Error ? err.message : String(err) };
    }
  }

  /** Carries out the core's decisions. */
  private perform(): void {
    for (const action of this.core.takeActions()) this.act(action);
  }

  private act(action: ArbiterAction): void {
    switch (action.kind) {
      case 'log':
        this.opts.log(action.level, action.msg, action.fields);
        return;
      case 'promote':
        this.opts.log('info', 'arbiter: promoting this node (automatic failover)', { epoch: action.epoch });
        this.opts.volume.promote(false, action.epoch).then(
          () => this.promoted(null),
          (err: unknown) => this.promoted(err instanceof Error ? err.message : String(err)),
        );
        return;
      case 'operator-claim-ended':
        this.operatorWaiter?.(action.error);
        this.operatorWaiter = null;
        return;
      case 'discard-local':
        this.opts.log('warn', `arbiter: split brain with ${action.primary}, the primary etcd names (epoch ${action.epoch}): discarding this node's unacknowledged changes`);
        this.opts.volume.resolveDiscardLocal().catch((err: unknown) => this.opts.log('error', 'arbiter: discard-local failed', { error: String(err) }));
        return;
      case 'demote':
        this.opts.log('warn', `arbiter: demoting this node: ${action.reason}`);
        if (this.demoting !== null) return;
        this.demoting = this.opts.volume.demote().then(
          () => undefined,
          (err: unknown) => this.opts.log('error', 'arbiter: demote failed', { error: String(err) }),
        ).finally(() => { this.demoting = null; });
        return;
    }
  }

  private promoted(error: string | null): void {
    if (error === null) this.opts.log('info', 'arbiter: this node is primary and serves writes', { epoch: this.opts.volume.core.epoch });
    this.core.promoted(error, this.now());
    this.perform();
    this.step();
  }

  /**
   * A promote asked by an operator (issue 13 item 5): the same transaction as an automatic one,
   * refused with etcd's reason. Resolves once this node serves writes.
   */
  promoteByOperator(): Promise<{ epoch: number }> {
    const refused = this.core.claimForOperator(this.now(), this.localView());
    if (refused !== null) return Promise.reject(new RoleChangeError(`arbiter: ${refused}`));
    const ended = new Promise<{ epoch: number }>((resolve, reject) => {
      this.operatorWaiter = (error) => (error === null ? resolve({ epoch: this.opts.volume.core.epoch }) : reject(new RoleChangeError(`arbiter: ${error}`)));
    });
    this.clearTimer();
    this.step();
    return ended;
  }

  status(): ArbiterStatus {
    const record = this.core.record;
    return {
      endpoints: this.opts.config.etcd,
      connected: this.core.record !== null && !this.core.unreachable,
      leader: record?.leader?.node ?? null,
      leaseRemainingMs: this.core.leaseRemainingMs(this.now()),
      epoch: record?.state?.epoch ?? null,
      state: this.core.state,
      electable: record?.state?.electable ?? [],
      autoFailover: this.opts.config.autoFailover,
      lastError: this.core.lastError,
    };
  }

  /** Stops; a leader lets its lease go, so a successor need not wait for it to lapse. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimer();
    await this.etcd.release();
  }
}
