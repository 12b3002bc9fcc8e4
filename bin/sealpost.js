#!/usr/bin/env -S node --max-semi-space-size=8
// --max-semi-space-size=8: V8 grows its young generation up to 64 MB semi-spaces on a large host, which
// put a busy API or worker process at 300-400 MB of RSS for garbage it collects anyway;
// 8 MB keeps it near 200 MB at the same throughput (npm run bench). The image's
// ENTRYPOINT and the npm scripts pass the same flag (test/unit/docs-and-compose.test.ts).
// The sealpost command. Node >= 22.18 runs the TypeScript sources itself, so the CLI
// runs in this very process: signals reach the process that serves.
import { runCli } from "../src/cli.ts";

runCli();
