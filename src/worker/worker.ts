// Placeholder until the delivery worker lands: `start` runs the API alone.
import type { Runtime } from "../runtime.ts";

export function startWorker(rt: Runtime): { stop(): Promise<void> } {
  rt.logger.warn({}, "the delivery worker is not part of this build yet; messages stay queued");
  return { async stop() {} };
}
