import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { DesiredModel } from '../../../shared/src/mqtt/messages.js';
import type { VersionDir } from '../repository/scan.js';

/**
 * Moves a verified artifact into the model repository as <repo>/<name>/<version>/{model.onnx, manifest.json}:
 * written into a dot-directory beside it (the repository scan skips dot entries), fsync'd, then renamed into
 * place, so the repository never holds a half-installed version and an unverified file never gets a name
 * the loader would read. The manifest written carries the sha256, which the loader checks again at every load.
 */
export function installVersion(verifiedFile: string, versionDir: string, entry: DesiredModel): VersionDir {
  const modelDir = path.dirname(versionDir);
  mkdirSync(modelDir, { recursive: true });
  const tmp = path.join(modelDir, `.install-${entry.version}-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  writeDurably(path.join(tmp, 'manifest.json'), `${JSON.stringify(installedManifest(entry), null, 2)}\n`);
  moveFile(verifiedFile, path.join(tmp, 'model.onnx'));
  fsyncPath(path.join(tmp, 'model.onnx'));
  fsyncPath(tmp);
  // A version directory left by an earlier install of the same version (same sha256, or the runner would not be
  // here with it) is replaced whole.
  rmSync(versionDir, { recursive: true, force: true });
  renameSync(tmp, versionDir);
  fsyncPath(modelDir);
  return { version: entry.version, dir: versionDir, modelPath: path.join(versionDir, 'model.onnx'), manifestPath: path.join(versionDir, 'manifest.json') };
}

/** The manifest installed beside a version: the signed one, with the identity fields the loader checks. */
export function installedManifest(entry: DesiredModel): Record<string, unknown> {
  return { ...(entry.manifest ?? {}), name: entry.name, version: entry.version, sha256: entry.sha256 };
}

/** rename, or copy + fsync + unlink when the repository is on another filesystem than the staging directory. */
function moveFile(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    copyFileSync(from, to);
    fsyncPath(to);
    unlinkSync(from);
  }
}

/** The installed version directory, when it exists with a model file. */
export function installedVersion(versionDir: string, version: number): VersionDir | undefined {
  const modelPath = path.join(versionDir, 'model.onnx');
  if (!existsSync(modelPath)) return undefined;
  const manifestPath = path.join(versionDir, 'manifest.json');
  return { version, dir: versionDir, modelPath, manifestPath: existsSync(manifestPath) ? manifestPath : undefined };
}

/** Deletes every version directory of a model except `keep` (active and previous), and leftover installs; never throws. */
export function collectGarbage(modelDir: string, keep: readonly number[], log: Logger): number[] {
  try {
    const removed = collectGarbageOrThrow(modelDir, keep);
    if (removed.length > 0) log.info({ modelDir, removed }, 'old model versions deleted');
    return removed;
  } catch (err) {
    log.warn({ modelDir, err: (err as Error).message }, 'cannot delete old model versions');
    return [];
  }
}

function collectGarbageOrThrow(modelDir: string, keep: readonly number[]): number[] {
  let entries: string[];
  try {
    entries = readdirSync(modelDir);
  } catch {
    return [];
  }
  const removed: number[] = [];
  for (const e of entries) {
    if (e.startsWith('.install-')) {
      rmSync(path.join(modelDir, e), { recursive: true, force: true });
      continue;
    }
    if (!/^[1-9][0-9]{0,8}$/.test(e) || keep.includes(Number(e))) continue;
    rmSync(path.join(modelDir, e), { recursive: true, force: true });
    removed.push(Number(e));
  }
  return removed;
}

function writeDurably(file: string, text: string): void {
  writeFileSync(file, text);
  fsyncPath(file);
}

function fsyncPath(p: string): void {
  const fd = openSync(p, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Deletes partial downloads in `stagingDir` that no deployment in progress owns (abandoned before a crash). */
export function removeOrphanParts(stagingDir: string, owned: readonly string[]): void {
  const keep = new Set(owned.map((f) => path.basename(f)));
  let files: string[];
  try {
    files = readdirSync(stagingDir);
  } catch {
    return;
  }
  for (const f of files) if (f.endsWith('.part') && !keep.has(f)) rmSync(path.join(stagingDir, f), { force: true });
}
