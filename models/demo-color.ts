/**
 * The demo classifier: names the dominant colour of an image — red, green, blue or grey — with
 * hand-set weights. It has a FIXED batch of 1 (input [1,3,64,64]) on purpose, so the agent's
 * handling of models that cannot batch is exercised by a model the project owns.
 *
 * GlobalAveragePool gives the mean RGB; a Gemm scores each colour by its contrast (its channel
 * minus the mean of the other two, the same measure the demo detector uses) and grey by a
 * constant, so an image with no clear colour falls back to grey. It outputs logits: the manifest
 * tells the server to apply softmax.
 */
import { attr, GraphBuilder } from '../shared/src/onnx/graph-builder.js';

export const DEMO_COLOR_LABELS = ['red', 'green', 'blue', 'grey'] as const;
export const DEMO_COLOR_SIZE = 64;

/** Logit per unit of colour contrast: mean contrast 0.65 (the sample colours) → logit 13. */
const GAIN = 20;
/** Grey's constant logit = GAIN × 0.15: colours with less than 0.15 contrast are called grey. */
const GREY_LOGIT = GAIN * 0.15;

export function buildDemoColor(): Uint8Array {
  const g = new GraphBuilder({
    name: 'demo_color',
    opset: 13,
    producerName: 'outpost-make-models',
    docString: 'Outpost demo classifier: dominant colour (red/green/blue/grey) with hand-set weights, not trained.',
  });
  const input = g.input('input', 'FLOAT', [1, 3, DEMO_COLOR_SIZE, DEMO_COLOR_SIZE]);
  const meanRgb = g.op('Flatten', [g.op('GlobalAveragePool', [input])], { axis: attr.int(1) });
  // weights[k][j]: input channel k (R, G, B) → output class j (red, green, blue, grey).
  const weights: number[] = [];
  for (let k = 0; k < 3; k++) for (let j = 0; j < DEMO_COLOR_LABELS.length; j++) weights.push(j === 3 ? 0 : (j === k ? 1 : -0.5) * GAIN);
  const w = g.float32('colour_weight', [3, DEMO_COLOR_LABELS.length], weights);
  const b = g.float32('colour_bias', [DEMO_COLOR_LABELS.length], [0, 0, 0, GREY_LOGIT]);
  g.op('Gemm', [meanRgb, w, b], {}, 'logits');
  g.output('logits', 'FLOAT', [1, DEMO_COLOR_LABELS.length]);
  return g.encode();
}
