import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { canonicalJson } from '../../../shared/src/signing.js';
import path from 'node:path';
import type { Logger } from 'pino';
import type { DesiredMessage } from '../../../shared/src/mqtt/messages.js';
import { GoldenSchema } from '../../../shared/src/manifest.js';
import type { AgentConfig } from '../config/schema.js';
import type { ModelManager } from '../inference/model-manager.js';
import type { Credentials } from '../link/credentials.js';
import { checkDiskBudget, DiskBudgetError } from './disk.js';
import { downloadArtifact, DownloadError } from './download.js';
import { installedManifest, installedVersion, installVersion } from './install.js';
import type { UpdateReason } from './states.js';
import type { UpdateRow, UpdateStore } from './update-store.js';
import { safeVersionDir, verifyArtifact, VerifyError } from './verify.js';
import { inWindow, nextWindowStart, validateWindow } from './window.js';

/** A step failed: the reason code the deployment ends with, and the detail for the event and /status. */
export class StepError extends Error {
  override readonly name = 'StepError';
  constructor(readonly reason: UpdateReason, message: string) {
    super(message);
  }
}

export interface StepDeps {
  config: AgentConfig;
  store: UpdateStore;
  models: ModelManager;
  credentials: Pick<Credentials, 'deviceId' | 'secret' | 'fleetUrl'> | undefined;
  log: Logger;
  /** Test-only fault hook (OUTPOST_TEST_FAULT, see updater.ts): called with the step about to run. */
  fault?: (step: string, row: UpdateRow) => void;
}

export function stagingDir(config: AgentConfig): string {
  return path.join(config.dataDir, 'staging');
}

export function partFile(config: AgentConfig, row: Pick<UpdateRow, 'model' | 'version' | 'sha256'>): string {
  return path.join(stagingDir(config), `${row.model}-${row.version}-${row.sha256.slice(0, 12)}.part`);
}

/**
 * downloading: the artifact into the staging directory, unless the repository already holds this exact version
 * (a rollback to a version kept on disk, or a resume after the install). Disk budget first, then a resumable,
 * bounded download (download.ts). Returns true when the download was skipped.
 */
export async function download(deps: StepDeps, row: UpdateRow, signal: AbortSignal, onProgress: (received: number) => void): Promise<void> {
  const { config, credentials } = deps;
  const versionDir = safeVersionDir(config.modelRepository, row.model, row.version);
  if (installedVersion(versionDir, row.version) && (await isIntact(path.join(versionDir, 'model.onnx'), row))) return;
  if (!credentials) throw new StepError('download_failed', 'not enrolled: no fleet to download from');
  const part = partFile(config, row);
  mkdirSync(path.dirname(part), { recursive: true });
  try {
    checkDiskBudget({
      // A resumed download's .part is already counted as used: only what is still to come is needed.
      repositoryDir: config.modelRepository, stagingDir: stagingDir(config), needBytes: Math.max(0, row.size - fileSize(part)),
      budgetBytes: config.update.diskBudgetBytes, minFreeBytes: config.update.minFreeBytes,
    });
  } catch (err) {
    if (err instanceof DiskBudgetError) throw new StepError(err.code, err.message);
    throw err;
  }
  // The URL is not signed (the bytes are, by sha256): it may only lead to the fleet this box enrolled with, so the
  // device's credentials never go anywhere else.
  const url = new URL(row.entry.url, credentials.fleetUrl);
  if (url.origin !== new URL(credentials.fleetUrl).origin) {
    throw new StepError('bad_url', `the artifact URL ${url.origin} is not the fleet's (${new URL(credentials.fleetUrl).origin}); refused`);
  }
  try {
    await downloadArtifact({
      url: url.toString(),
      file: part, size: row.size, sha256: row.sha256,
      auth: { username: credentials.deviceId, password: credentials.secret },
      signal, onProgress: (received) => onProgress(received),
      attempts: config.update.downloadAttempts, backoffMinMs: config.update.backoffMinMs, backoffMaxMs: config.update.backoffMaxMs,
      stallTimeoutMs: config.update.stallTimeoutMs,
    });
  } catch (err) {
    if (err instanceof DownloadError && err.code !== 'aborted') {
      // A file longer than declared is an attack or a broken server: nothing of it is kept (U5).
      // A partial file that filled the disk goes too: the database and outbox on the same disk need the room,
      // the very next write (this failure's state) among them.
      if (err.code === 'too_long' || err.code === 'disk_full') rmSync(part, { force: true });
      throw new StepError(err.code === 'too_long' ? 'too_long' : err.code === 'disk_full' ? 'disk_full' : 'download_failed', err.message);
    }
    throw err;
  }
}

/**
 * verifying: size and sha256 of the downloaded file (the signature over them was checked when the deployment
 * was accepted), then the atomic install into the repository. A file that fails is deleted, never installed.
 */
export async function verifyAndInstall(deps: StepDeps, row: UpdateRow): Promise<void> {
  const { config } = deps;
  const versionDir = safeVersionDir(config.modelRepository, row.model, row.version);
  const installed = installedVersion(versionDir, row.version);
  if (installed && (await isIntact(installed.modelPath, row))) {
    // The bytes are right; the manifest beside them must be the signed one too (U6), or it is rewritten.
    rewriteManifestIfChanged(installed.manifestPath ?? path.join(versionDir, 'manifest.json'), row);
    return;
  }
  const part = partFile(config, row);
  if (!existsSync(part)) throw new StepError('install_failed', 'the downloaded file is gone; the next deployment downloads it again');
  try {
    await verifyArtifact(part, { size: row.size, sha256: row.sha256 });
  } catch (err) {
    rmSync(part, { force: true });
    if (err instanceof VerifyError) throw new StepError(err.code, err.message);
    throw err;
  }
  try {
    installVersion(part, versionDir, row.entry);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new StepError(code === 'ENOSPC' || code === 'EDQUOT' ? 'disk_full' : 'install_failed', `cannot install ${row.model}@${row.version}: ${(err as Error).message}`);
  }
}

/** staging: load, warm up and run the golden input; the active version keeps serving throughout. */
export async function stage(deps: StepDeps, row: UpdateRow): Promise<void> {
  const { config, models } = deps;
  const versionDir = safeVersionDir(config.modelRepository, row.model, row.version);
  const dir = installedVersion(versionDir, row.version);
  if (!dir) throw new StepError('install_failed', `${versionDir} has no model.onnx`);
  if (models.versionsOf(row.model)?.some((v) => v.version === row.version && v.state === 'ready')) return; // staged before a pointer flip that did not happen
  const parsedGolden = row.entry.manifest?.golden === undefined ? undefined : GoldenSchema.safeParse(row.entry.manifest.golden);
  if (parsedGolden && !parsedGolden.success) throw new StepError('golden_mismatch', `the manifest's golden section is invalid: ${parsedGolden.error.issues[0]?.message ?? ''}`);
  try {
    await models.stage(row.model, dir, parsedGolden ? { golden: parsedGolden.data } : {});
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new StepError(code === 'golden_mismatch' ? 'golden_mismatch' : 'load_failed', (err as Error).message);
  }
}

/**
 * Resolves when activation is allowed by the maintenance window (now, or once a window opens). The window is read
 * again at every check (at least once a second), so a desired state that changes or removes it takes effect while
 * a staged version waits. An expression the agent cannot read fails the deployment rather than activating outside
 * the intended hours.
 */
export function waitForWindow(currentWindow: () => DesiredMessage['maintenanceWindow'], signal: AbortSignal, onWaiting: (next: Date | null) => void): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const finish = (err?: Error): void => {
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    };
    const check = (): void => {
      const window = currentWindow();
      const problem = validateWindow(window);
      if (problem) return finish(new StepError('bad_window', `maintenance window ${JSON.stringify(window)}: ${problem}`));
      if (inWindow(window, new Date())) return finish();
      const next = nextWindowStart(window, new Date());
      onWaiting(next);
      timer = setTimeout(check, next === null ? WINDOW_RECHECK_MS : Math.min(WINDOW_RECHECK_MS, Math.max(20, next.getTime() - Date.now() + 5)));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    check();
  });
}

/** Longest wait between two looks at the maintenance window while a staged version waits for it. */
const WINDOW_RECHECK_MS = 1_000;

async function isIntact(file: string, row: Pick<UpdateRow, 'size' | 'sha256'>): Promise<boolean> {
  try {
    await verifyArtifact(file, { size: row.size, sha256: row.sha256 });
    return true;
  } catch {
    return false;
  }
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** Writes the signed manifest over an installed one that differs from it (hand-edited, or from another release). */
function rewriteManifestIfChanged(file: string, row: UpdateRow): void {
  const wanted = installedManifest(row.entry);
  let current: unknown;
  try {
    current = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    current = undefined;
  }
  if (current !== undefined && canonicalJson(current) === canonicalJson(wanted)) return;
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(wanted, null, 2)}\n`);
  renameSync(tmp, file);
}

/**
 * OUTPOST_TEST_FAULT=<step>:<model>@<version>[,…] makes that step fail with load_failed (a test-only hook for the
 * 20-device rollout test, like OUTPOST_CRASH_AT in the peers' test suites); OUTPOST_TEST_CRASH_AT=<step> kills
 * the process (SIGKILL) as the step starts. Both are read once; unset in production.
 */
export function testFaultHook(): StepDeps['fault'] {
  const faults = (process.env.OUTPOST_TEST_FAULT ?? '').split(',').filter(Boolean);
  const crashAt = process.env.OUTPOST_TEST_CRASH_AT;
  if (faults.length === 0 && !crashAt) return undefined;
  return (step, row) => {
    if (crashAt === step) process.kill(process.pid, 'SIGKILL');
    if (faults.includes(`${step}:${row.model}@${row.version}`)) throw new StepError('load_failed', `test fault at ${step}`);
  };
}
