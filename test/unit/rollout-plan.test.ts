import { describe, expect, it } from 'vitest';
import { ACTIONS, deviceStateFor, orderDevices, overFailureThreshold, pickStage, planStages, stageSizes, stagesProblem } from '../../fleet-server/src/rollouts/plan.js';

describe('rollout stage math', () => {
  it('stage sizes are cumulative: min(N, max(minDevices, ceil(pct·N/100)))', () => {
    expect(stageSizes(10, [10, 50, 100], 1)).toEqual([1, 5, 10]);
    expect(stageSizes(10, [1, 100], 1)).toEqual([1, 10]);
    expect(stageSizes(10, [1, 100], 3)).toEqual([3, 10]);
    expect(stageSizes(3, [10, 50, 100], 5)).toEqual([3, 3, 3]);
    expect(stageSizes(7, [33, 66, 100], 1)).toEqual([3, 5, 7]);
  });

  it('validates stages: ascending cumulative percentages in (0, 100] ending at 100', () => {
    expect(stagesProblem([10, 50, 100])).toBeNull();
    expect(stagesProblem([100])).toBeNull();
    expect(stagesProblem([])).toMatch(/at least one/);
    expect(stagesProblem([50, 50, 100])).toMatch(/ascending/);
    expect(stagesProblem([0, 100])).toMatch(/\(0, 100\]/);
    expect(stagesProblem([50, 90])).toMatch(/last stage must be 100/);
  });

  it('orders online devices first, then by a hash stable per rollout', () => {
    const devices = ['a', 'b', 'c', 'd', 'e'].map((id) => ({ id, online: id !== 'b' && id !== 'd' }));
    const order = orderDevices('ro-1', devices);
    expect(order.slice(3).sort()).toEqual(['b', 'd']);
    expect(orderDevices('ro-1', [...devices].reverse())).toEqual(order);
    // Another rollout shuffles differently (over enough devices the chance of the same order is nil).
    const many = Array.from({ length: 20 }, (_, i) => ({ id: `dev-${i}`, online: true }));
    expect(orderDevices('ro-1', many)).not.toEqual(orderDevices('ro-2', many));
  });

  it('picks what a stage still needs, plans the rest, and the last stage takes all', () => {
    const sizes = stageSizes(10, [10, 50, 100], 1);
    const ids = Array.from({ length: 10 }, (_, i) => `d${i}`);
    expect([...planStages(ids, sizes, -1, 0).values()]).toEqual([0, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    const first = pickStage(ids, sizes, 0, 0);
    expect(first.picked).toEqual(['d0']);
    expect([...first.plan.values()]).toEqual([1, 1, 1, 1, 2, 2, 2, 2, 2]);
    expect(pickStage(ids.slice(1), sizes, 1, 1).picked).toHaveLength(4);
    expect(pickStage(ids.slice(5), sizes, 2, 5).picked).toHaveLength(5);
    // An earlier stage already took more than this one needs: it takes nobody and the rollout moves on.
    expect(pickStage(ids.slice(6), sizes, 1, 6).picked).toEqual([]);
  });

  it('maps agent transitions and judges failures per stage', () => {
    expect(deviceStateFor('probation')).toBe('probation');
    expect(deviceStateFor('rolled_back')).toBe('failed');
    expect(deviceStateFor('failed')).toBe('failed');
    expect(deviceStateFor('rolling_back')).toBeNull();
    expect(deviceStateFor('idle')).toBeNull();
    expect(overFailureThreshold(1, 3, 0)).toBe(true);
    expect(overFailureThreshold(1, 3, 34)).toBe(false);
    expect(overFailureThreshold(1, 3, 33)).toBe(true);
    expect(overFailureThreshold(0, 0, 0)).toBe(false);
  });

  it('the action table allows rollback after completion but nothing after abort', () => {
    expect(ACTIONS.rollback.from).toContain('completed');
    expect(Object.values(ACTIONS).some((a) => a.from.includes('aborted') || a.from.includes('rolled_back'))).toBe(false);
  });
});
