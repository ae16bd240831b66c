/**
 * The list of models make-models writes: each model's bytes and its manifest body. Kept apart from
 * make-models.ts (which only does I/O) so the list reads as a table.
 */
import { buildDemoColor, DEMO_COLOR_LABELS, DEMO_COLOR_SIZE } from './demo-color.js';
import { buildDemoShapes, DEMO_SHAPES_LABELS, DEMO_SHAPES_SIZE } from './demo-shapes.js';
import { buildIdentity, IDENTITY_DATATYPES, identityInputName, identityOutputName, type IdentityDatatype } from './identity.js';
import type { Batching, ManifestBody, Preprocessing } from './manifest.js';
import { buildSimple, SIMPLE_V2_OFFSET, SIMPLE_WIDTH } from './simple.js';
import { buildSlow } from './slow.js';

export interface CatalogEntry {
  name: string;
  version: number;
  onnx: Uint8Array;
  manifest: ManifestBody;
}

const LETTERBOX_640: Preprocessing = {
  size: [DEMO_SHAPES_SIZE, DEMO_SHAPES_SIZE],
  resize: 'letterbox',
  pad_position: 'center',
  pad_value: 114,
  scale: 1 / 255,
  mean: [0, 0, 0],
  std: [1, 1, 1],
  color: 'RGB',
};

// No max_queue_delay_ms: the agent's batching.maxQueueDelayMs (default 0) applies, so operators tune it in one place.
const BATCHING: Batching = { max_batch_size: 8, max_queue_size: 64 };
const NO_BATCHING: Batching = { max_batch_size: 1, max_queue_size: 64 };

const DETECTOR_NOTE =
  'Finds solid red, green and blue rectangles on a grey background. Hand-set weights, not trained: the Outpost demo model.';

function demoShapes(format: 'yolov8' | 'yolov5'): ManifestBody {
  const anchors = format === 'yolov8' ? [-1, 4 + DEMO_SHAPES_LABELS.length, -1] : [-1, -1, 5 + DEMO_SHAPES_LABELS.length];
  return {
    task: 'detect',
    description:
      format === 'yolov8'
        ? `${DETECTOR_NOTE} Ultralytics YOLOv8 output layout [batch, 4+C, N]; Ultralytics metadata (names, imgsz) in the file.`
        : `${DETECTOR_NOTE} YOLOv5/YOLOX output layout [batch, N, 5+C] with objectness; no ONNX metadata.`,
    inputs: [{ name: 'images', datatype: 'FP32', dims: [-1, 3, DEMO_SHAPES_SIZE, DEMO_SHAPES_SIZE], layout: 'NCHW' }],
    outputs: [{ name: 'output0', datatype: 'FP32', dims: anchors }],
    preprocessing: LETTERBOX_640,
    postprocessing: { format, confidence: 0.25, iou: 0.45, max_detections: 100, labels: [...DEMO_SHAPES_LABELS] },
    batching: BATCHING,
  };
}

function simple(version: 1 | 2): CatalogEntry {
  const io = (name: string) => ({ name, datatype: 'INT32' as const, dims: [-1, SIMPLE_WIDTH] });
  return {
    name: 'simple',
    version,
    onnx: buildSimple(version),
    manifest: {
      task: 'raw',
      description:
        version === 1
          ? "Like Triton's example 'simple': OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (INT32 [batch, 16])."
          : `Version 2 of 'simple', observably different: OUTPUT0 = INPUT0 + INPUT1 + ${SIMPLE_V2_OFFSET}, OUTPUT1 = INPUT0 - INPUT1.`,
      inputs: [io('INPUT0'), io('INPUT1')],
      outputs: [io('OUTPUT0'), io('OUTPUT1')],
      batching: BATCHING,
    },
  };
}

function identity(): CatalogEntry {
  const datatypes = Object.keys(IDENTITY_DATATYPES) as IdentityDatatype[];
  return {
    name: 'identity',
    version: 1,
    onnx: buildIdentity(),
    manifest: {
      task: 'raw',
      description: 'One Identity per datatype: x_<dt> -> y_<dt>, dims [-1, -1], for round-trip tests of every tensor type.',
      inputs: datatypes.map((dt) => ({ name: identityInputName(dt), datatype: dt, dims: [-1, -1] })),
      outputs: datatypes.map((dt) => ({ name: identityOutputName(dt), datatype: dt, dims: [-1, -1] })),
      batching: NO_BATCHING,
    },
  };
}

/** Every model make-models writes, in a fixed order. */
export function buildCatalog(): CatalogEntry[] {
  return [
    { name: 'demo-shapes', version: 1, onnx: buildDemoShapes('yolov8'), manifest: demoShapes('yolov8') },
    { name: 'demo-shapes-v5', version: 1, onnx: buildDemoShapes('yolov5'), manifest: demoShapes('yolov5') },
    {
      name: 'demo-color',
      version: 1,
      onnx: buildDemoColor(),
      manifest: {
        task: 'classify',
        description: 'Dominant colour of the image: red, green, blue or grey. Hand-set weights, not trained. Fixed batch of 1; outputs logits.',
        inputs: [{ name: 'input', datatype: 'FP32', dims: [1, 3, DEMO_COLOR_SIZE, DEMO_COLOR_SIZE], layout: 'NCHW' }],
        outputs: [{ name: 'logits', datatype: 'FP32', dims: [1, DEMO_COLOR_LABELS.length] }],
        preprocessing: { size: [DEMO_COLOR_SIZE, DEMO_COLOR_SIZE], resize: 'stretch', scale: 1 / 255, mean: [0, 0, 0], std: [1, 1, 1], color: 'RGB' },
        postprocessing: { softmax: true, top_k: DEMO_COLOR_LABELS.length, labels: [...DEMO_COLOR_LABELS] },
        batching: NO_BATCHING,
      },
    },
    simple(1),
    simple(2),
    identity(),
    {
      name: 'slow',
      version: 1,
      onnx: buildSlow(),
      manifest: {
        task: 'raw',
        description: 'y = ReduceSum(x · xT) for x FP32 [n, m]: n*n*m multiply-adds, so the client sets how slow a request is (timeout tests).',
        inputs: [{ name: 'x', datatype: 'FP32', dims: [-1, -1] }],
        outputs: [{ name: 'y', datatype: 'FP32', dims: [1] }],
        // The output has no batch dimension, so requests must never be merged into one batch.
        batching: { max_batch_size: 1, max_queue_size: 16 },
      },
    },
  ];
}
