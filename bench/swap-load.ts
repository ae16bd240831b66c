/**
 * Bench child: the closed-loop load of the swap part of the updates section. Between a `start` and a `stop`
 * it keeps `concurrency` KServe v2 JSON infer requests in flight (one keep-alive connection each), records
 * every latency and status, and checks each 200 answer against the OUTPUT0 of the version it names, so a
 * request answered by a half-swapped model would show as a mismatch. It runs in its own process so the load's
 * JSON work does not share the agent's event loop. `stop` waits for the requests in flight, then answers.
 */
import http from 'node:http';
import { epochMs, type Started, type SwapLoadStart, type SwapLoadStop, type SwapPhaseResult } from './updates-protocol.js';

const REQUEST_TIMEOUT_MS = 30_000;

let running: { stop(): Promise<SwapPhaseResult> } | undefined;

function start(job: SwapLoadStart): { stop(): Promise<SwapPhaseResult> } {
  // Open loop: a request does not wait for the one before it, so each client may need a few sockets.
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.ratePerS > 0 ? job.concurrency * 8 : job.concurrency });
  const body = Buffer.from(job.body);
  const headers = { 'content-type': 'application/json', 'content-length': String(body.length) };
  const result: SwapPhaseResult = { type: 'phase-result', startedAt: epochMs(), stoppedAt: 0, latenciesMs: [], sentAt: [], statusCounts: {}, versions: {}, mismatches: 0, firstError: undefined };
  let stopping = false;

  const check = (text: string): void => {
    let answer: { model_version?: string; outputs?: { name: string; data: number[] }[] };
    try {
      answer = JSON.parse(text) as typeof answer;
    } catch {
      result.mismatches++;
      result.firstError ??= 'a 200 answer is not JSON';
      return;
    }
    const version = String(answer.model_version);
    result.versions[version] = (result.versions[version] ?? 0) + 1;
    const got = answer.outputs?.find((o) => o.name === 'OUTPUT0')?.data;
    const want = job.expected[version];
    if (!want || !got || got.length !== want.length || got.some((v, i) => v !== want[i])) {
      result.mismatches++;
      result.firstError ??= `version ${version} answered OUTPUT0 ${JSON.stringify(got?.slice(0, 4))}…, expected ${JSON.stringify(want?.slice(0, 4))}…`;
    }
  };

  const once = (scheduledAt?: number): Promise<void> =>
    new Promise((resolve) => {
      // Open loop: from the time the request was due, so a stalled agent cannot hide its delay (coordinated omission).
      const t0 = scheduledAt ?? performance.now();
      const sentAt = epochMs();
      const done = (status: number, error?: string) => {
        result.latenciesMs.push(performance.now() - t0);
        result.sentAt.push(sentAt);
        result.statusCounts[status] = (result.statusCounts[status] ?? 0) + 1;
        if (error) result.firstError ??= error;
        resolve();
      };
      const req = http.request({ agent, host: job.host, port: job.port, path: `/v2/models/${job.model}/infer`, method: 'POST', headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => done(0, err.message));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status === 200) check(text);
          done(status, status === 200 ? undefined : `HTTP ${status}: ${text.slice(0, 300)}`);
        });
      });
      req.on('error', (err) => done(0, err.message));
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
      req.end(body);
    });

  const loop = async (): Promise<void> => {
    if (job.ratePerS <= 0) {
      while (!stopping) await once();
      return;
    }
    const interval = (1000 * job.concurrency) / job.ratePerS;
    const inFlight = new Set<Promise<void>>();
    let next = performance.now() + Math.random() * interval;
    while (!stopping) {
      const wait = next - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const p = once(next);
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      next += interval;
    }
    await Promise.all(inFlight);
  };
  const loops = Array.from({ length: job.concurrency }, loop);
  return {
    async stop() {
      stopping = true;
      await Promise.all(loops);
      result.stoppedAt = epochMs();
      agent.destroy();
      return result;
    },
  };
}

async function handle(job: SwapLoadStart | SwapLoadStop): Promise<Started | SwapPhaseResult> {
  if (job.type === 'start') {
    if (running) throw new Error('a phase is already running');
    running = start(job);
    return { type: 'started' };
  }
  if (!running) throw new Error('no phase is running');
  const phase = running;
  running = undefined;
  return phase.stop();
}

process.on('disconnect', () => process.exit(0));
process.on('message', (job: SwapLoadStart | SwapLoadStop) => {
  handle(job).then(
    (result) => process.send!(result),
    (err: unknown) => process.send!({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
});
