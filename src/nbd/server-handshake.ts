// The server's side of option haggling (proto.md "Fixed newstyle negotiation"): one NbdHandshake
// per connection answers the client's flags and options until EXPORT_NAME or GO ends the
// negotiation. It writes its replies to the socket itself and leaves entering transmission,
// aborting and hard disconnects to its connection (server.ts), which owns the socket's life.
import type net from 'node:net';
import {
  NBD_FLAG_C_NO_ZEROES, NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_DESCRIPTION, NBD_INFO_NAME, NBD_MAX_PAYLOAD_BYTES,
  NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_LIST, NBD_OPT_STARTTLS, NBD_REP_ACK,
  NBD_REP_ERR_INVALID, NBD_REP_ERR_TLS_REQD, NBD_REP_ERR_TOO_BIG, NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP, NBD_REP_INFO,
  NBD_REP_SERVER, encodeExportNameReply, encodeInfoBlockSize, encodeInfoExport, encodeInfoString,
  encodeOptionReply, encodeServerReplyData, nbdOptionName, parseInfoRequestData, type NbdClientMessage,
} from './codec.js';
import { clientText } from '../log.js';
import type { NbdExport } from './export.js';

export type NbdLog = (level: 'info' | 'warn' | 'debug', msg: string, fields?: object) => void;

/** What a handshake message can be: everything the decoder yields before transmission. */
export type NbdHandshakeMessage = Exclude<NbdClientMessage, { kind: 'request' }>;

/**
 * Advertised size constraints (DESIGN.md "Interfaces": fio and others ignore larger minimums;
 * proto.md "Size constraints"). Requests not aligned to the minimum are answered EINVAL.
 */
export const NBD_MIN_BLOCK_BYTES = 512;
export const NBD_PREFERRED_BLOCK_BYTES = 4096;

export function transmissionFlagsOf(nbdExport: NbdExport): number {
  return NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM
    | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_CAN_MULTI_CONN | (nbdExport.readOnly ? NBD_FLAG_READ_ONLY : 0);
}

/** The connection as the handshake sees it. */
export interface NbdHandshakeConnection {
  readonly socket: net.Socket;
  readonly remote: string;
  /** A rate-limited warning about this client (its remote address is added). */
  warn(msg: string, fields: Record<string, unknown>): void;
  /** Negotiation ended (EXPORT_NAME, or GO answered with ACK): requests follow. */
  enterTransmission(via: string): void;
  /** NBD_OPT_ABORT: send the ACK, take no more messages, close. */
  abort(ack: Buffer): void;
  /** A hard disconnect (proto.md "Termination of the session during option haggling"). */
  destroy(reason: string): void;
  /**
   * NBD_OPT_STARTTLS accepted: send `ack` in clear, then speak TLS on this connection (proto.md
   * "FORCEDTLS mode"). False when it could not (bytes the client sent before the upgrade are
   * waiting: the connection is closed instead, as they could be an attacker's injection).
   */
  startTls(ack: Buffer): boolean;
}

/**
 * NBD TLS for hosts (issue 14 item 2; proto.md "TLS support"): 'off' is NOTLS, 'on' is
 * SELECTIVETLS with no TLS-only export (any client may upgrade; none must), 'require' is FORCEDTLS.
 */
export type NbdTlsPolicy = 'off' | 'on' | 'require';

export class NbdHandshake {
  private noZeroes = false;
  /** STARTTLS was answered with ACK: everything after it arrives over TLS. */
  private tlsStarted = false;

  constructor(
    private readonly connection: NbdHandshakeConnection,
    private readonly nbdExport: NbdExport,
    private readonly transmissionFlags: number,
    private readonly log: NbdLog,
    private readonly tls: NbdTlsPolicy = 'off',
  ) {}

  handle(message: NbdHandshakeMessage): void {
    switch (message.kind) {
      case 'clientFlags':
        // The decoder already refused unknown bits. A client without C_FIXED_NEWSTYLE is still
        // served fixed newstyle, which the spec allows ("Servers MAY choose to honour fixed
        // newstyle from clients that didn't set this bit", proto.md "Client flags").
        this.noZeroes = (message.clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
        return;
      case 'option':
        this.handleOption(message.option, message.data);
        return;
      case 'oversizedOption':
        this.handleOversizedOption(message.option, message.lengthBytes);
        return;
    }
  }

  private exportMatches(name: string): boolean {
    // The empty name selects the default export (proto.md "NBD_OPT_EXPORT_NAME"); ours is the only one.
    return name === '' || name === this.nbdExport.name;
  }

  /**
   * FORCEDTLS before the upgrade (proto.md "FORCEDTLS mode"): every option but STARTTLS and ABORT
   * gets NBD_REP_ERR_TLS_REQD, and EXPORT_NAME, which cannot be answered with an error, ends the
   * session. True when the option was dealt with here.
   */
  private refusedBeforeTls(option: number): boolean {
    if (this.tls !== 'require' || this.tlsStarted || option === NBD_OPT_STARTTLS || option === NBD_OPT_ABORT) return false;
    if (option === NBD_OPT_EXPORT_NAME) {
      this.connection.warn('nbd: EXPORT_NAME without TLS, which this server requires: closing', {});
      this.connection.destroy('EXPORT_NAME before STARTTLS (nbdTls: require)');
    } else {
      this.replyOptionError(option, NBD_REP_ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
    }
    return true;
  }

  private handleStartTls(data: Buffer): void {
    if (this.tls === 'off') {
      this.replyOptionError(NBD_OPT_STARTTLS, NBD_REP_ERR_UNSUP, 'TLS is not enabled on this server (nbdTls: off)');
    } else if (this.tlsStarted) {
      // "If the server receives NBD_OPT_STARTTLS when TLS has already been negotiated, it MUST reply with NBD_REP_ERR_INVALID."
      this.replyOptionError(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, 'TLS is already running');
    } else if (data.length !== 0) {
      this.replyOptionError(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
    } else {
      this.tlsStarted = this.connection.startTls(encodeOptionReply(NBD_OPT_STARTTLS, NBD_REP_ACK));
    }
  }

  private handleOption(option: number, data: Buffer): void {
    if (this.refusedBeforeTls(option)) return;
    switch (option) {
      case NBD_OPT_STARTTLS:
        this.handleStartTls(data);
        return;
      case NBD_OPT_EXPORT_NAME:
        this.handleExportName(data.toString('utf8'));
        return;
      case NBD_OPT_ABORT:
        // "The server MUST reply with NBD_REP_ACK"; the client then drops the connection, and we
        // close our side too rather than wait on a client that may not (proto.md "NBD_OPT_ABORT").
        this.connection.abort(encodeOptionReply(option, NBD_REP_ACK));
        return;
      case NBD_OPT_LIST:
        this.handleList(data);
        return;
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        this.handleInfoOrGo(option, data);
        return;
      default:
        // STRUCTURED_REPLY (we send simple replies
        // only), EXTENDED_HEADERS, metadata contexts, and anything unknown: "Servers that
        // receive messages which they do not implement MUST reply to them with
        // NBD_REP_ERR_UNSUP, and MUST NOT fail to parse the next message" (proto.md "Baseline").
        this.replyOptionError(option, NBD_REP_ERR_UNSUP, `${nbdOptionName(option)} is not supported`);
    }
  }

  private handleOversizedOption(option: number, lengthBytes: number): void {
    this.log('debug', 'nbd: oversized option skipped', { remote: this.connection.remote, option, lengthBytes });
    if (this.refusedBeforeTls(option)) return;
    if (option === NBD_OPT_EXPORT_NAME) {
      // No way to answer an EXPORT_NAME with an error: terminate (proto.md "NBD_OPT_EXPORT_NAME").
      this.connection.destroy('export name too long');
    } else if (option === NBD_OPT_ABORT) {
      this.handleOption(option, Buffer.alloc(0));
    } else if ([NBD_OPT_LIST, NBD_OPT_INFO, NBD_OPT_GO].includes(option)) {
      this.replyOptionError(option, NBD_REP_ERR_TOO_BIG, `option data of ${lengthBytes} bytes is too large`);
    } else {
      this.replyOptionError(option, NBD_REP_ERR_UNSUP, `${nbdOptionName(option)} is not supported`);
    }
  }

  private handleExportName(name: string): void {
    if (!this.exportMatches(name)) {
      // "If the chosen export does not exist ... the server MUST terminate the session."
      // The name is the client's text: cut and escaped, so it cannot flood or forge log lines.
      this.connection.warn('nbd: unknown export requested, closing', { export: clientText(name) });
      this.connection.destroy(`unknown export "${clientText(name)}"`);
      return;
    }
    this.connection.socket.write(encodeExportNameReply(this.nbdExport.sizeBytes, this.transmissionFlags, this.noZeroes));
    this.connection.enterTransmission('EXPORT_NAME');
  }

  private handleList(data: Buffer): void {
    if (data.length !== 0) {
      // "the server SHOULD reject a request that includes data with NBD_REP_ERR_INVALID".
      this.replyOptionError(NBD_OPT_LIST, NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
      return;
    }
    const nbdExport = this.nbdExport;
    this.connection.socket.write(Buffer.concat([
      encodeOptionReply(NBD_OPT_LIST, NBD_REP_SERVER, encodeServerReplyData(nbdExport.name, nbdExport.description)),
      encodeOptionReply(NBD_OPT_LIST, NBD_REP_ACK),
    ]));
  }

  /**
   * NBD_OPT_INFO and NBD_OPT_GO (proto.md "NBD_OPT_INFO (6) and NBD_OPT_GO (7)"): always
   * NBD_INFO_EXPORT (mandatory) and NBD_INFO_BLOCK_SIZE (we enforce a 512-byte minimum, and
   * unrequested info is allowed); NAME and DESCRIPTION when asked for.
   */
  private handleInfoOrGo(option: number, data: Buffer): void {
    const request = parseInfoRequestData(data);
    if (request === null) {
      this.replyOptionError(option, NBD_REP_ERR_INVALID, `malformed ${nbdOptionName(option)} data`);
      return;
    }
    if (!this.exportMatches(request.exportName)) {
      this.replyOptionError(option, NBD_REP_ERR_UNKNOWN, `no export named ${JSON.stringify(request.exportName)}`);
      return;
    }
    const nbdExport = this.nbdExport;
    const infos = [
      encodeInfoExport(nbdExport.sizeBytes, this.transmissionFlags),
      encodeInfoBlockSize(NBD_MIN_BLOCK_BYTES, NBD_PREFERRED_BLOCK_BYTES, NBD_MAX_PAYLOAD_BYTES),
    ];
    // A client MUST NOT repeat an information request, but one that does gets each item once.
    if (request.infoTypes.includes(NBD_INFO_NAME)) infos.push(encodeInfoString(NBD_INFO_NAME, nbdExport.name));
    if (request.infoTypes.includes(NBD_INFO_DESCRIPTION)) {
      infos.push(encodeInfoString(NBD_INFO_DESCRIPTION, nbdExport.description));
    }
    const replies = infos.map((info) => encodeOptionReply(option, NBD_REP_INFO, info));
    replies.push(encodeOptionReply(option, NBD_REP_ACK));
    this.connection.socket.write(Buffer.concat(replies));
    if (option === NBD_OPT_GO) this.connection.enterTransmission('GO');
  }

  private replyOptionError(option: number, replyType: number, message: string): void {
    this.connection.socket.write(encodeOptionReply(option, replyType, Buffer.from(message, 'utf8')));
  }
}
