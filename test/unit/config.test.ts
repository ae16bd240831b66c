import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, configKeys, loadConfig } from '../../agent/src/config/load.js';

// The only I/O here is the YAML file the brief's file layer needs, in a temp dir removed afterwards.
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'outpost-config-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** Writes a YAML config file under the temp dir and returns its absolute path. */
function yamlFile(rel: string, text: string): string {
  const file = path.join(tmp, rel);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

/** The ConfigError loadConfig throws, or fails the test when it does not throw one. */
function configError(run: () => unknown): ConfigError {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected loadConfig to throw a ConfigError');
}

describe('loadConfig defaults', () => {
  it('gives a complete config from nothing, with paths resolved against cwd', () => {
    const cwd = path.join(tmp, 'cwd');
    const c = loadConfig({ env: {}, cwd });
    expect(c.http.port).toBe(8500);
    expect(c.http.host).toBe('0.0.0.0');
    expect(c.http.headersTimeoutMs).toBe(10_000);
    expect(c.limits.maxBodyBytes).toBe(32 * 1024 * 1024);
    expect(c.limits.maxImagePixels).toBe(40_000_000);
    expect(c.limits.maxJsonDepth).toBe(32);
    expect(c.models.versionPolicy).toBe('latest');
    expect(c.models.pinned).toEqual({});
    expect(c.inference.providers).toEqual(['tensorrt', 'cuda', 'openvino', 'cpu']);
    expect(c.batching).toEqual({ enabled: true, maxBatchSize: 8, maxQueueDelayMs: 0, maxQueueSize: 64 });
    expect(c.log.level).toBe('info');
    expect(c.dataDir).toBe(path.join(cwd, 'data'));
    expect(c.modelRepository).toBe(path.join(cwd, 'data', 'models'));
    expect(c.inference.tensorrtCacheDir).toBe(path.join(cwd, 'data', 'trt-cache'));
    expect(c.inference.runtimeLibraryPath).toBeUndefined();
  });

  it('modelRepository defaults to <dataDir>/models, and an explicit one wins', () => {
    expect(loadConfig({ env: {}, flags: { dataDir: '/srv/outpost' } }).modelRepository).toBe('/srv/outpost/models');
    expect(loadConfig({ env: {}, flags: { dataDir: '/srv/outpost', modelRepository: '/mnt/models' } }).modelRepository).toBe('/mnt/models');
  });

  it('returns a deeply frozen config', () => {
    const c = loadConfig({ env: {} });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.http)).toBe(true);
    expect(Object.isFrozen(c.inference.providers)).toBe(true);
    expect(() => {
      (c.http as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(() => {
      (c.inference.providers as string[]).push('cpu');
    }).toThrow(TypeError);
    expect(c.http.port).toBe(8500);
  });
});

describe('loadConfig layers: flags > env > file > defaults', () => {
  it('each layer overrides the ones below it, key by key', () => {
    const file = yamlFile(
      'layers/agent.yaml',
      ['http:', '  host: 127.0.0.1', '  port: 9000', 'limits:', '  maxImagePixels: 1000', '  maxJsonDepth: 16', 'inference:', '  providers: [openvino]', ''].join('\n'),
    );
    const env = { OUTPOST_HTTP_PORT: '9100', OUTPOST_LIMITS_MAX_IMAGE_PIXELS: '2000000', OUTPOST_INFERENCE_PROVIDERS: '[cuda, cpu]' };

    const fileOnly = loadConfig({ file, env: {} });
    expect(fileOnly.http.port).toBe(9000);
    expect(fileOnly.limits.maxImagePixels).toBe(1000);
    expect(fileOnly.inference.providers).toEqual(['openvino']);

    const withEnv = loadConfig({ file, env });
    expect(withEnv.http.port).toBe(9100);
    expect(withEnv.limits.maxImagePixels).toBe(2_000_000);
    expect(withEnv.inference.providers).toEqual(['cuda', 'cpu']);

    const withFlags = loadConfig({ file, env, flags: { http: { port: 9200 } } });
    expect(withFlags.http.port).toBe(9200);
    // Layers merge per key: a flag for the port does not drop the file's host or the env's pixel limit.
    expect(withFlags.http.host).toBe('127.0.0.1');
    expect(withFlags.limits.maxImagePixels).toBe(2_000_000);
    expect(withFlags.limits.maxJsonDepth).toBe(16);
    // Keys no layer sets keep their defaults.
    expect(withFlags.limits.maxTensorElements).toBe(16 * 1024 * 1024);
  });

  it('env values are YAML scalars: numbers, booleans, flow lists; empty values are ignored', () => {
    const c = loadConfig({ env: { OUTPOST_BATCHING_ENABLED: 'false', OUTPOST_HTTP_PORT: '', OUTPOST_LOG_LEVEL: 'debug', UNRELATED: 'x' } });
    expect(c.batching.enabled).toBe(false);
    expect(c.http.port).toBe(8500);
    expect(c.log.level).toBe('debug');
  });

  it('a relative dataDir in a file resolves against the file, not the working directory', () => {
    const file = yamlFile('etc/outpost/agent.yaml', 'dataDir: data\n');
    const c = loadConfig({ file, env: {}, cwd: path.join(tmp, 'elsewhere') });
    expect(c.dataDir).toBe(path.join(tmp, 'etc/outpost/data'));
    expect(c.modelRepository).toBe(path.join(tmp, 'etc/outpost/data/models'));
  });

  it('relative inference paths in a file resolve against the file too; elsewhere against cwd', () => {
    const file = yamlFile('etc/gpu/agent.yaml', 'inference:\n  runtimeLibraryPath: ort-gpu/lib\n  tensorrtCacheDir: trt\n');
    const cwd = path.join(tmp, 'elsewhere');
    const fromFile = loadConfig({ file, env: {}, cwd });
    expect(fromFile.inference.runtimeLibraryPath).toBe(path.join(tmp, 'etc/gpu/ort-gpu/lib'));
    expect(fromFile.inference.tensorrtCacheDir).toBe(path.join(tmp, 'etc/gpu/trt'));
    const fromEnv = loadConfig({ env: { OUTPOST_INFERENCE_TENSORRT_CACHE_DIR: 'trt' }, cwd });
    expect(fromEnv.inference.tensorrtCacheDir).toBe(path.join(cwd, 'trt'));
  });

  it('a relative file path resolves against cwd', () => {
    yamlFile('rel/agent.yaml', 'http:\n  port: 9300\n');
    expect(loadConfig({ file: 'rel/agent.yaml', env: {}, cwd: tmp }).http.port).toBe(9300);
  });

  it('an empty file is an empty layer', () => {
    const file = yamlFile('empty.yaml', '');
    expect(loadConfig({ file, env: {} }).http.port).toBe(8500);
  });
});

describe('loadConfig validation', () => {
  it('reports every violation at once: bad port, unknown key and bad provider together', () => {
    const err = configError(() =>
      loadConfig({ env: { OUTPOST_INFERENCE_PROVIDERS: '[cuda, gpu]' }, flags: { http: { port: 70000 }, colour: 'blue' } }),
    );
    expect(err.problems.length).toBeGreaterThanOrEqual(3);
    expect(err.problems.some((p) => p.startsWith('http.port:'))).toBe(true);
    expect(err.problems.some((p) => p.includes('colour'))).toBe(true);
    expect(err.problems.some((p) => p.startsWith('inference.providers'))).toBe(true);
    // The message lists them too, one per line, for the operator reading the log.
    for (const p of err.problems) expect(err.message).toContain(p);
  });

  it('refuses a headers timeout longer than the request timeout (Node would throw at listen)', () => {
    const err = configError(() => loadConfig({ env: {}, flags: { http: { requestTimeoutMs: 5000 } } }));
    expect(err.problems.some((p) => p.startsWith('http.headersTimeoutMs:'))).toBe(true);
    expect(() => loadConfig({ env: {}, flags: { http: { requestTimeoutMs: 5000, headersTimeoutMs: 5000 } } })).not.toThrow();
  });

  it('rejects a misspelt key instead of ignoring it, nested ones too', () => {
    const file = yamlFile('typo.yaml', 'http:\n  prot: 9000\n');
    const err = configError(() => loadConfig({ file, env: {} }));
    expect(err.problems.join('\n')).toMatch(/http.*prot/);
  });

  it('lists file, env and schema problems together', () => {
    const err = configError(() => loadConfig({ file: path.join(tmp, 'no-such.yaml'), env: { OUTPOST_HTTP_PORT: '[unclosed', OUTPOST_LIMITS_MAX_JSON_DEPTH: '1' } }));
    const text = err.problems.join('\n');
    expect(text).toContain('no-such.yaml');
    expect(text).toContain('OUTPOST_HTTP_PORT');
    expect(text).toContain('limits.maxJsonDepth');
  });

  it('refuses a file that is not a mapping', () => {
    const file = yamlFile('list.yaml', '- a\n- b\n');
    expect(configError(() => loadConfig({ file, env: {} })).problems.join('\n')).toMatch(/must be a mapping/);
  });

  it('refuses wrong types and out-of-range values', () => {
    const err = configError(() => loadConfig({ env: {}, flags: { limits: { maxJsonDepth: 5000 }, batching: { maxBatchSize: 0 }, models: { versionPolicy: 'newest' } } }));
    const text = err.problems.join('\n');
    expect(text).toContain('limits.maxJsonDepth');
    expect(text).toContain('batching.maxBatchSize');
    expect(text).toContain('models.versionPolicy');
  });
});

describe('configKeys', () => {
  const keys = configKeys();

  it('maps camelCase paths to OUTPOST_ env names', () => {
    const env = new Map(keys.map((k) => [k.path.join('.'), k.env]));
    expect(env.get('dataDir')).toBe('OUTPOST_DATA_DIR');
    expect(env.get('http.maxConnections')).toBe('OUTPOST_HTTP_MAX_CONNECTIONS');
    expect(env.get('limits.maxImagePixels')).toBe('OUTPOST_LIMITS_MAX_IMAGE_PIXELS');
    expect(env.get('inference.providers')).toBe('OUTPOST_INFERENCE_PROVIDERS');
    expect(env.get('models.pinned')).toBe('OUTPOST_MODELS_PINNED');
    for (const k of keys) expect(k.env).toMatch(/^OUTPOST_[A-Z0-9_]+$/);
    expect(new Set(keys.map((k) => k.env)).size).toBe(keys.length);
  });

  it('covers every leaf of the config, and nothing else', () => {
    const leaves: string[] = [];
    const walk = (v: unknown, at: string[]): void => {
      // Records like models.pinned ({} by default) are one value, set as a whole.
      if (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length > 0) {
        for (const [k, child] of Object.entries(v)) walk(child, [...at, k]);
      } else leaves.push(at.join('.'));
    };
    walk(loadConfig({ env: {} }), []);
    expect(keys.map((k) => k.path.join('.')).sort()).toEqual(leaves.sort());
  });

  it('every env name is read by loadConfig', () => {
    // A value each key accepts, so a key whose env name were wrong would keep its default.
    const samples: Record<string, [string, unknown]> = {
      'http.maxConnections': ['7', 7],
      'limits.maxTensorElements': ['1234', 1234],
      'models.pinned': ['{yolov8n: [3]}', { yolov8n: [3] }],
      'inference.intraOpThreads': ['2', 2],
      'batching.maxQueueDelayMs': ['0.5', 0.5],
    };
    for (const [key, [raw, expected]] of Object.entries(samples)) {
      const entry = keys.find((k) => k.path.join('.') === key)!;
      const c = loadConfig({ env: { [entry.env]: raw } }) as unknown as Record<string, Record<string, unknown>>;
      const [group, leaf] = entry.path as [string, string];
      expect(c[group]![leaf], key).toEqual(expected);
    }
  });
});
