import { describe, expect, it } from 'vitest';
import { attr, GraphBuilder } from '../../shared/src/onnx/graph-builder.js';
import { readOnnxMetadata } from '../../shared/src/onnx/model-metadata.js';

function tinyModel(weights = 4): Uint8Array {
  const g = new GraphBuilder({ name: 'tiny', opset: 13, producerName: 'unit-test', producerVersion: '1.2.3' });
  const x = g.input('x', 'FLOAT', ['batch', weights]);
  const w = g.float32('w', [weights], Array.from({ length: weights }, (_, i) => i));
  g.op('Mul', [x, w], {}, 'y');
  g.op('Flatten', ['y'], { axis: attr.int(1) }, 'z');
  g.output('z', 'FLOAT', ['batch', weights]);
  g.meta('names', "{0: 'a'}");
  g.meta('imgsz', '[64, 64]');
  return g.encode();
}

describe('readOnnxMetadata', () => {
  it('reads IR version, producer, opsets and metadata_props written by GraphBuilder', () => {
    expect(readOnnxMetadata(tinyModel())).toEqual({
      irVersion: 7,
      producerName: 'unit-test',
      producerVersion: '1.2.3',
      opsets: { 'ai.onnx': 13 },
      metadataProps: { imgsz: '[64, 64]', names: "{0: 'a'}" },
    });
  });

  it('skips the graph whatever its size', () => {
    const big = tinyModel(1_000_000); // 4 MB of initializer
    expect(big.byteLength).toBeGreaterThan(4_000_000);
    expect(readOnnxMetadata(big).metadataProps.names).toBe("{0: 'a'}");
  });

  it('rejects truncated files and bytes that are not ONNX', () => {
    const model = tinyModel(1000);
    expect(() => readOnnxMetadata(model.subarray(0, model.byteLength - 10))).toThrow(/not a readable ONNX model/);
    expect(() => readOnnxMetadata(new TextEncoder().encode('<html>not a model</html>'))).toThrow(/not a readable ONNX model/);
    expect(() => readOnnxMetadata(new Uint8Array(0))).toThrow(/no ir_version/);
  });
});
