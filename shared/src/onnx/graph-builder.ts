/**
 * A small typed builder for ONNX graphs, used to write the project's own demo and test models
 * from TypeScript (no Python, nothing downloaded).
 *
 * It only covers what hand-built models need: float32/int32/int64 initializers, nodes with
 * int/ints/float/floats/string attributes, graph inputs/outputs with fixed or symbolic dims,
 * one default-domain opset, and metadata_props. Anything fancier belongs in a real exporter.
 */
import {
  encodeModelProto,
  OnnxAttributeType,
  OnnxDataType,
  type AttributeProtoObject,
  type DimensionObject,
  type NodeProtoObject,
  type OnnxDataTypeName,
  type TensorProtoObject,
  type ValueInfoProtoObject,
} from './onnx-proto.js';

/**
 * A dimension: a non-negative number is fixed, a string is a symbolic dim_param (e.g. "batch"),
 * null is unknown and unnamed (use it when two inputs' sizes are unrelated: a shared symbolic name
 * tells runtimes they are equal).
 */
export type Dim = number | string | null;

/** Opsets the builder is tested with; each maps to the IR version ONNX released alongside it. */
export type SupportedOpset = 13 | 17;
const IR_VERSION_FOR_OPSET: Record<SupportedOpset, number> = { 13: 7, 17: 8 };

/** Attribute values carry their ONNX type explicitly: 1 could be an INT or a FLOAT attribute. */
export type AttrValue =
  | { kind: 'int'; value: number }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'float'; value: number }
  | { kind: 'floats'; value: readonly number[] }
  | { kind: 'string'; value: string };

export const attr = {
  int: (value: number): AttrValue => ({ kind: 'int', value }),
  ints: (value: readonly number[]): AttrValue => ({ kind: 'ints', value }),
  float: (value: number): AttrValue => ({ kind: 'float', value }),
  floats: (value: readonly number[]): AttrValue => ({ kind: 'floats', value }),
  string: (value: string): AttrValue => ({ kind: 'string', value }),
};

export interface GraphBuilderOptions {
  /** Graph name, shown by tools such as Netron. */
  name: string;
  opset: SupportedOpset;
  producerName?: string;
  producerVersion?: string;
  docString?: string;
}

function toAttribute(name: string, value: AttrValue): AttributeProtoObject {
  switch (value.kind) {
    case 'int':
      if (!Number.isInteger(value.value)) throw new Error(`attribute ${name}: int expected, got ${value.value}`);
      return { name, type: OnnxAttributeType.INT, i: value.value };
    case 'ints':
      return { name, type: OnnxAttributeType.INTS, ints: [...value.value] };
    case 'float':
      return { name, type: OnnxAttributeType.FLOAT, f: value.value };
    case 'floats':
      return { name, type: OnnxAttributeType.FLOATS, floats: [...value.value] };
    case 'string':
      return { name, type: OnnxAttributeType.STRING, s: new TextEncoder().encode(value.value) };
  }
}

function toDims(dims: readonly Dim[]): DimensionObject[] {
  return dims.map((d) => {
    if (d === null) return {};
    if (typeof d === 'string') return { dim_param: d };
    if (!Number.isInteger(d) || d < 0) throw new Error(`fixed dims must be integers >= 0 (use a name for a symbolic dim), got ${d}`);
    return { dim_value: d };
  });
}

function elementCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/**
 * Tensor payloads go to raw_data, written little-endian explicitly (onnx.proto requires LE) so the
 * bytes — and therefore the model's sha256 — are the same on any host.
 */
function rawLittleEndian(count: number, bytesPerElement: number, write: (view: DataView, i: number) => void): Uint8Array {
  const bytes = new Uint8Array(count * bytesPerElement);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < count; i++) write(view, i);
  return bytes;
}

export class GraphBuilder {
  private readonly nodes: NodeProtoObject[] = [];
  private readonly initializers: TensorProtoObject[] = [];
  private readonly inputs: ValueInfoProtoObject[] = [];
  private readonly outputs: ValueInfoProtoObject[] = [];
  private readonly metadata = new Map<string, string>();
  private readonly usedNames = new Set<string>();
  private readonly constantCache = new Map<string, string>();
  private counter = 0;

  constructor(private readonly options: GraphBuilderOptions) {}

  /** Declares a graph input and returns its name for use as a node input. */
  input(name: string, dtype: OnnxDataTypeName, dims: readonly Dim[]): string {
    this.claim(name);
    this.inputs.push(this.valueInfo(name, dtype, dims));
    return name;
  }

  /** Declares a graph output; some node must produce a value with this name. */
  output(name: string, dtype: OnnxDataTypeName, dims: readonly Dim[]): void {
    this.outputs.push(this.valueInfo(name, dtype, dims));
  }

  /** Adds a float32 initializer (a weight or constant) and returns its name. Values are row-major. */
  float32(name: string, dims: readonly number[], values: ArrayLike<number>): string {
    this.checkCount(name, dims, values.length);
    const raw = rawLittleEndian(values.length, 4, (v, i) => v.setFloat32(i * 4, values[i] as number, true));
    return this.addInitializer(name, dims, 'FLOAT', raw);
  }

  /** Adds an int32 initializer. */
  int32(name: string, dims: readonly number[], values: ArrayLike<number>): string {
    this.checkCount(name, dims, values.length);
    const raw = rawLittleEndian(values.length, 4, (v, i) => v.setInt32(i * 4, values[i] as number, true));
    return this.addInitializer(name, dims, 'INT32', raw);
  }

  /** Adds an int64 initializer (shapes, axes, indices). */
  int64(name: string, dims: readonly number[], values: ArrayLike<number | bigint>): string {
    this.checkCount(name, dims, values.length);
    const raw = rawLittleEndian(values.length, 8, (v, i) => v.setBigInt64(i * 8, BigInt(values[i] as number | bigint), true));
    return this.addInitializer(name, dims, 'INT64', raw);
  }

  /** A float32 scalar (rank 0) constant, shared between nodes that need the same value. */
  scalar(value: number): string {
    const key = `f32:${Object.is(value, -0) ? '-0' : String(value)}`;
    const cached = this.constantCache.get(key);
    if (cached) return cached;
    const name = this.float32(this.fresh('const_f32'), [], [value]);
    this.constantCache.set(key, name);
    return name;
  }

  /** A 1-D int64 constant, the usual shape of Reshape/Slice/Unsqueeze arguments. */
  ints64(values: readonly number[]): string {
    const key = `i64:${values.join(',')}`;
    const cached = this.constantCache.get(key);
    if (cached) return cached;
    const name = this.int64(this.fresh('const_i64'), [values.length], values);
    this.constantCache.set(key, name);
    return name;
  }

  /**
   * Adds a node. `outputs` is a list of names, or a count of auto-named outputs.
   * Returns the output names in order. An empty string input means "optional input omitted".
   */
  node(opType: string, inputs: readonly string[], attributes: Record<string, AttrValue> = {}, outputs: readonly string[] | number = 1): string[] {
    let outNames: string[];
    if (typeof outputs === 'number') {
      outNames = Array.from({ length: outputs }, () => this.claim(this.fresh(opType)));
    } else {
      outNames = [...outputs];
      for (const name of outNames) this.claim(name);
    }
    this.nodes.push({
      name: `${opType}_${this.nodes.length}`,
      op_type: opType,
      input: [...inputs],
      output: outNames,
      attribute: Object.entries(attributes).map(([k, v]) => toAttribute(k, v)),
    });
    return outNames;
  }

  /** Single-output shorthand for node(); optionally names the output (e.g. a graph output). */
  op(opType: string, inputs: readonly string[], attributes: Record<string, AttrValue> = {}, outputName?: string): string {
    const [out] = this.node(opType, inputs, attributes, outputName === undefined ? 1 : [outputName]);
    return out as string;
  }

  /** Model-level metadata_props (Ultralytics keeps names/imgsz/task here). Later calls overwrite. */
  meta(key: string, value: string): void {
    this.metadata.set(key, value);
  }

  encode(): Uint8Array {
    const { opset, name, producerName, producerVersion, docString } = this.options;
    return encodeModelProto({
      ir_version: IR_VERSION_FOR_OPSET[opset],
      opset_import: [{ domain: '', version: opset }],
      producer_name: producerName ?? 'outpost',
      producer_version: producerVersion ?? '',
      ...(docString === undefined ? {} : { doc_string: docString }),
      graph: {
        name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
      // Sorted so the bytes do not depend on the order metadata was set in.
      metadata_props: [...this.metadata.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([key, value]) => ({ key, value })),
    });
  }

  private addInitializer(name: string, dims: readonly number[], dtype: OnnxDataTypeName, raw: Uint8Array): string {
    this.claim(name);
    this.initializers.push({ name, dims: [...dims], data_type: OnnxDataType[dtype], raw_data: raw });
    return name;
  }

  private valueInfo(name: string, dtype: OnnxDataTypeName, dims: readonly Dim[]): ValueInfoProtoObject {
    return { name, type: { tensor_type: { elem_type: OnnxDataType[dtype], shape: { dim: toDims(dims) } } } };
  }

  private checkCount(name: string, dims: readonly number[], count: number): void {
    if (elementCount(dims) !== count) throw new Error(`initializer ${name}: dims [${dims.join(',')}] need ${elementCount(dims)} values, got ${count}`);
  }

  // INVARIANT: every value name in the graph is unique (ONNX requires SSA form).
  private claim(name: string): string {
    if (this.usedNames.has(name)) throw new Error(`value name "${name}" is already used in this graph`);
    this.usedNames.add(name);
    return name;
  }

  /** An unused name; the caller claims it. */
  private fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}_${this.counter++}`;
    while (this.usedNames.has(name));
    return name;
  }
}
