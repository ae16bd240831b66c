import { Worker } from 'node:worker_threads';
import type { ProviderName } from '../config/schema.js';
import type { KServeDatatype, TensorSpec } from '../../../shared/src/manifest.js';
import type { SkippedProvider } from './providers.js';
import { DATATYPES, kserveFromOrt, type HostTensor, type NumericDatatype } from './tensor.js';

export interface SessionOptions {
  intraOpThreads: number;
  interOpThreads: number;
  allowSpinning: boolean;
  tensorrtCacheDir: string;
}

/** One onnxruntime session for one model version, with the provider it got and the I/O it declares. */
export interface ModelSession {
  readonly provider: ProviderName;
  /** Providers tried and refused at session creation, with onnxruntime's reason. */
  readonly failedProviders: SkippedProvider[];
  readonly inputs: TensorSpec[];
  readonly outputs: TensorSpec[];
  /** INVARIANT: takes ownership of the feeds' buffers (they are moved to the inference thread and detached). */
  run(feeds: Record<string, HostTensor>, outputNames: readonly string[]): Promise<Record<string, HostTensor>>;
  release(): Promise<void>;
}

interface WireTensor {
  name: string;
  type: string;
  dims: number[];
  data: HostTensor['data'];
}

interface WireMeta {
  name: string;
  isTensor: boolean;
  type: string | undefined;
  shape: (number | string)[];
}

type OkReply = { id: number; ok: true } & Record<string, unknown>;
type Reply = OkReply | { id: number; error: string };

const WORKER_URL = new URL('./session-worker.js', import.meta.url);

/**
 * Creates the session on its own worker thread (session-worker.js) on the first candidate provider
 * onnxruntime accepts, falling back in order; CPU is last and its failure (a corrupt or unsupported model)
 * is the error thrown. Runs go to that thread, so inference never blocks the event loop.
 */
export async function createModelSession(
  modelBytes: Uint8Array,
  candidates: readonly ProviderName[],
  options: SessionOptions,
  /** Called once if the thread dies after creation (not on release). */
  onDead?: (err: Error) => void,
): Promise<ModelSession> {
  if (candidates.includes('tensorrt')) {
    // The node binding's TensorRT options carry only deviceId; the engine cache is configured through the
    // provider's documented environment variables. Set here, on the main thread, because a worker's native
    // code sees the environment the worker was started with, not changes made inside it.
    process.env.ORT_TENSORRT_ENGINE_CACHE_ENABLE ??= '1';
    process.env.ORT_TENSORRT_CACHE_PATH ??= options.tensorrtCacheDir;
  }
  const worker = new Worker(WORKER_URL);
  let created = false;
  let released = false;
  const pending = new Map<number, { resolve: (r: OkReply) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let dead: Error | undefined;
  const failAll = (err: Error) => {
    if (dead) return;
    dead = err;
    if (created && !released) onDead?.(err);
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on('message', (reply: Reply) => {
    const p = pending.get(reply.id);
    if (!p) return;
    pending.delete(reply.id);
    if ('error' in reply && typeof reply.error === 'string') p.reject(new Error(reply.error));
    else p.resolve(reply as OkReply);
  });
  worker.on('error', (err) => failAll(err));
  worker.on('exit', (code) => failAll(new Error(`inference thread exited (${code})`)));
  const call = (msg: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<OkReply> => {
    if (dead) return Promise.reject(dead);
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      worker.postMessage({ ...msg, id }, transfer);
    });
  };

  let reply: OkReply;
  try {
    // A copy: the caller keeps its bytes (it hashed them), and the worker owns the transferred buffer.
    const bytes = modelBytes.slice();
    reply = await call({ type: 'create', bytes, candidates, options }, [bytes.buffer]);
  } catch (err) {
    await worker.terminate();
    throw err;
  }
  const describe = (meta: WireMeta[]): TensorSpec[] =>
    meta.map((m) => ({
      name: m.name,
      datatype: (m.isTensor && m.type ? kserveFromOrt(m.type) : undefined) ?? ('BYTES' as KServeDatatype),
      dims: m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1)),
    }));

  created = true;
  return {
    provider: reply.provider as ProviderName,
    failedProviders: reply.failedProviders as SkippedProvider[],
    inputs: describe(reply.inputs as WireMeta[]),
    outputs: describe(reply.outputs as WireMeta[]),
    async run(feeds, outputNames) {
      const wire: WireTensor[] = [];
      const transfer: ArrayBuffer[] = [];
      for (const [name, t] of Object.entries(feeds)) {
        // Move whole buffers to the worker; a view into a larger (possibly pooled) buffer is copied first.
        const owns = t.data.byteOffset === 0 && t.data.byteLength === t.data.buffer.byteLength && t.data.buffer instanceof ArrayBuffer;
        const data = owns ? t.data : (t.data.slice() as HostTensor['data']);
        transfer.push(data.buffer as ArrayBuffer);
        wire.push({ name, type: DATATYPES[t.datatype].ort, dims: t.dims, data });
      }
      const reply = await call({ type: 'run', feeds: wire, outputNames }, transfer);
      const out: Record<string, HostTensor> = {};
      for (const o of reply.outputs as WireTensor[]) {
        const datatype = kserveFromOrt(o.type);
        if (datatype === undefined || datatype === 'BYTES') throw new Error(`output '${o.name}' has unsupported type ${o.type}`);
        out[o.name] = { datatype: datatype as NumericDatatype, dims: o.dims, data: o.data };
      }
      return out;
    },
    async release() {
      released = true;
      if (!dead) await call({ type: 'release' }).catch(() => undefined);
      await worker.terminate();
    },
  };
}
