// A tiny authoritative DNS server over UDP on loopback, for hermetic tests of MX
// resolution. DNS is the one edge of delivery a test cannot own for real, so this
// answers from an in-memory zone, and the code under test talks to it through the
// ordinary resolver (c-ares) via `servers: [address]` / DNS_SERVERS.
import { createSocket, type RemoteInfo } from "node:dgram";
import dnsPacket from "dns-packet";
import type { Answer, DecodedPacket, Question, TlsaData } from "dns-packet";
import { trackOpen } from "./leak-guard.ts";

interface FakeRecords {
  MX?: { preference: number; exchange: string }[];
  A?: string[];
  AAAA?: string[];
  /** TXT records, each one or more character-strings (a long DKIM key is split in 255-byte strings). */
  TXT?: Array<string | string[]>;
  /** TLSA records (DANE), e.g. { usage: 3, selector: 1, matchingType: 1, certificate: <sha-256 of the SPKI> }. */
  TLSA?: TlsaData[];
  /**
   * Answers for this name carry the AD flag, as a DNSSEC-validating resolver sets it for
   * validated data (the fake plays the resolver DANE_RESOLVER names; nothing is signed).
   */
  ad?: boolean;
  /** Answer every query for this name with this rcode and no records. */
  rcode?: "SERVFAIL" | "REFUSED" | "NXDOMAIN";
  /** Never answer queries for this name (the client times out). */
  drop?: boolean;
}

/** Names (case-insensitive, trailing dot optional) to their records. */
export type FakeZone = Record<string, FakeRecords>;

export interface FakeDns {
  /** "127.0.0.1:PORT", ready for Resolver#setServers and DNS_SERVERS. */
  address: string;
  /** Every question received, in order (to assert what was or was not asked). */
  queries: Question[];
  setZone(zone: FakeZone): void;
  close(): Promise<void>;
}

const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;

function normalize(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}

function indexZone(zone: FakeZone): Map<string, FakeRecords> {
  return new Map(Object.entries(zone).map(([name, records]) => [normalize(name), records]));
}

// TTL 0: c-ares 1.34 caches answers by TTL, and tests change the zone with setZone.
function answersFor(q: Question, records: FakeRecords): Answer[] {
  const base = { name: q.name, class: "IN" as const, ttl: 0 };
  switch (q.type) {
    case "A":
      return (records.A ?? []).map((data) => ({ ...base, type: "A" as const, data }));
    case "AAAA":
      return (records.AAAA ?? []).map((data) => ({ ...base, type: "AAAA" as const, data }));
    case "MX":
      // dns-packet mis-sizes the empty name; "." encodes the root (RFC 7505 null MX).
      return (records.MX ?? []).map((mx) => ({
        ...base,
        type: "MX" as const,
        data: { preference: mx.preference, exchange: mx.exchange === "" ? "." : mx.exchange },
      }));
    case "TXT":
      return (records.TXT ?? []).map((txt) => ({ ...base, type: "TXT" as const, data: typeof txt === "string" ? [txt] : txt }));
    case "TLSA":
      return (records.TLSA ?? []).map((data) => ({ ...base, type: "TLSA" as const, data }));
    default:
      return [];
  }
}

export async function startFakeDns(initial: FakeZone = {}): Promise<FakeDns> {
  let zone = indexZone(initial);
  const queries: Question[] = [];
  const socket = createSocket("udp4");

  socket.on("message", (msg: Buffer, peer: RemoteInfo) => {
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return; // not DNS: ignore, as a real server would
    }
    const q = query.questions?.[0];
    if (query.type !== "query" || !q) return;
    queries.push(q);

    const records = zone.get(normalize(q.name));
    if (records?.drop) return;
    let rcode: number = RCODE.NOERROR;
    let answers: Answer[] = [];
    if (!records) rcode = RCODE.NXDOMAIN;
    else if (records.rcode) rcode = RCODE[records.rcode];
    else answers = answersFor(q, records); // empty list = NODATA (RFC 2308)

    // The question is echoed byte for byte (case included): c-ares drops replies
    // whose question does not match the one it sent.
    const flags = dnsPacket.AUTHORITATIVE_ANSWER | ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | (records?.ad ? dnsPacket.AUTHENTIC_DATA : 0) | rcode;
    const reply = dnsPacket.encode({ type: "response", id: query.id, flags, questions: [q], answers });
    socket.send(reply, peer.port, peer.address);
  });

  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", () => {
      socket.off("error", reject);
      resolve();
    });
  });
  const { port } = socket.address();
  const closed = trackOpen(`fake DNS server on 127.0.0.1:${port}`, "startFakeDns");

  return {
    address: `127.0.0.1:${port}`,
    queries,
    setZone(next) {
      zone = indexZone(next);
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())).then(closed),
  };
}
