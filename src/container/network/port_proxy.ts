import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import { createConnection, createServer, type Server } from "node:net";
import { ManagerError } from "../manager/errors.js";
import type { PublishedPort } from "./bridge.js";

/**
 * The userspace side of a published port (docker-proxy's job): it serves connections and
 * datagrams that come from the host itself, which DNAT in PREROUTING never sees (locally made
 * packets take OUTPUT, and 127.0.0.1 is not routed to a bridge at all). Binding the host port is
 * also what makes a clash with another program fail before the container starts. Traffic from
 * other hosts meets the DNAT rule first and never reaches these sockets.
 */

export interface PortProxy {
  close(): void;
}

/** docker-proxy's UDPConnTrackTimeout: a client quiet that long has its flow forgotten. */
export const UDP_FLOW_IDLE_MS = 90_000;
/** At most this many UDP clients at once per port; the one quiet longest makes room. */
export const UDP_MAX_FLOWS = 1024;

function inUse(p: PublishedPort, err: unknown): ManagerError {
  const code = (err as NodeJS.ErrnoException).code;
  return new ManagerError(
    "PORT_IN_USE",
    code === "EADDRINUSE"
      ? `port ${p.hostIp}:${p.hostPort} is already in use for ${p.protocol}; choose another host port with -p HOST:${p.containerPort}${p.protocol === "udp" ? "/udp" : ""}`
      : `cannot publish port ${p.hostIp}:${p.hostPort}/${p.protocol}: ${(err as Error).message}`,
    { port: p.hostPort, protocol: p.protocol },
    err,
  );
}

async function tcpProxy(p: PublishedPort, ip: string): Promise<PortProxy> {
  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: ip, port: p.containerPort });
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close);
    upstream.on("error", close);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(inUse(p, err)));
    server.listen(p.hostPort, p.hostIp, () => {
      server.removeAllListeners("error");
      server.on("error", () => undefined);
      resolve();
    });
  });
  return { close: () => server.close() };
}

interface Flow {
  upstream: UdpSocket;
  last: number;
}

/**
 * One socket on the host port; per client address a socket of its own towards the container, so
 * the container's replies come back to the client they answer (as docker-proxy does).
 */
async function udpProxy(p: PublishedPort, ip: string): Promise<PortProxy> {
  const front = createSocket("udp4");
  const flows = new Map<string, Flow>();
  const drop = (key: string) => {
    flows.get(key)?.upstream.close();
    flows.delete(key);
  };
  const flowFor = (client: RemoteInfo): Flow => {
    const key = `${client.address}:${client.port}`;
    let flow = flows.get(key);
    if (flow === undefined) {
      if (flows.size >= UDP_MAX_FLOWS) {
        let oldest: string | undefined;
        for (const [k, f] of flows) if (oldest === undefined || f.last < flows.get(oldest)!.last) oldest = k;
        if (oldest !== undefined) drop(oldest);
      }
      const upstream = createSocket("udp4");
      upstream.on("message", (reply, from) => {
        // only the container's port answers for it
        if (from.address !== ip || from.port !== p.containerPort) return;
        flow!.last = Date.now();
        front.send(reply, client.port, client.address);
      });
      upstream.on("error", () => drop(key));
      flow = { upstream, last: Date.now() };
      flows.set(key, flow);
    }
    return flow;
  };
  front.on("message", (msg, client) => {
    const flow = flowFor(client);
    flow.last = Date.now();
    flow.upstream.send(msg, p.containerPort, ip);
  });
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [k, f] of flows) if (now - f.last > UDP_FLOW_IDLE_MS) drop(k);
  }, 10_000);
  sweep.unref();
  await new Promise<void>((resolve, reject) => {
    front.once("error", (err) => {
      clearInterval(sweep);
      front.close();
      reject(inUse(p, err));
    });
    front.bind(p.hostPort, p.hostIp, () => {
      front.removeAllListeners("error");
      front.on("error", () => undefined);
      resolve();
    });
  });
  return {
    close: () => {
      clearInterval(sweep);
      for (const k of [...flows.keys()]) drop(k);
      front.close();
    },
  };
}

/** Binds every published port (failing with PORT_IN_USE before the container runs). */
export async function startPortProxies(ports: PublishedPort[], ip: string): Promise<PortProxy[]> {
  const proxies: PortProxy[] = [];
  try {
    for (const p of ports) proxies.push(await (p.protocol === "udp" ? udpProxy(p, ip) : tcpProxy(p, ip)));
  } catch (err) {
    for (const x of proxies) x.close();
    throw err;
  }
  return proxies;
}
