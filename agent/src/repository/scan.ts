import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

export interface VersionDir {
  version: number;
  dir: string;
  modelPath: string;
  /** Present when the version directory holds a manifest.json. */
  manifestPath: string | undefined;
}

export interface ScannedModel {
  name: string;
  versions: VersionDir[];
}

export interface ScanResult {
  models: ScannedModel[];
  /** Entries that are not models (wrong names, missing model.onnx); logged, never fatal. */
  problems: string[];
}

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const VERSION = /^[1-9][0-9]{0,8}$/;

/** Reads a Triton-style repository: <root>/<name>/<version>/model.onnx (+ manifest.json). */
export function scanRepository(root: string): ScanResult {
  const problems: string[] = [];
  const models: ScannedModel[] = [];
  let names: string[];
  try {
    names = readdirSync(root).sort();
  } catch (err) {
    return { models, problems: [`model repository ${root}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`] };
  }
  for (const name of names) {
    const modelDir = path.join(root, name);
    if (!isDir(modelDir) || name.startsWith('.')) continue;
    if (!MODEL_NAME.test(name)) {
      problems.push(`${modelDir}: '${name}' is not a valid model name (letters, digits, _ . -)`);
      continue;
    }
    const versions: VersionDir[] = [];
    for (const v of readdirSync(modelDir).sort()) {
      const dir = path.join(modelDir, v);
      if (!isDir(dir) || v.startsWith('.')) continue;
      if (!VERSION.test(v)) {
        problems.push(`${dir}: version directories are positive integers`);
        continue;
      }
      const modelPath = path.join(dir, 'model.onnx');
      if (!isFile(modelPath)) {
        problems.push(`${dir}: no model.onnx`);
        continue;
      }
      const manifestPath = path.join(dir, 'manifest.json');
      versions.push({ version: Number(v), dir, modelPath, manifestPath: isFile(manifestPath) ? manifestPath : undefined });
    }
    versions.sort((a, b) => a.version - b.version);
    if (versions.length === 0) problems.push(`${modelDir}: no versions with a model.onnx`);
    else models.push({ name, versions });
  }
  return { models, problems };
}

/** The versions to serve: the pinned list when given, else the highest, or all under policy 'all'. */
export function selectVersions(available: readonly number[], policy: 'latest' | 'all', pinned: readonly number[] | undefined): number[] {
  if (pinned) return available.filter((v) => pinned.includes(v));
  if (policy === 'all') return [...available];
  return available.length > 0 ? [Math.max(...available)] : [];
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}
