import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, fleetConfigKeys, loadFleetConfig } from '../../fleet-server/src/config/load.js';
import { MIN_PACKET_BYTES } from '../../fleet-server/src/config/schema.js';
import { createFleetMetrics } from '../../fleet-server/src/metrics/fleet-metrics.js';
import { REPO_ROOT } from '../helpers/paths.js';

// The only I/O is the YAML files the file layer needs, in a temp dir removed afterwards.
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'outpost-fleet-config-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function yamlFile(rel: string, text: string): string {
  const file = path.join(tmp, rel);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

function configError(run: () => unknown): ConfigError {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected loadFleetConfig to throw a ConfigError');
}

describe('fleet config defaults', () => {
  it('gives a complete config from nothing, with dataDir resolved against cwd', () => {
    const cwd = path.join(tmp, 'cwd');
    const c = loadFleetConfig({ env: {}, cwd });
    expect(c.dataDir).toBe(path.join(cwd, 'data'));
    expect(c.http).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(c.broker).toMatchObject({ host: '0.0.0.0', port: 1883, tlsPort: 8883, maxPacketBytes: 1024 * 1024 });
    expect(c.broker.url).toBeUndefined();
    expect(c.broker.publicUrl).toBeUndefined();
    expect(c.enrollment).toEqual({ defaultTtlSeconds: 3600, maxTtlSeconds: 30 * 86_400 });
    expect(c.telemetry.retentionDays).toBe(30);
    expect(c.registry.maxArtifactBytes).toBe(2 * 1024 ** 3);
    expect(c.log.level).toBe('info');
  });

  it('is frozen, so nothing changes it after validation', () => {
    const c = loadFleetConfig({ env: {} });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.broker)).toBe(true);
  });
});

describe('fleet config layers', () => {
  it('file < OUTPOST_* env < flags, and relative paths in the file resolve against the file', () => {
    const file = yamlFile('etc/fleet.yaml', [
      'dataDir: state',
      'http: { port: 9000, publicUrl: "https://fleet.example.com" }',
      'broker: { port: 1999, certFile: tls/cert.pem, keyFile: tls/key.pem, publicUrl: "mqtts://fleet.example.com:8883" }',
      'telemetry: { retentionDays: 7 }',
    ].join('\n'));
    const c = loadFleetConfig({ file, env: { OUTPOST_BROKER_PORT: '2000', OUTPOST_TELEMETRY_RETENTION_DAYS: '14' }, flags: { telemetry: { retentionDays: 3 } } });
    const dir = path.dirname(file);
    expect(c.dataDir).toBe(path.join(dir, 'state'));
    expect(c.http.port).toBe(9000);
    expect(c.http.publicUrl).toBe('https://fleet.example.com');
    expect(c.broker.port).toBe(2000);
    expect(c.broker.certFile).toBe(path.join(dir, 'tls/cert.pem'));
    expect(c.broker.keyFile).toBe(path.join(dir, 'tls/key.pem'));
    expect(c.broker.publicUrl).toBe('mqtts://fleet.example.com:8883');
    expect(c.telemetry.retentionDays).toBe(3);
  });

  it('accepts an external broker with the fleet server\'s credentials', () => {
    const c = loadFleetConfig({ env: { OUTPOST_BROKER_URL: 'mqtt://127.0.0.1:1884', OUTPOST_BROKER_USERNAME: 'outpost-fleet', OUTPOST_BROKER_PASSWORD: 's3cret', OUTPOST_BROKER_SHARED_GROUP: 'ingest', OUTPOST_BROKER_PUBLIC_URL: 'mqtts://fleet.example:8883' }, cwd: tmp, flags: { broker: { passwordFile: 'mosquitto/passwd' } } });
    expect(c.broker).toMatchObject({ url: 'mqtt://127.0.0.1:1884', username: 'outpost-fleet', password: 's3cret', sharedGroup: 'ingest', passwordFile: path.join(tmp, 'mosquitto/passwd') });
  });

  it('names every config key with its environment variable', () => {
    const keys = fleetConfigKeys();
    expect(keys).toContainEqual({ path: ['broker', 'tlsPort'], env: 'OUTPOST_BROKER_TLS_PORT' });
    expect(keys).toContainEqual({ path: ['enrollment', 'maxTtlSeconds'], env: 'OUTPOST_ENROLLMENT_MAX_TTL_SECONDS' });
    expect(keys).toContainEqual({ path: ['registry', 'maxArtifactBytes'], env: 'OUTPOST_REGISTRY_MAX_ARTIFACT_BYTES' });
    expect(keys.length).toBeGreaterThanOrEqual(20);
  });
});

describe('fleet config validation', () => {
  it('lists every problem at once instead of stopping at the first', () => {
    const file = yamlFile('bad.yaml', [
      'http: { port: 70000, publicUrl: "not a url" }',
      'broker: { maxPacketBytes: 1000, certFile: cert.pem, url: "ftp://x" }',
      'enrollment: { defaultTtlSeconds: 7200, maxTtlSeconds: 3600 }',
      'telemetry: { retentionDays: 0 }',
      'log: { level: loud }',
      'colour: blue',
    ].join('\n'));
    const err = configError(() => loadFleetConfig({ file, env: {} }));
    const text = err.problems.join('\n');
    for (const where of ['http.port', 'http.publicUrl', 'broker.maxPacketBytes', 'broker.url', 'telemetry.retentionDays', 'log.level', 'colour']) {
      expect(text, where).toContain(where);
    }
    expect(err.problems.length).toBeGreaterThanOrEqual(7);
  });

  it('checks the rules between keys: TLS needs cert and key, an external broker needs credentials, default ttl ≤ max', () => {
    expect(configError(() => loadFleetConfig({ env: {}, flags: { broker: { certFile: '/c.pem' } } })).problems.join()).toContain('certFile and keyFile go together');
    expect(configError(() => loadFleetConfig({ env: {}, flags: { broker: { url: 'mqtt://127.0.0.1:1883' } } })).problems.join()).toContain('needs broker.username and broker.password');
    // Devices reach an external broker on their own listener; defaulting them to the fleet's URL locked them out.
    expect(configError(() => loadFleetConfig({ env: {}, flags: { broker: { url: 'mqtt://127.0.0.1:1884', username: 'f', password: 'p' } } })).problems.join()).toContain('needs broker.publicUrl');
    // tcp:// and tls:// are mqtt.js aliases the agent does not accept: never hand them to a device.
    expect(configError(() => loadFleetConfig({ env: {}, flags: { broker: { publicUrl: 'tcp://fleet:1883' } } })).problems.join()).toContain('broker.publicUrl');
    expect(configError(() => loadFleetConfig({ env: {}, flags: { enrollment: { defaultTtlSeconds: 10, maxTtlSeconds: 5 } } })).problems.join()).toContain('defaultTtlSeconds must not exceed maxTtlSeconds');
  });

  it('refuses a broker packet limit below the largest valid agent message', () => {
    expect(loadFleetConfig({ env: {}, flags: { broker: { maxPacketBytes: MIN_PACKET_BYTES } } }).broker.maxPacketBytes).toBe(MIN_PACKET_BYTES);
    expect(configError(() => loadFleetConfig({ env: {}, flags: { broker: { maxPacketBytes: MIN_PACKET_BYTES - 1 } } })).problems[0]).toContain('broker.maxPacketBytes');
  });

  it('reports an unreadable file and an unparsable env value as problems', () => {
    const err = configError(() => loadFleetConfig({ file: path.join(tmp, 'missing.yaml'), env: { OUTPOST_HTTP_PORT: '[' } }));
    expect(err.problems.join('\n')).toMatch(/missing\.yaml: ENOENT/);
    expect(err.problems.join('\n')).toContain('OUTPOST_HTTP_PORT');
  });
});

describe('docs/fleet-api.md stays in sync with the code', () => {
  const doc = readFileSync(path.join(REPO_ROOT, 'docs/fleet-api.md'), 'utf8');

  it('documents every configuration key with its environment variable', () => {
    const missing = fleetConfigKeys().filter((k) => !doc.includes(`\`${k.path.join('.')}\``) || !doc.includes(`\`${k.env}\``));
    expect(missing.map((k) => k.path.join('.'))).toEqual([]);
  });

  it('documents every outpost_fleet_* metric the server registers', async () => {
    const names = (await createFleetMetrics().registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => n.startsWith('outpost_'));
    expect(names.length).toBeGreaterThan(5);
    expect(names.filter((n) => !doc.includes(`\`${n}\``))).toEqual([]);
  });
});
