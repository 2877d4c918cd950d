// The peer-state table (src/core/peer-state.ts): every legal transition leads where the design
// says (DESIGN.md "Failures"), and every other (state, event) pair is refused by an assertion and
// leaves the state as it was. The expected table is written out here by hand, independently of the
// source's table, so a changed edge in either place fails the test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initialPeerState, PEER_TRANSITIONS, PeerStateMachine, type PeerEvent } from '../src/core/peer-state.js';
import { PAIR_QUORUM_DEFAULTS, type PeerState } from '../src/core/replica-types.js';
import { ReplicaCore, type ReplicaSettings } from '../src/core/replica.js';

const states: PeerState[] = ['standalone', 'connecting', 'degraded', 'resyncing', 'in-sync', 'split-brain'];
const events: PeerEvent[] = [
  'linkUpAsPrimary', 'linkUpAsSecondary', 'linkDownAsPrimary', 'linkDownAsSecondary', 'promotedAlone', 'promotedConnected',
  'splitBrainDetected', 'targetChosen', 'resyncStarted', 'resyncStartReceived', 'targetPromoted', 'resyncSent', 'resyncReceived', 'splitBrainResolved',
  'splitBrainHealed', 'primaryStepsDown',
];

/** [from, event, to]: the legal transitions, and only those. */
const legal: [PeerState, PeerEvent, PeerState][] = [
  ...(['connecting', 'degraded'] as const).flatMap((s): [PeerState, PeerEvent, PeerState][] => [
    [s, 'linkUpAsPrimary', 'degraded'], [s, 'linkUpAsSecondary', 'connecting'],
    [s, 'linkDownAsPrimary', 'degraded'], [s, 'linkDownAsSecondary', 'connecting'],
    [s, 'promotedAlone', 'degraded'], [s, 'promotedConnected', 'degraded'],
    [s, 'splitBrainDetected', 'split-brain'], [s, 'targetChosen', s],
    [s, 'resyncStarted', 'resyncing'], [s, 'resyncStartReceived', 'resyncing'],
  ]),
  ['resyncing', 'linkDownAsPrimary', 'degraded'], ['resyncing', 'linkDownAsSecondary', 'connecting'],
  ['resyncing', 'promotedConnected', 'degraded'], ['resyncing', 'targetPromoted', 'connecting'], ['resyncing', 'resyncSent', 'in-sync'], ['resyncing', 'resyncReceived', 'in-sync'],
  ['in-sync', 'linkDownAsPrimary', 'degraded'], ['in-sync', 'linkDownAsSecondary', 'connecting'],
  ['in-sync', 'promotedConnected', 'degraded'], ['in-sync', 'splitBrainDetected', 'split-brain'], ['in-sync', 'targetChosen', 'in-sync'],
  ['in-sync', 'resyncStarted', 'resyncing'], ['in-sync', 'resyncStartReceived', 'resyncing'], ['in-sync', 'primaryStepsDown', 'connecting'],
  ['split-brain', 'linkUpAsPrimary', 'split-brain'], ['split-brain', 'linkUpAsSecondary', 'split-brain'],
  ['split-brain', 'linkDownAsPrimary', 'split-brain'], ['split-brain', 'linkDownAsSecondary', 'split-brain'],
  ['split-brain', 'promotedAlone', 'split-brain'], ['split-brain', 'promotedConnected', 'degraded'],
  ['split-brain', 'splitBrainDetected', 'split-brain'], ['split-brain', 'targetChosen', 'connecting'],
  ['split-brain', 'resyncStarted', 'resyncing'], ['split-brain', 'splitBrainResolved', 'connecting'],
  ['split-brain', 'splitBrainHealed', 'connecting'],
];

test('peer state: every legal transition leads to the state the design names', () => {
  for (const [from, event, to] of legal) {
    const machine = new PeerStateMachine(from);
    assert.equal(machine.apply(event), to, `${from} --${event}-->`);
    assert.equal(machine.state, to);
  }
});

test('peer state: every other (state, event) pair throws and leaves the state unchanged', () => {
  const isLegal = new Set(legal.map(([from, event]) => `${from}/${event}`));
  let refused = 0;
  for (const from of states) {
    for (const event of events) {
      if (isLegal.has(`${from}/${event}`)) continue;
      const machine = new PeerStateMachine(from);
      assert.throws(() => machine.apply(event), new RegExp(`assertion failed: peer state: event ${event} cannot happen in state ${from}`));
      assert.equal(machine.state, from);
      refused++;
    }
  }
  // A standalone node has no peer: no event at all applies to it.
  assert.ok(refused >= events.length);
  // The source's table lists exactly the legal pairs (no extra edge hides behind the loop above).
  const tableSize = Object.values(PEER_TRANSITIONS).reduce((n, row) => n + Object.keys(row).length, 0);
  assert.equal(tableSize, legal.length);
});

test('peer state: a node starts standalone, or waiting for its peer by role', () => {
  assert.equal(initialPeerState(false, 'primary'), 'standalone');
  assert.equal(initialPeerState(true, 'primary'), 'degraded');
  assert.equal(initialPeerState(true, 'secondary'), 'connecting');
});

function settings(mirrored: boolean): ReplicaSettings {
  return {
    node: 'a', peers: mirrored ? ['b'] : [], role: 'primary', mirrored, tracker: 'destage-scan', flush: 'memory', degraded: 'write-through', quorum: PAIR_QUORUM_DEFAULTS,
    geometry: { volumeSizeBytes: 1 << 20, trackSizeBytes: 64 << 10, rangeTracks: 4, capacityBytes: 1 << 20 },
    hardening: { maxDirtyAgeMs: 200, destageIntervalMs: 50, rangeDirtyThresholdTracks: 2, maxJobBytes: 1 << 20, pressureFraction: 0.5 },
    maxHardensInFlight: 4, syncChunkBytes: 64 << 10, syncWindowChunks: 4, syncRateBytesPerSec: 1 << 30, storeRetryMs: 100,
  };
}

test('replica core: role and peer state are read-only views, changed only by the core', () => {
  const core = new ReplicaCore(settings(true), 0, null);
  assert.equal(core.role, 'primary');
  assert.equal(core.peerState, 'degraded');
  assert.throws(() => { (core as unknown as { role: string }).role = 'secondary'; }, TypeError);
  assert.throws(() => { (core as unknown as { peerState: string }).peerState = 'in-sync'; }, TypeError);
  assert.equal(core.demote().ok, true);
  assert.equal(core.role, 'secondary');
  // Not in split brain: resolving is refused, and the peer state does not move.
  assert.equal(core.resolveDiscardLocal(0).ok, false);
  assert.equal(core.peerState, 'degraded');
});

test('replica core: a standalone node refuses link events (no peer state ever applies to it)', () => {
  const core = new ReplicaCore(settings(false), 0, null);
  assert.equal(core.peerState, 'standalone');
  assert.throws(() => core.linkEstablished('b', 0), /no peer channel for node b/);
});
