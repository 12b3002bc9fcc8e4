// `sealpost inbound` (and `start` with INBOUND_LISTEN): the bounce receiver wired from the
// configuration, on the API's server certificate.
import { ConfigError, heloName, inboundListen } from "../config.ts";
import type { Runtime } from "../runtime.ts";
import { resolveCertificates } from "../api/server.ts";
import { loadPem } from "../api/certificates.ts";
import { startInboundServer, type InboundServer } from "./server.ts";

export async function startInbound(rt: Runtime): Promise<InboundServer> {
  const c = rt.config;
  const { host, port, label: listen } = inboundListen(c);
  const log = rt.logger.child({ component: "inbound" });
  const tls = loadPem(resolveCertificates(c, log));
  try {
    return await startInboundServer(
      { pool: rt.db.pool, cipher: rt.cipher, logger: rt.logger, tls, name: heloName(c), maxBytes: c.INBOUND_MAX_BYTES, maxClients: c.INBOUND_MAX_CLIENTS, ratePerMinute: c.INBOUND_RATE_PER_MINUTE, reportMaxAgeMs: c.INBOUND_REPORT_MAX_AGE },
      { host, port },
    );
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw new ConfigError(`INBOUND_LISTEN: ${listen} is in use: stop what listens there or choose another port`, { cause: err });
    if (code === "EACCES") throw new ConfigError(`INBOUND_LISTEN: no permission to listen on ${listen} (ports below 1024 need root or CAP_NET_BIND_SERVICE): grant it, or listen on a higher port behind a redirect`, { cause: err });
    if (code === "EADDRNOTAVAIL") throw new ConfigError(`INBOUND_LISTEN: ${host} is not an address of this machine`, { cause: err });
    throw err;
  }
}
