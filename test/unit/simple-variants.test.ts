import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { buildSimpleFailing, buildSimpleHeavy } from '../../models/simple-variants.js';

const tensor = (d: number[]) => new ort.Tensor('int32', Int32Array.from(d), [1, 16]);
const A = Array.from({ length: 16 }, (_, i) => i);
const B = Array.from({ length: 16 }, () => 1);

describe('simple variants for the update tests', () => {
  it('heavy: answers like simple (plus its offset) but takes longer than a plain add', async () => {
    const s = await ort.InferenceSession.create(buildSimpleHeavy({ width: 256, layers: 2, offset: 7 }));
    try {
      const r = await s.run({ INPUT0: tensor(A), INPUT1: tensor(B) });
      expect(Array.from(r.OUTPUT0!.data as Int32Array)).toEqual(A.map((a) => a + 1 + 7));
      expect(Array.from(r.OUTPUT1!.data as Int32Array)).toEqual(A.map((a) => a - 1));
    } finally {
      await s.release();
    }
  });

  it('failing: answers zeros, fails in the runtime on a real request', async () => {
    const s = await ort.InferenceSession.create(buildSimpleFailing());
    try {
      const zeros = Array.from({ length: 16 }, () => 0);
      const r = await s.run({ INPUT0: tensor(zeros), INPUT1: tensor(zeros) });
      expect(Array.from(r.OUTPUT0!.data as Int32Array)).toEqual(zeros);
      await expect(s.run({ INPUT0: tensor(A), INPUT1: tensor(B) })).rejects.toThrow();
    } finally {
      await s.release();
    }
  });
});
