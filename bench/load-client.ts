/**
 * Bench child: the closed-loop HTTP load generator. It runs in its own process so it never shares an event
 * loop with the agent (or with the bench's bookkeeping). Each LoadJob: POST the same body from `concurrency`
 * keep-alive connections in windows (measure.ts), check every response, answer with a LoadResult. Jobs are
 * taken one at a time until the parent disconnects.
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { measureClosedLoop, OperationError } from './measure.js';
import type { ChildFailure, LoadJob, LoadResult, ResponseCheck } from './protocol.js';

const REQUEST_TIMEOUT_MS = 120_000;
const bodies = new Map<string, Buffer>();

async function runLoad(job: LoadJob): Promise<LoadResult> {
  let body = bodies.get(job.bodyFile);
  if (!body) bodies.set(job.bodyFile, (body = readFileSync(job.bodyFile)));
  const payload = body;
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.concurrency });
  const statusCounts: Record<string, number> = {};
  let mismatches = 0;
  const headers = { ...job.headers, 'content-length': String(payload.length) };

  const op = () =>
    new Promise<void>((resolve, reject) => {
      const req = http.request({ agent, host: job.host, port: job.port, path: job.path, method: 'POST', headers }, (res) => {
        const status = res.statusCode ?? 0;
        // Only detect answers and errors are read whole; big tensor answers are counted, not copied.
        const keep = job.check.kind === 'detect' || status !== 200;
        const chunks: Buffer[] = [];
        let length = 0;
        res.on('data', (chunk: Buffer) => {
          length += chunk.length;
          if (keep) chunks.push(chunk);
        });
        res.on('error', reject);
        res.on('end', () => {
          statusCounts[status] = (statusCounts[status] ?? 0) + 1;
          if (status !== 200) {
            reject(new OperationError(`HTTP ${status} from ${job.path}: ${Buffer.concat(chunks).toString('utf8').slice(0, 300)}`));
            return;
          }
          const problem = checkResponse(job.check, res.headers, length, keep ? Buffer.concat(chunks) : undefined);
          if (problem) {
            mismatches++;
            reject(new OperationError(`${job.path}: ${problem}`));
          } else resolve();
        });
      });
      req.on('error', reject);
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no response within ${REQUEST_TIMEOUT_MS} ms`)));
      req.end(payload);
    });

  try {
    const result = await measureClosedLoop(op, job.concurrency, job.plan, job.watchedPid, false);
    return { type: 'load-result', id: job.id, result, mismatches, statusCounts };
  } finally {
    // Aborts the requests still in flight (measure.ts, drain = false).
    agent.destroy();
  }
}

/** Cheap per-response checks; undefined when the response is what the bare pipeline predicts. */
function checkResponse(check: ResponseCheck, headers: http.IncomingHttpHeaders, length: number, body: Buffer | undefined): string | undefined {
  switch (check.kind) {
    case 'detect': {
      let detections: unknown;
      try {
        detections = (JSON.parse(body!.toString('utf8')) as { detections?: unknown }).detections;
      } catch {
        return 'response is not JSON';
      }
      if (!Array.isArray(detections)) return 'response has no detections array';
      return detections.length === check.expectedDetections ? undefined : `${detections.length} detections, the bare pipeline finds ${check.expectedDetections}`;
    }
    case 'kserve-binary': {
      const head = Number(headers['inference-header-content-length']);
      if (!Number.isInteger(head)) return 'no Inference-Header-Content-Length header';
      return length === head + check.expectedBinaryBytes ? undefined : `body of ${length} bytes, expected ${head} + ${check.expectedBinaryBytes}`;
    }
    case 'kserve-json':
      return String(headers['content-type']).startsWith('application/json') && length > 0 ? undefined : `content-type ${String(headers['content-type'])}, ${length} bytes`;
  }
}

process.on('disconnect', () => process.exit(0));
process.on('message', (job: LoadJob) => {
  runLoad(job).then(
    (result) => process.send!(result),
    (err: unknown) => process.send!({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies ChildFailure),
  );
});
