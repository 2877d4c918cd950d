// The peer state as data: a table of (state × event) → next state, and one place that moves along
// it (in the manner of h11's _state.py). Pure.
//
// Theory of operation. The peer state is this node's view of its relation with its peer
// (DESIGN.md "Interfaces", `peers[].state` in /status):
//
//   standalone  the config has one node: no peer, no link, no event ever applies.
//   connecting  no decision on this link yet, as a node that does not serve writes alone (a
//               secondary; or a primary about to step down as a resync target).
//   degraded    no decision yet (or no link), as a primary that serves writes alone: every write
//               joins the out-of-sync set (seed: "a further record"). A node demoted, or chosen
//               as resync target, keeps it until the next event (no event fires for a demote).
//   resyncing   the link is up and a resync runs, this node being its source or its target.
//   in-sync     the link is up and every write is mirrored (seed Fig. 4).
//   split-brain both sides were primary since their last common epoch: nothing is mirrored until
//               an operator resolves it; link loss and forced promotion do not clear it.
//
// The events are named after what happened, not after the state they lead to, so that an event
// arriving in a state where it cannot happen is caught here (an assertion: a checked comment in
// TigerBeetle's sense) instead of silently moving the node somewhere wrong. A pair of events per
// link edge (`AsPrimary` / `AsSecondary`) keeps the table free of conditions: the node's role at
// the time decides which one the core fires. Events that leave the state as it is are still
// listed where they are legal, so that "legal" and "changes the state" stay two separate facts.
import { assert } from './assert.js';
import type { PeerState, Role } from './replica-types.js';

export type PeerEvent =
  /** The link came up (linkEstablished); the state exchange starts. */
  | 'linkUpAsPrimary' | 'linkUpAsSecondary'
  /** The link went down (reset, heartbeat timeout, shutdown). */
  | 'linkDownAsPrimary' | 'linkDownAsSecondary'
  /** This node became primary with the link down (a failover, or forced). */
  | 'promotedAlone'
  /** This node became primary with the link up and no resync of ours running: decide afresh. */
  | 'promotedConnected'
  /** The state exchange found diverged histories (src/core/resync.ts decideSync). */
  | 'splitBrainDetected'
  /** The state exchange made this node the resync target; the source's syncStart follows. */
  | 'targetChosen'
  /** The state exchange made this node the resync source: it sends syncStart now. */
  | 'resyncStarted'
  /** The peer's syncStart arrived: this node is the target of its resync. */
  | 'resyncStartReceived'
  /** The target of this node's resync was promoted (--force): the resync ends; the pair decides afresh. */
  | 'targetPromoted'
  /** This node sent the last chunk and syncDone of its resync. */
  | 'resyncSent'
  /** The peer's syncDone arrived at the end of the resync into this node. */
  | 'resyncReceived'
  /** An operator resolved the split brain against this node (resolve --discard-local). */
  | 'splitBrainResolved'
  /**
   * Among three or more nodes, two secondaries in split brain hold the same history again (the
   * discarding one was resynced by a primary): nothing is left to resolve between them.
   */
  | 'splitBrainHealed'
  /**
   * Among three or more nodes, the primary of an in-sync link steps down (this node's demote, or
   * the peer seen secondary): two secondaries mirror nothing to each other, and the next primary
   * decides afresh. Left in sync, a secondary still counted itself in sync with a peer that was
   * promoted again later, before that peer's resync reached it (simulator, five nodes, seed
   * 50000329: its read-only export then lacked an acknowledged write).
   */
  | 'primaryStepsDown';

type Row = Readonly<Partial<Record<PeerEvent, PeerState>>>;

/** Link edges: the role decides; a split brain outlives the link (it needs an operator). */
const linkEdges = (splitBrain: boolean): Row => ({
  linkUpAsPrimary: splitBrain ? 'split-brain' : 'degraded',
  linkUpAsSecondary: splitBrain ? 'split-brain' : 'connecting',
  linkDownAsPrimary: splitBrain ? 'split-brain' : 'degraded',
  linkDownAsSecondary: splitBrain ? 'split-brain' : 'connecting',
});

/** Link down only: in-sync and resyncing exist only while the link is up. */
const linkDownEdges: Row = { linkDownAsPrimary: 'degraded', linkDownAsSecondary: 'connecting' };

/** Waiting for a decision (connecting or degraded): the state exchange decides. */
const undecided = (self: PeerState): Row => ({
  ...linkEdges(false),
  promotedAlone: 'degraded',
  promotedConnected: 'degraded',
  splitBrainDetected: 'split-brain',
  targetChosen: self, // stays until the source's syncStart arrives
  resyncStarted: 'resyncing',
  resyncStartReceived: 'resyncing',
});

export const PEER_TRANSITIONS: Readonly<Record<PeerState, Row>> = {
  standalone: {},
  connecting: undecided('connecting'),
  degraded: undecided('degraded'),
  resyncing: {
    ...linkDownEdges,
    // A forced promotion of the target ends the resync into it; the pair decides afresh. (A
    // promotion of the source keeps its resync running and fires no event.)
    promotedConnected: 'degraded',
    // The target's forced promotion, seen by the source: undecided only until the state
    // exchange decides, at once (this node becomes the target, or sees a split brain).
    targetPromoted: 'connecting',
    resyncSent: 'in-sync',
    resyncReceived: 'in-sync',
  },
  'in-sync': {
    ...linkDownEdges,
    // A planned switchover: the pair decides afresh on the new epoch (a resync of nothing).
    promotedConnected: 'degraded',
    // The peer's newer state while in sync (a forced promotion on its side, say).
    splitBrainDetected: 'split-brain',
    targetChosen: 'in-sync',
    resyncStarted: 'resyncing',
    resyncStartReceived: 'resyncing',
    primaryStepsDown: 'connecting',
  },
  'split-brain': {
    ...linkEdges(true),
    promotedAlone: 'split-brain',
    promotedConnected: 'degraded', // decided again at once, usually back to split-brain
    splitBrainDetected: 'split-brain',
    // The peer's operator resolved it against the peer: the exchange now picks a side.
    targetChosen: 'connecting',
    resyncStarted: 'resyncing',
    splitBrainResolved: 'connecting',
    splitBrainHealed: 'connecting',
  },
};

/** The state `event` leads to from `state`, or null when the event cannot happen there. */
export function nextPeerState(state: PeerState, event: PeerEvent): PeerState | null {
  return PEER_TRANSITIONS[state][event] ?? null;
}

/** Where a node starts: alone, or waiting for its peer as primary (degraded) or secondary. */
export function initialPeerState(mirrored: boolean, role: Role): PeerState {
  if (!mirrored) return 'standalone';
  return role === 'primary' ? 'degraded' : 'connecting';
}

/** The peer state, changed only by legal events. */
export class PeerStateMachine {
  private current: PeerState;

  constructor(initial: PeerState) {
    this.current = initial;
  }

  get state(): PeerState {
    return this.current;
  }

  /** Applies `event`; an event the table does not list for the current state is a bug. */
  apply(event: PeerEvent): PeerState {
    const next = nextPeerState(this.current, event);
    assert(next !== null, `peer state: event ${event} cannot happen in state ${this.current}`);
    this.current = next;
    return next;
  }

  /** The link event for this role (the table keeps roles out of its conditions). */
  static linkEvent(edge: 'up' | 'down', role: Role): PeerEvent {
    if (edge === 'up') return role === 'primary' ? 'linkUpAsPrimary' : 'linkUpAsSecondary';
    return role === 'primary' ? 'linkDownAsPrimary' : 'linkDownAsSecondary';
  }
}
