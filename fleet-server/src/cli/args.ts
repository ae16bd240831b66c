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
export function parseTags(raw: string): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const pair of raw.split(',').map((p) => p.trim()).filter((p) => p.length > 0)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw usageError(`--tags expects key=value pairs separated by commas (line=3,site=a), not "${pair}"`);
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
