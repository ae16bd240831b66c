export interface ClassScore {
  label: string;
  class_id: number;
  score: number;
}

/** Numerically stable softmax (subtracts the max before exp). */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i]! - max);
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

/** True when the values already look like probabilities (all in [0,1], summing to ~1). */
export function looksLikeProbabilities(values: ArrayLike<number>): boolean {
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < 0 || v > 1) return false;
    sum += v;
  }
  return Math.abs(sum - 1) < 1e-3;
}

export function topK(scores: ArrayLike<number>, k: number, labels: readonly string[] | undefined): ClassScore[] {
  const idx = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]!);
  return idx.slice(0, k).map((i) => ({ label: labels?.[i] ?? String(i), class_id: i, score: scores[i]! }));
}
