import type { KeyObject } from 'node:crypto';
import path from 'node:path';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Db } from '../../../shared/src/sqlite.js';
import { fail } from '../errors.js';
import { createArtifactStore } from './artifact-store.js';
import { sendArtifact } from './download.js';
import { isModelName, MAX_MODEL_VERSION, MODEL_NAME_PATTERN, parseModelVersion } from './model-ref.js';
import { toView } from './model-version.js';
import { createRegistryStore } from './registry-store.js';
import { receiveUpload } from './upload.js';

export type Principal = { kind: 'operator'; tokenId: string } | { kind: 'device'; deviceId: string };

export interface RegistryContext {
  /** The fleet database (storage/migrations.ts), already migrated. */
  db: Db;
  /** Artifacts live under `<dataDir>/artifacts`. */
  dataDir: string;
  /** Largest artifact accepted, bytes. */
  maxArtifactBytes: number;
  /** ed25519 key the registry signs model statements with. */
  signingKey: KeyObject;
  log: Logger;
  /** Throws FLEET_UNAUTHORIZED / FLEET_FORBIDDEN unless the request carries an operator token. */
  requireOperator(req: FastifyRequest): void;
  /** Throws FLEET_UNAUTHORIZED unless the request carries an operator token or a device's credentials. */
  requirePrincipal(req: FastifyRequest): Principal;
}

type ModelParams = { name: string };
type VersionParams = { name: string; version: string };

function modelName(params: ModelParams): string {
  if (!isModelName(params.name)) throw fail('FLEET_BAD_REQUEST', `model name "${params.name.slice(0, 80)}" does not match ${MODEL_NAME_PATTERN.source}`);
  return params.name;
}

function modelVersion(params: VersionParams): { name: string; version: number } {
  const name = modelName(params);
  const version = parseModelVersion(params.version);
  if (version === null) throw fail('FLEET_BAD_REQUEST', `version "${params.version.slice(0, 20)}" is not an integer from 1 to ${MAX_MODEL_VERSION}`);
  return { name, version };
}

/**
 * The model registry under the app's `/api/v1` prefix: upload (multipart, streamed), list, show, download
 * with Range, delete. Versions are immutable; artifacts are stored once per content hash.
 */
export function registerRegistryRoutes(api: FastifyInstance, ctx: RegistryContext): void {
  const store = createRegistryStore(ctx.db);
  const artifacts = createArtifactStore(path.join(ctx.dataDir, 'artifacts'));
  const stale = artifacts.removeStaleTemps();
  if (stale > 0) ctx.log.warn({ removed: stale }, 'removed partial uploads left by an earlier crash');
  const uploadDeps = { store, artifacts, maxArtifactBytes: ctx.maxArtifactBytes, signingKey: ctx.signingKey, log: ctx.log };

  api.register(async (scope) => {
    if (!scope.hasRequestDecorator('parts')) await scope.register(multipart);

    scope.post<{ Params: VersionParams }>('/models/:name/versions/:version', async (req, reply) => {
      ctx.requireOperator(req);
      const record = await receiveUpload(req, modelVersion(req.params), uploadDeps);
      return reply.code(201).send(toView(record, new Map()));
    });

    scope.get('/models', async (req) => {
      ctx.requireOperator(req);
      return { models: store.listModels().map((m) => ({ name: m.name, latestVersion: m.versions.at(-1) ?? null, versions: m.versions })) };
    });

    scope.get<{ Params: ModelParams }>('/models/:name', async (req) => {
      ctx.requireOperator(req);
      const name = modelName(req.params);
      const versions = store.listVersions(name);
      if (versions.length === 0) throw fail('FLEET_NOT_FOUND', `no model named ${name}`);
      const running = store.runningOn();
      return { name, versions: versions.map((v) => toView(v, running)) };
    });

    scope.get<{ Params: VersionParams }>('/models/:name/versions/:version', async (req) => {
      ctx.requireOperator(req);
      const { name, version } = modelVersion(req.params);
      const record = store.get(name, version);
      if (!record) throw fail('FLEET_NOT_FOUND', `no model version ${name}@${version}`);
      return toView(record, store.runningOn());
    });

    scope.get<{ Params: VersionParams }>('/models/:name/versions/:version/artifact', async (req, reply) => {
      ctx.requirePrincipal(req);
      const { name, version } = modelVersion(req.params);
      const record = store.get(name, version);
      if (!record) throw fail('FLEET_NOT_FOUND', `no model version ${name}@${version}`);
      return sendArtifact(req, reply, record, artifacts);
    });

    scope.delete<{ Params: VersionParams }>('/models/:name/versions/:version', async (req, reply) => {
      ctx.requireOperator(req);
      const { name, version } = modelVersion(req.params);
      const deleted = store.delete(name, version);
      if (!deleted) throw fail('FLEET_NOT_FOUND', `no model version ${name}@${version}`);
      // Synchronous right after the transaction: see the INVARIANT in upload.ts.
      if (deleted.artifactUnreferenced) artifacts.remove(deleted.sha256);
      ctx.log.info({ name, version, sha256: deleted.sha256, artifactRemoved: deleted.artifactUnreferenced }, 'model version deleted');
      return reply.code(204).send();
    });
  });
}
