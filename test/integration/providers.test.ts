/**
 * Execution-provider choice with the real onnxruntime on a box without a GPU: the static plan (what the
 * runtime build and the box offer) and the fallback when onnxruntime itself refuses a provider at
 * session creation. Both reasons must reach the operator through /v2/models/<name> and /status.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realHardwareProbe, type HardwareProbe } from '../../agent/src/inference/providers.js';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { postJson, numbersOf } from '../helpers/kserve-wire.js';

interface Skipped { provider: string; reason: string }
interface ModelMeta { inputs: { name: string; datatype: string; shape: number[] }[]; parameters: { execution_provider: string; skipped_providers: Skipped[] } }
interface Status {
  executionProviders: { preference: string[]; candidates: string[]; skipped: Skipped[] };
  models: { name: string; version: number; state: string; provider: string; skippedProviders: Skipped[] }[];
}

const hasGpu = realHardwareProbe.nvidiaGpu();

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  expect(res.status, url).toBe(200);
  return (await res.json()) as T;
}

/** One `simple` request (INPUT0 + INPUT1 → OUTPUT0 sum): the model really serves on the chosen provider. */
async function expectServes(url: string): Promise<void> {
  const meta = await getJson<ModelMeta>(`${url}/v2/models/simple`);
  const shape = meta.inputs[0]!.shape.map((d) => (d < 0 ? 1 : d));
  const n = shape.reduce((a, b) => a * b, 1);
  const a = Array.from({ length: n }, (_, i) => i);
  const b = Array.from({ length: n }, () => 2);
  const reply = await postJson(`${url}/v2/models/simple/infer`, {
    inputs: [
      { name: 'INPUT0', datatype: 'INT32', shape, data: a },
      { name: 'INPUT1', datatype: 'INT32', shape, data: b },
    ],
    outputs: [{ name: 'OUTPUT1' }],
  });
  expect(reply.status, JSON.stringify(reply.json)).toBe(200);
  expect(numbersOf(reply.outputs.OUTPUT1!)).toEqual(a.map((v) => v - 2));
}

describe.skipIf(hasGpu)(`execution providers${hasGpu ? ' (skipped: this box has an NVIDIA GPU; these tests describe a GPU-less one)' : ''}`, () => {
  describe('default preference [tensorrt, cuda, openvino, cpu]', () => {
    let agent: RunningAgent;
    beforeAll(async () => {
      agent = await startAgent({ models: ['simple'] });
    });
    afterAll(() => agent?.stop());

    it('chooses cpu and names each skipped provider with its reason in the model metadata', async () => {
      const meta = await getJson<ModelMeta>(`${agent.url}/v2/models/simple`);
      expect(meta.parameters.execution_provider).toBe('cpu');
      const skipped = meta.parameters.skipped_providers;
      expect(skipped.map((s) => s.provider).sort()).toEqual(['cuda', 'openvino', 'tensorrt']);
      for (const s of skipped) expect(s.reason.trim().length, `reason for ${s.provider}`).toBeGreaterThan(10);
      // This onnxruntime-node build lists cuda/tensorrt as (unbundled) backends, so the box is what rules them out.
      expect(skipped.find((s) => s.provider === 'cuda')!.reason).toMatch(/GPU|cuda/i);
      expect(skipped.find((s) => s.provider === 'openvino')!.reason).toMatch(/OpenVINO|Intel/i);
      await expectServes(agent.url);
    });

    it('/status shows the preference, the cpu-only plan and the same reasons', async () => {
      const status = await getJson<Status>(`${agent.url}/status`);
      expect(status.executionProviders.preference).toEqual(['tensorrt', 'cuda', 'openvino', 'cpu']);
      expect(status.executionProviders.candidates).toEqual(['cpu']);
      expect(status.executionProviders.skipped.map((s) => s.provider)).toEqual(['tensorrt', 'cuda', 'openvino']);
      const simple = status.models.find((m) => m.name === 'simple')!;
      expect(simple).toMatchObject({ state: 'ready', provider: 'cpu' });
      expect(simple.skippedProviders).toEqual(status.executionProviders.skipped);
    });
  });

  describe('CUDA refused by onnxruntime at session creation', () => {
    let agent: RunningAgent;
    let libDir: string;
    beforeAll(async () => {
      // The planner only offers CUDA to onnxruntime when the runtime lists it, the box has an NVIDIA GPU and
      // libonnxruntime_providers_cuda.so is present. No machine that runs these tests has a GPU, so the probe
      // is injected to claim one, and an empty provider library satisfies the file check; onnxruntime's own
      // attempt to load the CUDA provider then fails for real, which is the path under test.
      const claimsNvidia: HardwareProbe = { nvidiaGpu: () => true, intelGpuOrVpu: () => false };
      libDir = mkdtempSync(path.join(os.tmpdir(), 'outpost-fake-gpu-runtime-'));
      writeFileSync(path.join(libDir, 'libonnxruntime_providers_cuda.so'), '');
      agent = await startAgent({
        models: ['simple'],
        config: { inference: { providers: ['cuda', 'cpu'], runtimeLibraryPath: libDir } },
        deps: { hardware: claimsNvidia },
      });
    });
    afterAll(async () => {
      await agent?.stop();
      if (libDir) rmSync(libDir, { recursive: true, force: true });
    });

    it('plans cuda first, falls back to cpu, and reports onnxruntime\'s reason for cuda', async () => {
      const status = await getJson<Status>(`${agent.url}/status`);
      expect(status.executionProviders.candidates).toEqual(['cuda', 'cpu']);
      expect(status.executionProviders.skipped).toEqual([]);
      const simple = status.models.find((m) => m.name === 'simple')!;
      expect(simple).toMatchObject({ state: 'ready', provider: 'cpu' });
      expect(simple.skippedProviders).toHaveLength(1);
      expect(simple.skippedProviders[0]!.provider).toBe('cuda');
      // onnxruntime's words, not the planner's: it tried to load the CUDA provider and could not.
      expect(simple.skippedProviders[0]!.reason).toMatch(/Cuda|CUDA|shared library|Failed to load/);
      expect(simple.skippedProviders[0]!.reason).not.toMatch(/no NVIDIA GPU|not found in/);

      const meta = await getJson<ModelMeta>(`${agent.url}/v2/models/simple`);
      expect(meta.parameters.execution_provider).toBe('cpu');
      expect(meta.parameters.skipped_providers).toEqual(simple.skippedProviders);
      await expectServes(agent.url);
    });
  });
});
