// Regenerates openapi.yaml from the route schemas.
import { writeFileSync } from "node:fs";
import { openApiYaml } from "../src/api/openapi.ts";

writeFileSync(new URL("../openapi.yaml", import.meta.url), openApiYaml());
console.log("wrote openapi.yaml");
