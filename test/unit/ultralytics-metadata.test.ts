import { describe, expect, it } from 'vitest';
import { parseUltralyticsImgsz, parseUltralyticsNames } from '../../shared/src/onnx/ultralytics-metadata.js';

describe('parseUltralyticsNames', () => {
  it('reads the Python dict repr Ultralytics writes, in index order', () => {
    expect(parseUltralyticsNames("{0: 'person', 1: 'bicycle', 2: 'car'}")).toEqual(['person', 'bicycle', 'car']);
  });

  it('keeps labels with spaces, and apostrophes in the double-quoted form Python uses for them', () => {
    expect(parseUltralyticsNames(`{0: 'teddy bear', 1: "chef's knife", 2: 'hair drier'}`)).toEqual(['teddy bear', "chef's knife", 'hair drier']);
  });

  it('decodes the backslash escapes repr emits when a label has both quote kinds', () => {
    expect(parseUltralyticsNames(`{0: 'it\\'s "x"', 1: 'back\\\\slash', 2: 'caf\\xe9'}`)).toEqual([`it's "x"`, 'back\\slash', 'café']);
  });

  it('accepts keys in any order, quoted keys, newlines and a trailing comma', () => {
    expect(parseUltralyticsNames("{\n  1: 'b',\n  '0': 'a',\n  \"2\": 'c',\n}")).toEqual(['a', 'b', 'c']);
  });

  it.each([
    ['', /names.*expected '\{'/],
    ['[0, 1]', /expected '\{'/],
    ['{}', /no class names/],
    ["{0: 'a', 2: 'c'}", /indices must be 0\.\.1, index 1 is missing/],
    ["{1: 'a'}", /index 0 is missing/],
    ["{0: 'a', 0: 'b'}", /class index 0 appears twice/],
    ["{0: 'a', 1: 'b'", /expected ',' or '\}'/],
    ["{0: 'a}", /unterminated string/],
    ['{0: person}', /expected a quoted label/],
    ["{a: 'x'}", /expected a non-negative integer/],
    ["{-1: 'x'}", /expected a non-negative integer/],
    ["{'x': 'y'}", /class index must be an integer/],
    ["{0: 'a'} extra", /unexpected text after the closing brace/],
  ])('rejects %j with a clear error', (text, message) => {
    expect(() => parseUltralyticsNames(text)).toThrow(message);
  });
});

describe('parseUltralyticsImgsz', () => {
  it.each([
    ['[640, 640]', [640, 640]],
    ['[480, 640]', [480, 640]],
    ['(320, 256)', [320, 256]],
    ['640', [640, 640]],
    [' [ 416 ] ', [416, 416]],
    ['(640,)', [640, 640]],
  ])('reads %j as [height, width] %j', (text, expected) => {
    expect(parseUltralyticsImgsz(text)).toEqual(expected);
  });

  it.each([
    ['', /imgsz.*non-negative integer/],
    ['abc', /non-negative integer/],
    ['[640, 640', /expected '\]'/],
    ['[0, 640]', /sizes must be positive/],
    ['[640, 640, 3]', /expected 1 or 2 sizes, got 3/],
    ['[640.5, 640]', /expected '\]'/],
    ['640x640', /unexpected trailing text/],
  ])('rejects %j with a clear error', (text, message) => {
    expect(() => parseUltralyticsImgsz(text)).toThrow(message);
  });
});
