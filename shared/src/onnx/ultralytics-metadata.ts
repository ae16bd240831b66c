/**
 * Parsers for the metadata_props Ultralytics writes into its ONNX exports.
 *
 * Ultralytics stores Python reprs, not JSON: names = "{0: 'person', 1: 'bicycle', ...}" and
 * imgsz = "[640, 640]". Python's repr picks single quotes unless the label contains one (then
 * double quotes, e.g. "teddy's bear"), and escapes with backslashes when it contains both. We parse
 * that small grammar exactly rather than regex-replacing quotes into JSON, which breaks on
 * apostrophes inside labels.
 */

class Cursor {
  pos = 0;
  constructor(
    readonly text: string,
    private readonly what: string,
  ) {}

  fail(message: string): never {
    throw new Error(`invalid Ultralytics ${this.what} metadata at offset ${this.pos}: ${message} (value: ${JSON.stringify(this.text.slice(0, 80))})`);
  }

  skipSpace(): void {
    while (this.pos < this.text.length && /\s/.test(this.text[this.pos] as string)) this.pos++;
  }

  peek(): string | undefined {
    return this.text[this.pos];
  }

  expect(ch: string): void {
    this.skipSpace();
    if (this.text[this.pos] !== ch) this.fail(`expected '${ch}'`);
    this.pos++;
  }

  integer(): number {
    this.skipSpace();
    const match = /^\d+/.exec(this.text.slice(this.pos));
    if (!match) this.fail('expected a non-negative integer');
    this.pos += match[0].length;
    return Number(match[0]);
  }

  atEnd(): boolean {
    this.skipSpace();
    return this.pos >= this.text.length;
  }
}

const SIMPLE_ESCAPES: Record<string, string> = { '\\': '\\', "'": "'", '"': '"', n: '\n', t: '\t', r: '\r', '0': '\0' };

/** A Python str literal in either quote style, with the escapes repr() can emit. */
function pythonString(c: Cursor): string {
  c.skipSpace();
  const quote = c.peek();
  if (quote !== "'" && quote !== '"') c.fail('expected a quoted label');
  c.pos++;
  let out = '';
  for (;;) {
    const ch = c.text[c.pos];
    if (ch === undefined) c.fail('unterminated string');
    c.pos++;
    if (ch === quote) return out;
    if (ch !== '\\') {
      out += ch;
      continue;
    }
    const esc = c.text[c.pos];
    if (esc === undefined) c.fail('unterminated escape');
    c.pos++;
    const simple = SIMPLE_ESCAPES[esc];
    if (simple !== undefined) {
      out += simple;
      continue;
    }
    const hexLength = esc === 'x' ? 2 : esc === 'u' ? 4 : esc === 'U' ? 8 : 0;
    const hex = c.text.slice(c.pos, c.pos + hexLength);
    if (hexLength === 0 || !/^[0-9a-fA-F]+$/.test(hex) || hex.length !== hexLength) c.fail(`unsupported escape \\${esc}`);
    out += String.fromCodePoint(parseInt(hex, 16));
    c.pos += hexLength;
  }
}

/** A dict key: a bare int as Python writes it, or a quoted int as JSON-ish exporters write it. */
function dictKey(c: Cursor): number {
  c.skipSpace();
  const quote = c.peek();
  if (quote === "'" || quote === '"') {
    const text = pythonString(c);
    if (!/^\d+$/.test(text)) c.fail(`class index must be an integer, got ${JSON.stringify(text)}`);
    return Number(text);
  }
  return c.integer();
}

/**
 * Parses Ultralytics' `names` metadata, e.g. "{0: 'person', 1: 'bicycle'}", into labels in index
 * order. Throws unless the keys are exactly 0..n-1 (each once): a gap would shift every label.
 */
export function parseUltralyticsNames(text: string): string[] {
  const c = new Cursor(text, 'names');
  const byIndex = new Map<number, string>();
  c.expect('{');
  c.skipSpace();
  if (c.peek() === '}') c.fail('no class names');
  for (;;) {
    c.skipSpace();
    if (c.peek() === '}') break; // trailing comma
    const keyPos = c.pos;
    const index = dictKey(c);
    c.expect(':');
    const label = pythonString(c);
    if (byIndex.has(index)) {
      c.pos = keyPos;
      c.fail(`class index ${index} appears twice`);
    }
    byIndex.set(index, label);
    c.skipSpace();
    if (c.peek() === ',') {
      c.pos++;
      continue;
    }
    if (c.peek() !== '}') c.fail("expected ',' or '}'");
    break;
  }
  c.pos++;
  if (!c.atEnd()) c.fail('unexpected text after the closing brace');
  const labels: string[] = [];
  for (let i = 0; i < byIndex.size; i++) {
    const label = byIndex.get(i);
    if (label === undefined) throw new Error(`invalid Ultralytics names metadata: class indices must be 0..${byIndex.size - 1}, index ${i} is missing`);
    labels.push(label);
  }
  return labels;
}

/**
 * Parses Ultralytics' `imgsz` metadata into [height, width]. Accepts "[640, 640]", "(640, 640)",
 * "[640]" and "640" (a single number means square, as Ultralytics' own CLI treats it).
 */
export function parseUltralyticsImgsz(text: string): [number, number] {
  const c = new Cursor(text, 'imgsz');
  c.skipSpace();
  const open = c.peek();
  const sizes: number[] = [];
  if (open === '[' || open === '(') {
    const close = open === '[' ? ']' : ')';
    c.pos++;
    for (;;) {
      sizes.push(c.integer());
      c.skipSpace();
      if (c.peek() === ',') {
        c.pos++;
        c.skipSpace();
        if (c.peek() === close) break;
        continue;
      }
      break;
    }
    c.expect(close);
  } else {
    sizes.push(c.integer());
  }
  if (!c.atEnd()) c.fail('unexpected trailing text');
  if (sizes.length > 2) c.fail(`expected 1 or 2 sizes, got ${sizes.length}`);
  if (sizes.some((s) => s <= 0)) c.fail('sizes must be positive');
  const [h, w] = sizes.length === 1 ? [sizes[0], sizes[0]] : sizes;
  return [h as number, w as number];
}
