#!/usr/bin/env node
/**
 * `npm start`: the whole product on one box, through the paths an operator uses.
 *   1. the fleet server (embedded broker, SQLite under data/demo-fleet) — createFleet(), as `outpost-fleet run`
 *   2. an enrollment token from its REST API, and the agent enrolled with it — as `outpost-agent enroll`
 *   3. the demo detector pushed to the registry with its golden input — `outpost models push` (the CLI code itself)
 *   4. the agent (createAgent(), as `outpost-agent run`) with an empty model repository, linked over MQTT
 *   5. the detector deployed by a rollout — `outpost rollouts create` then `outpost rollouts watch` — so the agent
 *      receives the signed desired state, downloads, verifies, stages, activates and commits it after probation
 *   6. a sample frame detected, then the fleet's view of the device and what it served
 * Flags: --once (stop after the tour), --port 0 (free ports).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createAgent, type Agent } from '../../agent/src/agent.js';
import { loadConfig } from '../../agent/src/config/load.js';
import { ENROLL_EXIT, runEnrollCommand } from '../../agent/src/link/enroll-command.js';
import { loadCredentials } from '../../agent/src/link/credentials.js';
import { ConfigError } from '../../shared/src/config-loader.js';
import { runCli } from './cli/main.js';
import { loadFleetConfig } from './config/load.js';
import { createFleet, type Fleet } from './fleet.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = [path.resolve(here, '../..'), path.resolve(here, '../../..')].find((d) => existsSync(path.join(d, 'package.json')))!;
const args = process.argv.slice(2);
const once = args.includes('--once');
const freePorts = args.includes('--port') && args[args.indexOf('--port') + 1] === '0';
const MODEL = 'demo-shapes';

async function main(): Promise<void> {
  const repository = path.join(repoRoot, 'models/repository');
  const samples = path.join(repoRoot, 'models/samples');
  if (!existsSync(path.join(repository, MODEL)) || !existsSync(path.join(samples, 'shapes.jpg'))) {
    const { makeModels } = (await import(pathToModule('models/make-models.js'))) as typeof import('../../models/make-models.js');
    await makeModels({ repositoryDir: repository, samplesDir: samples });
  }
  const dataRoot = process.env.OUTPOST_DEMO_DIR ?? path.join(repoRoot, 'data');
  const fleetDir = path.join(dataRoot, 'demo-fleet');
  const agentDir = path.join(dataRoot, 'demo-agent');
  const quiet = { level: process.env.OUTPOST_LOG_LEVEL ?? 'warn' };

  // 1. Fleet server on 127.0.0.1 (8080 REST, 1883 MQTT; free ports when those are taken).
  const fleet = await startFleet(fleetDir, quiet, freePorts);
  const { httpUrl, mqttUrl } = fleet.urls;
  const token = readFileSync(fleet.fleet.adminTokenFile, 'utf8').trim();
  const cliEnv = { ...process.env, OUTPOST_FLEET_URL: httpUrl, OUTPOST_TOKEN: token };
  const cli = (argv: string[]) => runCli(argv, { stdout: process.stdout, stderr: process.stderr, env: cliEnv, cwd: process.cwd() });
  /** A CLI command with --json, its output parsed (the demo needs the rollout id it prints). */
  const cliJson = async (argv: string[]): Promise<unknown> => {
    let out = '';
    const stdout = new Writable({ write(chunk, _enc, done) { out += String(chunk); done(); } });
    const code = await runCli([...argv, '--json'], { stdout, stderr: process.stderr, env: cliEnv, cwd: process.cwd() });
    if (code !== 0) throw new Error(`outpost ${argv.join(' ')} failed (exit ${code})`);
    return JSON.parse(out);
  };
  console.log(`Outpost fleet server ${httpUrl}  (MQTT ${mqttUrl}; operator token in ${fleet.fleet.adminTokenFile})`);

  // 2. Enrollment, unless this agent data dir already holds credentials this fleet knows (re-enrolled under
  //    the same id when the broker moved, e.g. with --port 0).
  const known = loadCredentials(agentDir);
  const stillValid = known && (await fetch(`${httpUrl}/api/v1/devices/${known.credentials.deviceId}`, { headers: { authorization: `Bearer ${token}` } })).ok;
  if (!stillValid || known.credentials.mqttUrl !== mqttUrl) {
    const res = await fetch(`${httpUrl}/api/v1/enrollment-tokens`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ tags: { site: 'demo' }, ttlSeconds: 600, ...(stillValid ? { deviceId: known.credentials.deviceId } : {}) }),
    });
    if (!res.ok) throw new Error(`cannot create an enrollment token: HTTP ${res.status} ${await res.text()}`);
    const enrollToken = ((await res.json()) as { token: string }).token;
    const code = await runEnrollCommand({ fleet: httpUrl, token: enrollToken, dataDir: agentDir, force: true, env: {} }, { out: (l) => console.log(`  ${l}`), err: (l) => console.error(l) });
    if (code !== ENROLL_EXIT.ok) throw new Error(`enrollment failed (exit ${code})`);
  }

  // 3. The demo detector into the registry (stored, validated, signed); a second run finds it there.
  const artifact = path.join(repository, MODEL, '1', 'model.onnx');
  const listed = await fetch(`${httpUrl}/api/v1/models/${MODEL}/versions/1`, { headers: { authorization: `Bearer ${token}` } });
  if (listed.status === 404) {
    console.log(`\n$ outpost models push ${path.relative(process.cwd(), artifact)} --name ${MODEL} --version 1 --manifest …/manifest.json`);
    const code = await cli(['models', 'push', artifact, '--name', MODEL, '--version', '1', '--manifest', path.join(repository, MODEL, '1', 'manifest.json')]);
    if (code !== 0) throw new Error(`models push failed (exit ${code})`);
  }

  // 4. The agent, linked to the fleet, with its own (empty on a first run) repository: the model arrives by rollout.
  //    Telemetry every 2 s so the tour shows it arriving.
  const agent = await createAgent(loadConfig({
    env: process.env,
    flags: {
      dataDir: agentDir,
      http: { host: process.env.OUTPOST_HTTP_HOST ?? '127.0.0.1', port: freePorts ? 0 : await freeOr(8500) },
      telemetry: { schedule: '*/2 * * * * *' }, log: quiet,
    },
  }));
  const agentUrl = await agent.start();
  const deviceId = loadCredentials(agentDir)!.credentials.deviceId;
  console.log(`\nOutpost agent ${agentUrl}  device ${deviceId}`);

  await waitForOnline(httpUrl, token, deviceId);

  // 5. The rollout: the same commands an operator types. A short probation so the tour does not wait 5 minutes.
  console.log(`\n$ outpost rollouts create ${MODEL}@1 --devices ${deviceId} --probation 3s`);
  const created = await cliJson(['rollouts', 'create', `${MODEL}@1`, '--devices', deviceId, '--probation', '3s']);
  const rolloutId = (created as { id: string }).id;
  console.log(`  rollout ${rolloutId}`);
  console.log(`\n$ outpost rollouts watch ${rolloutId}`);
  const watched = await cli(['rollouts', 'watch', rolloutId, '--timeout', '2m']);
  if (watched !== 0) throw new Error(`the rollout did not complete (outpost rollouts watch exit ${watched}); see ${httpUrl}/api/v1/rollouts/${rolloutId}`);
  console.log(`  execution provider ${agent.models.active(MODEL)?.provider ?? 'none'}, version ${agent.models.active(MODEL)?.version ?? '?'}`);

  // 5. A frame detected on the box, then the fleet's view of it.
  const frame = path.join(samples, 'shapes.jpg');
  const detectedAt = new Date();
  const res = await fetch(`${agentUrl}/v1/models/${MODEL}/detect`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: readFileSync(frame) });
  const body = (await res.json()) as { detections?: { label: string; score: number; box: Record<string, number> }[]; timing?: Record<string, number> };
  if (!res.ok || !body.detections) throw new Error(`detect failed: HTTP ${res.status} ${JSON.stringify(body)}`);
  console.log(`\nPOST ${agentUrl}/v1/models/${MODEL}/detect  < ${path.relative(process.cwd(), frame)}  (demo detector: hand-set weights that find red/green/blue rectangles)`);
  for (const d of body.detections) console.log(`  ${d.label.padEnd(6)} ${d.score.toFixed(3)}  box x1=${d.box.x1} y1=${d.box.y1} x2=${d.box.x2} y2=${d.box.y2}`);
  console.log(`  timing ms: ${Object.entries(body.timing ?? {}).map(([k, v]) => `${k.replace('_ms', '')} ${v}`).join(', ')}`);

  await waitForFleetToCount(httpUrl, token, deviceId, detectedAt);
  console.log('\n$ outpost devices ls');
  await cli(['devices', 'ls']);
  console.log(`\n$ outpost metrics --device ${deviceId} --model ${MODEL} --since 10m`);
  await cli(['metrics', '--device', deviceId, '--model', MODEL, '--since', '10m']);

  console.log(`\nFleet REST   ${httpUrl}/api/v1/devices   (Authorization: Bearer $(cat ${shown(fleet.fleet.adminTokenFile)}))
Fleet MQTT   ${mqttUrl}
Agent API    ${agentUrl}/v2/models/${MODEL}   ${agentUrl}/status   ${agentUrl}/metrics
CLI          OUTPOST_FLEET_URL=${httpUrl} OUTPOST_TOKEN=$(cat ${shown(fleet.fleet.adminTokenFile)}) node bin/outpost.js devices ls
(The web dashboard comes with the operator console; the REST API above is what it will show.)`);
  const stopAll = async () => {
    await agent.stop();
    await fleet.fleet.stop();
  };
  if (once) return stopAll();
  console.log('\nServing until Ctrl-C.');
  const stop = () => void stopAll().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

async function startFleet(dataDir: string, log: { level: string }, anyPort: boolean): Promise<{ fleet: Fleet; urls: { httpUrl: string; mqttUrl: string } }> {
  const config = loadFleetConfig({
    env: process.env,
    flags: { dataDir, http: { host: '127.0.0.1', port: anyPort ? 0 : await freeOr(8080) }, broker: { host: '127.0.0.1', port: anyPort ? 0 : await freeOr(1883) }, log },
  });
  const fleet = await createFleet(config);
  return { fleet, urls: await fleet.start() };
}

/** The preferred port when nothing listens on it, else 0 (any free port): a second demo must not fail on EADDRINUSE. */
async function freeOr(port: number): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(0));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(port)));
  });
}

/** Waits (≤ 15 s) until a telemetry window holding this run's request reached the fleet (earlier runs' do not count). */
async function waitForFleetToCount(httpUrl: string, token: string, deviceId: string, since: Date): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const res = await fetch(`${httpUrl}/api/v1/devices/${deviceId}/metrics?model=${MODEL}&since=${since.toISOString()}`, { headers: { authorization: `Bearer ${token}` } });
    if (res.ok && ((await res.json()) as { requests: number }).requests > 0) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  console.warn('(the fleet has not received a telemetry window with the request yet; the link may still be connecting)');
}

/** Waits (≤ 15 s) until the fleet has the device's state message (it is online), so the rollout picks it online. */
async function waitForOnline(httpUrl: string, token: string, deviceId: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const res = await fetch(`${httpUrl}/api/v1/devices/${deviceId}`, { headers: { authorization: `Bearer ${token}` } });
    if (res.ok && ((await res.json()) as { online?: boolean }).online === true) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  console.warn('(the agent has not reached the fleet yet; the rollout waits for it)');
}

/** A path as the user would type it from here: relative inside the working directory, absolute outside it. */
function shown(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel.startsWith('..') ? file : rel;
}

/** The generator lives at models/ in the source tree and dist/models/ when compiled. */
function pathToModule(rel: string): string {
  const compiled = path.resolve(here, '../..', rel);
  return existsSync(compiled) ? compiled : path.resolve(here, '../..', rel.replace(/\.js$/, '.ts'));
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : `demo failed: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
