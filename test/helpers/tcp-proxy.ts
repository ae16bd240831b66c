import net from 'node:net';

/**
 * A controllable TCP proxy on 127.0.0.1 for network-fault tests (research §5.2: this kernel has no netem).
 * - cut(): destroy every connection and refuse new ones (a hard partition / broker gone), until restore().
 * - freeze(): keep every socket open but move no bytes either way (a half-open partition: the peers see
 *   nothing wrong at the TCP level), until unfreeze(). Connections accepted while frozen are frozen too.
 */
export interface TcpProxy {
  readonly port: number;
  /** Connections accepted and forwarded since start (refused ones not counted). */
  readonly connections: number;
  /** Connections currently open. */
  readonly active: number;
  cut(): void;
  restore(): void;
  freeze(): void;
  unfreeze(): void;
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
}

export async function startTcpProxy(target: { host?: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  /** Pairs one side of which closed while frozen; torn down on unfreeze. */
  const broken = new Set<Pair>();
  let refusing = false;
  let frozen = false;
  let accepted = 0;

  const forward = (from: net.Socket, to: net.Socket) => {
    from.on('data', (chunk: Buffer) => {
      if (!to.write(chunk)) from.pause();
    });
    to.on('drain', () => {
      if (!frozen) from.resume();
    });
  };

  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = net.connect({ host: target.host ?? '127.0.0.1', port: target.port });
    const pair: Pair = { client, upstream };
    pairs.add(pair);
    if (frozen) {
      client.pause();
      upstream.pause();
    }
    forward(client, upstream);
    forward(upstream, client);
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

  return {
    port,
    get connections() {
      return accepted;
    },
    get active() {
      return pairs.size;
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
      }
    },
    async close() {
      refusing = true;
      frozen = false;
      destroyAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
