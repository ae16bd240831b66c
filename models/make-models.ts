/**
 * Writes the project's own demo/test models as a Triton-style repository
 * (`<name>/<version>/model.onnx` + `manifest.json`) and the sample images the demo posts.
 *
 *   node dist/models/make-models.js [--out DIR] [--samples DIR]
 *
 * Defaults: `<repo>/models/repository` and `<repo>/models/samples`. Output is deterministic
 * (same bytes on every run) and a file is only rewritten when its bytes change, so running it again
 * is cheap and leaves mtimes alone. Writes go through a temp file + rename, so a reader never sees
 * a half-written model.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildCatalog } from './catalog.js';
import { buildManifest } from './manifest.js';
import { encodeScene, SHAPES_1080P, SHAPES_720P, type Scene } from './samples.js';
import { SIMPLE_WIDTH } from './simple.js';

export interface MakeModelsOptions {
  repositoryDir: string;
  samplesDir: string;
}

export interface MadeModel {
  name: string;
  version: number;
  path: string;
  sha256: string;
  bytes: number;
}

export interface MakeModelsResult {
  models: MadeModel[];
  samples: string[];
  /** Files whose content changed (or were new) in this run. */
  written: string[];
}

/**
 * The repository root: the nearest ancestor with the project's package.json. Walking up (instead
 * of a fixed "../..") works both from dist/models/ and from the .ts file under vitest.
 */
export function findRepoRoot(from: string = path.dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'outpost') return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json of "outpost" above ${from}`);
  }
}

async function writeIfChanged(file: string, content: Uint8Array | string, written: string[]): Promise<void> {
  const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : Buffer.from(content.buffer, content.byteOffset, content.byteLength);
  const current = await readFile(file).catch(() => undefined);
  if (current?.equals(bytes)) return;
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  await writeFile(tmp, bytes);
  await rename(tmp, file);
  written.push(file);
}

const json = (value: unknown): string => `${JSON.stringify(value, null, 2)}\n`;

/** A KServe v2 JSON request for `simple` version 1, as Triton's simple client sends it. */
function simpleRequest(): unknown {
  return {
    id: 'outpost-sample-simple',
    inputs: [
      { name: 'INPUT0', shape: [1, SIMPLE_WIDTH], datatype: 'INT32', data: Array.from({ length: SIMPLE_WIDTH }, (_, i) => i) },
      { name: 'INPUT1', shape: [1, SIMPLE_WIDTH], datatype: 'INT32', data: Array.from({ length: SIMPLE_WIDTH }, () => 1) },
    ],
    outputs: [{ name: 'OUTPUT0' }, { name: 'OUTPUT1' }],
  };
}

async function writeSamples(dir: string, written: string[]): Promise<string[]> {
  const files: [string, () => Promise<Uint8Array | string>][] = [
    ['shapes.jpg', () => encodeScene(SHAPES_720P, 'jpeg')],
    ['shapes.png', () => encodeScene(SHAPES_720P, 'png')],
    ['shapes.json', async () => json(groundTruth(SHAPES_720P))],
    ['shapes-1080p.jpg', () => encodeScene(SHAPES_1080P, 'jpeg')],
    ['shapes-1080p.json', async () => json(groundTruth(SHAPES_1080P))],
    ['request.json', async () => json(simpleRequest())],
  ];
  // sharp encodes on libuv's thread pool, so the images are made concurrently.
  await Promise.all(files.map(async ([name, make]) => writeIfChanged(path.join(dir, name), await make(), written)));
  return files.map(([name]) => path.join(dir, name));
}

function groundTruth(scene: Scene): Scene {
  return { width: scene.width, height: scene.height, objects: scene.objects.map(({ label, box }) => ({ label, box: { ...box } })) };
}

export async function makeModels(options: MakeModelsOptions): Promise<MakeModelsResult> {
  const written: string[] = [];
  const models: MadeModel[] = [];
  for (const entry of buildCatalog()) {
    const dir = path.join(options.repositoryDir, entry.name, String(entry.version));
    const manifest = buildManifest(entry.name, entry.version, entry.onnx, entry.manifest);
    const modelPath = path.join(dir, 'model.onnx');
    await writeIfChanged(modelPath, entry.onnx, written);
    await writeIfChanged(path.join(dir, 'manifest.json'), json(manifest), written);
    models.push({ name: entry.name, version: entry.version, path: modelPath, sha256: manifest.sha256, bytes: entry.onnx.byteLength });
  }
  const samples = await writeSamples(options.samplesDir, written);
  return { models, samples, written };
}

function parseArgs(argv: string[]): MakeModelsOptions {
  const options: Partial<MakeModelsOptions> = {};
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if ((flag === '--out' || flag === '--samples') && value !== undefined) {
      if (flag === '--out') options.repositoryDir = path.resolve(value);
      else options.samplesDir = path.resolve(value);
      i++;
    } else if (flag === '--help' || flag === '-h') {
      console.log('usage: node dist/models/make-models.js [--out REPOSITORY_DIR] [--samples SAMPLES_DIR]');
      process.exit(0);
    } else {
      throw new Error(`unknown or incomplete argument: ${flag ?? ''} (see --help)`);
    }
  }
  // The repo root is only looked up when a default is needed, so explicit dirs work from anywhere.
  const root = options.repositoryDir && options.samplesDir ? '' : findRepoRoot();
  return {
    repositoryDir: options.repositoryDir ?? path.join(root, 'models', 'repository'),
    samplesDir: options.samplesDir ?? path.join(root, 'models', 'samples'),
  };
}

async function main(): Promise<void> {
  const started = performance.now();
  const options = parseArgs(process.argv.slice(2));
  const result = await makeModels(options);
  for (const m of result.models) console.log(`${m.name}/${m.version}  ${m.bytes} bytes  sha256 ${m.sha256}`);
  console.log(`samples in ${options.samplesDir}; models in ${options.repositoryDir}`);
  console.log(`${result.written.length} file(s) changed, ${(performance.now() - started).toFixed(0)} ms`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
