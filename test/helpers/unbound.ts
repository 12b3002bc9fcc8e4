// A real DNSSEC-validating resolver for DANE checks: zones signed here with ldns (Debian's
// ldnsutils), served to Unbound (Debian's unbound) as local authoritative data (auth-zone,
// for-upstream) under their own trust anchors, so Unbound validates them as it would data
// from the internet. Used by scripts/dane-check.ts and test/integration/dane-unbound.test.ts.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createSocket } from "node:dgram";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { trackOpen } from "./leak-guard.ts";

export interface SignedZone {
  /** The zone's name, such as "dane.test". */
  name: string;
  /** Its records in zone-file syntax, relative to the zone ($ORIGIN is the zone). */
  records: string[];
  /** Sign it (default true); an unsigned zone gets answers without the AD flag. */
  signed?: boolean;
  /** After signing, replace this text in the signed file: its signature no longer holds (bogus). */
  tamper?: { from: string; to: string };
}

export interface ValidatingResolver {
  host: string;
  port: number;
  /** "127.0.0.1:PORT", for DNS_SERVERS and DANE_RESOLVER. */
  address: string;
  close(): Promise<void>;
}

/** Whether unbound and ldns are installed (apt-get install unbound ldnsutils). */
export function unboundMissing(): string | null {
  for (const tool of ["unbound", "unbound-checkconf", "ldns-keygen", "ldns-signzone"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) return `${tool} is not installed: apt-get install unbound ldnsutils`;
  }
  return null;
}

function zoneFile(z: SignedZone): string {
  return [
    `$ORIGIN ${z.name}.`,
    "$TTL 300",
    `@ IN SOA ns.${z.name}. hostmaster.${z.name}. 1 3600 600 86400 300`,
    `@ IN NS ns.${z.name}.`,
    "ns IN A 127.0.0.1",
    ...z.records,
    "",
  ].join("\n");
}

/** `maxUdpSize`: answers larger than this come truncated over UDP (Unbound's max-udp-size), to exercise TCP. */
export async function startValidatingResolver(zones: SignedZone[], opts: { maxUdpSize?: number } = {}): Promise<ValidatingResolver> {
  const missing = unboundMissing();
  if (missing) throw new Error(missing);
  const dir = mkdtempSync(join(tmpdir(), "unbound-"));
  const anchors: string[] = [];
  const auth: string[] = [];
  for (const z of zones) {
    const file = join(dir, `${z.name}.zone`);
    writeFileSync(file, zoneFile(z));
    let served = file;
    if (z.signed !== false) {
      const key = spawnSync("ldns-keygen", ["-a", "ED25519", "-k", z.name], { cwd: dir, encoding: "utf8" });
      if (key.status !== 0) throw new Error(`ldns-keygen: ${key.stderr}`);
      const base = key.stdout.trim();
      const s = spawnSync("ldns-signzone", ["-n", file, base], { cwd: dir, encoding: "utf8" });
      if (s.status !== 0) throw new Error(`ldns-signzone: ${s.stderr}`);
      served = `${file}.signed`;
      anchors.push(join(dir, `${base}.key`));
      if (z.tamper) writeFileSync(served, readFileSync(served, "utf8").replace(z.tamper.from, z.tamper.to));
    }
    auth.push(`auth-zone:\n  name: "${z.name}"\n  zonefile: "${served}"\n  for-upstream: yes\n  for-downstream: no\n`);
  }
  const port = 20000 + Math.floor(Math.random() * 20000);
  const conf = join(dir, "unbound.conf");
  writeFileSync(conf, [
    "server:",
    `  interface: 127.0.0.1@${port}`,
    `  port: ${port}`,
    "  do-daemonize: no",
    '  username: ""',
    '  chroot: ""',
    `  directory: "${dir}"`,
    '  pidfile: ""',
    "  use-syslog: no",
    "  verbosity: 0",
    "  do-ip6: no",
    ...(opts.maxUdpSize ? [`  max-udp-size: ${opts.maxUdpSize}`] : []),
    '  module-config: "validator iterator"',
    // .test is one of Unbound's built-in blocked zones (RFC 6761); these checks live there.
    '  local-zone: "test." nodefault',
    ...anchors.map((a) => `  trust-anchor-file: "${a}"`),
    ...auth,
    "",
  ].join("\n"));
  const check = spawnSync("unbound-checkconf", [conf], { encoding: "utf8" });
  if (check.status !== 0) throw new Error(`unbound-checkconf: ${check.stdout}${check.stderr}`);
  const child: ChildProcess = spawn("unbound", ["-d", "-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
  const closed = trackOpen(`unbound on 127.0.0.1:${port}`, "startValidatingResolver");
  const exited = once(child, "exit");
  const deadline = Date.now() + 10_000;
  for (;;) {
    // Ready when it answers a query (each try has its own short deadline; no sleep).
    const up = await new Promise<boolean>((resolve) => {
      const s = createSocket("udp4");
      const t = setTimeout(() => (s.close(), resolve(false)), 300);
      s.on("message", () => (clearTimeout(t), s.close(), resolve(true)));
      s.send(Buffer.from("000001000001000000000000000001000100", "hex"), port, "127.0.0.1"); // ". IN A"
    });
    if (up) break;
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill("SIGKILL");
      throw new Error(`unbound did not answer on 127.0.0.1:${port} within 10 s`);
    }
  }
  return {
    host: "127.0.0.1",
    port,
    address: `127.0.0.1:${port}`,
    async close() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
      child.stderr?.destroy();
      closed();
    },
  };
}
