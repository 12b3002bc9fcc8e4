#!/usr/bin/env node
// The sealpost command. Node >= 22.18 runs the TypeScript sources itself, so the CLI
// runs in this very process: signals reach the process that serves.
import { runCli } from "../src/cli.ts";

runCli();
