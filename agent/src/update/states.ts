import type { UpdateState } from '../../../shared/src/mqtt/messages.js';

export type { UpdateState };

/**
 * The update machine of one deployment of one model (DESIGN §3.4), as a table: each state and the states it
 * may move to. Every move goes through `assertTransition`, and the new state is written to SQLite before the
 * step that follows it runs (update-store.ts), so a restart finds the machine where it stopped.
 *
 *   idle → downloading → verifying → staging → activating → probation → committed
 *                 │           │          │          │            │
 *                 ▼           └──────────┴──────────┴────────────┴──→ rolling_back → rolled_back
 *              failed
 *
 * Before activation the old version never stopped serving, so "rolling back" from verifying or staging only
 * discards what was staged; from activating or probation it flips the pointer back. `failed` ends a deployment
 * that never got far enough to roll anything back: refused before download, download failed, superseded.
 */
export const TRANSITIONS: { readonly [S in UpdateState]: readonly UpdateState[] } = {
  idle: ['downloading', 'failed'],
  downloading: ['verifying', 'failed'],
  verifying: ['staging', 'rolling_back', 'failed'],
  staging: ['activating', 'rolling_back', 'failed'],
  activating: ['probation', 'rolling_back'],
  probation: ['committed', 'rolling_back'],
  committed: [],
  rolling_back: ['rolled_back'],
  rolled_back: [],
  failed: [],
};

/** States a deployment rests in for good; anything else is resumed at boot. */
export const TERMINAL: ReadonlySet<UpdateState> = new Set(['committed', 'rolled_back', 'failed']);

/** States in which the new version may already be serving (the pointer may have flipped). */
export const SERVING_NEW: ReadonlySet<UpdateState> = new Set(['activating', 'probation']);

export class TransitionError extends Error {
  override readonly name = 'TransitionError';
}

export function assertTransition(from: UpdateState, to: UpdateState): void {
  if (!TRANSITIONS[from].includes(to)) throw new TransitionError(`update machine: ${from} → ${to} is not a transition`);
}

/**
 * Why a deployment ended in failed / rolled_back: stable codes, documented in docs/updates.md "Rollback
 * triggers", carried in the update.transition event's `reason`.
 */
export type UpdateReason =
  | 'unsigned' | 'bad_signature' | 'expired' | 'unsafe_name' | 'manifest_mismatch'
  | 'disk_budget' | 'disk_full' | 'download_failed' | 'too_long' | 'bad_url'
  | 'size_mismatch' | 'hash_mismatch' | 'install_failed'
  | 'load_failed' | 'golden_mismatch'
  | 'error_rate' | 'latency' | 'crash_loop' | 'model_failed'
  | 'operator' | 'superseded' | 'loop_guard' | 'bad_window' | 'internal';
