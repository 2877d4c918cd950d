// Issue 12's quorum arithmetic and what the node says about it: a primary with `quorum: majority`
// answers writes only while it reaches a majority of the configured nodes, itself included
// (DESIGN.md "Durability policy"). Pure; the data path (replica-data.ts) counts what it reaches.
import type { QuorumSettings, QuorumView, ReplicaAction } from './replica-types.js';

/** Nodes a primary needs to answer writes: a majority of the configured ones, or itself alone. */
export function neededNodes(policy: QuorumSettings['policy'], configuredNodes: number): number {
  return policy === 'majority' ? Math.floor(configuredNodes / 2) + 1 : 1;
}

export function quorumView(policy: QuorumSettings['policy'], reachableNodes: number, configuredNodes: number): QuorumView {
  const need = neededNodes(policy, configuredNodes);
  return { policy, have: reachableNodes, need, ok: reachableNodes >= need };
}

/** The one line a host's EIO, a refused promote and the log give. */
export function noQuorumMessage(view: QuorumView, configuredNodes: number): string {
  return `no quorum: this node reaches ${view.have} of ${configuredNodes} nodes and needs ${view.need} (quorum: ${view.policy})`;
}

/** The log line when quorum is reached (again) or lost. */
export function quorumLog(view: QuorumView, configuredNodes: number, onNoQuorum: QuorumSettings['onNoQuorum']): ReplicaAction {
  const fields = { have: view.have, need: view.need };
  if (view.ok) return { kind: 'log', level: 'info', msg: 'quorum: reached, host writes are answered', fields };
  const what = onNoQuorum === 'io-error' ? 'fail with EIO' : 'wait';
  return { kind: 'log', level: 'warn', msg: `${noQuorumMessage(view, configuredNodes)}: host writes ${what} until it returns`, fields: { ...fields, onNoQuorum } };
}
