/**
 * The pieces of a hot swap that are not the ModelManager's bookkeeping: the in-flight count a retiring version
 * drains, the errors stage/activate/retire throw, and the golden-input check of a staged version.
 */
import { compareGolden, goldenFeeds, outputValues } from '../../../shared/src/golden.js';
import type { Golden } from '../../../shared/src/manifest.js';
import type { ModelSession } from './session.js';
import type { HostTensor } from './tensor.js';

/**
 * Requests that resolved a version and have not finished. INVARIANT: enter() runs in the same tick as the
 * resolve() that picked the version, so a version taken out of the map can gain no request after drained() is asked.
 */
export class InFlight {
  private n = 0;
  private waiters: (() => void)[] = [];

  get count(): number {
    return this.n;
  }

  enter(): void {
    this.n++;
  }

  leave(): void {
    this.n--;
    if (this.n === 0 && this.waiters.length > 0) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves once no request is in flight. */
  drained(): Promise<void> {
    if (this.n === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

export type StageErrorCode = 'load_failed' | 'golden_mismatch';

/** stage() refused the version; everything it loaded has been released and the serving versions are untouched. */
export class StageError extends Error {
  override readonly name = 'StageError';
  constructor(
    readonly code: StageErrorCode,
    message: string,
    /** golden_mismatch: each figure out of tolerance (or the error running the golden input). */
    readonly problems: string[] = [],
  ) {
    super(message);
  }
}

export type SwapErrorCode = 'unknown_version' | 'not_ready' | 'retire_active';

/** activate() or retire() asked for something the manager's state does not allow; nothing was changed. */
export class SwapError extends Error {
  override readonly name = 'SwapError';
  constructor(
    readonly code: SwapErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Runs the golden inputs through `session` and compares the outputs with the golden's summary. Problems, empty =
 * pass; a run that fails (an input the model does not have, wrong dims) is a problem too, not an exception.
 */
export async function checkGolden(session: ModelSession, outputNames: readonly string[], golden: Golden): Promise<string[]> {
  let outputs: Record<string, HostTensor>;
  try {
    const feeds: Record<string, HostTensor> = {};
    for (const [name, f] of Object.entries(goldenFeeds(golden))) feeds[name] = { datatype: f.datatype, dims: f.dims, data: f.data };
    outputs = await session.run(feeds, outputNames);
  } catch (err) {
    return [`the golden input does not run: ${String((err as Error)?.message ?? err).split('\n')[0]!.slice(0, 300)}`];
  }
  const values: Record<string, { dims: readonly number[]; data: ArrayLike<number | bigint> }> = {};
  for (const [name, t] of Object.entries(outputs)) values[name] = { dims: t.dims, data: outputValues(t.datatype, t.data) };
  return compareGolden(golden, values);
}
