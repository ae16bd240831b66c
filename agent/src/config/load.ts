import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { AgentConfigSchema, type AgentConfig } from './schema.js';

/** Thrown when the configuration is invalid; `problems` lists every violation, one per line. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

type Plain = Record<string, unknown>;

export interface LoadConfigOptions {
  /** Path of a YAML (or JSON) file; relative paths inside it resolve against its directory. */
  file?: string | undefined;
  /** Usually process.env; only OUTPOST_* keys that name a config key are read. */
  env?: Record<string, string | undefined>;
  /** Highest layer: already-structured values from command-line flags. */
  flags?: Plain;
  cwd?: string;
}

export function loadConfig(options: LoadConfigOptions = {}): AgentConfig {
  const cwd = options.cwd ?? process.cwd();
  const problems: string[] = [];
  const layers: Plain[] = [];

  if (options.file !== undefined) {
    const fileLayer = readConfigFile(path.resolve(cwd, options.file), problems);
    if (fileLayer) layers.push(fileLayer);
  }
  layers.push(envLayer(options.env ?? {}, problems));
  if (options.flags) layers.push(options.flags);

  const merged = layers.reduce<Plain>((acc, layer) => deepMerge(acc, layer), {});
  const parsed = AgentConfigSchema.safeParse(merged);
  if (!parsed.success) problems.push(...parsed.error.issues.map(formatIssue));
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);

  const c = parsed.data;
  const dataDir = path.resolve(cwd, c.dataDir);
  return deepFreeze({
    ...c,
    dataDir,
    modelRepository: path.resolve(cwd, c.modelRepository ?? path.join(dataDir, 'models')),
    inference: {
      ...c.inference,
      runtimeLibraryPath: c.inference.runtimeLibraryPath && path.resolve(cwd, c.inference.runtimeLibraryPath),
      tensorrtCacheDir: path.resolve(cwd, c.inference.tensorrtCacheDir ?? path.join(dataDir, 'trt-cache')),
    },
  });
}

function readConfigFile(file: string, problems: string[]): Plain | undefined {
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
  const layer = { ...(value as Plain) };
  const dir = path.dirname(file);
  for (const key of ['dataDir', 'modelRepository'] as const) {
    if (typeof layer[key] === 'string') layer[key] = path.resolve(dir, layer[key] as string);
  }
  if (isPlain(layer.inference)) {
    const inference = { ...layer.inference };
    for (const key of ['runtimeLibraryPath', 'tensorrtCacheDir'] as const) {
      if (typeof inference[key] === 'string') inference[key] = path.resolve(dir, inference[key] as string);
    }
    layer.inference = inference;
  }
  return layer;
}

/** Every leaf key of the schema with its env var name: http.maxConnections → OUTPOST_HTTP_MAX_CONNECTIONS. */
export function configKeys(): { path: string[]; env: string }[] {
  const out: { path: string[]; env: string }[] = [];
  const walk = (schema: z.ZodType, at: string[]): void => {
    const inner = unwrap(schema);
    if (inner instanceof z.ZodObject) {
      for (const [key, child] of Object.entries(inner.shape as Record<string, z.ZodType>)) walk(child, [...at, key]);
      return;
    }
    out.push({ path: at, env: 'OUTPOST_' + at.map((p) => p.replace(/[A-Z]/g, (ch) => `_${ch}`).toUpperCase()).join('_') });
  };
  walk(AgentConfigSchema, []);
  return out;
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  while (s instanceof z.ZodDefault || s instanceof z.ZodPrefault || s instanceof z.ZodOptional || s instanceof z.ZodNullable) {
    s = s.unwrap() as z.ZodType;
  }
  return s;
}

function envLayer(env: Record<string, string | undefined>, problems: string[]): Plain {
  const layer: Plain = {};
  for (const { path: keyPath, env: name } of configKeys()) {
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

function deepMerge(base: Plain, over: Plain): Plain {
  const out: Plain = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const prev = out[key];
    out[key] = isPlain(prev) && isPlain(value) && key !== 'pinned' ? deepMerge(prev, value) : value;
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

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
