import { describe, expect, it } from 'vitest';
import { iou, nms, type Box, type Candidate } from '../../agent/src/vision/nms.js';

const box = (x1: number, y1: number, x2: number, y2: number): Box => ({ x1, y1, x2, y2 });
const cand = (b: Box, score: number, classId = 0): Candidate => ({ box: b, score, classId });

describe('iou', () => {
  it('is 1 for identical boxes, 0 for disjoint or touching ones, and the area ratio otherwise', () => {
    expect(iou(box(0, 0, 10, 10), box(0, 0, 10, 10))).toBe(1);
    expect(iou(box(0, 0, 10, 10), box(20, 20, 30, 30))).toBe(0);
    expect(iou(box(0, 0, 10, 10), box(10, 0, 20, 10))).toBe(0);
    // Overlap 5×10 = 50, union 100 + 100 − 50 = 150.
    expect(iou(box(0, 0, 10, 10), box(5, 0, 15, 10))).toBeCloseTo(1 / 3, 10);
  });

  it('is 0 for degenerate boxes instead of NaN', () => {
    expect(iou(box(5, 5, 5, 5), box(5, 5, 5, 5))).toBe(0);
  });
});

describe('nms', () => {
  it('keeps the best of overlapping same-class boxes and drops the rest', () => {
    const best = cand(box(0, 0, 100, 100), 0.9);
    const dup = cand(box(5, 5, 105, 105), 0.8); // IoU ≈ 0.82 with best
    const kept = nms([dup, best], 0.45, 100);
    expect(kept).toEqual([best]);
  });

  it('keeps overlapping boxes of different classes (class-aware)', () => {
    const person = cand(box(0, 0, 100, 100), 0.9, 0);
    const bike = cand(box(5, 5, 105, 105), 0.8, 1);
    expect(nms([person, bike], 0.45, 100)).toEqual([person, bike]);
  });

  it('keeps same-class boxes whose overlap is at or below the threshold', () => {
    const a = cand(box(0, 0, 10, 10), 0.9);
    const b = cand(box(5, 0, 15, 10), 0.8); // IoU 1/3
    expect(nms([a, b], 0.45, 100)).toHaveLength(2);
    expect(nms([a, b], 0.3, 100)).toEqual([a]);
  });

  it('a suppressed box does not suppress others (greedy from the top score)', () => {
    // a overlaps b, b overlaps c, a does not overlap c: a suppresses b, so c survives.
    const a = cand(box(0, 0, 10, 10), 0.9);
    const b = cand(box(4, 0, 14, 10), 0.8);
    const c = cand(box(8, 0, 18, 10), 0.7);
    expect(nms([c, b, a], 0.2, 100)).toEqual([a, c]);
  });

  it('returns the survivors ordered by score, highest first', () => {
    const input = [0.3, 0.95, 0.5, 0.7].map((s, i) => cand(box(i * 100, 0, i * 100 + 50, 50), s));
    expect(nms(input, 0.45, 100).map((c) => c.score)).toEqual([0.95, 0.7, 0.5, 0.3]);
  });

  it('returns at most maxDetections, the highest-scoring ones', () => {
    const input = Array.from({ length: 10 }, (_, i) => cand(box(i * 100, 0, i * 100 + 50, 50), i / 10));
    const kept = nms(input, 0.45, 3);
    expect(kept.map((c) => c.score)).toEqual([0.9, 0.8, 0.7]);
  });

  it('does not modify its input', () => {
    const input = [cand(box(0, 0, 1, 1), 0.1), cand(box(2, 2, 3, 3), 0.9)];
    const copy = structuredClone(input);
    nms(input, 0.45, 100);
    expect(input).toEqual(copy);
  });

  it('returns nothing for no candidates', () => {
    expect(nms([], 0.45, 100)).toEqual([]);
  });
});
