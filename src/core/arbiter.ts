// The arbiter's decisions (issue 13): which node may be primary, when a primary may acknowledge
// writes, and when a secondary takes over — decided here, carried out against etcd by the shell
// (src/arbiter/). Pure: no sockets, no timers, no clock; time is passed in, etcd's answers come
// in as events, and what to ask etcd next comes out (handle/poll, as quinn-proto does).
//
// Theory of operation. etcd holds two keys per volume:
//   leader  {node, epoch}, attached to the leader's lease: it vanishes when the lease lapses;
//   state   {epoch, primary, electable}, no lease: the epoch is the fencing token, `electable`
//           the nodes that hold every write the primary has acknowledged (DRBD's "outdated" flag
//           the other way round).
// Every change of primary is one transaction: compare the state key's revision as read, and that
// no leader key exists; then put both (etcd-io/etcd "leases", Patroni's leader race).
//
// Self-fencing. A keepalive sent at local time S and answered renews the lease to at least S +
// TTL on etcd's clock (etcd counts from when it receives it, later than S). So this node may act
// as leader until S + TTL / (1 + clockRateMargin) - guardMs by its own clock: a clock running up
// to `clockRateMargin` slower than etcd's still stops first. A secondary only takes over once the
// leader key is gone, i.e. after the lease lapsed on etcd's side: after that local deadline.
// Acknowledgements are checked against the deadline at the moment they would be sent (the shell
// holds a reply until mayAcknowledge says yes), so a primary frozen past its lease and resumed
// acknowledges nothing until etcd has renewed it.
//
// Failsafe (Patroni's failsafe mode). With etcd unreachable, a primary may still acknowledge
// while every configured peer is connected, in sync, and has echoed a heartbeat sent at local
// time H with now < H + heartbeatTimeout / (1 + margin) - guard: the peer got it after H, so it
// will not find the link dead, and a secondary only campaigns with no live link to a primary.
//
// Electable set. A primary acknowledges a write only while every electable peer is in sync (so
// holds it, DESIGN.md "Failures"). When one drops, the primary first removes it from `electable`
// in etcd, then goes on; a peer back in sync is added again. A secondary campaigns only while
// electable: a node that missed acknowledged writes can never win (issue 13 item 4).
import { assert } from './assert.js';

export interface ArbiterSettings {
  node: string;
  /** The other nodes of the volume. */
  peers: readonly string[];
  leaseTtlMs: number;
  /** How often the leader renews its lease (a third of the TTL). */
  renewIntervalMs: number;
  /** How often a node that is not leader reads etcd. */
  pollIntervalMs: number;
  /** ... and how often while it sees no live primary (a failover is near: issue 13's 3 s). */
  fastPollIntervalMs: number;
  /** How much slower than etcd's this node's clock may run (0.05: 5%). */
  clockRateMargin: number;
  /** Subtracted from every local deadline, for scheduling and the reply's way to the socket. */
  guardMs: number;
  /** The link's dead-peer deadline: the failsafe's evidence lasts this long. */
  heartbeatTimeoutMs: number;
  autoFailover: boolean;
  /**
   * `ack: quorum` (issue 12): a write is answered once a majority holds it, so no one secondary
   * holds them all. Every node stays electable; the winner's promotion surveys a majority and
   * fetches from the most current before it serves (promoteAmong), and the data path's quorum gate,
   * not the electable set, decides when a write may be answered.
   */
  electableAll: boolean;
}

/** What etcd holds for the volume, as last read. */
export interface ArbiterRecord {
  leader: { node: string; epoch: number } | null;
  state: { epoch: number; primary: string; electable: string[]; modRevision: number } | null;
}

/** This node as the shell sees it now. */
export interface LocalView {
  role: 'primary' | 'secondary';
  epoch: number;
  /** The replica core would accept a promotion (not mid-resync, not closing). */
  mayPromote: boolean;
  peers: readonly PeerView[];
}

export interface PeerView {
  name: string;
  linkUp: boolean;
  role: 'primary' | 'secondary' | null;
  inSync: boolean;
  /** Local send time of the newest heartbeat the peer echoed (null: none on this link). */
  echoedSentAtMs: number | null;
  /** This node and the peer refuse to mirror: their histories diverged. */
  splitBrain: boolean;
}

/** A request to etcd; one at a time. */
export type ArbiterOp =
  | { kind: 'read' }
  /** Take (or re-take) the leader key at `epoch`: a lease, then the transaction. */
  | { kind: 'claim'; epoch: number; expectStateRevision: number; electable: string[] }
  | { kind: 'renew' }
  /**
   * The leader changes `electable`, or records the epoch it took alone when a link dropped
   * (markDiverging): compare the state key's revision and our leader key.
   */
  | { kind: 'set-electable'; epoch: number; electable: string[]; expectStateRevision: number }
  /** Revoke our lease: the leader key goes with it. */
  | { kind: 'release' };

export type ArbiterResult =
  | { kind: 'read'; record: ArbiterRecord }
  | { kind: 'claimed'; record: ArbiterRecord }
  | { kind: 'claim-refused'; record: ArbiterRecord }
  /** `remainingMs` 0: the lease has lapsed on etcd's side. */
  | { kind: 'renewed'; remainingMs: number }
  | { kind: 'electable-set'; record: ArbiterRecord }
  | { kind: 'electable-refused'; record: ArbiterRecord }
  | { kind: 'released' }
  | { kind: 'unreachable'; error: string };

/** What the shell does to the node. */
export type ArbiterAction =
  | { kind: 'promote'; epoch: number }
  /** An operator's promote (claimForOperator) ended: null, this node serves writes; else why not. */
  | { kind: 'operator-claim-ended'; error: string | null }
  | { kind: 'demote'; reason: string }
  /**
   * This node diverged from the primary etcd names (a fenced primary that took a new epoch alone,
   * acknowledging nothing): its changes go, by a resync from that primary (see afterRead).
   */
  | { kind: 'discard-local'; primary: string; epoch: number }
  | { kind: 'log'; level: 'info' | 'warn'; msg: string; fields?: Record<string, unknown> };

export type ArbiterState = 'follower' | 'claiming' | 'leader' | 'releasing';
type ArbiterEvent = 'claim' | 'claimed' | 'claim-refused' | 'renewed' | 'lapsed' | 'electable' | 'release' | 'released' | 'unreachable';

/** The state machine as data: state x event -> next state; a missing entry is a bug and asserts. */
export const arbiterTransitions: Readonly<Record<ArbiterState, Readonly<Partial<Record<ArbiterEvent, ArbiterState>>>>> = {
  follower: { claim: 'claiming', unreachable: 'follower', release: 'follower' },
  claiming: { claimed: 'leader', 'claim-refused': 'follower', unreachable: 'follower' },
  leader: { renewed: 'leader', lapsed: 'follower', electable: 'leader', release: 'releasing', unreachable: 'leader' },
  releasing: { released: 'follower', unreachable: 'follower' },
};

export class ArbiterCore {
  state: ArbiterState = 'follower';
  /** etcd as last read (null: never read). */
  record: ArbiterRecord | null = null;
  /** While leader: the local time until which this node may act as leader. */
  private deadlineMs = -Infinity;
  private inFlight: ArbiterOp | null = null;
  private nextRenewAtMs = 0;
  private nextReadAtMs = -Infinity;
  /** The last request failed and none has succeeded since. */
  unreachable = false;
  lastError: string | null = null;
  /** A promotion this core asked for is running in the shell: no new claim meanwhile. */
  private promoting = false;
  /** After a claim that did not end in a promotion, wait before the next. */
  private noClaimBeforeMs = 0;
  /** An operator asked for a promotion: claim once, even without autoFailover. */
  private operatorClaim = false;
  /** A discard-local was asked for the split brain now standing. */
  private discarding = false;
  private readonly actions: ArbiterAction[] = [];

  constructor(readonly settings: ArbiterSettings) {
    assert(settings.renewIntervalMs < settings.leaseTtlMs / (1 + settings.clockRateMargin) - settings.guardMs, 'the lease must be renewed well before it can lapse');
  }

  private go(event: ArbiterEvent): void {
    const next = arbiterTransitions[this.state][event];
    assert(next !== undefined, `arbiter: event ${event} is illegal in state ${this.state}`);
    this.state = next;
  }

  /** Actions for the shell, in order. */
  takeActions(): ArbiterAction[] {
    return this.actions.splice(0);
  }

  /** Milliseconds of leadership left by the local clock (0 if not leader). */
  leaseRemainingMs(nowMs: number): number {
    return this.state === 'leader' ? Math.max(0, Math.round(this.deadlineMs - nowMs)) : 0;
  }

  /**
   * May a write be acknowledged now (issue 13 item 3)? Only by the primary, while it holds the
   * lease by its own clock or the failsafe holds, and while every electable peer is in sync.
   */
  mayAcknowledge(nowMs: number, local: LocalView): boolean {
    if (local.role !== 'primary' || this.record?.state == null) return false;
    const state = this.record.state;
    if (state.primary !== this.settings.node || state.epoch !== local.epoch) return false;
    if (!this.settings.electableAll) for (const name of state.electable) {
      if (name === this.settings.node) continue;
      if (!local.peers.some((p) => p.name === name && p.linkUp && p.inSync)) return false;
    }
    if (this.state === 'leader' && nowMs < this.deadlineMs) return true;
    return this.failsafe(nowMs, local);
  }

  /** etcd unreachable, and every configured peer fresh, connected and in sync (see the header). */
  private failsafe(nowMs: number, local: LocalView): boolean {
    if (!this.unreachable) return false;
    const { heartbeatTimeoutMs, clockRateMargin, guardMs } = this.settings;
    return this.settings.peers.every((name) => {
      const p = local.peers.find((x) => x.name === name);
      return p !== undefined && p.linkUp && p.inSync && p.role === 'secondary' && p.echoedSentAtMs !== null
        && nowMs < p.echoedSentAtMs + heartbeatTimeoutMs / (1 + clockRateMargin) - guardMs;
    });
  }

  /** The next request to etcd, if one is due now (null: none; ask again at nextWakeMs). */
  poll(nowMs: number, local: LocalView): ArbiterOp | null {
    if (this.inFlight !== null) return null;
    const op = this.decide(nowMs, local);
    this.inFlight = op;
    return op;
  }

  /** When poll may have something to do next. */
  nextWakeMs(): number {
    return this.state === 'leader' ? Math.min(this.nextRenewAtMs, this.deadlineMs) : this.nextReadAtMs;
  }

  private decide(nowMs: number, local: LocalView): ArbiterOp | null {
    if (this.state === 'leader') {
      // A leader that is not primary (demoted, or its promotion failed) lets the key go; while
      // the promotion it asked for runs, it only keeps the lease.
      if (local.role !== 'primary' && !this.promoting) {
        // Demoted (by an operator, or a stop's hand-over): let another node take over; this one
        // does not claim again for two lease TTLs, or it could win its own race.
        this.noClaimBeforeMs = nowMs + 2 * this.settings.leaseTtlMs;
        this.go('release');
        return { kind: 'release' };
      }
      if (nowMs >= this.nextRenewAtMs) return { kind: 'renew' };
      if (local.role !== 'primary') return null;
      const state = this.record?.state;
      const electable = this.electableNow(local);
      if (state != null && (!sameSet(state.electable, electable) || state.epoch < local.epoch)) {
        return { kind: 'set-electable', epoch: Math.max(state.epoch, local.epoch), electable, expectStateRevision: state.modRevision };
      }
      return null;
    }
    if (nowMs < this.nextReadAtMs) return null;
    const record = this.record;
    if (record === null || this.promoting) return { kind: 'read' };
    const claim = this.claimFor(nowMs, local, record);
    if (claim === null) {
      if (this.operatorClaim && nowMs >= this.noClaimBeforeMs) this.endOperatorClaim(`etcd says no: ${describe(record)}`);
      return { kind: 'read' };
    }
    this.go('claim');
    return claim;
  }

  /** A claim this node should make now, given what etcd said last; null: none. */
  private claimFor(nowMs: number, local: LocalView, record: ArbiterRecord): ArbiterOp | null {
    const me = this.settings.node;
    if (record.leader !== null || nowMs < this.noClaimBeforeMs) return null;
    const state = record.state;
    if (local.role === 'primary') {
      // Take (or take back) the leader key at our own epoch: at first start (no state yet), or
      // after our lease lapsed while no one else was promoted.
      if (state === null) return { kind: 'claim', epoch: local.epoch, expectStateRevision: 0, electable: this.electableNow(local) };
      // Our own later epoch (a primary restarted cleanly takes a new one) replaces ours: no one
      // else was promoted since, or the state would name them.
      if (state.primary === me && state.epoch <= local.epoch) return { kind: 'claim', epoch: local.epoch, expectStateRevision: state.modRevision, electable: state.electable };
      return null;
    }
    if ((!this.settings.autoFailover && !this.operatorClaim) || state === null || !local.mayPromote) return null;
    if (!state.electable.includes(me) || local.epoch < state.epoch) return null;
    if (local.peers.some((p) => p.linkUp && p.role === 'primary')) return null; // it lives: no failover
    return { kind: 'claim', epoch: Math.max(state.epoch, local.epoch) + 1, expectStateRevision: state.modRevision, electable: this.settings.electableAll ? this.electableNow(local) : [me] };
  }

  /** Electable now: this node and the peers in sync with it (with electableAll, every node). */
  private electableNow(local: LocalView): string[] {
    const peers = this.settings.electableAll ? this.settings.peers : local.peers.filter((p) => p.linkUp && p.inSync).map((p) => p.name);
    return [this.settings.node, ...peers].sort();
  }

  /**
   * etcd answered `op` (sent at local time sentAtMs). Renewals extend the deadline from when they
   * were sent, never from when they were answered (see the header).
   */
  done(result: ArbiterResult, sentAtMs: number, nowMs: number, local: LocalView): void {
    const op = this.inFlight;
    assert(op !== null, 'an etcd answer with no request in flight');
    this.inFlight = null;
    if (result.kind === 'unreachable') {
      if (!this.unreachable) this.actions.push({ kind: 'log', level: 'warn', msg: `arbiter: etcd unreachable (${result.error})`, fields: { state: this.state } });
      this.unreachable = true;
      this.lastError = result.error;
      this.go('unreachable');
      if (op.kind === 'claim') this.noClaimBeforeMs = nowMs + this.settings.pollIntervalMs;
      this.endOperatorClaim(`etcd is unreachable (${result.error})`);
      this.nextReadAtMs = nowMs + this.settings.pollIntervalMs;
      this.nextRenewAtMs = nowMs + Math.min(this.settings.pollIntervalMs, this.settings.renewIntervalMs);
      return;
    }
    if (this.unreachable) this.actions.push({ kind: 'log', level: 'info', msg: 'arbiter: etcd reachable again' });
    this.unreachable = false;
    this.lastError = null;
    switch (result.kind) {
      case 'read': {
        this.record = result.record;
        const primaryLives = local.role === 'primary' || local.peers.some((p) => p.linkUp && p.role === 'primary');
        this.nextReadAtMs = nowMs + (primaryLives ? this.settings.pollIntervalMs : this.settings.fastPollIntervalMs);
        this.afterRead(local);
        return;
      }
      case 'claimed': {
        assert(op.kind === 'claim', 'claimed answers a claim');
        this.go('claimed');
        this.record = result.record;
        this.extend(sentAtMs, nowMs);
        this.actions.push({ kind: 'log', level: 'info', msg: 'arbiter: this node holds the leader lease', fields: { epoch: op.epoch } });
        if (local.role !== 'primary') {
          this.promoting = true;
          this.actions.push({ kind: 'promote', epoch: op.epoch });
        }
        return;
      }
      case 'claim-refused':
        this.go('claim-refused');
        this.endOperatorClaim(`etcd refused the claim: ${describe(result.record)}`);
        this.record = result.record;
        this.nextReadAtMs = nowMs + this.settings.pollIntervalMs;
        this.afterRead(local);
        return;
      case 'renewed':
        if (result.remainingMs > 0) {
          this.go('renewed');
          this.extend(sentAtMs, nowMs);
          return;
        }
        this.lapse(nowMs, 'the lease lapsed on etcd');
        return;
      case 'electable-set':
        this.go('electable');
        this.record = result.record;
        this.actions.push({ kind: 'log', level: 'info', msg: 'arbiter: electable nodes changed', fields: { electable: result.record.state?.electable } });
        return;
      case 'electable-refused':
        // The state key changed under us: someone else was promoted. Stop at once.
        this.record = result.record;
        this.lapse(nowMs, 'the state in etcd changed under this leader');
        return;
      case 'released':
        this.go('released');
        this.deadlineMs = -Infinity;
        this.nextReadAtMs = nowMs;
        return;
    }
  }

  private extend(sentAtMs: number, nowMs: number): void {
    const { leaseTtlMs, clockRateMargin, guardMs, renewIntervalMs } = this.settings;
    this.deadlineMs = sentAtMs + leaseTtlMs / (1 + clockRateMargin) - guardMs;
    this.nextRenewAtMs = sentAtMs + renewIntervalMs;
    if (this.nextRenewAtMs <= nowMs) this.nextRenewAtMs = nowMs;
  }

  private lapse(nowMs: number, why: string): void {
    this.go('lapsed');
    this.deadlineMs = -Infinity;
    this.nextReadAtMs = nowMs;
    this.actions.push({ kind: 'log', level: 'warn', msg: `arbiter: ${why}: writes wait until this node holds the lease again` });
  }

  /**
   * A fresh read: a primary that another node replaced demotes itself; a secondary in split brain
   * with the primary etcd names discards its own changes. That primary won etcd's transaction while
   * electable, so it holds every write any primary acknowledged (the header): what this node has
   * beyond it was never acknowledged — a fenced primary's epoch taken alone when its link dropped
   * (markDiverging), its unanswered writes. Without this a frozen or cleanly stopped primary would
   * come back as a split brain that waits for a person.
   */
  private afterRead(local: LocalView): void {
    const state = this.record?.state;
    if (state == null) return;
    const named = local.peers.find((p) => p.name === state.primary);
    const split = local.role === 'secondary' && named !== undefined && named.linkUp && named.splitBrain;
    if (split && !this.discarding) this.actions.push({ kind: 'discard-local', primary: state.primary, epoch: state.epoch });
    this.discarding = split;
    if (local.role !== 'primary') return;
    const leader = this.record!.leader;
    const replaced = (leader !== null && leader.node !== this.settings.node) || state.epoch > local.epoch || (state.primary !== this.settings.node && state.epoch >= local.epoch);
    if (replaced && !this.promoting) this.actions.push({ kind: 'demote', reason: `etcd says ${leader?.node ?? state.primary} is primary at epoch ${state.epoch} (this node: epoch ${local.epoch})` });
  }

  /**
   * An operator's promote (issue 13 item 5): the same claim an automatic failover makes, at the
   * next poll; its end comes as an operator-claim-ended action. Refused at once where etcd, as
   * last read, already says no.
   */
  claimForOperator(nowMs: number, local: LocalView): string | null {
    const record = this.record;
    if (record === null) return 'the arbiter has not reached etcd yet';
    if (this.unreachable) return `etcd is unreachable (${this.lastError ?? 'no answer'})`;
    if (local.role === 'primary') return 'already primary';
    if (this.operatorClaim || this.promoting || this.state !== 'follower') return 'a promotion is already under way';
    if (record.leader !== null) return `etcd says node ${record.leader.node} holds the leader lease (epoch ${record.leader.epoch}): demote it first`;
    if (record.state !== null && !record.state.electable.includes(this.settings.node)) return `etcd says this node may lack acknowledged writes (electable: ${record.state.electable.join(', ')})`;
    if (!local.mayPromote) return 'a resync into this node has not finished: its data is incomplete';
    this.operatorClaim = true;
    this.noClaimBeforeMs = 0;
    this.nextReadAtMs = nowMs;
    return null;
  }

  private endOperatorClaim(error: string | null): void {
    if (!this.operatorClaim) return;
    this.operatorClaim = false;
    this.actions.push({ kind: 'operator-claim-ended', error });
  }

  /** The shell's promotion ended (error null: this node serves writes now). */
  promoted(error: string | null, nowMs: number): void {
    this.promoting = false;
    this.endOperatorClaim(error);
    if (error === null) return;
    this.noClaimBeforeMs = nowMs + 2 * this.settings.pollIntervalMs;
    this.actions.push({ kind: 'log', level: 'warn', msg: `arbiter: won the leader key but the promotion failed (${error}): releasing it` });
  }
}

function describe(record: ArbiterRecord): string {
  const leader = record.leader === null ? 'no leader' : `leader ${record.leader.node} at epoch ${record.leader.epoch}`;
  const state = record.state === null ? '' : `, epoch ${record.state.epoch}, electable ${record.state.electable.join(', ')}`;
  return `${leader}${state}`;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}
