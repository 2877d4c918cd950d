// QEMU's synchronous mirror, the peer the twinblock pair is measured against (issue 11 item 1): a
// mirror users could run instead of ours. qemu-storage-daemon (Debian qemu-system-common) opens
// the source file as a block node and an NBD client node to `nbdkit file` holding the copy, and
// runs a blockdev-mirror job between them with copy-mode=write-blocking: once the job is ready,
// every write reaches both before it completes (QEMU block/mirror.c, MIRROR_COPY_MODE_WRITE_BLOCKING).
// The job's filter node (filter-node-name), which sits above the source and does that copying, is
// what the daemon exports over NBD for fio: writing to the source node itself would bypass it.
// Both files start with the same bytes, so the job's initial full copy is a read of both.
//
// QMP (QEMU's JSON monitor) is spoken over a Unix socket by the small client below: one command at
// a time, each answered by a `return` or `error` object; asynchronous `event` objects in between
// are kept for waitForEvent.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, type BackgroundProcess } from '../test/helpers/node-process.js';
import { startNbdkitFile } from './common.js';
import { ensureTools } from '../test/helpers/tools.js';

interface QmpReply {
  return?: unknown;
  error?: { class: string; desc: string };
  event?: string;
  data?: Record<string, unknown>;
  QMP?: unknown;
}

/** A QMP connection: commands in order, events collected. */
class QmpClient {
  private buffered = '';
  private readonly replies: QmpReply[] = [];
  private readonly events: QmpReply[] = [];
  private wake: (() => void) | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffered += chunk;
      for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
        const line = this.buffered.slice(0, nl).trim();
        this.buffered = this.buffered.slice(nl + 1);
        if (line === '') continue;
        const msg = JSON.parse(line) as QmpReply;
        (msg.event !== undefined ? this.events : this.replies).push(msg);
        this.wake?.();
      }
    });
  }

  static async connect(socketPath: string, timeoutMs: number): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = net.createConnection(socketPath);
        await once(socket, 'connect');
        const client = new QmpClient(socket);
        await client.next(deadline); // the greeting
        await client.execute('qmp_capabilities');
        return client;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`QMP socket ${socketPath}: ${(err as Error).message}`);
        await sleep(50);
      }
    }
  }

  private async next(deadlineMs: number): Promise<QmpReply> {
    while (this.replies.length === 0) {
      if (Date.now() > deadlineMs) throw new Error('QMP: no reply in time');
      await Promise.race([new Promise<void>((r) => { this.wake = r; }), sleep(100)]);
    }
    return this.replies.shift()!;
  }

  /** Runs one command; throws with QEMU's own error text. */
  async execute(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<unknown> {
    this.socket.write(`${JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args })}\n`);
    const reply = await this.next(Date.now() + timeoutMs);
    if (reply.error !== undefined) throw new Error(`QMP ${command}: ${reply.error.class}: ${reply.error.desc}`);
    return reply.return;
  }

  /** Waits for an event of this name (kept since the connection opened). */
  async waitForEvent(name: string, timeoutMs: number): Promise<QmpReply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex((e) => e.event === name);
      if (i >= 0) return this.events.splice(i, 1)[0]!;
      if (Date.now() > deadline) throw new Error(`QMP: no ${name} event within ${timeoutMs} ms`);
      await Promise.race([new Promise<void>((r) => { this.wake = r; }), sleep(100)]);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

interface BlockJob {
  device: string;
  type: string;
  status: string;
  ready: boolean;
  offset: number;
  len: number;
}

/** The qemu-storage-daemon mirror and its nbdkit target, exported over NBD. */
export class QemuMirror {
  private stopped = false;

  private constructor(
    private readonly daemon: ChildProcess,
    private readonly target: BackgroundProcess,
    private readonly qmp: QmpClient,
    readonly port: number,
    private readonly stderr: () => string,
  ) {}

  /** The export fio writes to. */
  get uri(): string {
    return `nbd://127.0.0.1:${this.port}/`;
  }

  /** Both server processes (the daemon's threads included): the target's CPU use. */
  get pids(): number[] {
    return [this.daemon.pid!, this.target.child.pid!];
  }

  /**
   * Starts nbdkit on `targetFile`, the daemon on `sourceFile`, the write-blocking mirror job
   * between them; resolves once the job is ready and its filter node is exported.
   */
  static async start(opts: { sourceFile: string; targetFile: string; dir: string; readyTimeoutMs?: number }): Promise<QemuMirror> {
    ensureTools(['qemu-storage-daemon', 'nbdkit']);
    const { proc: target, port: targetPort } = await startNbdkitFile(opts.targetFile);
    const qmpPath = path.join(opts.dir, `qsd-${process.pid}-${targetPort}.qmp`);
    const daemon = spawn('qemu-storage-daemon', [
      '--chardev', `socket,id=qmp0,path=${qmpPath},server=on,wait=off`,
      '--monitor', 'chardev=qmp0',
      // The page cache as nbdkit file uses it (cache.direct=off): both sides of the comparison alike.
      '--blockdev', `driver=file,node-name=src,filename=${opts.sourceFile},cache.direct=off`,
      '--blockdev', `driver=nbd,node-name=dst,server.type=inet,server.host=127.0.0.1,server.port=${targetPort}`,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderrText = '';
    daemon.stderr?.setEncoding('utf8');
    daemon.stderr?.on('data', (c: string) => { stderrText = (stderrText + c).slice(-4000); });
    const fail = async (err: Error): Promise<never> => {
      daemon.kill('SIGKILL');
      await target.stop();
      throw new Error(`QEMU mirror did not start: ${err.message}\nqemu-storage-daemon stderr:\n${stderrText}`);
    };
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(qmpPath, 10_000);
    } catch (err) {
      return fail(err as Error);
    }
    try {
      await qmp.execute('blockdev-mirror', {
        'job-id': 'mirror0', device: 'src', target: 'dst', sync: 'full', 'copy-mode': 'write-blocking', 'filter-node-name': 'mirror-top',
      });
      await qmp.waitForEvent('BLOCK_JOB_READY', opts.readyTimeoutMs ?? 600_000);
      const port = await freePort();
      await qmp.execute('nbd-server-start', { addr: { type: 'inet', data: { host: '127.0.0.1', port: String(port) } } });
      await qmp.execute('block-export-add', { type: 'nbd', id: 'export0', 'node-name': 'mirror-top', name: '', writable: true });
      const mirror = new QemuMirror(daemon, target, qmp, port, () => stderrText);
      await mirror.checkMirroring();
      return mirror;
    } catch (err) {
      qmp.close();
      return fail(err as Error);
    }
  }

  /**
   * Throws unless the job is still running, ready (every write goes to both) and in
   * write-blocking mode: a mirror that fell back, failed or was cancelled is no peer any more.
   */
  async checkMirroring(): Promise<void> {
    const jobs = await this.qmp.execute('query-block-jobs') as BlockJob[];
    const job = jobs.find((j) => j.device === 'mirror0');
    if (job === undefined) throw new Error(`QEMU mirror job is gone (jobs: ${JSON.stringify(jobs)}); stderr:\n${this.stderr()}`);
    if (!job.ready || job.status !== 'ready') throw new Error(`QEMU mirror job is ${job.status}, not ready: ${JSON.stringify(job)}`);
  }

  /**
   * Stops the mirror (the export first, so nothing more is written), then compares the two files
   * byte for byte: every write fio made reached both.
   */
  async stopAndCompare(sourceFile: string, targetFile: string): Promise<boolean> {
    await this.stop();
    return spawnSync('cmp', ['-s', sourceFile, targetFile]).status === 0;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    try {
      await this.qmp.execute('block-export-del', { id: 'export0', mode: 'hard' }).catch(() => undefined);
      await this.qmp.execute('block-job-cancel', { device: 'mirror0', force: true }).catch(() => undefined);
      await this.qmp.execute('quit').catch(() => undefined);
    } finally {
      this.qmp.close();
      const exited = once(this.daemon, 'exit');
      if (this.daemon.exitCode === null) this.daemon.kill('SIGTERM');
      await Promise.race([exited, sleep(5000).then(() => this.daemon.kill('SIGKILL'))]);
      await this.target.stop();
    }
  }
}
