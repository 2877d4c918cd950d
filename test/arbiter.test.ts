// The arbiter's decisions (src/core/arbiter.ts, issue 13), pinned down without etcd: each test
// feeds etcd's answers as events with time passed in, and checks what the core asks next, what
// it does to the node, and when it lets the primary acknowledge. The same core runs against a
// real etcd in test/arbiter-process.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ArbiterCore, arbiterTransitions, type ArbiterRecord, type ArbiterSettings, type LocalView, type PeerView } from '../src/core/arbiter.js';

const settings: ArbiterSettings = {
  node: 'b', peers: ['a'], leaseTtlMs: 2000, renewIntervalMs: 666, pollIntervalMs: 500, fastPollIntervalMs: 100, clockRateMargin: 0.05, guardMs: 100,
  heartbeatTimeoutMs: 1000, autoFailover: true, electableAll: false,
};

function peer(over: Partial<PeerView> = {}): PeerView {
  return { name: 'a', linkUp: true, role: 'primary', inSync: true, echoedSentAtMs: null, splitBrain: false, ...over };
}

function local(over: Partial<LocalView> = {}): LocalView {
  return { role: 'secondary', epoch: 3, mayPromote: true, peers: [peer()], ...over };
}

function record(leader: string | null, epoch: number, primary: string, electable: string[], modRevision = 10): ArbiterRecord {
  return { leader: leader === null ? null : { node: leader, epoch }, state: { epoch, primary, electable, modRevision } };
}

/** A core that has read `r` at time 0. */
function afterRead(r: ArbiterRecord, view: LocalView, over: Partial<ArbiterSettings> = {}): ArbiterCore {
  const core = new ArbiterCore({ ...settings, ...over });
  assert.deepEqual(core.poll(0, view), { kind: 'read' });
  core.done({ kind: 'read', record: r }, 0, 0, view);
  return core;
}

test('a secondary connected to a live primary never campaigns, even with the leader key gone', () => {
  const core = afterRead(record(null, 3, 'a', ['a', 'b']), local());
  assert.deepEqual(core.poll(600, local()), { kind: 'read' });
  assert.equal(core.state, 'follower');
});

test('a secondary with no primary left and no leader key claims the next epoch, and promotes once it won', () => {
  const view = local({ peers: [peer({ linkUp: false, role: null })] });
  const core = afterRead(record(null, 3, 'a', ['a', 'b']), view);
  const op = core.poll(600, view);
  assert.deepEqual(op, { kind: 'claim', epoch: 4, expectStateRevision: 10, electable: ['b'] });
  assert.equal(core.state, 'claiming');
  core.done({ kind: 'claimed', record: record('b', 4, 'b', ['b'], 11) }, 600, 620, view);
  assert.equal(core.state, 'leader');
  const actions = core.takeActions();
  assert.deepEqual(actions.find((a) => a.kind === 'promote'), { kind: 'promote', epoch: 4 });
  // While the promotion runs the leader only renews; it does not let the key go.
  assert.equal(core.poll(700, view), null);
  assert.deepEqual(core.poll(600 + 666, view), { kind: 'renew' });
});

test('a secondary outside the electable set, or mid-resync, or behind the epoch, never claims', () => {
  const away = [peer({ linkUp: false, role: null })];
  for (const [r, view] of [
    [record(null, 3, 'a', ['a']), local({ peers: away })],
    [record(null, 3, 'a', ['a', 'b']), local({ peers: away, mayPromote: false })],
    [record(null, 5, 'a', ['a', 'b']), local({ peers: away, epoch: 3 })],
    [record('a', 3, 'a', ['a', 'b']), local({ peers: away })],
  ] as const) {
    const core = afterRead(r, view);
    assert.deepEqual(core.poll(600, view), { kind: 'read' }, JSON.stringify(r));
  }
  const off = afterRead(record(null, 3, 'a', ['a', 'b']), local({ peers: away }), { autoFailover: false });
  assert.deepEqual(off.poll(600, local({ peers: away })), { kind: 'read' });
});

test('a lost race goes back to following; an unreachable etcd waits a poll before the next claim', () => {
  const view = local({ peers: [peer({ linkUp: false, role: null })] });
  const core = afterRead(record(null, 3, 'a', ['a', 'b']), view);
  core.poll(600, view);
  core.done({ kind: 'claim-refused', record: record('c', 4, 'c', ['c'], 11) }, 600, 610, view);
  assert.equal(core.state, 'follower');
  assert.deepEqual(core.poll(1200, view), { kind: 'read' });
  core.done({ kind: 'read', record: record(null, 3, 'a', ['a', 'b']) }, 1200, 1200, view);
  assert.equal(core.poll(1800, view)?.kind, 'claim');
  core.done({ kind: 'unreachable', error: 'connection refused' }, 1800, 1810, view);
  assert.equal(core.unreachable, true);
  assert.equal(core.poll(1900, view), null, 'waits a poll interval');
});

/** A primary that holds the lease since a claim sent at `sentAtMs`. */
function leader(sentAtMs: number, view: LocalView): ArbiterCore {
  const core = new ArbiterCore({ ...settings, node: 'a', peers: ['b'] });
  const readAtMs = sentAtMs - settings.pollIntervalMs;
  core.poll(readAtMs, view);
  core.done({ kind: 'read', record: record(null, 3, 'a', ['a', 'b']) }, readAtMs, readAtMs, view);
  assert.deepEqual(core.poll(sentAtMs, view), { kind: 'claim', epoch: 3, expectStateRevision: 10, electable: ['a', 'b'] });
  core.done({ kind: 'claimed', record: record('a', 3, 'a', ['a', 'b'], 11) }, sentAtMs, sentAtMs + 5, view);
  return core;
}

const primaryView = (over: Partial<PeerView> = {}): LocalView => local({ role: 'primary', peers: [peer({ name: 'b', role: 'secondary', ...over })] });

test('a primary acknowledges only until TTL / (1 + margin) - guard after the renewal was sent, not answered', () => {
  const view = primaryView();
  const core = leader(1000, view);
  const deadline = 1000 + 2000 / 1.05 - 100;
  assert.equal(core.mayAcknowledge(deadline - 1, view), true);
  assert.equal(core.mayAcknowledge(deadline, view), false, 'frozen past its lease: nothing goes out');
  // A renewal sent late but answered moves the deadline from its send time.
  assert.deepEqual(core.poll(1666, view), { kind: 'renew' });
  core.done({ kind: 'renewed', remainingMs: 2000 }, 1700, 2500, view);
  assert.equal(core.mayAcknowledge(1700 + 2000 / 1.05 - 101, view), true);
  assert.equal(core.mayAcknowledge(1700 + 2000 / 1.05 - 100, view), false);
});

test('a lease that lapsed on etcd stops acknowledgements at once, and the primary takes the key back if no one else did', () => {
  const view = primaryView();
  const core = leader(0, view);
  core.poll(666, view);
  core.done({ kind: 'renewed', remainingMs: 0 }, 666, 700, view);
  assert.equal(core.state, 'follower');
  assert.equal(core.mayAcknowledge(701, view), false);
  assert.deepEqual(core.poll(701, view), { kind: 'read' });
  core.done({ kind: 'read', record: record(null, 3, 'a', ['a', 'b'], 11) }, 701, 705, view);
  assert.deepEqual(core.poll(1300, view), { kind: 'claim', epoch: 3, expectStateRevision: 11, electable: ['a', 'b'] });
});

test('a primary that etcd says was replaced demotes itself', () => {
  const view = primaryView({ linkUp: false, role: null, inSync: false });
  const core = leader(0, view);
  core.poll(666, view);
  core.done({ kind: 'renewed', remainingMs: 0 }, 666, 700, view);
  core.takeActions();
  core.poll(701, view);
  core.done({ kind: 'read', record: record('b', 4, 'b', ['b'], 12) }, 701, 705, view);
  assert.equal(core.takeActions().find((a) => a.kind === 'demote')?.kind, 'demote');
});

test('an electable peer that dropped holds acknowledgements until etcd no longer counts it', () => {
  const gone = primaryView({ linkUp: false, role: null, inSync: false });
  const core = leader(0, primaryView());
  assert.equal(core.mayAcknowledge(10, gone), false);
  assert.deepEqual(core.poll(10, gone), { kind: 'set-electable', epoch: 3, electable: ['a'], expectStateRevision: 11 });
  core.done({ kind: 'electable-set', record: record('a', 3, 'a', ['a'], 12) }, 10, 15, gone);
  assert.equal(core.mayAcknowledge(16, gone), true);
  // Back in sync: added again (no hurry: acknowledgements go on meanwhile).
  const back = primaryView();
  assert.equal(core.mayAcknowledge(17, back), true);
  assert.deepEqual(core.poll(17, back), { kind: 'set-electable', epoch: 3, electable: ['a', 'b'], expectStateRevision: 12 });
  // Refused (the state changed under us: someone else took over): the leader stops at once.
  core.done({ kind: 'electable-refused', record: record('b', 4, 'b', ['b'], 13) }, 17, 20, back);
  assert.equal(core.state, 'follower');
  assert.equal(core.mayAcknowledge(21, back), false);
});

test('failsafe: with etcd unreachable the primary acknowledges only on fresh heartbeats from every peer', () => {
  const view = (echoedSentAtMs: number | null, over: Partial<PeerView> = {}) => primaryView({ echoedSentAtMs, ...over });
  const core = leader(0, view(0));
  core.poll(666, view(0));
  core.done({ kind: 'unreachable', error: 'timeout' }, 666, 1166, view(0));
  const limit = 3000 + 1000 / 1.05 - 100;
  assert.equal(core.mayAcknowledge(3000, view(3000)), true, 'lease gone by our clock, peers fresh');
  assert.equal(core.mayAcknowledge(limit, view(3000)), false, 'no newer echo: the peer may find the link dead');
  assert.equal(core.mayAcknowledge(3000, view(3000, { inSync: false })), false);
  assert.equal(core.mayAcknowledge(3000, view(null)), false);
  // Without the failure (a frozen primary that has not asked etcd yet), no failsafe at all.
  const frozen = leader(0, view(0));
  assert.equal(frozen.mayAcknowledge(5000, view(4990)), false);
});

test('every transition in the table is legal, and an illegal one asserts', () => {
  const core = new ArbiterCore(settings);
  assert.throws(() => core.done({ kind: 'read', record: record(null, 1, 'a', ['a']) }, 0, 0, local()), /no request in flight/);
  for (const [state, events] of Object.entries(arbiterTransitions)) {
    for (const next of Object.values(events)) assert.ok(next in arbiterTransitions, `${state} -> ${next}`);
  }
});

test('an operator promote is the same claim, refused with etcd\'s reason', () => {
  const away = local({ peers: [peer({ linkUp: false, role: null })] });
  const held = afterRead(record('a', 3, 'a', ['a', 'b']), away, { autoFailover: false });
  assert.match(held.claimForOperator(10, away) ?? '', /node a holds the leader lease/);
  const stale = afterRead(record(null, 3, 'a', ['a']), away, { autoFailover: false });
  assert.match(stale.claimForOperator(10, away) ?? '', /may lack acknowledged writes/);
  const ok = afterRead(record(null, 3, 'a', ['a', 'b']), away, { autoFailover: false });
  assert.equal(ok.claimForOperator(10, away), null);
  assert.equal(ok.poll(10, away)?.kind, 'claim');
  ok.done({ kind: 'claimed', record: record('b', 4, 'b', ['b'], 11) }, 10, 12, away);
  assert.deepEqual(ok.takeActions().find((a) => a.kind === 'promote'), { kind: 'promote', epoch: 4 });
  ok.promoted(null, 20);
  assert.deepEqual(ok.takeActions(), [{ kind: 'operator-claim-ended', error: null }]);
});

test('a secondary in split brain with the primary etcd names discards its own changes, once per split', () => {
  const split = local({ epoch: 2, peers: [peer({ role: 'primary', splitBrain: true })] });
  const core = afterRead(record('a', 2, 'a', ['a']), split);
  assert.deepEqual(core.takeActions().filter((a) => a.kind === 'discard-local'), [{ kind: 'discard-local', primary: 'a', epoch: 2 }]);
  core.poll(500, split);
  core.done({ kind: 'read', record: record('a', 2, 'a', ['a']) }, 500, 500, split);
  assert.equal(core.takeActions().filter((a) => a.kind === 'discard-local').length, 0, 'asked once');
  // With a node etcd does not name, a split brain stays the operator's.
  const other = afterRead(record('c', 2, 'c', ['c']), split);
  assert.equal(other.takeActions().filter((a) => a.kind === 'discard-local').length, 0);
});

test('a leader that took an epoch alone (its link dropped) records it in etcd before it acknowledges again', () => {
  const core = leader(0, primaryView());
  const alone = local({ role: 'primary', epoch: 4, peers: [peer({ name: 'b', linkUp: false, role: null, inSync: false })] });
  assert.equal(core.mayAcknowledge(10, alone), false, 'etcd still says epoch 3');
  assert.deepEqual(core.poll(10, alone), { kind: 'set-electable', epoch: 4, electable: ['a'], expectStateRevision: 11 });
  core.done({ kind: 'electable-set', record: record('a', 4, 'a', ['a'], 12) }, 10, 15, alone);
  assert.equal(core.mayAcknowledge(16, alone), true);
});

test('a leader demoted by an operator releases its lease and leaves the race to the others for two TTLs', () => {
  const core = leader(0, primaryView());
  const demoted = local({ role: 'secondary', peers: [peer({ name: 'b', role: 'secondary' })] });
  assert.deepEqual(core.poll(10, demoted), { kind: 'release' });
  core.done({ kind: 'released' }, 10, 12, demoted);
  core.poll(12, demoted);
  core.done({ kind: 'read', record: record(null, 3, 'a', ['a', 'b'], 11) }, 12, 14, demoted);
  assert.deepEqual(core.poll(200, demoted), { kind: 'read' }, 'no claim of its own right after the demote');
  core.done({ kind: 'read', record: record(null, 3, 'a', ['a', 'b'], 11) }, 200, 202, demoted);
  assert.equal(core.poll(4100, demoted)?.kind, 'claim', 'after two TTLs it may take over again if no one did');
});

test('ack: quorum keeps every node electable: a dropped peer holds nothing back, and any whole secondary may claim', () => {
  const view = primaryView({ linkUp: false, role: null, inSync: false });
  const core = new ArbiterCore({ ...settings, node: 'a', peers: ['b'], electableAll: true });
  core.poll(-500, view);
  core.done({ kind: 'read', record: record(null, 3, 'a', ['a', 'b']) }, -500, -500, view);
  assert.deepEqual(core.poll(0, view), { kind: 'claim', epoch: 3, expectStateRevision: 10, electable: ['a', 'b'] });
  core.done({ kind: 'claimed', record: record('a', 3, 'a', ['a', 'b'], 11) }, 0, 5, view);
  assert.equal(core.mayAcknowledge(10, view), true, 'the data path\'s quorum gate decides, not the electable set');
  assert.equal(core.poll(10, view), null, 'nothing to change in etcd');
});
