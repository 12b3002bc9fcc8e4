// A loopback TCP proxy for simulating database outages without stopping the shared
// Postgres: every byte goes through it, and a test can
//   cut()       - drop every connection and close the listener, so new connects get
//                 ECONNREFUSED: what clients see when Postgres is stopped;
//   blackHole() - keep accepting connections but never answer, and swallow what open
//                 connections send: a partition or a hung host, where only client
//                 timeouts help;
//   restore()   - forward again. Connections that lived through a black hole lost
//                 bytes mid-protocol, so they are dropped (as TCP keepalive eventually
//                 would); clients must reconnect.
import net from "node:net";
import { trackOpen } from "./leak-guard.ts";

type ProxyMode = "forward" | "refused" | "blackhole";

export interface TcpProxy {
  readonly host: string;
  readonly port: number;
  readonly mode: ProxyMode;
  /** Open client connections right now. */
  readonly connections: number;
  /** `url` with its host and port replaced by the proxy's. */
  urlFor(url: string): string;
  cut(): Promise<void>;
  blackHole(): Promise<void>;
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const host = "127.0.0.1";
  let mode: ProxyMode = "forward";
  const clients = new Set<net.Socket>();
  const all = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    all.add(s);
    s.on("error", () => {}); // resets are expected here; the peer sees them as closes
    s.once("close", () => all.delete(s));
  };

  const server = net.createServer((client) => {
    track(client);
    clients.add(client);
    client.once("close", () => clients.delete(client));
    if (mode !== "forward") {
      // Black hole: accepted, then silence. (In "refused" mode the listener is closed,
      // so nothing arrives here.)
      client.on("data", () => {});
      return;
    }
    const upstream = net.connect(target);
    track(upstream);
    // Forward by hand rather than pipe(), so a black hole can swallow bytes on
    // connections that are already open.
    client.on("data", (d) => void (mode === "forward" && upstream.write(d)));
    upstream.on("data", (d) => void (mode === "forward" && client.write(d)));
    client.once("close", () => upstream.destroy());
    upstream.once("close", () => client.destroy());
  });

  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  const stopListening = () =>
    new Promise<void>((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      for (const s of all) s.destroy(); // close() waits for open connections
    });
  const dropAll = () => {
    for (const s of all) s.destroy();
  };

  await listen(0);
  const port = (server.address() as net.AddressInfo).port;
  const closed = trackOpen(`TCP proxy on ${host}:${port} to ${target.host}:${target.port}`, "startTcpProxy");

  return {
    host,
    port,
    get mode() {
      return mode;
    },
    get connections() {
      return clients.size;
    },
    urlFor(url) {
      const u = new URL(url);
      u.hostname = host;
      u.port = String(port);
      return u.toString();
    },
    async cut() {
      mode = "refused";
      await stopListening();
      dropAll();
    },
    async blackHole() {
      mode = "blackhole";
      if (!server.listening) await listen(port);
    },
    async restore() {
      if (mode === "blackhole") dropAll();
      mode = "forward";
      if (!server.listening) await listen(port);
    },
    async close() {
      mode = "refused";
      await stopListening();
      dropAll();
      closed();
    },
  };
}
