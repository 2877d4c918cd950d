// The data path's quorum part (issue 12): a primary with `quorum: majority` answers writes only
// while it reaches a majority of the configured nodes, itself included (DESIGN.md "Durability
// policy"). This part keeps the arithmetic, what the node says about it, and the writes held for
// it; the data path (replica-data.ts) counts the nodes it reaches and moves the writes. Pure.
import type { QuorumSettings, QuorumView, ReplicaAction } from './replica-types.js';

export class QuorumPart<Held> {
  /**
   * Applied here and sent, but the link dropped before the peer acknowledged them
   * (`onNoQuorum: suspend-io`): sent again, first of all, once quorum returns.
   */
  readonly awaiting: Held[] = [];
  /** Host writes were held back, unapplied: they go on once quorum returns. */
  held = false;
  /** Nodes a primary needs to answer writes: a majority of the configured ones, or itself alone. */
  readonly need: number;
  /** A majority of the configured nodes (`ack: quorum` answers a write once that many hold it). */
  readonly majority: number;
  /** Quorum as last logged (null: not yet), so that the log says when it is lost and regained. */
  private logged: boolean | null = null;

  constructor(readonly settings: QuorumSettings, readonly configuredNodes: number) {
    this.majority = Math.floor(configuredNodes / 2) + 1;
    this.need = settings.policy === 'majority' ? this.majority : 1;
  }

  /** May a primary reaching `reachableNodes` (itself included) answer writes? */
  ok(reachableNodes: number): boolean {
    return reachableNodes >= this.need;
  }

  view(reachableNodes: number): QuorumView {
    return { policy: this.settings.policy, have: reachableNodes, need: this.need, ok: this.ok(reachableNodes) };
  }

  /** The one line a host's EIO, a refused promote and the log give. */
  message(reachableNodes: number): string {
    return `no quorum: this node reaches ${reachableNodes} of ${this.configuredNodes} nodes and needs ${this.need} (quorum: ${this.settings.policy})`;
  }

  /** Held writes may go on: quorum is back. */
  mayResume(reachableNodes: number): boolean {
    return (this.held || this.awaiting.length > 0) && this.ok(reachableNodes);
  }

  /** The log line when quorum is reached (again) or lost since the last call, else null. */
  logIfChanged(reachableNodes: number): ReplicaAction | null {
    const ok = this.ok(reachableNodes);
    if (this.settings.policy === 'off' || ok === this.logged) return null;
    this.logged = ok;
    const fields = { have: reachableNodes, need: this.need };
    if (ok) return { kind: 'log', level: 'info', msg: 'quorum: reached, host writes are answered', fields };
    const what = this.settings.onNoQuorum === 'io-error' ? 'fail with EIO' : 'wait';
    return { kind: 'log', level: 'warn', msg: `${this.message(reachableNodes)}: host writes ${what} until it returns`, fields: { ...fields, onNoQuorum: this.settings.onNoQuorum } };
  }
}
