// The two-phase promotion's bookkeeping (link-codec PromoteReqMessage; replica.ts `promote`), a
// part the replica core owns: it holds the proposal this node made and the peer proposals it
// adopted, and answers what to send when each becomes durable. It decides nothing about roles and
// calls nothing back: the core asks, and acts on the answers. Pure.
//
// Proposer: propose() (its proposedEpoch persist is in flight) → persisted(token) says "send the
// promoteReq now" → the peer's promoteAck is matched by answer(id) → the core becomes primary, or
// reports the refusal. Confirmer: confirmWhenDurable(token, id) after adopting the peer's history →
// persisted(token) says "send the promoteAck now". A link loss ends both (abandon).
import { assert } from './assert.js';
import type { EpochEntry } from './epochs.js';

export interface Proposal {
  /** The promoteReq's id on the link. */
  readonly id: number;
  /** The shell's request, answered by a promote-done action. */
  readonly requestId: number;
  /** This node's history with the proposed entry appended. */
  readonly history: EpochEntry[];
}

export class PromotionHandshake {
  /** Our proposal, and the persist token of its proposedEpoch until that is durable (then null). */
  private proposal: (Proposal & { proposalToken: number | null }) | null = null;
  /** Peer proposals we adopted: persist token → promoteReq id and its epoch, confirmed once the token is durable. */
  private readonly confirmations = new Map<number, { id: number; epoch: number; peer: string }>();

  /** A proposal of ours waits for the peer's confirmation. */
  get pending(): boolean {
    return this.proposal !== null;
  }

  /** The id of our pending proposal's promoteReq (null: none). */
  get proposalId(): number | null {
    return this.proposal?.id ?? null;
  }

  /** Records our proposal; its promoteReq goes out once persist `proposalToken` is durable. */
  propose(proposal: Proposal, proposalToken: number): void {
    assert(this.proposal === null, 'one promotion at a time');
    this.proposal = { ...proposal, proposalToken };
  }

  /** After adopting the peer's proposal: confirm it once persist `token` is durable. */
  confirmWhenDurable(token: number, promoteReqId: number, epoch: number, peer: string): void {
    this.confirmations.set(token, { id: promoteReqId, epoch, peer });
  }

  /** Persist `token` is durable: the promoteReq and promoteAck that may go out now. */
  persisted(token: number): { promoteReq: { id: number; history: EpochEntry[] } | null; promoteAck: { id: number; epoch: number; peer: string } | null } {
    let promoteReq: { id: number; history: EpochEntry[] } | null = null;
    if (this.proposal?.proposalToken === token) {
      this.proposal.proposalToken = null;
      promoteReq = { id: this.proposal.id, history: this.proposal.history };
    }
    const promoteAck = this.confirmations.get(token) ?? null;
    this.confirmations.delete(token);
    return { promoteReq, promoteAck };
  }

  /** The peer's promoteAck `id`: the proposal it answers (now ended), or null if none matches. */
  answer(id: number): Proposal | null {
    const proposal = this.proposal;
    if (proposal === null || proposal.id !== id) return null;
    this.proposal = null;
    return proposal;
  }

  /** Ends our proposal (cancelled, or the link dropped): its request id, or null if none was pending. */
  end(): number | null {
    const proposal = this.proposal;
    this.proposal = null;
    return proposal?.requestId ?? null;
  }

  /** The link to `peer` dropped: confirmations of its proposals are moot (it retries on a new link). */
  dropConfirmations(peer: string): void {
    for (const [token, c] of this.confirmations) if (c.peer === peer) this.confirmations.delete(token);
  }
}
