// The NBD codec: pure encoders and incremental decoders for both directions of the protocol
// (proto.md, fixed newstyle handshake and simple-reply transmission). No I/O, no clocks; the
// server (server.ts) and client (client.ts) are the sockets around it.
export * from './codec-bytes.js';
export * from './codec-constants.js';
export * from './codec-handshake.js';
export * from './codec-transmission.js';
export * from './codec-server.js';
export * from './codec-client.js';
