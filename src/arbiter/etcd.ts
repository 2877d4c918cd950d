// etcd's v3 JSON gateway (etcd-io/etcd "gRPC gateway": POST /v3/kv/range, /v3/kv/txn,
// /v3/lease/grant, /v3/lease/keepalive, /v3/lease/revoke), spoken with Node's own fetch. Chosen
// over a gRPC client (npm etcd3: @grpc/grpc-js and protobufjs) because a node needs six calls of
// the API, and issue 11 bounds a node's memory: the gateway costs no dependency at all. Keys and
// values travel base64-encoded, 64-bit integers as decimal strings (the gateway's JSON mapping).
//
// This file only moves requests: what to ask and what the answers mean is src/core/arbiter.ts.
import type { ArbiterRecord } from '../core/arbiter.js';

export interface EtcdOptions {
  /** http://host:port of one or more members; a failed request moves on to the next. */
  endpoints: readonly string[];
  /** The volume's keys live under `${prefix}/${volume}/`. */
  prefix: string;
  volume: string;
  leaseTtlMs: number;
  /** Per request: a member that does not answer within this is taken as unreachable. */
  requestTimeoutMs: number;
}

interface KeyValue { key: string; value?: string; mod_revision?: string; create_revision?: string; lease?: string }
interface RangeResponse { kvs?: KeyValue[] }
interface TxnResponse { succeeded?: boolean; responses?: Array<{ response_range?: RangeResponse }> }

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined): string => Buffer.from(s ?? '', 'base64').toString('utf8');

export class EtcdClient {
  private preferred = 0;
  /** Our lease while we hold or claim the leader key (etcd's id, a decimal string). */
  private leaseId: string | null = null;
  readonly leaderKey: string;
  readonly stateKey: string;

  constructor(private readonly opts: EtcdOptions) {
    const base = `${opts.prefix.replace(/\/+$/, '')}/${opts.volume}`;
    this.leaderKey = `${base}/leader`;
    this.stateKey = `${base}/state`;
  }

  /** POST to the first member that answers, starting with the last one that did. */
  private async call<T>(path: string, body: unknown): Promise<T> {
    const errors: string[] = [];
    const n = this.opts.endpoints.length;
    for (let i = 0; i < n; i++) {
      const at = (this.preferred + i) % n;
      const endpoint = this.opts.endpoints[at]!.replace(/\/+$/, '');
      try {
        const res = await fetch(`${endpoint}${path}`, {
          method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(this.opts.requestTimeoutMs),
        });
        const text = await res.text();
        if (!res.ok) throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
        this.preferred = at;
        return JSON.parse(text) as T;
      } catch (err) {
        errors.push(`${endpoint}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    throw new Error(errors.join('; '));
  }

  /** Both keys, in one transaction (one revision). */
  async read(): Promise<ArbiterRecord> {
    const res = await this.call<TxnResponse>('/v3/kv/txn', { success: this.readOps() });
    return this.recordOf(res);
  }

  private readOps(): unknown[] {
    return [{ request_range: { key: b64(this.leaderKey) } }, { request_range: { key: b64(this.stateKey) } }];
  }

  private recordOf(res: TxnResponse): ArbiterRecord {
    const responses = res.responses ?? [];
    const kv = (i: number): KeyValue | undefined => responses[i]?.response_range?.kvs?.[0];
    const leaderKv = kv(responses.length - 2);
    const stateKv = kv(responses.length - 1);
    const leader = leaderKv === undefined ? null : JSON.parse(unb64(leaderKv.value)) as { node: string; epoch: number };
    const state = stateKv === undefined ? null : {
      ...(JSON.parse(unb64(stateKv.value)) as { epoch: number; primary: string; electable: string[] }),
      modRevision: Number(stateKv.mod_revision ?? 0),
    };
    return { leader, state };
  }

  /**
   * Takes the leader key: a new lease (the old one, if any, is revoked), then one transaction:
   * no leader key, and the state key at the revision we read (0: absent), then put both.
   */
  async claim(node: string, epoch: number, expectStateRevision: number, electable: string[]): Promise<{ ok: boolean; record: ArbiterRecord }> {
    await this.release();
    const grant = await this.call<{ ID?: string; TTL?: string; error?: string }>('/v3/lease/grant', { TTL: Math.ceil(this.opts.leaseTtlMs / 1000) });
    if (grant.ID === undefined) throw new Error(`lease grant refused: ${grant.error ?? JSON.stringify(grant)}`);
    this.leaseId = grant.ID;
    const res = await this.call<TxnResponse>('/v3/kv/txn', {
      compare: [
        { key: b64(this.leaderKey), result: 'EQUAL', target: 'CREATE', create_revision: '0' },
        expectStateRevision === 0
          ? { key: b64(this.stateKey), result: 'EQUAL', target: 'CREATE', create_revision: '0' }
          : { key: b64(this.stateKey), result: 'EQUAL', target: 'MOD', mod_revision: String(expectStateRevision) },
      ],
      success: [
        { request_put: { key: b64(this.leaderKey), value: b64(JSON.stringify({ node, epoch })), lease: this.leaseId } },
        { request_put: { key: b64(this.stateKey), value: b64(JSON.stringify({ epoch, primary: node, electable })) } },
        ...this.readOps(),
      ],
      failure: this.readOps(),
    });
    if (res.succeeded !== true) await this.release();
    return { ok: res.succeeded === true, record: this.recordOf(res) };
  }

  /** One keepalive of our lease: the TTL etcd has left for it, in ms (0: it lapsed, or none). */
  async renew(): Promise<number> {
    if (this.leaseId === null) return 0;
    const res = await this.call<{ result?: { TTL?: string }; TTL?: string }>('/v3/lease/keepalive', { ID: this.leaseId });
    const ttl = Number(res.result?.TTL ?? res.TTL ?? 0);
    if (ttl <= 0) this.leaseId = null;
    return ttl * 1000;
  }

  /** The leader changes the electable set (and its epoch): only while the state key is as read and our leader key stands. */
  async setElectable(node: string, epoch: number, electable: string[], expectStateRevision: number): Promise<{ ok: boolean; record: ArbiterRecord }> {
    const res = await this.call<TxnResponse>('/v3/kv/txn', {
      compare: [
        { key: b64(this.stateKey), result: 'EQUAL', target: 'MOD', mod_revision: String(expectStateRevision) },
        { key: b64(this.leaderKey), result: 'EQUAL', target: 'LEASE', lease: this.leaseId ?? '0' },
      ],
      success: [
        { request_put: { key: b64(this.stateKey), value: b64(JSON.stringify({ epoch, primary: node, electable })) } },
        { request_put: { key: b64(this.leaderKey), value: b64(JSON.stringify({ node, epoch })), lease: this.leaseId ?? '0' } },
        ...this.readOps(),
      ],
      failure: this.readOps(),
    });
    return { ok: res.succeeded === true, record: this.recordOf(res) };
  }

  /** Revokes our lease (the leader key goes with it); nothing if we hold none. */
  async release(): Promise<void> {
    const id = this.leaseId;
    if (id === null) return;
    this.leaseId = null;
    await this.call('/v3/lease/revoke', { ID: id }).catch(() => undefined); // it lapses anyway
  }
}
