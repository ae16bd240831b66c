import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CredentialsError, credentialsPath, loadCredentials } from '../../agent/src/link/credentials.js';
import { ENROLL_EXIT, runEnrollCommand, type EnrollCommandOptions } from '../../agent/src/link/enroll-command.js';
import { tempDir } from './agent-link-support.js';

/**
 * `outpost-agent enroll` against a small fleet stand-in (fastify on 127.0.0.1:0) that implements the
 * enrollment contract: POST /api/v1/enroll {token} → 201 credentials, or 401 {error, code} for a token
 * that is unknown, expired or used. Checks what an installer sees: exit codes, messages, the saved file.
 */
let server: FastifyInstance;
let fleetUrl: string;
let requests: { token: unknown }[];
let answer: 'good' | 'bad-body' | 'crash' = 'good';
let dir: { dir: string; remove(): void };

const ENROLLED = {
  deviceId: 'box-42',
  secret: 's3cret-s3cret-s3cret-s3cret-0042',
  mqttUrl: 'mqtts://fleet.example:8883',
  fleetUrl: 'https://fleet.example',
  fleetPublicKey: 'MCowBQYDK2VwAyEA3+fake+key+for+tests+only+xxxxxxxxxxxxxx=',
  tags: { site: 'plant-3', line: 'a' },
};

beforeEach(async () => {
  requests = [];
  answer = 'good';
  dir = tempDir('outpost-enroll-');
  server = Fastify();
  server.post('/api/v1/enroll', async (req, reply) => {
    const token = (req.body as { token?: unknown } | undefined)?.token;
    requests.push({ token });
    if (answer === 'crash') return reply.status(500).send({ error: 'database is locked', code: 'FLEET_INTERNAL' });
    if (token !== 'tok-good') return reply.status(401).send({ error: 'enrollment token already used', code: 'FLEET_ENROLLMENT_TOKEN_INVALID' });
    return reply.status(201).send(answer === 'bad-body' ? { deviceId: 'box-42' } : ENROLLED);
  });
  fleetUrl = await server.listen({ host: '127.0.0.1', port: 0 });
});

afterEach(async () => {
  await server.close();
  dir.remove();
});

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) } };
}

const enroll = (o: Partial<EnrollCommandOptions> = {}) => {
  const c = io();
  const run = runEnrollCommand({ fleet: fleetUrl, token: 'tok-good', dataDir: dir.dir, env: {}, timeoutMs: 5_000, ...o }, c.io);
  return run.then((code) => ({ code, out: c.out.join('\n'), err: c.err.join('\n') }));
};

describe('outpost-agent enroll', () => {
  it('saves the credentials 0600, atomically, and prints the device id and where they are', async () => {
    const r = await enroll();
    expect(r.code).toBe(ENROLL_EXIT.ok);
    const file = credentialsPath(dir.dir);
    expect(r.out).toContain('box-42');
    expect(r.out).toContain(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(requests).toEqual([{ token: 'tok-good' }]);
    const saved = JSON.parse(readFileSync(file, 'utf8'));
    expect(saved).toMatchObject(ENROLLED);
    expect(Date.parse(saved.enrolledAt)).toBeLessThanOrEqual(Date.now());
    expect(loadCredentials(dir.dir)?.credentials.deviceId).toBe('box-42');
    // No temp file left beside it.
    expect(existsSync(`${file}.${process.pid}.tmp`)).toBe(false);
  });

  it('refuses to replace existing credentials without --force, before spending the token', async () => {
    expect((await enroll()).code).toBe(ENROLL_EXIT.ok);
    const before = readFileSync(credentialsPath(dir.dir), 'utf8');
    const again = await enroll();
    expect(again.code).toBe(ENROLL_EXIT.usage);
    expect(again.err).toMatch(/already enrolled.*--force/);
    expect(requests).toHaveLength(1);
    expect(readFileSync(credentialsPath(dir.dir), 'utf8')).toBe(before);

    const forced = await enroll({ force: true });
    expect(forced.code).toBe(ENROLL_EXIT.ok);
    expect(requests).toHaveLength(2);
    expect(statSync(credentialsPath(dir.dir)).mode & 0o777).toBe(0o600);
  });

  it('maps a refused token (401) to exit 3 with the fleet message, and writes nothing', async () => {
    const r = await enroll({ token: 'tok-used' });
    expect(r.code).toBe(ENROLL_EXIT.tokenRefused);
    expect(r.err).toContain('enrollment token already used');
    expect(r.err).toContain('FLEET_ENROLLMENT_TOKEN_INVALID');
    expect(existsSync(credentialsPath(dir.dir))).toBe(false);
  });

  it('exits 1 when the fleet is unreachable, answers 5xx, or answers something that is not an enrollment', async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
    const unreachable = await enroll({ fleet: `http://127.0.0.1:${closedPort}` });
    expect(unreachable.code).toBe(ENROLL_EXIT.network);
    expect(unreachable.err).toMatch(/cannot reach the fleet server.*ECONNREFUSED/);

    answer = 'crash';
    const crashed = await enroll();
    expect(crashed.code).toBe(ENROLL_EXIT.network);
    expect(crashed.err).toMatch(/HTTP 500.*database is locked/);

    answer = 'bad-body';
    const bad = await enroll();
    expect(bad.code).toBe(ENROLL_EXIT.network);
    expect(bad.err).toMatch(/enrollment answer is invalid at secret/);
    expect(existsSync(credentialsPath(dir.dir))).toBe(false);
  });

  it('exits 2 on usage errors: not an http URL, an empty token, a broken config file', async () => {
    expect((await enroll({ fleet: 'mqtt://fleet:1883' })).code).toBe(ENROLL_EXIT.usage);
    expect((await enroll({ fleet: 'not a url' })).code).toBe(ENROLL_EXIT.usage);
    expect((await enroll({ token: '  ' })).code).toBe(ENROLL_EXIT.usage);
    const config = path.join(dir.dir, 'agent.yaml');
    writeFileSync(config, 'fleet:\n  keepaliveSecondz: 3\n');
    const r = await enroll({ config, dataDir: undefined });
    expect(r.code).toBe(ENROLL_EXIT.usage);
    expect(requests).toEqual([]);
  });

  it('takes the data dir from the config file when --data-dir is absent', async () => {
    const config = path.join(dir.dir, 'agent.yaml');
    writeFileSync(config, 'dataDir: ./state\n');
    const r = await enroll({ config, dataDir: undefined });
    expect(r.code).toBe(ENROLL_EXIT.ok);
    expect(existsSync(credentialsPath(path.join(dir.dir, 'state')))).toBe(true);
  });

  it('the agent refuses a world-readable credentials file and warns about a group-readable one', async () => {
    expect((await enroll()).code).toBe(ENROLL_EXIT.ok);
    const file = credentialsPath(dir.dir);
    chmodSync(file, 0o640);
    expect(loadCredentials(dir.dir)?.warnings.join()).toMatch(/readable by its group/);
    chmodSync(file, 0o644);
    expect(() => loadCredentials(dir.dir)).toThrow(CredentialsError);
    writeFileSync(file, '{"deviceId": "box-42"}', { mode: 0o600 });
    chmodSync(file, 0o600);
    expect(() => loadCredentials(dir.dir)).toThrow(/invalid at secret/);
  });
});
