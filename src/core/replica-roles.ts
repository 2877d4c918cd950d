// The replica core's roles part (replica.ts owns it): promote, demote and resolve, the two-phase
// promotion (replica-promotion.ts) and, among three or more nodes, the promotion that first makes
// sure this node holds every acknowledged write (promotion-survey.ts; DESIGN.md "Several
// secondaries", step 5). It works on the data path and the link half it is given and never calls
// back into ReplicaCore. Pure and synchronous.
import { assert } from './assert.js';
import { TrackBitmap } from './bitmap.js';
import { compareHistories, currentEpoch, type EpochEntry } from './epochs.js';
import type { LinkMessage } from './replica-types.js';
import type { DataChannel, DataPath, ReplicaSettings } from './replica-data.js';
import type { LinkHalf } from './replica-link.js';
import { tracksOthersMayLack } from './resync-sender.js';
import { PromotionHandshake } from './replica-promotion.js';
import { PromotionSurvey, type StreamStand } from './promotion-survey.js';

export class RolePart {
  /** The two-phase promotion's proposals and confirmations (a part with its own state). */
  private readonly promotion = new PromotionHandshake();
  /** Among three or more nodes, the answers to our proposal and the fetch after it (or null). */
  private survey: PromotionSurvey | null = null;

  constructor(private readonly data: DataPath, private readonly link: LinkHalf, private readonly settings: ReplicaSettings) {}

  /** A proposal of ours waits for peers' confirmations, or fetches before serving. */
  get pending(): boolean {
    return this.promotion.pending || this.survey?.fetching != null;
  }

  /**
   * Makes this node primary: a new epoch, persisted before a write is served (the shell awaits it).
   * While the link is up the change is two-phase (link-codec PromoteReqMessage): the proposal goes
   * to disk (proposedEpoch), then to the peer, which adopts the new history and confirms; only then
   * does this node serve writes. `pending` results end with a promote-done action for requestId.
   * Without the peer's word, a promotion its peer never saw would let a crash of the new primary
   * bring back a resync source that lost the acknowledged writes it held in RAM, and two quick
   * switchovers could give both nodes the same epoch (found by the simulator, seeds 1101, 3337).
   * `force` (or no link) promotes at once, alone. `minEpoch`: the new epoch is at least this (an
   * arbiter's transaction chose it, issue 13).
   */
  promote(force: boolean, nowMs: number, requestId = 0, minEpoch = 0): { ok: true; pending: boolean } | { ok: false; error: string } {
    if (!this.settings.mirrored) return { ok: false, error: 'a standalone node is always primary' };
    if (this.data.role === 'primary') return { ok: false, error: 'already primary' };
    if (force && this.data.channels.length > 1) return this.promoteForced(nowMs, minEpoch);
    if (this.pending) return { ok: false, error: 'a promotion is already under way (waiting for confirmations, or fetching the newest data)' };
    if (this.data.channels.length > 1) return this.promoteAmong(requestId, minEpoch);
    const ch = this.data.pairChannel;
    if (!force && ch.linkIsUp && ch.peerView?.role === 'primary') return { ok: false, error: `peer ${ch.name} is primary and connected: demote it first, or use --force` };
    // Issue 12: a node promotes only while it reaches a majority; in a pair, only with its peer.
    if (!force && !ch.linkIsUp && this.settings.quorum.policy === 'majority') return { ok: false, error: `${this.data.noQuorumMessage()}: promoting alone could lose writes the other side acknowledged (use --force if it is gone for good)` };
    if (!force && (ch.intake.active || this.link.resyncIncomplete)) return { ok: false, error: 'a resync into this node has not finished: its data is incomplete (use --force to promote anyway)' };
    const entry = this.link.newEpochEntry(minEpoch);
    assert(entry.epoch > this.link.proposedEpoch, 'an epoch once proposed is never proposed again');
    const history = [...this.link.history, entry];
    if (force || !ch.linkIsUp) {
      this.becomePrimary(history, force, nowMs);
      return { ok: true, pending: false };
    }
    this.link.proposedEpoch = entry.epoch;
    this.link.persist();
    this.promotion.propose({ id: this.data.nextId++, requestId, history }, this.link.lastPersistToken);
    this.data.emit({ kind: 'log', level: 'info', msg: 'promotion proposed to the peer', fields: { peer: ch.name, epoch: entry.epoch } });
    return { ok: true, pending: true };
  }

  /**
   * A plain promote among three or more nodes (promotion-survey.ts): proposed to every secondary
   * this node reaches, which must be a majority whatever the quorum policy; judged once all answered.
   */
  private promoteAmong(requestId: number, minEpoch: number): { ok: true; pending: boolean } | { ok: false; error: string } {
    const reached = this.data.channels.filter((ch) => ch.linkIsUp);
    const primary = reached.find((ch) => ch.peerRole === 'primary');
    if (primary !== undefined) return { ok: false, error: `peer ${primary.name} is primary and connected: demote it first, or use --force` };
    // A majority must confirm whatever the quorum policy: only a majority is sure to include a
    // node holding each acknowledged write (`ack: quorum`), and to fence the old primary.
    if (1 + reached.length < this.data.quorumPart.majority) return { ok: false, error: `this node reaches ${1 + reached.length} of ${this.settings.peers.length + 1} nodes; a promotion needs a majority (${this.data.quorumPart.majority}) to confirm it: promoting with fewer could lose acknowledged writes (use --force if the others are gone for good)` };
    if (this.link.resyncIncomplete || this.data.channels.some((ch) => ch.intake.active)) return { ok: false, error: 'a resync into this node has not finished: its data is incomplete (use --force to promote anyway)' };
    const entry = this.link.newEpochEntry(minEpoch);
    assert(entry.epoch > this.link.proposedEpoch, 'an epoch once proposed is never proposed again');
    const history = [...this.link.history, entry];
    const survey = new PromotionSurvey(reached.map((ch) => ch.name), this.data.cache.trackCount);
    this.survey = survey;
    this.link.proposedEpoch = entry.epoch;
    this.link.persist();
    this.promotion.propose({ id: this.data.nextId++, requestId, history }, this.link.lastPersistToken);
    this.data.emit({ kind: 'log', level: 'info', msg: 'promotion proposed to the peers', fields: { peers: reached.map((ch) => ch.name).join(','), epoch: entry.epoch } });
    return { ok: true, pending: true };
  }

  /** Where this node stands in its last primary's write stream (stream-position.ts). */
  private ownStand(): StreamStand {
    const p = this.link.position;
    return { node: this.settings.node, stream: p.stream, lastSeq: p.lastSeq, valid: p.valid, above: p.aboveTracks() };
  }

  /** Where a confirming peer stands: the state it sent just before its promoteAck. */
  private peerStand(ch: DataChannel): StreamStand | null {
    const v = ch.peerView;
    if (v === null) return null;
    return { node: ch.name, stream: v.streamEpoch, lastSeq: v.lastSeq, valid: v.positionValid, above: TrackBitmap.fromBytes(this.data.cache.trackCount, v.above) };
  }

  /**
   * Every peer asked answered: refuse, fetch, or serve (promotion-survey.ts). The outcome goes out
   * as promote-done (a fetch's, when it ends).
   */
  private judge(history: EpochEntry[], nowMs: number, requestId: number): void {
    const survey = this.survey!;
    const verdict = survey.judge(this.ownStand(), this.data.quorumPart.majority);
    this.data.emit({ kind: 'log', level: 'info', msg: 'promotion survey judged', fields: { verdict: verdict.kind, stands: survey.describe() } });
    if (verdict.kind === 'refuse') {
      this.data.emit({ kind: 'log', level: 'warn', msg: 'promotion refused', fields: { reason: verdict.error } });
      this.endPromotion(verdict.error, requestId);
      return;
    }
    if (verdict.kind === 'fetch') {
      // The most current node confirmed, then its link dropped before the last answer came (the
      // survey completes on that drop): it cannot be fetched from now (simulator, three nodes,
      // seed 10: the request went out on a dead link).
      if (!this.data.channelOf(verdict.from).linkIsUp) {
        this.endPromotion(`the link to ${verdict.from}, the most current node, went down before this node could fetch from it: promote ${verdict.from} instead, or retry once it is back`, requestId);
        return;
      }
      survey.fetching = { history, requestId };
      this.data.send(this.data.channelOf(verdict.from), { type: 'fetchReq', tracks: verdict.tracks.toBytes() });
      this.data.emit({ kind: 'log', level: 'warn', msg: 'fetching what this node lacks from the most current node before serving writes', fields: { from: verdict.from, tracks: verdict.tracks.count() } });
      return;
    }
    this.serveAfterSurvey(history, nowMs, requestId);
  }

  /** The node being promoted takes its new epoch: each other node resyncs what the survey says may differ. */
  private serveAfterSurvey(history: EpochEntry[], nowMs: number, requestId: number): void {
    const survey = this.survey!;
    this.survey = null;
    const owner = history.find((e) => e.epoch === survey.stream)?.node ?? null;
    this.becomePrimary(history, false, nowMs, (ch) => {
      // A node away now may come back with a complete copy of the old stream: judged then.
      const later = ch.linkIsUp || ch.name === owner ? null : survey.resendIfVouchedLater(ch.name);
      if (later === null) return survey.resendTo(ch.name, owner);
      ch.vouchIn = survey.stream;
      return later;
    });
    this.data.emit({ kind: 'promote-done', requestId, error: null });
  }

  /** This node, primary, steps down alive: its own stream is where it stands (stream-position.ts). */
  endedOwnStream(): void {
    this.link.position.ownStreamEnded(this.link.streamEpoch, this.data.sendSeq, tracksOthersMayLack(this.data, null));
  }

  /**
   * A node being promoted fetches these tracks from this secondary, the most current one it
   * reaches (DESIGN.md "Several secondaries", step 5), after this node confirmed its promotion:
   * a resync into it, sent like any other. Ignored unless this node is a secondary that adopted
   * that node's promotion and runs no other resync with it.
   */
  fetchRequested(ch: DataChannel, tracksBytes: Uint8Array, nowMs: number): void {
    const { history } = this.link;
    if (this.data.role !== 'secondary' || history[history.length - 1]?.node !== ch.name || ch.sendsResync || ch.intake.active) {
      this.data.emit({ kind: 'log', level: 'warn', msg: 'fetch request ignored: this node did not confirm that peer\'s promotion, or resyncs with it', fields: { peer: ch.name } });
      return;
    }
    const tracks = TrackBitmap.fromBytes(this.data.cache.trackCount, tracksBytes);
    this.link.sendResync(ch, tracks, { full: tracks.count() === tracks.trackCount, reason: 'the node being promoted fetches what it lacks' }, nowMs);
  }

  /** Is `ch` the node this promotion fetches from? Its syncDone ends the fetch (fetchReceived). */
  fetchesFrom(ch: DataChannel): boolean {
    return this.survey?.fetchingFrom === ch.name && ch.intake.active;
  }

  /** The fetch ended: this node holds every write the most current node held. It serves now. */
  fetchReceived(ch: DataChannel, nowMs: number): void {
    this.link.fetchReceived(ch);
    const { history, requestId } = this.survey!.fetching!;
    this.serveAfterSurvey(history, nowMs, requestId);
  }

  /** The peer proposes to become primary: adopt its history (on disk first) and confirm, or refuse. */
  onPromoteRequest(ch: DataChannel, msg: Extract<LinkMessage, { type: 'promoteReq' }>): void {
    const refusal = this.promoteRefusal(ch, msg.history);
    if (refusal !== null) {
      this.data.emit({ kind: 'log', level: 'warn', msg: 'refused the peer\'s promotion', fields: { peer: ch.name, reason: refusal } });
      this.data.send(ch, { type: 'promoteAck', id: msg.id, ok: false, reason: refusal });
      return;
    }
    this.link.setHistory([...msg.history]); // promoteRefusal: it extends ours
    if (this.data.channels.length > 1) ch.announceDue = true;
    this.link.proposedEpoch = Math.max(this.link.proposedEpoch, currentEpoch(msg.history));
    if (ch.peerView !== null) ch.peerView = { ...ch.peerView, role: 'primary', history: [...msg.history] };
    this.link.persist();
    this.promotion.confirmWhenDurable(this.link.lastPersistToken, msg.id, currentEpoch(msg.history), ch.name);
    this.data.emit({ kind: 'log', level: 'info', msg: 'confirmed the peer\'s promotion', fields: { peer: ch.name, epoch: currentEpoch(msg.history) } });
  }

  /** Why this node cannot confirm the peer's promotion to `history`, or null. */
  private promoteRefusal(ch: DataChannel, history: readonly EpochEntry[]): string | null {
    if (this.data.role === 'primary') return `${this.settings.node} is primary: demote it first`;
    if (this.pending) return `${this.settings.node} is being promoted too`;
    // Among several nodes: confirming while another primary still sends us its writes would let
    // both acknowledge writes (the old one with our acks).
    const following = this.data.channels.find((other) => other !== ch && other.linkIsUp && other.peerRole === 'primary');
    if (following !== undefined) return `${this.settings.node} still follows primary ${following.name}: demote it first`;
    if (ch.state === 'split-brain') return 'split brain: resolve it first';
    if (ch.sendsResync) return `${this.settings.node} is resyncing its newer data into ${ch.name}`;
    // A node still receiving a resync holds a mix of old and new tracks. Confirming would give it
    // the newer history; if the link then drops before the proposer hears the confirmation, this
    // incomplete store looks newest and resyncs over the proposer's complete one (simulator, seed
    // 20022525: a crashed primary, resynced by its peer, confirmed the peer's promotion, lost the
    // link, and sent its stale store back in full, over an acknowledged write).
    // Among three or more nodes a secondary never sources a resync, and the survey judges an
    // incomplete confirmer by its stand (it is never "most current"; one beyond every complete
    // copy makes the survey refuse): refusing here too left two secondaries, each resynced by a
    // primary that died, unable to confirm anyone, and the volume without a primary for good
    // (simulator, three nodes, seed 24).
    const incompleteHere = ch.intake.active || (this.link.resyncIncomplete && this.data.channels.length === 1);
    if (incompleteHere) return `${this.settings.node} is still receiving a resync from ${ch.name}: its data is incomplete`;
    // A pair's proposal extends our history by its one new entry. Among three or more nodes it may
    // extend it by more: we may have been away (an old primary back from a crash) while others
    // confirmed a promotion that never served. We take the newer history; the survey judges our
    // data by our stand in the write stream, not by it (randomized test, seed 1065: a fetch that
    // failed left its source a history ahead of the old primary's, and no later proposal could
    // gather a majority).
    // With `quorum: majority` a branch of ours the proposal lacks cannot have served writes the
    // survey would miss (decideSync, byEpoch): a newer epoch replaces it, and the survey still
    // judges our data by our stand (where we were primary in it and restarted since, our stand
    // says we know nothing, and the survey refuses without enough others: seed 388). Refused,
    // one failed promotion could leave no majority for any later one (simulator, three nodes,
    // seeds 24, 30001386).
    const relation = compareHistories(this.link.history, history);
    const newerBranch = relation === 'diverged' && this.link.branchesByEpoch && currentEpoch(history) > currentEpoch(this.link.history);
    const extendsOurs = relation === 'theirs-newer' || newerBranch;
    if (!extendsOurs || (this.data.channels.length === 1 && history.length !== this.link.history.length + 1)) return `epoch histories differ (${this.settings.node} is at epoch ${this.link.epoch})`;
    if (history[history.length - 1]!.epoch <= this.link.proposedEpoch) return `epoch ${history[history.length - 1]!.epoch} was already proposed`;
    return null;
  }

  /** The peer's answer to our promoteReq. */
  onPromoteAck(ch: DataChannel, msg: Extract<LinkMessage, { type: 'promoteAck' }>, nowMs: number): void {
    if (this.survey !== null) return this.onSurveyAnswer(ch, msg, nowMs);
    const promoting = this.promotion.answer(msg.id);
    if (promoting === null) return;
    if (!msg.ok) {
      this.data.emit({ kind: 'promote-done', requestId: promoting.requestId, error: `peer ${ch.name} refused: ${msg.reason}` });
      return;
    }
    this.becomePrimary(promoting.history, false, nowMs);
    this.data.emit({ kind: 'promote-done', requestId: promoting.requestId, error: null });
  }

  /**
   * A peer's answer to our proposal among three or more nodes. A confirming peer sent its state
   * just before (onPersisted): its stand in the old stream, and the tracks it holds only in RAM,
   * which our record of it took then (onSurveyedState).
   */
  private onSurveyAnswer(ch: DataChannel, msg: Extract<LinkMessage, { type: 'promoteAck' }>, nowMs: number): void {
    const survey = this.survey!;
    if (this.promotion.proposalId !== msg.id || !survey.asks(ch.name)) return;
    if (survey.answered(ch.name, msg.ok ? null : msg.reason, msg.ok ? this.peerStand(ch) : null)) this.surveyComplete(nowMs);
  }

  /**
   * A state from a peer our survey asks: a confirmer's announce, sent just before its promoteAck
   * (onPersisted). Our record of it takes the tracks it holds only in RAM now, before its
   * notices of them arrive: its notifier treats them as marked here, and a toggle-counter CLEAR
   * among those notices may end a cycle such a track was in (simulator, three nodes, seed 89:
   * marked only at the promoteAck, the record lacked a track between the two).
   */
  onSurveyedState(ch: DataChannel, msg: Extract<LinkMessage, { type: 'state' }>): void {
    if (this.survey !== null && this.survey.asks(ch.name)) ch.recordUnsynced(msg);
  }

  /** Every peer asked answered or dropped: the proposal ends, and the survey judges. */
  private surveyComplete(nowMs: number): void {
    const proposal = this.promotion.answer(this.promotion.proposalId!);
    if (proposal !== null) this.judge(proposal.history, nowMs, proposal.requestId);
  }

  /**
   * Persist `token` landed: the promotion messages that waited for it go out. DESIGN.md
   * "Failures": the new epoch is on disk on both nodes before the first write is served, and an
   * epoch once proposed is never proposed again; so each is asserted against what the metadata on
   * disk records (MetadataOnDisk, by value), not against the promotion's own bookkeeping: a crash
   * before the save lands would bring the node back without an epoch the pair acted on.
   */
  onPersisted(token: number, nowMs: number): void {
    const { promoteReq, promoteAck } = this.promotion.persisted(token);
    const onDisk = this.link.onDisk.epoch;
    if (promoteReq !== null) {
      const epoch = currentEpoch(promoteReq.history);
      assert(epoch <= onDisk, `a promoteReq proposes epoch ${epoch} only once it is on disk (there: ${onDisk})`);
      for (const ch of this.data.channels) if (ch.linkIsUp && (this.survey?.asks(ch.name) ?? true)) this.data.send(ch, { type: 'promoteReq', ...promoteReq });
    }
    if (promoteAck !== null) {
      assert(promoteAck.epoch <= onDisk, `a promoteAck confirms epoch ${promoteAck.epoch} only once it is on disk (there: ${onDisk})`);
      const ch = this.data.channelOf(promoteAck.peer);
      // Among three or more nodes the proposer judges by where each confirmer stands, and its
      // record of us starts from what we hold only in RAM: our state goes first, and our
      // hardening notices of those tracks follow it, as at link-up (replica-link.ts).
      if (this.data.channels.length > 1) this.link.announce(ch, nowMs);
      this.data.send(ch, { type: 'promoteAck', id: promoteAck.id, ok: true, reason: '' });
    }
  }

  /** A pending promotion dies with the link: the operator retries (alone, if the peer is gone). */
  abandonPromotion(ch: DataChannel, nowMs: number): void {
    this.promotion.dropConfirmations(ch.name);
    const survey = this.survey;
    if (survey !== null && survey.fetching !== null) {
      if (survey.fetchingFrom === ch.name) this.endPromotion(`the link to ${ch.name} went down while this node fetched the newest data from it: promote ${ch.name} instead, or retry once it is back`);
      return;
    }
    if (survey !== null) {
      // Among several peers, one that drops counts as one that did not confirm.
      if (survey.answered(ch.name, 'its link went down', null)) this.surveyComplete(nowMs);
      return;
    }
    this.endPromotion(`the link to ${ch.name} went down before it confirmed the promotion: retry (a retry without the link promotes alone)`);
  }

  /**
   * The shell gave up waiting for the peer's confirmation (its disk may hang). The peer may still
   * adopt our proposal: our state, sent again, shows it we stayed secondary, and the pair settles
   * on its newer history by a resync (of nothing, if in sync).
   */
  cancelPromotion(reason: string): void {
    // A fetch that has started runs after the peers confirmed (they follow this node now): it goes
    // on, and the promotion answers when it ends or its source drops. One whose source never
    // started it (it ignored the request) ends here.
    const survey = this.survey;
    if (survey?.fetching != null && this.data.channels.some((ch) => ch.name === survey.fetchingFrom && ch.intake.active)) return;
    if (!this.endPromotion(reason)) return;
    if (this.data.channels.length === 1 && this.data.pairChannel.linkIsUp) this.link.sendState(this.data.pairChannel);
  }

  private endPromotion(error: string, judged: number | null = null): boolean {
    const fetching = this.survey?.fetching ?? null;
    this.survey = null;
    const requestId = this.promotion.end() ?? fetching?.requestId ?? judged;
    if (requestId === null) return false;
    // Peers that confirmed hold our proposal as if we were primary: our state says we are not.
    if (this.data.channels.length > 1) for (const ch of this.data.channels) if (ch.linkIsUp) this.link.sendState(ch);
    this.data.emit({ kind: 'promote-done', requestId, error });
    return true;
  }

  /**
   * `promote --force` in a volume of three or more nodes: the operator vouches that this node
   * holds the newest data. It takes a new epoch at once, alone, and every other node becomes the
   * target of a full resync from it (the data of nodes that held newer writes is overwritten, as a
   * forced promotion of a pair's stale side does).
   */
  private promoteForced(nowMs: number, minEpoch: number): { ok: true; pending: false } {
    this.endPromotion('a forced promotion took over');
    const entry = this.link.newEpochEntry(minEpoch);
    assert(entry.epoch > this.link.proposedEpoch, 'an epoch once proposed is never proposed again');
    this.becomePrimary([...this.link.history, entry], true, nowMs, () => 'all');
    return { ok: true, pending: false };
  }

  /**
   * `resend` says what each peer gets beyond its out-of-sync set: a pair resends every track after
   * a forced promotion mid-resync; among several nodes, what the survey says may differ, or every
   * track after a forced promotion (no bitmap names what another secondary may hold).
   */
  private becomePrimary(history: EpochEntry[], force: boolean, nowMs: number, resend: (ch: DataChannel) => TrackBitmap | 'all' | null = () => null): void {
    // The new epoch extends what this node knows: a proposal made on an older history would
    // drop entries (promote refuses while a resync into this node runs; the peer refuses ours
    // while it resyncs us).
    assert(compareHistories(this.link.history, history) === 'theirs-newer' && history[history.length - 1]!.node === this.settings.node, 'a promotion extends this node\'s own epoch history');
    this.link.setHistory(history);
    this.data.setRole('primary');
    this.link.beganStream();
    // Forced in the middle of a resync into this node: the tracks it had not received yet differ
    // from the peers', and no bitmap says which. Every track is out of sync, so the resync this
    // node now sources rewrites them all (its data is the reference from now on).
    const incomplete = this.link.resyncIncomplete || this.data.channels.some((ch) => ch.intake.active);
    for (const ch of this.data.channels) {
      const extra = resend(ch);
      if (extra === 'all') ch.outOfSync.setAll();
      else if (extra !== null) ch.outOfSync.addAll(extra);
      // A failover: the old primary may have lost whatever it held only in RAM, so the united
      // bitmap becomes out-of-sync. A planned switchover (connected and in sync) keeps it as the
      // record instead: the old primary is alive and hardens its RAM; a later link loss folds it in.
      if (!(ch.linkIsUp && ch.state === 'in-sync')) {
        ch.outOfSync.addAll(ch.record.united());
      }
      if (incomplete) ch.outOfSync.setAll();
      ch.intake.end();
    }
    this.link.resyncIncomplete = false; // forced: this node's data is now the reference
    for (const ch of this.data.channels) {
      if (ch.linkIsUp) {
        // Among three or more nodes our dirty tracks came from the old primary: each peer's record
        // of us takes them now (announceDue), as at a link-up.
        if (this.data.channels.length > 1) this.link.announce(ch, nowMs);
        else this.link.sendState(ch);
        // A resync we are sending goes on (the peer adopts our new history at its end); otherwise
        // the pair decides afresh with our new epoch (found by the simulator, seed 105).
        if (!ch.sendsResync) {
          ch.event('promotedConnected');
          this.link.decide(ch, nowMs);
        }
      } else {
        ch.event('promotedAlone');
      }
    }
    if (!this.data.mirroring) this.data.diverging = true; // the new epoch above is this generation
    this.link.persist();
    const outOfSyncTracks = Math.max(0, ...this.data.channels.map((ch) => ch.outOfSync.count()));
    this.data.emit({ kind: 'log', level: 'warn', msg: 'promoted to primary', fields: { epoch: currentEpoch(this.link.history), outOfSyncTracks, force } });
  }

  /** Makes this node secondary; host writes get EPERM from now on. The shell waits for writesDrained. */
  demote(): { ok: true } | { ok: false; error: string } {
    if (!this.settings.mirrored) return { ok: false, error: 'a standalone node is always primary' };
    if (this.data.role !== 'primary') return { ok: false, error: 'already secondary' };
    if (this.data.channels.length > 1) {
      this.endedOwnStream();
      for (const ch of this.data.channels) if (ch.state === 'in-sync') ch.event('primaryStepsDown');
    }
    this.data.setRole('secondary');
    this.link.persist();
    for (const ch of this.data.channels) if (ch.linkIsUp) this.link.sendState(ch);
    this.data.emit({ kind: 'log', level: 'warn', msg: 'demoted to secondary' });
    return { ok: true };
  }

  /** Split brain: this node's changes since the divergence are discarded by a resync from the peer. */
  resolveDiscardLocal(nowMs: number): { ok: true } | { ok: false; error: string } {
    // Among three or more nodes, every link that saw the split brain is resolved at once: this
    // node becomes the target of whichever primary reaches it (the others of its side, if they
    // wrote too, each need their own resolve).
    const split = this.data.channels.filter((ch) => ch.state === 'split-brain');
    if (!this.settings.mirrored || split.length === 0) return { ok: false, error: 'not in split brain' };
    this.link.discardLocal = true;
    this.link.trust.trusted = false;
    if (this.data.role === 'primary') this.data.setRole('secondary');
    for (const ch of split) ch.event('splitBrainResolved'); // the next state exchange makes this node the resync target
    this.link.persist();
    this.data.emit({ kind: 'log', level: 'warn', msg: 'split brain resolved: this node discards its changes and resyncs from the peer', fields: { peers: split.map((ch) => ch.name).join(',') } });
    for (const ch of this.data.channels) {
      if (!ch.linkIsUp) continue;
      this.link.sendState(ch);
      this.link.decide(ch, nowMs);
    }
    return { ok: true };
  }
}
