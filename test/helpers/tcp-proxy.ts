import net from 'node:net';

/**
 * A controllable TCP proxy on 127.0.0.1 for network-fault tests (research §5.2: this kernel has no netem).
 * - cut(): destroy every connection and refuse new ones (a hard partition / broker gone), until restore().
 * - freeze(): keep every socket open but move no bytes either way (a half-open partition: the peers see
 *   nothing wrong at the TCP level), until unfreeze(). Connections accepted while frozen are frozen too.
 * - throttle(bytesPerSecond): a token bucket per direction of every connection (a slow uplink), until
 *   throttle(null), which releases what is queued at once. Order is kept; nothing is dropped.
 * - setTarget(): the upstream may be given after creation (e.g. a server that must be told the proxy's port
 *   before it starts listening on a port of its own); until then connections are refused.
 */
export interface TcpProxy {
  readonly port: number;
  /** Connections accepted and forwarded since start (refused ones not counted). */
  readonly connections: number;
  /** Connections currently open. */
  readonly active: number;
  /** Bytes forwarded client → upstream and upstream → client since start (queued bytes not yet counted). */
  readonly bytes: { up: number; down: number };
  setTarget(target: { host?: string; port: number }): void;
  cut(): void;
  restore(): void;
  freeze(): void;
  unfreeze(): void;
  /** Limits each direction of each connection to `bytesPerSecond`; null lifts the limit. */
  throttle(bytesPerSecond: number | null): void;
  close(): Promise<void>;
}

/** One direction of one connection; `queue` holds what the throttle has not released yet. */
interface Lane {
  from: net.Socket;
  to: net.Socket;
  dir: 'up' | 'down';
  queue: Buffer[];
  queued: number;
  /** Bytes the token bucket lets through now. */
  allowance: number;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  lanes: Lane[];
}

/** Queued bytes per lane above which the sender is paused (TCP backpressure reaches the real peer). */
const HIGH_WATER_BYTES = 64 * 1024;
/** Token-bucket tick. */
const TICK_MS = 20;

export async function startTcpProxy(initialTarget?: { host?: string; port: number }): Promise<TcpProxy> {
  let target = initialTarget;
  const pairs = new Set<Pair>();
  /** Pairs one side of which closed while frozen; torn down on unfreeze. */
  const broken = new Set<Pair>();
  let refusing = false;
  let frozen = false;
  let accepted = 0;
  let rate: number | null = null;
  let ticker: NodeJS.Timeout | undefined;
  let lastTick = 0;
  const bytes = { up: 0, down: 0 };

  const write = (lane: Lane, chunk: Buffer): boolean => {
    bytes[lane.dir] += chunk.length;
    return lane.to.write(chunk);
  };

  const maybeResume = (lane: Lane) => {
    if (!frozen && lane.queued <= HIGH_WATER_BYTES && lane.to.writableLength <= HIGH_WATER_BYTES) lane.from.resume();
  };

  const forward = (from: net.Socket, to: net.Socket, dir: Lane['dir']): Lane => {
    const lane: Lane = { from, to, dir, queue: [], queued: 0, allowance: 0 };
    from.on('data', (chunk: Buffer) => {
      // Unthrottled and nothing waiting: straight through (the original behaviour).
      if (rate === null && lane.queued === 0) {
        if (!write(lane, chunk)) from.pause();
        return;
      }
      lane.queue.push(chunk);
      lane.queued += chunk.length;
      if (lane.queued > HIGH_WATER_BYTES) from.pause();
    });
    to.on('drain', () => maybeResume(lane));
    return lane;
  };

  /** Releases what each lane's bucket allows; with rate null, everything. */
  const release = (lane: Lane, budget: number) => {
    while (lane.queue.length > 0 && budget > 0) {
      const head = lane.queue[0]!;
      if (head.length <= budget) {
        lane.queue.shift();
        budget -= head.length;
        lane.queued -= head.length;
        write(lane, head);
      } else {
        const part = Math.floor(budget);
        if (part === 0) break;
        lane.queue[0] = head.subarray(part);
        lane.queued -= part;
        budget -= part;
        write(lane, head.subarray(0, part));
      }
    }
    return budget;
  };

  const tick = () => {
    const now = Date.now();
    const dt = now - lastTick;
    lastTick = now;
    if (frozen || rate === null) return;
    for (const pair of pairs) {
      for (const lane of pair.lanes) {
        // Capped so an idle lane cannot save up a burst.
        lane.allowance = Math.min(lane.allowance + (rate * dt) / 1000, Math.max(1, (rate * TICK_MS * 5) / 1000));
        lane.allowance = release(lane, lane.allowance);
        maybeResume(lane);
      }
    }
  };

  const server = net.createServer((client) => {
    if (refusing || target === undefined) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = net.connect({ host: target.host ?? '127.0.0.1', port: target.port });
    const pair: Pair = { client, upstream, lanes: [] };
    pairs.add(pair);
    if (frozen) {
      client.pause();
      upstream.pause();
    }
    pair.lanes.push(forward(client, upstream, 'up'), forward(upstream, client, 'down'));
    const end = () => {
      // A half-open partition tells neither side: while frozen, one side closing leaves the other open.
      if (frozen) {
        broken.add(pair);
        return;
      }
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  const destroyAll = () => {
    for (const p of [...pairs]) {
      p.client.destroy();
      p.upstream.destroy();
    }
    pairs.clear();
    broken.clear();
  };

  const stopTicker = () => {
    if (ticker) clearInterval(ticker);
    ticker = undefined;
  };

  return {
    port,
    bytes,
    get connections() {
      return accepted;
    },
    get active() {
      return pairs.size;
    },
    setTarget(t) {
      target = t;
    },
    cut() {
      refusing = true;
      destroyAll();
    },
    restore() {
      refusing = false;
    },
    freeze() {
      frozen = true;
      for (const p of pairs) {
        p.client.pause();
        p.upstream.pause();
      }
    },
    unfreeze() {
      frozen = false;
      for (const p of broken) {
        pairs.delete(p);
        p.client.destroy();
        p.upstream.destroy();
      }
      broken.clear();
      for (const p of pairs) {
        p.client.resume();
        p.upstream.resume();
        // The limit was lifted while frozen: what it held goes now.
        if (rate === null) for (const lane of p.lanes) release(lane, Number.POSITIVE_INFINITY);
      }
    },
    throttle(bytesPerSecond) {
      if (bytesPerSecond !== null && !(bytesPerSecond > 0)) throw new RangeError(`throttle needs a positive rate or null, got ${bytesPerSecond}`);
      rate = bytesPerSecond;
      if (rate === null) {
        stopTicker();
        if (frozen) return;
        for (const p of pairs) {
          for (const lane of p.lanes) {
            release(lane, Number.POSITIVE_INFINITY);
            maybeResume(lane);
          }
        }
        return;
      }
      if (!ticker) {
        lastTick = Date.now();
        ticker = setInterval(tick, TICK_MS);
        ticker.unref();
      }
    },
    async close() {
      refusing = true;
      frozen = false;
      rate = null;
      stopTicker();
      destroyAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
