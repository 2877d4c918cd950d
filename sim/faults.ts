// The fault injector and the operator. Faults come at random gaps while the workload runs; the
// operator does what issue 5 asks a person (or a monitor) to do: after the primary dies, promote
// the survivor; from time to time, switch roles over while in sync (demote, then promote), or stop
// a node cleanly (SIGTERM) and start it again.
//
// The seed promises survival of any *single* failure, so the injector never stacks two failures
// that could lose data: the primary may crash only while the pair is in sync on a live link (the
// secondary then holds every acknowledged write), the secondary only while the primary is up,
// and nothing crashes while the operator is in the middle of a failover or switchover. Link faults
// (drop, partition, corrupt frame) and store write errors may come at any time: alone they lose
// nothing.
//
// Three nodes or more (issue 12 item 8): any link may drop or carry a corrupt frame, a partition
// cuts one link or one node off from the rest, a secondary may stall (stop reading) or be slow,
// and the operator promotes *any* live secondary after the primary dies — the promotion must then
// find the acknowledged writes wherever they are (it fetches from the most current node). A node
// crashes only while every node is up, and the primary only while enough secondaries are in sync
// with it that they are a majority without it (they hold every acknowledged write, and a
// promotion's survey can tell): each crash is one failure the policy promises to survive.
import type { Scheduler } from './events.js';
import type { Host } from './host.js';
import type { Link, Network } from './network.js';
import type { SimNode } from './node.js';
import type { FaultWeights, SimOptions } from './options.js';
import type { Prng } from './prng.js';

export interface FaultView {
  readonly sched: Scheduler;
  readonly nodes: readonly SimNode[];
  readonly network: Network;
  readonly host: Host;
  readonly opts: SimOptions;
  readonly stats: Record<string, number>;
  readonly healing: boolean;
  trace(line: string): void;
  maybeConnect(): void;
  /** The config role a node starts with on a fresh store. */
  configRole(node: SimNode): 'primary' | 'secondary';
  readonly shellFixes: ReadonlySet<string>;
}

/** Gap between operator retries (a refused promote: the survivor has not noticed the loss yet). */
const OPERATOR_RETRY_MS = 5;
/** How often a switchover is followed at once by another, back. */
const QUICK_SWITCHBACK_CHANCE = 0.25;
/** Among three nodes or more, refused promotes of one secondary before the operator tries another. */
const TRIES_PER_CANDIDATE = 10;

export class Faults {
  /** A failover or switchover in progress: no crash until it is done. */
  private operatorBusy = false;

  constructor(private readonly v: FaultView, private readonly prng: Prng) {}

  get busy(): boolean {
    return this.operatorBusy;
  }

  schedule(): void {
    if (this.v.healing) return;
    this.v.sched.after(this.prng.delay(this.v.opts.faultGapMeanMs), 'fault', () => {
      if (this.v.healing) return;
      this.inject();
      this.schedule();
    });
  }

  private pick(): keyof FaultWeights | 'switchover' | 'cleanRestart' | null {
    const entries: [keyof FaultWeights | 'switchover' | 'cleanRestart', number][] = [
      ...(Object.entries(this.v.opts.faults) as [keyof FaultWeights, number][]),
      ['switchover', this.v.opts.switchoverWeight],
      ['cleanRestart', this.v.opts.cleanRestartWeight],
    ];
    const total = entries.reduce((n, [, w]) => n + w, 0);
    let r = this.prng.int(Math.max(1, total));
    for (const [k, w] of entries) {
      if (r < w) return k;
      r -= w;
    }
    return null;
  }

  private inject(): void {
    const { stats } = this.v;
    switch (this.pick()) {
      case 'drop': {
        const link = this.pickLink((l) => l.liveConnId !== null);
        if (link !== null) { stats.drops!++; link.drop('reset'); }
        return;
      }
      case 'partition': return this.partition();
      case 'corrupt': {
        const link = this.pickLink((l) => l.corruptible);
        if (link?.corrupt() === true) stats.corrupts!++;
        return;
      }
      case 'crashSecondary': return this.crashSecondary();
      case 'crashPrimary': return this.crashPrimary();
      case 'storeFail': {
        const n = this.prng.pick(this.v.nodes.filter((x) => x.alive));
        if (n === undefined) return;
        // Mostly writes (hardening); sometimes a read (a resync's must pause and retry, not stall).
        if (this.prng.chance(0.7)) {
          n.store.failNextWrites++;
          this.v.trace(`${n.name}: next store write fails`);
        } else {
          n.store.failNextReads++;
          this.v.trace(`${n.name}: next store read fails`);
        }
        return;
      }
      case 'stall': return this.stall();
      case 'switchover': return this.switchover();
      case 'cleanRestart': return this.cleanRestart();
      default:
    }
  }

  /** A pair's one link; among more nodes a random one of those that qualify (null: none). */
  private pickLink(ok: (l: Link) => boolean): Link | null {
    const { links } = this.v.network;
    if (links.length === 1) return ok(links[0]!) ? links[0]! : null;
    const candidates = links.filter(ok);
    return candidates.length === 0 ? null : this.prng.pick(candidates);
  }

  /** A drop and no reconnect for a while: the pair's link; or one link, or one node cut off from the rest. */
  private partition(): void {
    const { network, stats } = this.v;
    stats.partitions!++;
    let cut: Link[] = [network.pairLink];
    if (network.links.length > 1) {
      const node = this.prng.int(this.v.nodes.length);
      cut = this.prng.chance(0.5) ? network.linksOf(node) : [this.prng.pick(network.linksOf(node))];
    }
    const until = this.v.sched.nowMs + 1 + this.prng.delay(this.v.opts.partitionMeanMs);
    for (const link of cut) {
      link.drop('partition');
      link.partitionedUntil = Math.max(link.partitionedUntil, until);
    }
    this.v.sched.at(until, 'partition heals', () => this.v.maybeConnect());
  }

  /** A secondary stops reading for a while (SIGSTOP, swapping): its senders queue and meet back-pressure. */
  private stall(): void {
    const primary = this.v.host.primary();
    const victims = this.v.nodes.filter((n) => n !== primary && n.alive);
    if (victims.length === 0) return;
    const victim = this.prng.pick(victims);
    const untilMs = this.v.sched.nowMs + 1 + this.prng.delay(this.v.opts.stallMeanMs);
    this.v.stats.nodeStalls!++;
    this.v.network.stalledUntil[victim.index] = Math.max(this.v.network.stalledUntil[victim.index]!, untilMs);
    this.v.trace(`${victim.name}: stalls until ${untilMs}ms`);
  }

  private get several(): boolean {
    return this.v.nodes.length > 2;
  }

  private crashSecondary(): void {
    if (this.operatorBusy) return;
    const primary = this.v.host.primary();
    if (primary === null) return;
    let victim = this.v.nodes.find((n) => n !== primary && n.alive);
    if (this.several) {
      // One failure at a time: every node up (so one down at most), any secondary.
      if (!this.v.nodes.every((n) => n.alive)) return;
      victim = this.prng.pick(this.v.nodes.filter((n) => n !== primary));
    }
    if (victim === undefined) return;
    this.crash(victim);
  }

  /**
   * A pair: only while in sync (then the secondary holds every acknowledged write, and is
   * promoted). Three nodes or more: every node up, and enough secondaries in sync that every
   * acknowledged write survives on one of them (see the file comment); the operator then promotes
   * any secondary.
   */
  private crashPrimary(): void {
    if (this.operatorBusy) return;
    const primary = this.v.host.primary();
    if (primary === null) return;
    if (this.several) {
      const count = this.v.nodes.length;
      // A promotion's survey needs a majority that knows where it stands in the stream
      // (promotion-survey.ts): a majority must still be intact (in sync) once the primary is gone.
      const need = Math.floor(count / 2) + 1;
      if (!this.v.nodes.every((n) => n.alive) || this.v.host.secondariesInSync().length < need) return;
    } else if (!this.v.host.mirroredNow()) {
      return;
    }
    const survivor = this.v.nodes.find((n) => n !== primary)!;
    this.crash(primary);
    this.operatorBusy = true;
    // The operator notices and promotes: maybe before the old primary is back, maybe after.
    this.v.sched.after(1 + this.prng.delay(this.v.opts.promoteMeanMs), `operator promotes ${this.several ? 'a secondary' : survivor.name}`, () => {
      this.promote(this.several ? this.candidate(primary) : survivor, 0);
    });
  }

  /** Any live node but `not` (three nodes or more: the operator's pick, not the most current). */
  private candidate(not: SimNode): SimNode {
    const live = this.v.nodes.filter((n) => n !== not && n.alive);
    return live.length === 0 ? this.v.nodes.find((n) => n !== not)! : this.prng.pick(live);
  }

  /**
   * SIGTERM and start again (issue 5 item 6: the out-of-sync set survives a clean restart). Either
   * node, but only one failure at a time: not while the other is down or the operator is busy.
   * A primary stopped cleanly comes back primary, so nobody is promoted meanwhile.
   *
   * A stop whose hardening meets a store failure keeps trying (Volume.stop); an operator (or
   * systemd's stop timeout) may lose patience and kill it — but only if the pair was in sync at
   * SIGTERM and no link fault came since: then the kill is the one failure the seed promises to
   * survive. A primary hardens before it leaves its link, so its peer still holds every
   * acknowledged write, and the operator fails over to it as after any crash of the primary. A stop that fails outright (the CLI's "stop failed", exit 1) is a crash too.
   */
  private cleanRestart(): void {
    if (this.operatorBusy || !this.v.nodes.every((n) => n.alive)) return;
    const node = this.prng.pick([...this.v.nodes])!;
    this.v.stats.cleanRestarts!++;
    this.operatorBusy = true;
    // In sync at SIGTERM and no link fault since: the pair is still one failure away from losing
    // anything, however the stop treats its link (leaving it first lost writes: seed 551).
    const inSyncAtStop = this.v.host.mirroredNow();
    const linkFaultsAtStop = this.linkFaults();
    // node.ts closes the NBD server first; Volume.stop leaves the link when it is ready to.
    this.v.host.nodeCrashed(node);
    let down = false;
    const died = (): void => {
      down = true;
      this.v.host.nodeCrashed(node);
    };
    node.stopCleanly(() => this.v.network.nodeCrashed(node.index), (clean) => {
      died();
      if (!clean) return this.stopDied(node, false);
      const downMs = this.v.healing ? 1 : 1 + this.prng.delay(this.v.opts.downMeanMs);
      this.v.sched.after(downMs, `restart ${node.name}`, () => {
        this.operatorBusy = false;
        this.restart(node);
      });
    });
    const patienceMs = 1 + this.prng.delay(this.v.opts.storeRetryMs);
    this.v.sched.after(patienceMs, `operator's patience with ${node.name}'s stop`, () => {
      if (down || !node.stopStuck || !inSyncAtStop || this.linkFaults() !== linkFaultsAtStop) return;
      // Still connected (the peer's status says so), or it had hardened all and left its link.
      const connected = this.v.host.mirroredNow();
      this.v.trace(`operator: ${node.name}'s stop keeps failing: second signal (exit 1 at once), ${connected ? 'still connected' : 'link already left'}`);
      this.v.stats.stopKills!++;
      // A signal kills the process; the machine keeps its power and page cache. A power loss
      // here is a crash like any other, so only where the injector may crash this node at all: a
      // primary still connected in sync, or a secondary. A primary past its link is not in sync,
      // and its store may hold sectors a failed fdatasync left in limbo that only its peer still
      // has; back in its new epoch it would resync those holes over the peer (seeds 7000498,
      // 7000962).
      node.crash(connected || node.core?.role !== 'primary');
      this.v.network.nodeCrashed(node.index);
      died();
      this.stopDied(node, connected);
    });
  }

  private linkFaults(): number {
    const { drops, partitions, corrupts } = this.v.stats;
    return drops! + partitions! + corrupts!;
  }

  /**
   * A node died in its stop: killed while still connected in sync, or after it had hardened all
   * and left its link (killed, or failed outright: closing the store or the last metadata write
   * failed). It comes back secondary (no clean shutdown). If nobody is primary then, the operator
   * promotes someone, or nobody would ever be again (seeds 1202, 1320, 1966 waited forever so):
   * killed in sync, the survivor (it holds every acknowledged write), as after any crash of the
   * primary; past its link, the node itself once it is back (it hardened everything, and alone in
   * a new epoch it is the newer side: promoting the survivor instead is a split brain, seed 4211).
   */
  private stopDied(node: SimNode, inSync: boolean): void {
    const survivor = this.several ? this.candidate(node) : this.v.nodes.find((n) => n !== node)!;
    const leaderless = this.v.host.primary() === null;
    const downMs = this.v.healing ? 1 : 1 + this.prng.delay(this.v.opts.downMeanMs);
    this.v.sched.after(downMs, `restart ${node.name}`, () => {
      this.restart(node);
      if (leaderless && !inSync) this.promote(node, 0);
    });
    if (leaderless && inSync) {
      this.v.sched.after(1 + this.prng.delay(this.v.opts.promoteMeanMs), `operator promotes ${survivor.name}`, () => this.promote(survivor, 0));
    } else if (!leaderless) {
      this.operatorBusy = false;
    }
  }

  crash(node: SimNode): void {
    this.v.stats.crashes!++;
    node.crash();
    this.v.network.nodeCrashed(node.index);
    this.v.host.nodeCrashed(node);
    const downMs = this.v.healing ? 1 : 1 + this.prng.delay(this.v.opts.downMeanMs);
    this.v.sched.after(downMs, `restart ${node.name}`, () => this.restart(node));
  }

  restart(node: SimNode): void {
    if (node.alive) return;
    node.start(this.v.configRole(node));
    this.v.maybeConnect();
  }

  /** `twinblock promote` until it succeeds; refusals are expected while the old link lingers. */
  private promote(node: SimNode, attempt: number, promoted?: () => void): void {
    if (this.several) {
      // Among three nodes or more a refused (or dead) candidate is not the end: another secondary
      // may be promoted. Never --force: it would promote without a majority's survey.
      if (this.v.nodes.some((n) => n.alive && n.core!.role === 'primary')) { this.operatorBusy = false; return; }
      if (!node.alive || (attempt > 0 && attempt % TRIES_PER_CANDIDATE === 0)) node = this.candidate(node);
      if (!node.alive) {
        this.v.sched.after(OPERATOR_RETRY_MS, `operator retries`, () => this.promote(node, attempt + 1, promoted));
        return;
      }
    }
    if (!node.alive) { this.operatorBusy = false; return; }
    if (node.core!.role === 'primary') { this.operatorBusy = false; return; }
    // After many refusals an operator reaches for --force (e.g. "still being resynced").
    const force = attempt >= 40 && !this.several;
    // Connected, the verdict comes once the peer confirmed (or refused, or the link dropped).
    node.promote(force, (error) => {
      this.v.trace(`operator: promote ${node.name}${force ? ' --force' : ''}: ${error ?? 'ok'}`);
      if (error === null) {
        this.v.stats.promotions!++;
        this.operatorBusy = false;
        promoted?.();
        return;
      }
      this.v.sched.after(OPERATOR_RETRY_MS, `operator retries ${node.name}`, () => this.promote(node, attempt + 1, promoted));
    });
  }

  /** Failback (issue 5 item 5): demote the primary, wait for its writes to drain, promote the other. */
  private switchover(): void {
    if (this.operatorBusy || !this.v.host.mirroredNow()) return;
    const from = this.v.host.primary();
    if (from === null) return;
    const to = this.several ? this.candidate(from) : this.v.nodes.find((n) => n !== from)!;
    this.operatorBusy = true;
    // The operator promotes the other side once the demoted node has drained (sim/node.ts demote).
    from.demote((error) => {
      this.v.trace(`operator: demote ${from.name}: ${error ?? 'ok'}`);
      if (error !== null) {
        this.operatorBusy = false;
        return;
      }
      this.v.stats.switchovers!++;
      this.promote(to, 0, () => {
        // Sometimes the operator switches straight back (a failback right after a failover): the
        // old primary may not know the new epoch yet (seed 3337's shape).
        if (this.prng.chance(QUICK_SWITCHBACK_CHANCE)) this.v.sched.after(this.prng.int(3), 'operator switches back', () => this.switchover());
      });
    });
  }
}
