import { ApiError, type FleetApi } from './client.js';
import { CliError, EXIT } from './exit-codes.js';
import { formatDuration, type Output } from './output.js';
import { changeLines, FAILED_ROLLOUT_STATES, renderRollout, type Rollout } from './rollout-view.js';

/**
 * `outpost rollouts watch`: polls GET /api/v1/rollouts/{id} and shows each change, until the rollout ends.
 * Three renderings of the same loop: on a terminal the whole view is redrawn in place; in a pipe or a CI log one
 * line per change (rollout state, stage, each device's state); with --json one compact snapshot per change
 * (NDJSON), so `| jq -c` can follow it. Completed resolves; halted, aborted, rolled_back and the timeout throw
 * with their exit status (exit-codes.ts).
 */
export interface WatchOptions {
  api: FleetApi;
  out: Output;
  id: string;
  intervalMs: number;
  /** null: wait as long as the rollout runs (Ctrl-C to stop). */
  timeoutMs: number | null;
  now(): number;
  sleep(ms: number): Promise<void>;
}

const CLEAR_SCREEN = '\x1b[H\x1b[2J';

/** A failure worth polling through once the watch is under way: the server restarting or a network blip. */
function transient(err: unknown): boolean {
  if (err instanceof ApiError) return err.status >= 500;
  return err instanceof CliError && err.exitCode === EXIT.FAILURE;
}

export async function watchRollout(o: WatchOptions): Promise<Rollout> {
  const path = `/api/v1/rollouts/${encodeURIComponent(o.id)}`;
  const tty = !o.out.json && o.out.stdout.isTTY === true;
  const deadline = o.timeoutMs === null ? Infinity : o.now() + o.timeoutMs;
  let last: Rollout | undefined;
  let lastText = '';
  let outage: string | null = null;

  for (;;) {
    let snapshot: Rollout | undefined;
    try {
      snapshot = await o.api.request<Rollout>('GET', path);
      if (outage !== null) o.out.note(`the fleet server answers again; watching rollout ${o.id}`);
      outage = null;
    } catch (err) {
      // The first request must succeed: a wrong URL, token or id is reported at once, not retried.
      if (last === undefined || !transient(err)) throw err;
      const message = (err as Error).message;
      if (outage !== message) o.out.note(`${message}; still watching (until ${o.timeoutMs === null ? 'Ctrl-C' : `--timeout ${formatDuration(o.timeoutMs)}`})`);
      outage = message;
    }

    if (snapshot) {
      const text = JSON.stringify(snapshot);
      if (text !== lastText) {
        if (o.out.json) o.out.line(text);
        else if (tty) o.out.stdout.write(`${CLEAR_SCREEN}${renderRollout(snapshot)}\n\nwatching every ${formatDuration(o.intervalMs)}, Ctrl-C to stop\n`);
        else for (const line of changeLines(last, snapshot)) o.out.line(line);
        last = snapshot;
        lastText = text;
      }
      if (snapshot.state === 'completed') {
        if (!o.out.json) o.out.note(`rollout ${o.id} completed: ${snapshot.model}@${snapshot.version} is committed on its devices`);
        return snapshot;
      }
      if (FAILED_ROLLOUT_STATES.has(snapshot.state)) {
        throw new CliError(`rollout ${o.id} ended ${snapshot.state}${snapshot.reason ? `: ${snapshot.reason}` : ''}`, EXIT.CONFLICT);
      }
    }

    const left = deadline - o.now();
    if (left <= 0) {
      throw new CliError(`rollout ${o.id} is still ${last!.state} after --timeout ${formatDuration(o.timeoutMs!)}; it goes on without this watch`, EXIT.FAILURE);
    }
    await o.sleep(Math.min(o.intervalMs, left));
  }
}
