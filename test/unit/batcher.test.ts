import { afterEach, describe, expect, it, vi } from 'vitest';
import { fail, isAgentError } from '../../agent/src/errors.js';
import { Batcher, type BatcherOptions, type BatchResult, type RunFn } from '../../agent/src/inference/batcher.js';
import type { HostTensor } from '../../agent/src/inference/tensor.js';

/**
 * A run function the test drives: each call waits until the test answers it. `echo` answers with the
 * input ×10, so every caller can check it got back exactly its own rows.
 */
function controlledRun() {
  const calls: { feeds: Record<string, HostTensor>; resolve: (o: Record<string, HostTensor>) => void; reject: (e: unknown) => void }[] = [];
  const run: RunFn = (feeds) => new Promise((resolve, reject) => calls.push({ feeds, resolve, reject }));
  const echo = (i: number): void => {
    const call = calls[i]!;
    const x = call.feeds.x!;
    call.resolve({ y: { datatype: 'FP32', dims: [...x.dims], data: Float32Array.from(x.data as Float32Array, (v) => v * 10) } });
  };
  return { run, calls, echo };
}

const rowsOf = (dims: number[], values: number[]): Record<string, HostTensor> => ({ x: { datatype: 'FP32', dims, data: Float32Array.from(values) } });
const valuesOf = (r: BatchResult) => ({ dims: r.outputs.y!.dims, data: Array.from(r.outputs.y!.data as Float32Array) });

const options = (o: Partial<BatcherOptions> = {}): BatcherOptions => ({ maxBatchSize: 4, maxQueueDelayMs: 0, maxQueueSize: 64, concurrency: 1, ...o });

/** Lets pending promise callbacks run (no time passes). */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

async function rejection(p: Promise<unknown>): Promise<{ code: string; httpStatus: number; headers: Record<string, string>; message: string }> {
  try {
    await p;
  } catch (err) {
    expect(isAgentError(err), `expected a catalog error, got ${String(err)}`).toBe(true);
    return err as never;
  }
  throw new Error('expected a rejection');
}

const LONG = 60_000;

afterEach(() => {
  vi.useRealTimers();
});

describe('Batcher batching', () => {
  it('batches requests queued behind a running one along dim 0, and each caller gets its own rows', async () => {
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 4 }));
    const pa = b.submit(rowsOf([1, 2], [1, 2]), LONG);
    expect(calls).toHaveLength(1); // nothing else waiting: runs at once

    const pb = b.submit(rowsOf([1, 2], [3, 4]), LONG);
    const pc = b.submit(rowsOf([2, 2], [5, 6, 7, 8]), LONG);
    const pd = b.submit(rowsOf([1, 2], [9, 10]), LONG);
    const pe = b.submit(rowsOf([1, 2], [11, 12]), LONG); // would make 5 rows: next batch
    expect(calls).toHaveLength(1);
    expect(b.pending).toBe(5);

    echo(0);
    expect(valuesOf(await pa)).toEqual({ dims: [1, 2], data: [10, 20] });
    expect(calls).toHaveLength(2);
    expect(calls[1]!.feeds.x!.dims).toEqual([4, 2]);
    expect(Array.from(calls[1]!.feeds.x!.data as Float32Array)).toEqual([3, 4, 5, 6, 7, 8, 9, 10]);

    echo(1);
    const [rb, rc, rd] = await Promise.all([pb, pc, pd]);
    expect(valuesOf(rb)).toEqual({ dims: [1, 2], data: [30, 40] });
    expect(valuesOf(rc)).toEqual({ dims: [2, 2], data: [50, 60, 70, 80] });
    expect(valuesOf(rd)).toEqual({ dims: [1, 2], data: [90, 100] });
    expect([rb.batchSize, rc.batchSize, rd.batchSize]).toEqual([4, 4, 4]);

    expect(calls).toHaveLength(3);
    expect(calls[2]!.feeds.x!.dims).toEqual([1, 2]);
    echo(2);
    expect(valuesOf(await pe)).toEqual({ dims: [1, 2], data: [110, 120] });
    expect(b.pending).toBe(0);
  });

  it('does not batch requests whose trailing shape or datatype differs', async () => {
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 8 }));
    const pa = b.submit(rowsOf([1, 2], [1, 2]), LONG);
    const pb = b.submit(rowsOf([1, 2], [3, 4]), LONG);
    const pc = b.submit(rowsOf([1, 3], [5, 6, 7]), LONG);
    const pd = b.submit(rowsOf([1, 2], [8, 9]), LONG);
    const pe = b.submit({ x: { datatype: 'FP64', dims: [1, 2], data: Float64Array.from([1, 1]) } }, LONG);

    echo(0);
    await pa;
    // The head (b) and every later job of its signature (d); c and e wait for their own runs.
    expect(calls[1]!.feeds.x!.dims).toEqual([2, 2]);
    expect(Array.from(calls[1]!.feeds.x!.data as Float32Array)).toEqual([3, 4, 8, 9]);
    echo(1);
    expect(valuesOf(await pb).data).toEqual([30, 40]);
    expect(valuesOf(await pd).data).toEqual([80, 90]);

    expect(calls[2]!.feeds.x!.dims).toEqual([1, 3]);
    echo(2);
    expect(valuesOf(await pc)).toEqual({ dims: [1, 3], data: [50, 60, 70] });
    expect(calls[3]!.feeds.x!.datatype).toBe('FP64');
    echo(3);
    await pe;
    expect(calls).toHaveLength(4);
  });

  it('with maxBatchSize 1 runs every request on its own', async () => {
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 1 }));
    const ps = [1, 2, 3].map((v) => b.submit(rowsOf([1, 1], [v]), LONG));
    for (let i = 0; i < 3; i++) {
      expect(calls).toHaveLength(i + 1);
      expect(calls[i]!.feeds.x!.dims).toEqual([1, 1]);
      echo(i);
      expect(valuesOf(await ps[i]!).data).toEqual([(i + 1) * 10]);
    }
  });

  it('runs up to `concurrency` batches at once', async () => {
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 1, concurrency: 2 }));
    const ps = [1, 2, 3].map((v) => b.submit(rowsOf([1, 1], [v]), LONG));
    expect(calls).toHaveLength(2);
    echo(1);
    await ps[1];
    expect(calls).toHaveLength(3);
    echo(0);
    echo(2);
    await Promise.all(ps);
  });

  it('refuses a request with more rows than maxBatchSize', async () => {
    const { run, calls } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 4 }));
    const err = await rejection(b.submit(rowsOf([5, 1], [1, 2, 3, 4, 5]), LONG));
    expect(err.code).toBe('AGENT_BATCH_TOO_LARGE');
    expect(calls).toHaveLength(0);
  });
});

describe('Batcher load shedding and deadlines', () => {
  it('a full queue refuses new requests with AGENT_OVERLOADED and Retry-After', async () => {
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxQueueSize: 2, maxBatchSize: 1 }));
    const running = b.submit(rowsOf([1, 1], [1]), LONG); // running, not queued
    const queued = [b.submit(rowsOf([1, 1], [2]), LONG), b.submit(rowsOf([1, 1], [3]), LONG)];
    const err = await rejection(b.submit(rowsOf([1, 1], [4]), LONG));
    expect(err.code).toBe('AGENT_OVERLOADED');
    expect(err.httpStatus).toBe(503);
    expect(err.headers['retry-after']).toBe('1');
    expect(b.pending).toBe(3);

    // Once the queue drains, requests are accepted again.
    echo(0);
    await running;
    const again = b.submit(rowsOf([1, 1], [5]), LONG);
    echo(1);
    await queued[0];
    echo(2);
    await queued[1];
    echo(3);
    expect(valuesOf(await again).data).toEqual([50]);
    expect(calls).toHaveLength(4);
  });

  it('a request past its deadline while queued is rejected with AGENT_TIMEOUT and never runs', async () => {
    vi.useFakeTimers();
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 1 }), () => Date.now());
    const first = b.submit(rowsOf([1, 1], [1]), LONG);
    const late = b.submit(rowsOf([1, 1], [2]), 100);
    const lateOutcome = rejection(late);

    vi.advanceTimersByTime(99);
    expect(b.pending).toBe(2);
    vi.advanceTimersByTime(1);
    const err = await lateOutcome;
    expect(err.code).toBe('AGENT_TIMEOUT');
    expect(err.httpStatus).toBe(504);
    expect(b.pending).toBe(1);

    echo(0);
    await first;
    expect(calls).toHaveLength(1); // the expired request was not run after the model freed up
    expect(b.pending).toBe(0);
  });

  it('a request past its deadline while running is rejected; its late result is dropped', async () => {
    vi.useFakeTimers();
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options(), () => Date.now());
    const p = b.submit(rowsOf([1, 1], [1]), 50);
    const outcome = rejection(p);
    vi.advanceTimersByTime(50);
    expect((await outcome).code).toBe('AGENT_TIMEOUT');
    expect(b.pending).toBe(1); // the run itself is still in flight
    echo(0);
    await b.idle();
    expect(calls).toHaveLength(1);
  });
});

describe('Batcher maxQueueDelayMs', () => {
  it('holds a lone request until the delay has passed', async () => {
    vi.useFakeTimers();
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 4, maxQueueDelayMs: 10 }), () => Date.now());
    const p = b.submit(rowsOf([1, 1], [1]), LONG);
    expect(calls).toHaveLength(0);
    vi.advanceTimersByTime(9);
    expect(calls).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect(calls).toHaveLength(1);
    echo(0);
    expect((await p).batchSize).toBe(1);
  });

  it('requests arriving within the delay join the held one', async () => {
    vi.useFakeTimers();
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 4, maxQueueDelayMs: 10 }), () => Date.now());
    const pa = b.submit(rowsOf([1, 1], [1]), LONG);
    vi.advanceTimersByTime(5);
    const pb = b.submit(rowsOf([1, 1], [2]), LONG);
    vi.advanceTimersByTime(4);
    expect(calls).toHaveLength(0);
    vi.advanceTimersByTime(1); // 10 ms after the first request
    expect(calls).toHaveLength(1);
    expect(calls[0]!.feeds.x!.dims).toEqual([2, 1]);
    echo(0);
    expect(valuesOf(await pa).data).toEqual([10]);
    expect(valuesOf(await pb).data).toEqual([20]);
  });

  it('runs at once, without waiting out the delay, when the batch fills', async () => {
    vi.useFakeTimers();
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 4, maxQueueDelayMs: 1000 }), () => Date.now());
    const ps = [b.submit(rowsOf([1, 1], [1]), LONG), b.submit(rowsOf([2, 1], [2, 3]), LONG)];
    expect(calls).toHaveLength(0);
    ps.push(b.submit(rowsOf([1, 1], [4]), LONG)); // 4 rows: full
    expect(calls).toHaveLength(1);
    expect(calls[0]!.feeds.x!.dims).toEqual([4, 1]);
    echo(0);
    const results = await Promise.all(ps);
    expect(results.map((r) => valuesOf(r).data)).toEqual([[10], [20, 30], [40]]);
  });
});

describe('Batcher failures and idle', () => {
  it('a failed run rejects every request of the batch with AGENT_INFERENCE_FAILED, and the next batch still runs', async () => {
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 4 }));
    const first = b.submit(rowsOf([1, 1], [1]), LONG);
    const batch = [b.submit(rowsOf([1, 1], [2]), LONG), b.submit(rowsOf([1, 1], [3]), LONG)];
    const outcomes = batch.map(rejection);
    echo(0);
    await first;
    expect(calls[1]!.feeds.x!.dims).toEqual([2, 1]);
    const after = b.submit(rowsOf([1, 1], [4]), LONG);

    calls[1]!.reject(new Error('Non-zero status code returned while running Conv node\nstack…'));
    for (const err of await Promise.all(outcomes)) {
      expect(err.code).toBe('AGENT_INFERENCE_FAILED');
      expect(err.httpStatus).toBe(500);
      expect(err.message).toContain('Conv node');
      expect(err.message).not.toContain('stack');
    }
    echo(2);
    expect(valuesOf(await after).data).toEqual([40]);
  });

  it('a run that throws a catalog error passes it through unchanged', async () => {
    const { run, calls } = controlledRun();
    const b = new Batcher(run, options());
    const p = rejection(b.submit(rowsOf([1, 1], [1]), LONG));
    calls[0]!.reject(fail('AGENT_NON_FINITE', 'nan'));
    expect((await p).code).toBe('AGENT_NON_FINITE');
  });

  it('idle() resolves only after queued and in-flight work is done', async () => {
    const { run, calls, echo } = controlledRun();
    const b = new Batcher(run, options({ maxBatchSize: 1 }));
    await b.idle(); // nothing to wait for

    const pa = b.submit(rowsOf([1, 1], [1]), LONG);
    const pb = b.submit(rowsOf([1, 1], [2]), LONG);
    let idle = false;
    const waiting = b.idle().then(() => {
      idle = true;
    });
    await flush();
    expect(idle).toBe(false);

    echo(0);
    await pa;
    await flush();
    expect(idle).toBe(false); // b is now running
    expect(calls).toHaveLength(2);

    echo(1);
    await pb;
    await waiting;
    expect(idle).toBe(true);
  });
});
