import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

/**
 * Layered configuration shared by the agent and the fleet server: defaults (in the schema) → YAML file →
 * OUTPOST_* environment → command-line flags. Validated once, every violation listed, the result frozen.
 */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

export type Plain = Record<string, unknown>;

export interface LoadConfigOptions {
  /** Path of a YAML (or JSON) file; relative paths inside it resolve against its directory. */
  file?: string | undefined;
  /** Usually process.env; only OUTPOST_* keys that name a config key are read. */
  env?: Record<string, string | undefined>;
  /** Highest layer: already-structured values from command-line flags. */
  flags?: Plain;
  cwd?: string;
}

export interface LayeredSpec<S extends z.ZodType> {
  schema: S;
  /** Key paths holding file system paths: a relative value in a file resolves against that file's directory. */
  pathKeys: readonly (readonly string[])[];
  /** Keys whose object value replaces rather than merges (maps keyed by user data, e.g. models.pinned). */
  replaceKeys?: readonly string[];
}

/** Parses and validates the layers; throws ConfigError with every problem. Path resolution is the caller's. */
export function loadLayered<S extends z.ZodType>(spec: LayeredSpec<S>, options: LoadConfigOptions = {}): z.output<S> {
  const cwd = options.cwd ?? process.cwd();
  const problems: string[] = [];
  const layers: Plain[] = [];
  if (options.file !== undefined) {
    const fileLayer = readConfigFile(path.resolve(cwd, options.file), spec.pathKeys, problems);
    if (fileLayer) layers.push(fileLayer);
  }
  layers.push(envLayer(spec.schema, options.env ?? {}, problems));
  if (options.flags) layers.push(options.flags);
  const replace = new Set(spec.replaceKeys ?? []);
  const merged = layers.reduce<Plain>((acc, layer) => deepMerge(acc, layer, replace), {});
  const parsed = spec.schema.safeParse(merged);
  if (!parsed.success) problems.push(...parsed.error.issues.map(formatIssue));
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);
  return parsed.data;
}

function readConfigFile(file: string, pathKeys: LayeredSpec<z.ZodType>['pathKeys'], problems: string[]): Plain | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    problems.push(`config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    return undefined;
  }
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (err) {
    problems.push(`config file ${file}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
    return undefined;
  }
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.push(`config file ${file}: must be a mapping of keys, got ${Array.isArray(value) ? 'a list' : typeof value}`);
    return undefined;
  }
  // Paths written in a file are relative to that file, so /etc/outpost/agent.yaml can say `dataDir: data`.
  const layer = structuredClone(value as Plain);
  const dir = path.dirname(file);
  for (const keyPath of pathKeys) {
    let node: unknown = layer;
    for (const key of keyPath.slice(0, -1)) node = isPlain(node) ? node[key] : undefined;
    const last = keyPath[keyPath.length - 1]!;
    if (isPlain(node) && typeof node[last] === 'string') node[last] = path.resolve(dir, node[last] as string);
  }
  return layer;
}

/** Every leaf key of the schema with its env var name: http.maxConnections → OUTPOST_HTTP_MAX_CONNECTIONS. */
export function configKeysOf(schema: z.ZodType): { path: string[]; env: string }[] {
  const out: { path: string[]; env: string }[] = [];
  const walk = (node: z.ZodType, at: string[]): void => {
    const inner = unwrap(node);
    if (inner instanceof z.ZodObject) {
      for (const [key, child] of Object.entries(inner.shape as Record<string, z.ZodType>)) walk(child, [...at, key]);
      return;
    }
    out.push({ path: at, env: 'OUTPOST_' + at.map((p) => p.replace(/[A-Z]/g, (ch) => `_${ch}`).toUpperCase()).join('_') });
  };
  walk(schema, []);
  return out;
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  for (;;) {
    if (s instanceof z.ZodDefault || s instanceof z.ZodPrefault || s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.unwrap() as z.ZodType;
    else if (s instanceof z.ZodPipe) s = s.in as z.ZodType;
    else return s;
  }
}

function envLayer(schema: z.ZodType, env: Record<string, string | undefined>, problems: string[]): Plain {
  const layer: Plain = {};
  for (const { path: keyPath, env: name } of configKeysOf(schema)) {
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    // Env values are YAML scalars or flow collections: 8500 → number, true → boolean, [cuda, cpu] → list.
    let value: unknown;
    try {
      value = parseYaml(raw);
    } catch {
      problems.push(`${name}: cannot parse ${JSON.stringify(raw)}`);
      continue;
    }
    setPath(layer, keyPath, value);
  }
  return layer;
}

export function setPath(target: Plain, keyPath: string[], value: unknown): void {
  let node = target;
  for (const key of keyPath.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
    node = node[key] as Plain;
  }
  node[keyPath[keyPath.length - 1] as string] = value;
}

function deepMerge(base: Plain, over: Plain, replace: ReadonlySet<string>): Plain {
  const out: Plain = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const prev = out[key];
    out[key] = isPlain(prev) && isPlain(value) && !replace.has(key) ? deepMerge(prev, value, replace) : value;
  }
  return out;
}

function isPlain(v: unknown): v is Plain {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function formatIssue(issue: z.core.$ZodIssue): string {
  const where = issue.path.length > 0 ? issue.path.join('.') : '(root)';
  return `${where}: ${issue.message}`;
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
