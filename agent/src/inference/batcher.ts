import { fail, isAgentError } from '../errors.js';
import { DATATYPES, type HostTensor } from './tensor.js';

export interface BatcherOptions {
  /** Largest batch one run may carry; 1 disables batching. */
  maxBatchSize: number;
  /** How long the oldest request may wait for others to join its batch, in ms (0: only requests already queued). */
  maxQueueDelayMs: number;
  /** Requests waiting beyond this are refused with 503 + Retry-After. */
  maxQueueSize: number;
  /** Runs in flight at once on this model version. */
  concurrency: number;
}

export interface BatchResult {
  outputs: Record<string, HostTensor>;
  queueMs: number;
  computeMs: number;
  batchSize: number;
}

/** The longest delay setTimeout honours (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export type RunFn = (feeds: Record<string, HostTensor>) => Promise<Record<string, HostTensor>>;

interface Job {
  feeds: Record<string, HostTensor>;
  /** Leading dimension of this request's inputs. */
  rows: number;
  /** Inputs with equal signatures (datatypes and non-batch dims) can share a run. */
  signature: string;
  enqueuedAt: number;
  /** Longest wait + run, in ms, from enqueuedAt. */
  timeoutMs: number;
  settled: boolean;
  deadline: NodeJS.Timeout | undefined;
  resolve: (r: BatchResult) => void;
  reject: (e: unknown) => void;
}

/**
 * Per-model-version request queue (DESIGN §3: the batcher between HTTP and session.run). Bounded, with a
 * deadline per request; when batching is on, queued requests of the same shape run as one batch along dim 0.
 */
export class Batcher {
  private readonly queue: Job[] = [];
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly run: RunFn,
    private readonly options: BatcherOptions,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Requests waiting plus those running. */
  get pending(): number {
    return this.queue.length + this.running;
  }

  submit(feeds: Record<string, HostTensor>, timeoutMs: number): Promise<BatchResult> {
    if (this.queue.length >= this.options.maxQueueSize) {
      return Promise.reject(fail('AGENT_OVERLOADED', `queue full (${this.options.maxQueueSize} waiting); retry later`, { headers: { 'retry-after': '1' } }));
    }
    const first = Object.values(feeds)[0];
    const rows = first && first.dims.length > 0 ? first.dims[0]! : 1;
    if (this.options.maxBatchSize > 1 && rows > this.options.maxBatchSize) {
      return Promise.reject(fail('AGENT_BATCH_TOO_LARGE', `batch of ${rows} exceeds max_batch_size ${this.options.maxBatchSize}`));
    }
    return new Promise<BatchResult>((resolve, reject) => {
      const job: Job = { feeds, rows, signature: signatureOf(feeds), enqueuedAt: this.now(), timeoutMs, settled: false, deadline: undefined, resolve, reject };
      // setTimeout turns delays over 2^31-1 ms into 1 ms; a longer deadline is as good as none.
      job.deadline = setTimeout(() => this.expire(job, timeoutMs), Math.min(timeoutMs, MAX_TIMER_MS));
      this.queue.push(job);
      this.schedule();
    });
  }

  /** Resolves when nothing is queued or running: in-flight work on a version finishes before release. */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private expire(job: Job, timeoutMs: number): void {
    const at = this.queue.indexOf(job);
    if (at >= 0) this.queue.splice(at, 1);
    // A running job cannot be cancelled inside onnxruntime; its result is dropped when it arrives.
    settle(job, () => job.reject(fail('AGENT_TIMEOUT', `no result within ${timeoutMs} ms`)));
    this.notifyIdle();
  }

  private schedule(): void {
    while (this.running < this.options.concurrency && this.queue.length > 0) {
      const head = this.queue[0]!;
      if (this.options.maxBatchSize > 1 && this.options.maxQueueDelayMs > 0) {
        const waited = this.now() - head.enqueuedAt;
        if (waited < this.options.maxQueueDelayMs && this.batchableRows(head) < this.options.maxBatchSize) {
          this.timer ??= setTimeout(() => {
            this.timer = undefined;
            this.schedule();
          }, Math.max(0, this.options.maxQueueDelayMs - waited));
          return;
        }
      }
      void this.dispatch(this.takeBatch(head));
    }
  }

  private batchableRows(head: Job): number {
    let rows = 0;
    for (const job of this.queue) if (job.signature === head.signature) rows += job.rows;
    return rows;
  }

  /** Removes from the queue the head and every later job with its signature that still fits the batch. */
  private takeBatch(head: Job): Job[] {
    const batch: Job[] = [];
    let rows = 0;
    for (let i = 0; i < this.queue.length; ) {
      const job = this.queue[i]!;
      const fits = batch.length === 0 || (this.options.maxBatchSize > 1 && job.signature === head.signature && rows + job.rows <= this.options.maxBatchSize);
      if (fits) {
        batch.push(job);
        rows += job.rows;
        this.queue.splice(i, 1);
        if (rows >= this.options.maxBatchSize) break;
      } else i++;
      if (this.options.maxBatchSize <= 1) break;
    }
    return batch;
  }

  private async dispatch(batch: Job[]): Promise<void> {
    this.running++;
    const started = this.now();
    try {
      const feeds = batch.length === 1 ? batch[0]!.feeds : concatFeeds(batch);
      const outputs = await this.run(feeds);
      const computeMs = this.now() - started;
      const rows = batch.reduce((n, j) => n + j.rows, 0);
      let offset = 0;
      for (const job of batch) {
        const mine = batch.length === 1 ? outputs : sliceOutputs(outputs, offset, job.rows, rows);
        offset += job.rows;
        // A result that arrives past its deadline is a timeout even if the timer has not fired yet (a busy event
        // loop runs this continuation before the timer), so a caller never gets a 200 later than promised.
        if (this.now() - job.enqueuedAt > job.timeoutMs) this.expire(job, job.timeoutMs);
        else settle(job, () => job.resolve({ outputs: mine, queueMs: started - job.enqueuedAt, computeMs, batchSize: rows }));
      }
    } catch (err) {
      const error = isAgentError(err) ? err : fail('AGENT_INFERENCE_FAILED', `inference failed: ${String((err as Error)?.message ?? err).split('\n')[0]}`, { cause: err });
      for (const job of batch) settle(job, () => job.reject(error));
    } finally {
      this.running--;
      this.schedule();
      this.notifyIdle();
    }
  }

  private notifyIdle(): void {
    if (this.pending === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}

function settle(job: Job, action: () => void): void {
  if (job.settled) return;
  job.settled = true;
  clearTimeout(job.deadline);
  action();
}

function signatureOf(feeds: Record<string, HostTensor>): string {
  return Object.entries(feeds)
    .map(([name, t]) => `${name}:${t.datatype}:${t.dims.slice(1).join('x')}`)
    .sort()
    .join('|');
}

function concatFeeds(batch: Job[]): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  for (const name of Object.keys(batch[0]!.feeds)) {
    const first = batch[0]!.feeds[name]!;
    const total = batch.reduce((n, j) => n + j.feeds[name]!.data.length, 0);
    const data = DATATYPES[first.datatype].make(total);
    let at = 0;
    for (const job of batch) {
      const part = job.feeds[name]!.data;
      (data as Float32Array).set(part as Float32Array, at);
      at += part.length;
    }
    out[name] = { datatype: first.datatype, dims: [batch.reduce((n, j) => n + j.rows, 0), ...first.dims.slice(1)], data };
  }
  return out;
}

function sliceOutputs(outputs: Record<string, HostTensor>, offset: number, rows: number, totalRows: number): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  for (const [name, t] of Object.entries(outputs)) {
    // INVARIANT: batching is enabled only for models whose outputs all lead with the batch dimension.
    if (t.dims[0] !== totalRows) throw new Error(`output '${name}' does not lead with the batch dimension`);
    const per = t.data.length / totalRows;
    out[name] = { datatype: t.datatype, dims: [rows, ...t.dims.slice(1)], data: t.data.subarray(offset * per, (offset + rows) * per) as HostTensor['data'] };
  }
  return out;
}
