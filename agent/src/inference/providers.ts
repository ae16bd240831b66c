import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { ProviderName } from '../config/schema.js';

/** Why a preferred execution provider is not used; shown in /status and model metadata. */
export interface SkippedProvider {
  provider: ProviderName;
  reason: string;
}

/** What the box has. The real probe reads device nodes; tests inject one to reach code paths that need a GPU. */
export interface HardwareProbe {
  nvidiaGpu(): boolean;
  intelGpuOrVpu(): boolean;
}

export const realHardwareProbe: HardwareProbe = {
  // Desktop/server NVIDIA GPUs expose /dev/nvidia0; Jetson (L4T) exposes /dev/nvhost-* and /dev/nvgpu.
  nvidiaGpu: () => existsSync('/dev/nvidia0') || existsSync('/dev/nvhost-ctrl') || existsSync('/dev/nvgpu'),
  intelGpuOrVpu: () => existsSync('/dev/dri') || existsSync('/dev/accel'),
};

/** What the installed onnxruntime build can do: its backend list and where its provider libraries live. */
export interface RuntimeInfo {
  backends: { name: string; bundled: boolean }[];
  /** Directories searched for libonnxruntime_providers_*.so. */
  libraryDirs: string[];
}

export function readRuntimeInfo(runtimeLibraryPath?: string): RuntimeInfo {
  const require = createRequire(import.meta.url);
  const ort = require('onnxruntime-node') as { listSupportedBackends?: () => { name: string; bundled: boolean }[] };
  const pkgDir = path.dirname(require.resolve('onnxruntime-node/package.json'));
  const binDir = path.join(pkgDir, 'bin', 'napi-v6', process.platform, process.arch);
  return {
    backends: ort.listSupportedBackends?.() ?? [{ name: 'cpu', bundled: true }],
    libraryDirs: [runtimeLibraryPath, binDir].filter((d): d is string => typeof d === 'string'),
  };
}

function hasLibrary(dirs: string[], prefix: string): boolean {
  return dirs.some((dir) => {
    try {
      return readdirSync(dir).some((f) => f.startsWith(prefix));
    } catch {
      return false;
    }
  });
}

/**
 * Filters the preference list down to providers this runtime and box can plausibly use, with a reason for
 * each one skipped. Session creation may still fail for a candidate (driver mismatch…); the caller then
 * falls back to the next and records that reason too. CPU is always the last resort.
 */
export function planProviders(preference: readonly ProviderName[], runtime: RuntimeInfo, hw: HardwareProbe): { candidates: ProviderName[]; skipped: SkippedProvider[] } {
  const names = new Set(runtime.backends.map((b) => b.name));
  const candidates: ProviderName[] = [];
  const skipped: SkippedProvider[] = [];
  for (const provider of preference) {
    const reason = unusableBecause(provider, names, runtime, hw);
    if (reason === undefined) candidates.push(provider);
    else skipped.push({ provider, reason });
  }
  if (!candidates.includes('cpu')) candidates.push('cpu');
  return { candidates, skipped };
}

function unusableBecause(provider: ProviderName, names: Set<string>, runtime: RuntimeInfo, hw: HardwareProbe): string | undefined {
  switch (provider) {
    case 'cpu':
      return undefined;
    case 'cuda':
    case 'tensorrt': {
      if (!names.has(provider)) return `this onnxruntime build has no ${provider} provider; point inference.runtimeLibraryPath at a GPU build`;
      if (!hw.nvidiaGpu()) return 'no NVIDIA GPU on this box (/dev/nvidia0, /dev/nvhost-ctrl, /dev/nvgpu absent)';
      if (!hasLibrary(runtime.libraryDirs, `libonnxruntime_providers_${provider}`)) {
        return `libonnxruntime_providers_${provider}.so not found in ${runtime.libraryDirs.join(', ')}`;
      }
      return undefined;
    }
    case 'openvino': {
      if (!names.has('openvino')) return 'this onnxruntime build has no OpenVINO provider; point inference.runtimeLibraryPath at an onnxruntime build with OpenVINO';
      if (!hw.intelGpuOrVpu()) return 'no Intel GPU/NPU device (/dev/dri, /dev/accel absent)';
      return undefined;
    }
  }
}
