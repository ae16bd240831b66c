import * as ort from 'onnxruntime-node';
import type { ProviderName } from '../config/schema.js';
import type { KServeDatatype, TensorSpec } from '../../../shared/src/manifest.js';
import type { SkippedProvider } from './providers.js';
import { DATATYPES, kserveFromOrt, type HostTensor, type NumericDatatype } from './tensor.js';

export interface SessionOptions {
  intraOpThreads: number;
  interOpThreads: number;
  tensorrtCacheDir: string;
}

/** One onnxruntime session for one model version, with the provider it got and the I/O it declares. */
export interface ModelSession {
  readonly provider: ProviderName;
  /** Providers tried and refused at session creation, with onnxruntime's reason. */
  readonly failedProviders: SkippedProvider[];
  readonly inputs: TensorSpec[];
  readonly outputs: TensorSpec[];
  run(feeds: Record<string, HostTensor>, outputNames: readonly string[]): Promise<Record<string, HostTensor>>;
  release(): Promise<void>;
}

/**
 * Creates the session on the first candidate provider onnxruntime accepts, falling back in order;
 * CPU is last and its failure (a corrupt or unsupported model) is the error thrown.
 */
export async function createModelSession(modelBytes: Uint8Array, candidates: readonly ProviderName[], options: SessionOptions): Promise<ModelSession> {
  const failedProviders: SkippedProvider[] = [];
  let lastError: unknown;
  for (const provider of candidates) {
    try {
      const session = await ort.InferenceSession.create(modelBytes, sessionOptions(provider, options));
      return wrap(session, provider, failedProviders);
    } catch (err) {
      lastError = err;
      if (provider !== 'cpu') failedProviders.push({ provider, reason: firstLine(err) });
    }
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

function sessionOptions(provider: ProviderName, o: SessionOptions): ort.InferenceSession.SessionOptions {
  if (provider === 'tensorrt') {
    // The node binding's TensorRT options carry only deviceId; the engine cache is configured through the
    // TensorRT provider's documented environment variables, so engines built at staging are reused.
    process.env.ORT_TENSORRT_ENGINE_CACHE_ENABLE ??= '1';
    process.env.ORT_TENSORRT_CACHE_PATH ??= o.tensorrtCacheDir;
  }
  const executionProviders: ort.InferenceSession.ExecutionProviderConfig[] =
    provider === 'cpu' ? ['cpu'] : provider === 'tensorrt' ? ['tensorrt', 'cuda', 'cpu'] : [provider, 'cpu'];
  return {
    executionProviders,
    graphOptimizationLevel: 'all',
    ...(o.intraOpThreads > 0 ? { intraOpNumThreads: o.intraOpThreads } : {}),
    ...(o.interOpThreads > 0 ? { interOpNumThreads: o.interOpThreads } : {}),
  };
}

function wrap(session: ort.InferenceSession, provider: ProviderName, failedProviders: SkippedProvider[]): ModelSession {
  const describe = (meta: readonly ort.InferenceSession.ValueMetadata[]): TensorSpec[] =>
    meta.map((m) => ({
      name: m.name,
      datatype: (m.isTensor ? kserveFromOrt(m.type) : undefined) ?? ('BYTES' as KServeDatatype),
      dims: m.isTensor ? m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1)) : [],
    }));
  return {
    provider,
    failedProviders,
    inputs: describe(session.inputMetadata),
    outputs: describe(session.outputMetadata),
    async run(feeds, outputNames) {
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor(DATATYPES[t.datatype].ort, t.data as never, t.dims);
      const results = await session.run(ortFeeds, outputNames as string[]);
      const out: Record<string, HostTensor> = {};
      for (const [name, value] of Object.entries(results)) {
        const datatype = kserveFromOrt(value.type);
        if (datatype === undefined || datatype === 'BYTES') throw new Error(`output '${name}' has unsupported type ${value.type}`);
        out[name] = { datatype: datatype as NumericDatatype, dims: [...value.dims], data: value.data as HostTensor['data'] };
      }
      return out;
    },
    release: () => session.release(),
  };
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 300);
}
