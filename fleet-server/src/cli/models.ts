import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { ModelVersionView } from '../registry/model-version.js';
import { parseNameArg, parseRefArg, parseVersionArg } from './args.js';
import { action, addGlobalOptions, type CliIo } from './context.js';
import { usageError } from './exit-codes.js';
import { multipartUpload } from './multipart-body.js';
import { details, formatBytes, table } from './output.js';
import { createProgress } from './progress.js';
import { manifestWithGolden } from './push-golden.js';

const versionPath = (name: string, version: number) => `/api/v1/models/${name}/versions/${version}`;

function manifestSummary(m: Record<string, unknown> | null): string {
  if (!m) return 'none (bare ONNX file)';
  const count = (v: unknown) => (Array.isArray(v) ? v.length : 0);
  return `task ${String(m.task ?? 'raw')}, ${count(m.inputs)} input(s), ${count(m.outputs)} output(s)${typeof m.description === 'string' ? ` — ${m.description.slice(0, 80)}` : ''}`;
}

export function renderVersion(v: ModelVersionView): string {
  return details([
    ['model', `${v.name}@${v.version}`],
    ['sha256', v.sha256],
    ['size', `${formatBytes(v.size)} (${v.size} bytes)`],
    ['created', v.createdAt],
    ['manifest', manifestSummary(v.manifest)],
    ['signature', v.signature],
    ['artifact', v.artifactUrl],
    ['running on', v.runningOn.length === 0 ? 'no device' : v.runningOn.join(', ')],
  ]);
}

function readLocal(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw usageError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** --name/--version, or the manifest's own name and version when those flags are left out. */
function target(opts: Record<string, unknown>, manifestText: string | undefined): { name: string; version: number } {
  let fromManifest: { name?: unknown; version?: unknown } = {};
  try {
    if (manifestText !== undefined) fromManifest = JSON.parse(manifestText) as typeof fromManifest;
  } catch {
    // the server reports what is wrong with it
  }
  const name = typeof opts.name === 'string' ? opts.name : typeof fromManifest.name === 'string' ? fromManifest.name : undefined;
  const version = typeof opts.version === 'string' ? opts.version : Number.isInteger(fromManifest.version) ? String(fromManifest.version) : undefined;
  if (name === undefined || version === undefined) throw usageError('models push needs --name and --version (or a --manifest that has them)');
  return { name: parseNameArg(name), version: parseVersionArg(version) };
}

export function registerModelCommands(program: Command, io: CliIo): void {
  const models = program.command('models').description('push, list, inspect and delete model versions in the registry');

  addGlobalOptions(
    models
      .command('push')
      .description('upload a model.onnx (streamed from disk, progress on stderr); the server validates, hashes and signs it')
      .argument('<file>', 'the ONNX model file')
      .option('--name <name>', 'model name (lower-case letters, digits, _ . -); default: the manifest\'s')
      .option('--version <version>', 'version, a positive integer; versions are immutable; default: the manifest\'s')
      .option('--manifest <file>', 'manifest.json (DESIGN §3.2: task, inputs, preprocessing, labels …)')
      .option('--golden', "compute the golden input and the model's answer here and push them in the manifest (default: when the manifest has no golden)")
      .option('--no-golden', 'push the manifest as it is, without computing a golden'),
  ).action(
    action(io, async ({ api, out, opts }, [file]) => {
      const manifestText = typeof opts.manifest === 'string' ? readLocal(opts.manifest, 'manifest') : undefined;
      const { name, version } = target(opts, manifestText);
      let size: number;
      try {
        const st = statSync(file!);
        if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'not a regular file' });
        size = st.size;
      } catch (err) {
        throw usageError(`cannot read model file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      const golden = typeof opts.golden === 'boolean' ? opts.golden : undefined;
      const { manifest, note } = await manifestWithGolden({ file: file!, manifestText, name, version, golden });
      const progress = createProgress(io.stderr, { label: `${name}@${version}`, total: size, ...(io.now ? { now: io.now } : {}) });
      const upload = await multipartUpload({ file: file!, fileName: path.basename(file!), ...(manifest !== undefined ? { manifest } : {}), onBytes: (n) => progress.update(n) });
      let pushed: ModelVersionView;
      try {
        pushed = await api.upload<ModelVersionView>(versionPath(name, version), upload);
      } catch (err) {
        progress.abort();
        throw err;
      }
      progress.finish();
      if (note !== null && !out.json) out.note(note);
      out.result(pushed, () => `pushed ${pushed.name}@${pushed.version}\n${renderVersion(pushed)}`);
    }),
  );

  addGlobalOptions(models.command('ls').description('list models with their versions')).action(
    action(io, async ({ api, out }) => {
      const answer = await api.request<{ models: Array<{ name: string; latestVersion: number; versions: number[] }> }>('GET', '/api/v1/models');
      out.result(answer, () => table(['NAME', 'LATEST', 'VERSIONS'], answer.models.map((m) => [m.name, String(m.latestVersion), m.versions.join(',')])));
      if (!out.json && answer.models.length === 0) out.note('the registry is empty; upload with: outpost models push model.onnx --name NAME --version 1');
    }),
  );

  addGlobalOptions(
    models
      .command('show')
      .description("a model's versions, or one version in detail (sha256, signature, manifest, devices running it)")
      .argument('<name>', 'model name')
      .option('--version <version>', 'show this version in detail'),
  ).action(
    action(io, async ({ api, out, opts }, [rawName]) => {
      const name = parseNameArg(rawName!, 'NAME');
      if (typeof opts.version === 'string') {
        const v = await api.request<ModelVersionView>('GET', versionPath(name, parseVersionArg(opts.version)));
        out.result(v, () => renderVersion(v));
        return;
      }
      const model = await api.request<{ name: string; versions: ModelVersionView[] }>('GET', `/api/v1/models/${name}`);
      out.result(model, () =>
        table(
          ['VERSION', 'SHA256', 'SIZE', 'CREATED', 'MANIFEST', 'RUNNING ON'],
          model.versions.map((v) => [
            String(v.version),
            v.sha256.slice(0, 12),
            formatBytes(v.size),
            v.createdAt,
            v.manifest ? String(v.manifest.task ?? 'raw') : '-',
            v.runningOn.length === 0 ? '-' : `${v.runningOn.length} (${v.runningOn.slice(0, 3).join(',')}${v.runningOn.length > 3 ? ',…' : ''})`,
          ]),
        ),
      );
    }),
  );

  addGlobalOptions(models.command('rm').description('delete a version (refused while a device reports running it)').argument('<name@version>', 'e.g. simple@1')).action(
    action(io, async ({ api, out }, [ref]) => {
      const { name, version } = parseRefArg(ref!);
      await api.request<void>('DELETE', versionPath(name, version));
      out.result({ name, version, deleted: true }, () => `deleted ${name}@${version}`);
    }),
  );
}
