import { Cron } from 'croner';
import { isModelName, parseModelRef, parseModelVersion } from '../registry/model-ref.js';
import { usageError } from './exit-codes.js';

/** Command-line value parsers; each throws a usage error (exit 2) naming the option and what it expects. */

const DURATION = /^(\d+)\s*(s|m|h|d)?$/i;
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** `3600`, `45s`, `30m`, `1h`, `7d` → seconds. */
export function parseDurationSeconds(raw: string, option: string): number {
  const m = DURATION.exec(raw.trim());
  const seconds = m ? Number(m[1]) * UNIT_SECONDS[(m[2] ?? 's').toLowerCase()]! : NaN;
  if (!Number.isSafeInteger(seconds) || seconds <= 0) throw usageError(`${option} expects a duration such as 3600, 30m, 1h or 7d, not "${raw}"`);
  return seconds;
}

/** A point in time: a duration back from now (`1h`) or an ISO-8601 timestamp → ISO-8601 UTC. */
export function parseInstant(raw: string, option: string, nowMs: number): string {
  if (DURATION.test(raw.trim())) return new Date(nowMs - parseDurationSeconds(raw, option) * 1000).toISOString();
  const ms = /^\d{4}-\d{2}-\d{2}/.test(raw) ? Date.parse(raw) : NaN;
  if (Number.isNaN(ms)) throw usageError(`${option} expects a duration back from now (1h, 30m, 7d) or an ISO-8601 time, not "${raw}"`);
  return new Date(ms).toISOString();
}

/** `line=3,site=a` → {line: '3', site: 'a'} (the server checks the key and value rules). */
export function parseTags(raw: string, option = '--tags'): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const pair of raw.split(',').map((p) => p.trim()).filter((p) => p.length > 0)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw usageError(`${option} expects key=value pairs separated by commas (line=3,site=a), not "${pair}"`);
    tags[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return tags;
}

export function parseVersionArg(raw: string, option = '--version'): number {
  const v = parseModelVersion(raw);
  if (v === null) throw usageError(`${option} expects a positive integer version, not "${raw}"`);
  return v;
}

export function parseNameArg(raw: string, option = '--name'): string {
  if (!isModelName(raw)) throw usageError(`${option} "${raw}" is not a model name (lower-case letters, digits, _ . -, at most 64, starting alphanumeric)`);
  return raw;
}

/** `simple@2` → {name, version}. */
export function parseRefArg(raw: string): { name: string; version: number } {
  const ref = parseModelRef(raw);
  if (!ref) throw usageError(`expected NAME@VERSION such as simple@2, not "${raw}"`);
  return ref;
}

export function parsePositiveInt(raw: string, option: string, max: number): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw usageError(`${option} expects an integer from 1 to ${max}, not "${raw}"`);
  return n;
}

const DURATION_MS = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/i;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `250ms`, `1.5s`, `30s`, `5m`, `1h`, `2d`; a bare number is seconds (as for --ttl) → whole milliseconds. */
export function parseDurationMs(raw: string, option: string, options: { allowZero?: boolean; maxMs?: number } = {}): number {
  const m = DURATION_MS.exec(raw.trim());
  const ms = m ? Math.round(Number(m[1]) * UNIT_MS[(m[2] ?? 's').toLowerCase()]!) : NaN;
  const min = options.allowZero ? 0 : 1;
  if (!Number.isSafeInteger(ms) || ms < min || ms > (options.maxMs ?? Number.MAX_SAFE_INTEGER)) {
    const bound = options.maxMs !== undefined ? ` (at most ${options.maxMs / 1000} s)` : '';
    throw usageError(`${option} expects a duration such as 250ms, 30s, 5m or 1h${bound}, not "${raw}"`);
  }
  return ms;
}

/** A duration the server takes in whole seconds: `5m`, `300s`, `1h` → 300 / 300 / 3600. */
export function parseWholeSeconds(raw: string, option: string, options: { allowZero?: boolean; maxSeconds?: number } = {}): number {
  const ms = parseDurationMs(raw, option, { ...(options.allowZero ? { allowZero: true } : {}), ...(options.maxSeconds !== undefined ? { maxMs: options.maxSeconds * 1000 } : {}) });
  if (ms % 1000 !== 0) throw usageError(`${option} expects whole seconds (300s, 5m, 1h), not "${raw}"`);
  return ms / 1000;
}

const PERCENT = /^(\d+(?:\.\d+)?)\s*%?$/;

/**
 * A percentage: `20%` and `20` both mean twenty percent (never a fraction: `0.2` is 0.2 %, so a value means the
 * same with or without its sign) → the number of percent, within [min, max].
 */
export function parsePercent(raw: string, option: string, min = 0, max = 100): number {
  const m = PERCENT.exec(raw.trim());
  const value = m ? Number(m[1]) : NaN;
  if (!Number.isFinite(value) || value < min || value > max) throw usageError(`${option} expects a percentage from ${min} to ${max} such as 20% (or 20), not "${raw}"`);
  return value;
}

/** `10,50,100` → cumulative stage percentages: rising, each above 0, the last 100 (every device in the end). */
export function parseStages(raw: string, option = '--stages'): number[] {
  const parts = raw.split(',').map((p) => p.trim());
  const stages = parts.map((p) => parsePercent(p, option));
  const problem =
    parts.some((p) => p.length === 0) ? 'an empty entry'
    : stages.some((s) => s <= 0) ? 'a stage of 0 %'
    : stages.some((s, i) => i > 0 && s <= stages[i - 1]!) ? 'percentages that do not rise'
    : stages[stages.length - 1] !== 100 ? 'a last stage below 100 % (the rollout would never reach every device)'
    : null;
  if (problem) throw usageError(`${option} expects rising cumulative percentages ending at 100 such as 10,50,100; "${raw}" has ${problem}`);
  return stages;
}

/** `a,b,c` → ['a', 'b', 'c'] without empty entries or repeats. */
export function parseList(raw: string, option: string): string[] {
  const items = [...new Set(raw.split(',').map((p) => p.trim()).filter((p) => p.length > 0))];
  if (items.length === 0) throw usageError(`${option} expects a comma-separated list such as dev-a,dev-b, not "${raw}"`);
  return items;
}

export function parseNumber(raw: string, option: string, min: number, max: number): number {
  const n = raw.trim().length > 0 ? Number(raw) : NaN;
  if (!Number.isFinite(n) || n < min || n > max) throw usageError(`${option} expects a number from ${min} to ${max}, not "${raw}"`);
  return n;
}

/** A JSON object given on the command line (`--args '{"model":"detector"}'`). */
export function parseJsonObject(raw: string, option: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw usageError(`${option} expects a JSON object such as '{"model":"detector"}': ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw usageError(`${option} expects a JSON object such as '{"model":"detector"}', not ${raw}`);
  return value as Record<string, unknown>;
}

/** A cron expression, checked here with the parser the server uses (croner) so a typo fails before any request. */
export function parseCron(raw: string, option: string): string {
  try {
    new Cron(raw.trim());
  } catch (err) {
    throw usageError(`${option} expects a cron expression such as "0 2 * * *" (02:00 every day): ${(err as Error).message}`);
  }
  return raw.trim();
}
