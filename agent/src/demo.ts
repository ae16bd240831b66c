#!/usr/bin/env node
/**
 * `npm start`: the agent serving the project's own demo models, one sample frame detected through its HTTP
 * API, and the URLs to try next. The agent is the same createAgent() that `outpost-agent run` starts.
 * Flags: --once (exit after the sample), --port N. OUTPOST_* environment variables apply as for `run`.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createAgent } from './agent.js';
import { ConfigError, loadConfig } from './config/load.js';

const repoRoot = [path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..'), path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..')].find((d) => existsSync(path.join(d, 'package.json')))!;
const args = process.argv.slice(2);
const once = args.includes('--once');
const portArg = args.indexOf('--port');

async function main(): Promise<void> {
  const repository = path.join(repoRoot, 'models/repository');
  const samples = path.join(repoRoot, 'models/samples');
  if (!existsSync(path.join(repository, 'demo-shapes')) || !existsSync(path.join(samples, 'shapes.jpg'))) {
    const { makeModels } = (await import(pathToModule('models/make-models.js'))) as typeof import('../../models/make-models.js');
    await makeModels({ repositoryDir: repository, samplesDir: samples });
  }
  const config = loadConfig({
    env: process.env,
    flags: {
      modelRepository: process.env.OUTPOST_MODEL_REPOSITORY ?? repository,
      dataDir: process.env.OUTPOST_DATA_DIR ?? path.join(repoRoot, 'data/demo-agent'),
      // The demo repository includes test models (e.g. `slow`); keep them off the network unless asked.
      http: { ...(process.env.OUTPOST_HTTP_HOST ? {} : { host: '127.0.0.1' }), ...(portArg >= 0 ? { port: Number(args[portArg + 1]) } : {}) },
      log: { level: process.env.OUTPOST_LOG_LEVEL ?? 'warn' },
    },
  });
  const agent = await createAgent(config);
  const url = await agent.start();
  const ready = agent.models.list().filter((v) => v.state === 'ready');
  console.log(`Outpost agent ${url}  (${ready.length} model versions ready: ${ready.map((v) => `${v.name}@${v.version}`).join(', ')})`);
  console.log(`execution provider: ${ready[0]?.provider ?? 'none'}; skipped: ${agent.models.providerPlan.skipped.map((s) => `${s.provider} (${s.reason})`).join('; ') || 'none'}`);

  const frame = path.join(samples, 'shapes.jpg');
  const res = await fetch(`${url}/v1/models/demo-shapes/detect`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: readFileSync(frame) });
  const body = (await res.json()) as { detections?: { label: string; score: number; box: Record<string, number> }[]; timing?: Record<string, number>; error?: string };
  if (!res.ok || !body.detections) throw new Error(`detect failed: HTTP ${res.status} ${JSON.stringify(body)}`);
  console.log(`\nPOST ${url}/v1/models/demo-shapes/detect  < ${path.relative(process.cwd(), frame)}  (demo detector: hand-set weights that find red/green/blue rectangles; not a trained model)`);
  for (const d of body.detections) {
    console.log(`  ${d.label.padEnd(6)} ${d.score.toFixed(3)}  box x1=${d.box.x1} y1=${d.box.y1} x2=${d.box.x2} y2=${d.box.y2}`);
  }
  console.log(`  timing ms: ${Object.entries(body.timing ?? {}).map(([k, v]) => `${k.replace('_ms', '')} ${v}`).join(', ')}`);
  console.log(`\nTry:
  curl -s --data-binary @${path.relative(process.cwd(), frame)} -H 'content-type: image/jpeg' ${url}/v1/models/demo-shapes/detect
  curl -s ${url}/v2/models/demo-shapes
  curl -s -X POST ${url}/v2/models/simple/infer -d @${path.relative(process.cwd(), path.join(samples, 'request.json'))}
  curl -s ${url}/metrics   |   curl -s ${url}/status`);
  if (once) {
    await agent.stop();
    return;
  }
  console.log('\nServing until Ctrl-C.');
  const stop = () => void agent.stop().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/** The generator lives at models/ in the source tree and dist/models/ when compiled. */
function pathToModule(rel: string): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const compiled = path.resolve(here, '../..', rel);
  return existsSync(compiled) ? compiled : path.resolve(here, '../..', rel.replace(/\.js$/, '.ts'));
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : `demo failed: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
