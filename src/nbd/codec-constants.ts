// NBD wire constants (proto.md "Values", "Request message", "Simple reply message"). Pure data:
// shared by the codec, the server and the client so every number is written down once.
import type { NbdErrno } from './export.js';

/** 'NBDMAGIC', first 8 bytes of every server greeting (proto.md "Newstyle negotiation"). */
export const NBD_INIT_MAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': second greeting magic, and the magic of every client option. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Oldstyle greeting's second magic; we recognise it only to name the failure. */
export const NBD_CLISERV_MAGIC = 0x00420281861253n;
/** Magic of every fixed-newstyle option reply (proto.md "Fixed newstyle negotiation"). */
export const NBD_OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// Handshake flags, server to client (proto.md "Handshake flags").
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;

// Client flags (proto.md "Client flags"); any other bit makes the server drop the connection.
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
export const NBD_KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

// Transmission flags (proto.md "Transmission flags").
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// Option types (proto.md "Option types").
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// Option reply types (proto.md "Option reply types"); errors have bit 31 set.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

// NBD_REP_INFO information types (proto.md "NBD_REP_INFO").
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Request types (proto.md "Request types").
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

// Command flags (proto.md "Command flags").
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

/**
 * Largest READ/WRITE payload we accept or send: 2^25, the size every server SHOULD support and no
 * party may call a denial of service (proto.md "Size constraints").
 */
export const NBD_MAX_PAYLOAD_BYTES = 32 * 1024 * 1024;
/** Strings (names, messages) MUST be no longer than 4096 bytes (proto.md "Conventions"). */
export const NBD_MAX_STRING_BYTES = 4096;
/** The 124 reserved zero bytes after an NBD_OPT_EXPORT_NAME reply without NO_ZEROES. */
export const NBD_EXPORT_NAME_PADDING_BYTES = 124;

/** Error values (proto.md "Error values"). */
export const nbdErrnoValue: Readonly<Record<NbdErrno, number>> = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
};

const errnoByValue = new Map<number, NbdErrno>(
  Object.entries(nbdErrnoValue).map(([name, value]) => [value, name as NbdErrno]),
);

/**
 * The errno name of a wire error value. An unexpected value is treated as EINVAL, as the spec
 * tells clients to (proto.md "Error values", last paragraph).
 */
export function nbdErrnoName(value: number): NbdErrno {
  return errnoByValue.get(value) ?? 'EINVAL';
}

const commandNames: readonly string[] = [
  'read', 'write', 'disc', 'flush', 'trim', 'cache', 'write_zeroes', 'block_status',
];

/** Lower-case command name for logs and metric labels; 'unknown' for anything else. */
export function nbdCommandName(type: number): string {
  return commandNames[type] ?? 'unknown';
}

const optionNames: Readonly<Record<number, string>> = {
  [NBD_OPT_EXPORT_NAME]: 'EXPORT_NAME',
  [NBD_OPT_ABORT]: 'ABORT',
  [NBD_OPT_LIST]: 'LIST',
  [NBD_OPT_STARTTLS]: 'STARTTLS',
  [NBD_OPT_INFO]: 'INFO',
  [NBD_OPT_GO]: 'GO',
  [NBD_OPT_STRUCTURED_REPLY]: 'STRUCTURED_REPLY',
  [NBD_OPT_LIST_META_CONTEXT]: 'LIST_META_CONTEXT',
  [NBD_OPT_SET_META_CONTEXT]: 'SET_META_CONTEXT',
  [NBD_OPT_EXTENDED_HEADERS]: 'EXTENDED_HEADERS',
};

/** NBD_OPT_* name for logs, or the number when unknown. */
export function nbdOptionName(option: number): string {
  return optionNames[option] ?? `option ${option}`;
}
