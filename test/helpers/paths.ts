import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Third-party models and photos beside the checkout (never copied into the repo). */
export const SHARED_MODELS = path.resolve(REPO_ROOT, '../shared/models');
/** The demo/test models and samples, generated once per test run by global-setup.ts. */
export const GENERATED_REPOSITORY = path.join(REPO_ROOT, 'test/.generated/repository');
export const GENERATED_SAMPLES = path.join(REPO_ROOT, 'test/.generated/samples');

export function sharedModel(rel: string): string | undefined {
  const p = path.join(SHARED_MODELS, rel);
  return existsSync(p) ? p : undefined;
}

/** Message for tests skipped because ../shared/models is absent. */
export const SHARED_MISSING = `third-party models not found at ${SHARED_MODELS}; tests that need them are skipped`;
