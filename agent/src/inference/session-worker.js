/**
 * Hosts one onnxruntime session on its own thread. onnxruntime-node's session.run is synchronous on the
 * calling thread (its promise only defers the call), so running it on the main thread would stall every
 * other request, health check and socket timeout for the length of an inference (measured: 2.4 s gaps).
 *
 * Plain JavaScript on purpose: a worker file must be loadable as-is both from the sources (vitest) and
 * from dist/, without a TypeScript loader. Protocol (all messages carry `id`):
 *   → {type:'create', bytes, candidates, options}  ← {ok, provider, failedProviders, inputs, outputs} | {error}
 *   → {type:'run', feeds:[{name,type,dims,data}], outputNames}  ← {ok, outputs:[{name,type,dims,data}]} | {error}
 *   → {type:'release'}  ← {ok}
 */
import { parentPort } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

/** @type {import('onnxruntime-node').InferenceSession | undefined} */
let session;

const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);

port.on('message', async (msg) => {
  try {
    if (msg.type === 'create') port.postMessage({ id: msg.id, ok: true, ...(await create(msg.bytes, msg.candidates, msg.options)) });
    else if (msg.type === 'run') run(msg);
    else if (msg.type === 'release') {
      await session?.release();
      session = undefined;
      port.postMessage({ id: msg.id, ok: true });
    }
  } catch (err) {
    port.postMessage({ id: msg.id, error: err instanceof Error ? err.message : String(err) });
  }
});

/** Tries the candidate providers in order; each refusal is recorded with onnxruntime's own reason. */
async function create(bytes, candidates, options) {
  const failedProviders = [];
  let lastError;
  for (const provider of candidates) {
    try {
      session = await ort.InferenceSession.create(bytes, sessionOptions(provider, options));
      const describe = (meta) => meta.map((m) => ({ name: m.name, isTensor: m.isTensor, type: m.isTensor ? m.type : undefined, shape: m.isTensor ? [...m.shape] : [] }));
      return { provider, failedProviders, inputs: describe(session.inputMetadata), outputs: describe(session.outputMetadata) };
    } catch (err) {
      lastError = err;
      if (provider !== 'cpu') failedProviders.push({ provider, reason: String(err instanceof Error ? err.message : err).split('\n')[0].slice(0, 300) });
    }
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

function sessionOptions(provider, o) {
  // TensorRT's engine cache is configured by environment variables the main thread sets before starting us.
  const executionProviders = provider === 'cpu' ? ['cpu'] : provider === 'tensorrt' ? ['tensorrt', 'cuda', 'cpu'] : [provider, 'cpu'];
  return {
    executionProviders,
    graphOptimizationLevel: 'all',
    ...(o.intraOpThreads > 0 ? { intraOpNumThreads: o.intraOpThreads } : {}),
    ...(o.interOpThreads > 0 ? { interOpNumThreads: o.interOpThreads } : {}),
    // Session config entries (session.intra_op.allow_spinning), passed through the binding's `extra`.
    ...(o.allowSpinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {}),
  };
}

function run(msg) {
  if (!session) throw new Error('session released');
  const feeds = {};
  for (const f of msg.feeds) feeds[f.name] = new ort.Tensor(f.type, f.data, f.dims);
  // Synchronous inside onnxruntime-node; fine here, this thread does nothing else.
  session.run(feeds, msg.outputNames).then(
    (results) => {
      const outputs = [];
      const transfer = [];
      for (const [name, value] of Object.entries(results)) {
        const data = value.data;
        outputs.push({ name, type: value.type, dims: [...value.dims], data });
        if (ArrayBuffer.isView(data) && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength) transfer.push(data.buffer);
      }
      try {
        port.postMessage({ id: msg.id, ok: true, outputs }, transfer);
      } catch {
        port.postMessage({ id: msg.id, ok: true, outputs }); // buffers onnxruntime owns cannot move: copy
      }
    },
    (err) => port.postMessage({ id: msg.id, error: err instanceof Error ? err.message : String(err) }),
  );
}
