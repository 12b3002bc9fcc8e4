#!/usr/bin/env -S node --max-semi-space-size=8 --heap-growing-percent=50
// --max-semi-space-size=8: V8 grows its young generation up to 64 MB semi-spaces on a large host, which
// put a busy API or worker process at 300-400 MB of RSS for garbage it collects anyway.
// --heap-growing-percent=50: after a full collection V8 lets the old generation grow to about
// three times what survived before collecting again, which put a draining worker at 270-280 MB;
// 1.5 times keeps it under 200 MB for a few percent more GC time (npm run bench). A growth
// factor, not a cap: a process holding large messages still gets the heap they need.
// The image's ENTRYPOINT and the npm scripts pass the same flags (test/unit/docs-and-compose.test.ts).
// The sealpost command. Node >= 22.18 runs the TypeScript sources itself, so the CLI
// runs in this very process: signals reach the process that serves.
import { runCli } from "../src/cli.ts";

runCli();
