import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { DesiredModel } from '../../shared/src/mqtt/messages.js';
import { deploymentStatement, generateSigningKey, loadPrivateKey, manifestDigest, signStatement } from '../../shared/src/signing.js';
import { checkDeployment, safeVersionDir, VerifyError, verifyArtifact } from '../../agent/src/update/verify.js';

const fleetKey = generateSigningKey();
const otherKey = generateSigningKey();
const DEVICE = 'dev-0001';
const NOW = new Date('2024-06-01T12:00:00Z');
const SHA = 'ab'.repeat(32);

function sign(entry: Omit<DesiredModel, 'signature'>, privateKeyPem = fleetKey.privateKeyPem, device = DEVICE): DesiredModel {
  const statement = deploymentStatement({
    device, name: entry.name, version: entry.version, sha256: entry.sha256, size: entry.size,
    manifestSha256: manifestDigest(entry.manifest), deployment: entry.deployment, expires: entry.expires,
  });
  return { ...entry, signature: signStatement(loadPrivateKey(privateKeyPem), statement) };
}

const base: Omit<DesiredModel, 'signature'> = {
  name: 'detector', version: 3, sha256: SHA, size: 12_345, url: '/api/v1/models/detector/versions/3/artifact',
  manifest: { name: 'detector', version: 3, sha256: SHA, task: 'detect' },
  deployment: 17, expires: '2024-06-02T12:00:00.000Z', rollout: 'r-1', remove: false,
};
const ctx = { deviceId: DEVICE, fleetPublicKeyPem: fleetKey.publicKeyPem, now: NOW };

describe('checkDeployment', () => {
  it('accepts an entry signed for this device by the enrolled fleet key (with or without a manifest)', () => {
    expect(checkDeployment(sign(base), ctx)).toEqual({ ok: true });
    expect(checkDeployment(sign({ ...base, manifest: null }), ctx)).toEqual({ ok: true });
    // A manifest without identity fields is fine: there is nothing to mix up.
    expect(checkDeployment(sign({ ...base, manifest: { task: 'detect' } }), ctx)).toEqual({ ok: true });
  });

  it('refuses an entry without a signature: unsigned', () => {
    for (const signature of ['', '   ']) {
      const r = checkDeployment({ ...sign(base), signature }, ctx);
      expect(r).toMatchObject({ ok: false, code: 'unsigned' });
    }
  });

  it('changing ANY signed field after signing breaks the signature (no replay onto other fields)', () => {
    const signed = sign(base);
    const tampered: Array<[string, DesiredModel]> = [
      ['name', { ...signed, name: 'detector2', manifest: { ...base.manifest, name: 'detector2' } }],
      ['version', { ...signed, version: 4, manifest: { ...base.manifest, version: 4 } }],
      ['sha256', { ...signed, sha256: 'cd'.repeat(32), manifest: { ...base.manifest, sha256: 'cd'.repeat(32) } }],
      ['size', { ...signed, size: 12_346 }],
      ['manifest content', { ...signed, manifest: { ...base.manifest, task: 'classify' } }],
      ['manifest dropped', { ...signed, manifest: null }],
      ['deployment (replay of an older counter)', { ...signed, deployment: 16 }],
      ['deployment (forged newer counter)', { ...signed, deployment: 18 }],
      ['expires (extended)', { ...signed, expires: '2099-01-01T00:00:00.000Z' }],
    ];
    for (const [what, entry] of tampered) {
      const r = checkDeployment(entry, ctx);
      expect(r, what).toMatchObject({ ok: false, code: 'bad_signature' });
    }
    // The device id is signed too: an entry for another device cannot be replayed here.
    expect(checkDeployment(sign(base, fleetKey.privateKeyPem, 'dev-0002'), ctx)).toMatchObject({ ok: false, code: 'bad_signature' });
    // The url and rollout id are bookkeeping, not signed: the bytes are pinned by sha256 + size.
    expect(checkDeployment({ ...signed, url: '/elsewhere', rollout: null }, ctx)).toEqual({ ok: true });
  });

  it('refuses a signature by another key, a garbage signature and a missing or non-ed25519 fleet key', () => {
    expect(checkDeployment(sign(base, otherKey.privateKeyPem), ctx)).toMatchObject({ ok: false, code: 'bad_signature' });
    expect(checkDeployment({ ...sign(base), signature: 'not base64 at all!' }, ctx)).toMatchObject({ ok: false, code: 'bad_signature' });
    expect(checkDeployment(sign(base), { ...ctx, fleetPublicKeyPem: '' })).toMatchObject({ ok: false, code: 'bad_signature' });
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    expect(checkDeployment(sign(base), { ...ctx, fleetPublicKeyPem: rsa })).toMatchObject({ ok: false, code: 'bad_signature' });
    expect(checkDeployment(sign(base), { ...ctx, fleetPublicKeyPem: 'garbage' })).toMatchObject({ ok: false, code: 'bad_signature' });
  });

  it('refuses a validly signed but expired entry (freeze attack), the instant of expiry included', () => {
    const r = checkDeployment(sign({ ...base, expires: '2024-06-01T11:59:59.000Z' }), ctx);
    expect(r).toMatchObject({ ok: false, code: 'expired' });
    expect(r.ok === false && r.message).toMatch(/expired at 2024-06-01T11:59:59.000Z/);
    expect(checkDeployment(sign({ ...base, expires: NOW.toISOString() }), ctx)).toMatchObject({ ok: false, code: 'expired' });
    expect(checkDeployment(sign({ ...base, expires: '2024-06-01T12:00:01.000Z' }), ctx)).toEqual({ ok: true });
  });

  it('refuses a signed entry whose manifest describes another artifact (mix-and-match)', () => {
    for (const [field, value] of [['name', 'other'], ['version', 2], ['sha256', 'cd'.repeat(32)]] as const) {
      const r = checkDeployment(sign({ ...base, manifest: { ...base.manifest, [field]: value } }), ctx);
      expect(r, field).toMatchObject({ ok: false, code: 'manifest_mismatch' });
      expect(r.ok === false && r.message, field).toContain(field);
    }
  });

  it('refuses names that are not one safe path segment, even when signed', () => {
    for (const name of ['../../bin', '..', '.', 'a/b', '.hidden', 'a\\b', '', '-rf', 'x'.repeat(129), 'a\0b', '/etc']) {
      const r = checkDeployment(sign({ ...base, name, manifest: null }), ctx);
      expect(r, JSON.stringify(name)).toMatchObject({ ok: false, code: 'unsafe_name' });
    }
  });

  it('never throws on a malformed entry', () => {
    const broken = { ...sign(base), version: 1.5, manifest: { a: 1n } } as unknown as DesiredModel;
    expect(checkDeployment(broken, ctx)).toMatchObject({ ok: false, code: 'bad_signature' });
    expect(checkDeployment({ ...sign(base), expires: 'soon' }, ctx)).toMatchObject({ ok: false });
  });
});

describe('safeVersionDir', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'outpost-safe-'));
  const repo = path.join(root, 'repo');
  mkdirSync(repo);
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('returns <repo>/<name>/<version> for a safe name', () => {
    expect(safeVersionDir(repo, 'detector', 3)).toBe(path.join(repo, 'detector', '3'));
    expect(safeVersionDir(repo, 'a..b_c-1.v2', 1)).toBe(path.join(repo, 'a..b_c-1.v2', '1'));
  });

  it("throws code 'unsafe_name' for traversal and odd names and for a non-positive version", () => {
    for (const name of ['../../bin', '..', '.', 'a/b', '.hidden', 'a\\b', '', '/abs', 'x'.repeat(129)]) {
      expect(() => safeVersionDir(repo, name, 1), JSON.stringify(name)).toThrow(expect.objectContaining({ code: 'unsafe_name' }));
    }
    for (const version of [0, -1, 1.5, Number.NaN]) {
      expect(() => safeVersionDir(repo, 'detector', version), String(version)).toThrow(expect.objectContaining({ code: 'unsafe_name' }));
    }
  });

  it('refuses a name that is a symlink planted inside the repository pointing out of it', () => {
    const outside = path.join(root, 'outside');
    mkdirSync(outside);
    symlinkSync(outside, path.join(repo, 'evil'));
    expect(() => safeVersionDir(repo, 'evil', 1)).toThrow(expect.objectContaining({ code: 'unsafe_name', message: expect.stringContaining('outside the model repository') }));
  });
});

describe('verifyArtifact', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'outpost-verify-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const body = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
  body.write('outpost', 1000);
  const sha256 = createHash('sha256').update(body).digest('hex');
  const write = (name: string, data: Buffer) => {
    const f = path.join(dir, name);
    writeFileSync(f, data);
    return f;
  };

  it('accepts the exact bytes (streamed, multi-chunk) and an upper-case expected hash', async () => {
    const f = write('good', body);
    await expect(verifyArtifact(f, { size: body.length, sha256 })).resolves.toBeUndefined();
    await expect(verifyArtifact(f, { size: body.length, sha256: sha256.toUpperCase() })).resolves.toBeUndefined();
  });

  it('refuses one flipped byte (hash_mismatch) and a short or long file (size_mismatch)', async () => {
    const flipped = Buffer.from(body);
    flipped[flipped.length - 1] = flipped.at(-1)! ^ 1;
    const cases: Array<[string, Buffer, VerifyError['code']]> = [
      ['flipped', flipped, 'hash_mismatch'],
      ['short', body.subarray(0, body.length - 1), 'size_mismatch'],
      ['long', Buffer.concat([body, Buffer.from([0])]), 'size_mismatch'],
    ];
    for (const [name, data, code] of cases) {
      const err = await verifyArtifact(write(name, data), { size: body.length, sha256 }).catch((e: unknown) => e);
      expect(err, name).toBeInstanceOf(VerifyError);
      expect((err as VerifyError).code, name).toBe(code);
    }
  });
});
