// The replication link's messages (issue 4 item 1): what each one carries, its wire type code and
// the largest body it may declare. The frame format, encoding and decoding are in link-codec.ts,
// which re-exports the public part (types, constants, linkMessageTypes). Pure: types and constants
// only.

export const LINK_MAGIC = 0x54424c4b; // 'TBLK'
/** Frame layout version; the message semantics are versioned by hello.protocolVersion. */
export const LINK_FRAME_VERSION = 1;
/** Compared in the handshake: peers speaking different protocol versions refuse each other. */
export const LINK_PROTOCOL_VERSION = 5;
export const LINK_HEADER_BYTES = 16;
export const LINK_TRAILER_BYTES = 4;
/** 32 MiB (the largest NBD write, DESIGN.md "NBD") plus room for the fields around it. */
export const LINK_MAX_BODY_BYTES = 33 * 1024 * 1024;
export const LINK_NONCE_BYTES = 32;
export const LINK_MAC_BYTES = 32;
/** Node names, volume ids and refusal reasons; generous, but bounds a pre-auth frame. */
export const LINK_MAX_STRING_BYTES = 1024;
/** A track's checksum (sumReply): SHA-256, strong enough that "equal" may skip resending it. */
export const TRACK_SUM_BYTES = 32;
/** Most tracks one sumReq may ask for (its reply is then 32 KiB of sums). */
export const MAX_SUM_TRACKS = 1024;

export type LinkRole = 'primary' | 'secondary';
export type LinkNoticeOp = 'save' | 'save-ack' | 'clear';

export interface HelloMessage {
  type: 'hello';
  protocolVersion: number;
  node: string;
  volumeId: string;
  sizeBytes: number;
  trackSizeBytes: number;
  rangeTracks: number;
  nonce: Uint8Array;
  role: LinkRole;
  epoch: number;
}
export interface AuthMessage { type: 'auth'; mac: Uint8Array }
/** Sent before closing when the handshake fails, so the peer can log why. */
export interface RefuseMessage { type: 'refuse'; reason: string }
/**
 * Fig. 4 step 64: a host write, in the primary's order. `heldSeq`: every configured secondary has
 * acknowledged every write of this stream up to it (DESIGN.md "Several secondaries", step 4): a
 * secondary keeps the tracks it received above it, which another secondary may lack.
 */
export interface WriteMessage { type: 'write'; seq: number; heldSeq: number; offsetBytes: number; data: Uint8Array }
/** A mirrored WRITE_ZEROES (trim false) or TRIM (trim true). */
export interface ZeroMessage { type: 'zero'; seq: number; heldSeq: number; offsetBytes: number; lengthBytes: number; trim: boolean }
/** Fig. 4 step 66's acknowledgment: the write (or zero) with this seq is in the peer's cache. */
export interface WriteAckMessage { type: 'writeAck'; seq: number }
/** Hardening notices (Figs. 5, 6): several ranges per frame keep notice bytes small. */
export interface NoticeMessage { type: 'notice'; op: LinkNoticeOp; ranges: number[] }
export interface HeartbeatMessage { type: 'heartbeat'; id: number; sentAtMs: number }
export interface HeartbeatAckMessage { type: 'heartbeatAck'; id: number; sentAtMs: number }
/** lengthBytes 0 means the whole volume. */
export interface FlushReqMessage { type: 'flushReq'; id: number; offsetBytes: number; lengthBytes: number }
export interface FlushAckMessage { type: 'flushAck'; id: number; ok: boolean }
/**
 * `seq`: the source's last write seq when it decided (a primary's; 0 from a secondary's fetch).
 * `compare` (protocol 5): a checksum resync (issue 14 item 5): the source first compares the
 * checksums of `totalBytes` worth of tracks with the target's (sumReq) and then sends only those
 * that differ, so this resync may not rewrite every track it names.
 */
export interface SyncStartMessage { type: 'syncStart'; totalBytes: number; seq: number; compare: boolean }
export interface SyncDataMessage { type: 'syncData'; offsetBytes: number; data: Uint8Array }
export interface SyncDoneMessage { type: 'syncDone' }
/** A resync chunk that is all zeros: 24 bytes on the wire instead of the chunk (sparse volumes). */
export interface SyncZeroMessage { type: 'syncZero'; offsetBytes: number; lengthBytes: number }
/**
 * Sent by each side right after the link is up (DESIGN.md "Failures": a returning node "asks for
 * an update"): who was primary when, whether this node's store and out-of-sync set can be trusted
 * for a delta resync, and two track bitmaps: tracks the peer lacks (out-of-sync) and tracks this
 * node holds only in RAM (the peer marks its record with them).
 */
export interface StateMessage {
  type: 'state';
  role: LinkRole;
  history: { epoch: number; node: string }[];
  storeTrusted: boolean;
  /**
   * This node's store was created empty at its start and nothing has been written to it since
   * (protocol 4): two such nodes hold the same bytes, zeros, and need no initial sync.
   */
  storeBlank: boolean;
  outOfSyncValid: boolean;
  discardLocal: boolean;
  outOfSync: Uint8Array;
  dirty: Uint8Array;
  /**
   * The write stream this state speaks of (DESIGN.md "Several secondaries", step 4): a primary's
   * own (the epoch it took becoming primary), a secondary's position in the last primary's one.
   */
  streamEpoch: number;
  /** A secondary holds every write of that stream up to lastSeq (it got a complete resync since it joined). */
  positionValid: boolean;
  lastSeq: number;
  /** Tracks this secondary received above the stream's heldSeq: what another secondary may lack. */
  above: Uint8Array;
}

/** A node being promoted asks the most current secondary for these tracks, as a resync into it (step 5). */
export interface FetchReqMessage { type: 'fetchReq'; tracks: Uint8Array }

/**
 * A promote while connected is two-phase (DESIGN.md "Failures", roles): the secondary proposes its
 * new epoch history; the peer adopts it (on disk) and confirms, or refuses with a reason. Only
 * then does the proposer serve writes, so the peer never decides a later resync or promotion on a
 * stale view of who was primary when.
 */
export interface PromoteReqMessage { type: 'promoteReq'; id: number; history: { epoch: number; node: string }[] }
export interface PromoteAckMessage { type: 'promoteAck'; id: number; ok: boolean; reason: string }

/**
 * Protocol 5 (issue 14 items 4-5): the checksums of `trackCount` tracks from `firstTrack`, as the
 * peer's cache shows them, for an online verify or a checksum resync. Taken in link order: every
 * write sent before it is in them.
 */
export interface SumReqMessage { type: 'sumReq'; id: number; firstTrack: number; trackCount: number }
/** The answer: TRACK_SUM_BYTES per track asked for, or ok false (the store could not read them). */
export interface SumReplyMessage { type: 'sumReply'; id: number; ok: boolean; sums: Uint8Array }

export type LinkMessage =
  | HelloMessage | AuthMessage | RefuseMessage
  | WriteMessage | ZeroMessage | WriteAckMessage | NoticeMessage
  | HeartbeatMessage | HeartbeatAckMessage | FlushReqMessage | FlushAckMessage
  | SyncStartMessage | SyncDataMessage | SyncDoneMessage | StateMessage | SyncZeroMessage
  | PromoteReqMessage | PromoteAckMessage | FetchReqMessage | SumReqMessage | SumReplyMessage;

export type LinkMessageType = LinkMessage['type'];

/** Wire type codes. Never renumber: a code is part of the protocol. */
export const typeCodes: Readonly<Record<LinkMessageType, number>> = {
  hello: 1, auth: 2, refuse: 3, write: 4, zero: 5, writeAck: 6, notice: 7,
  heartbeat: 8, heartbeatAck: 9, flushReq: 10, flushAck: 11, syncStart: 12, syncData: 13, syncDone: 14, state: 15, syncZero: 16,
  promoteReq: 17, promoteAck: 18, fetchReq: 19, sumReq: 20, sumReply: 21,
};

export const linkMessageTypes = Object.keys(typeCodes) as LinkMessageType[];

export const typeByCode: Array<LinkMessageType | undefined> = [];
for (const type of linkMessageTypes) typeByCode[typeCodes[type]] = type;

export const helloFixedBytes = 4 + 8 + 4 + 4 + 8 + 1 + LINK_NONCE_BYTES;

/**
 * Largest body each type may declare, checked at the header: only writes, sync data and notices
 * are big, so a bad or hostile peer cannot make us buffer 33 MiB for a hello.
 */
export const maxBodyBytesByType: Readonly<Record<LinkMessageType, number>> = {
  hello: helloFixedBytes + 2 * (2 + LINK_MAX_STRING_BYTES),
  auth: LINK_MAC_BYTES,
  refuse: 2 + LINK_MAX_STRING_BYTES,
  write: LINK_MAX_BODY_BYTES,
  zero: 33,
  writeAck: 8,
  notice: LINK_MAX_BODY_BYTES,
  heartbeat: 12,
  heartbeatAck: 12,
  flushReq: 20,
  flushAck: 5,
  syncStart: 17,
  syncData: LINK_MAX_BODY_BYTES,
  syncDone: 0,
  state: LINK_MAX_BODY_BYTES,
  syncZero: 16,
  promoteReq: LINK_MAX_BODY_BYTES,
  promoteAck: 4 + 1 + 2 + LINK_MAX_STRING_BYTES,
  fetchReq: LINK_MAX_BODY_BYTES,
  sumReq: 12,
  sumReply: 4 + 1 + 4 + MAX_SUM_TRACKS * TRACK_SUM_BYTES,
};

export const noticeOps: readonly LinkNoticeOp[] = ['save', 'save-ack', 'clear'];
