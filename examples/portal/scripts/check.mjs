// `npm run check`: the typed client check. GraphQL Code Generator validates the portal's operations
// against tihuo's schema.graphql (TIHUO_SCHEMA to name another) and types them, then `tsc --noEmit`
// checks the portal's code against those types. The watch-the-order subscription (src/live/) is
// included when the schema has a Subscription type, and said so either way.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const schema = process.env.TIHUO_SCHEMA ?? join(root, "..", "..", "schema.graphql");
const live = /^type Subscription\b/m.test(readFileSync(schema, "utf8"));

function run(tool, args) {
  try {
    execFileSync(join(root, "node_modules", ".bin", tool), args, {
      cwd: root,
      stdio: "inherit",
      env: { ...process.env, TIHUO_SCHEMA: schema },
    });
  } catch {
    console.error(`typed client check FAILED at ${tool}`);
    process.exit(1);
  }
}

run("graphql-codegen", ["--config", "codegen.ts"]);
run("tsc", ["--noEmit", "-p", live ? "tsconfig.live.json" : "tsconfig.json"]);
console.log(
  `typed client check passed against ${schema} ` +
    (live ? "(with the watch-the-order subscription)" : "(no Subscription type: src/live/ left out)"),
);
