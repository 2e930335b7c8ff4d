// GraphQL Code Generator: the portal's operations (src/**/*.ts) are validated against tihuo's
// schema.graphql and typed; the same run writes the trusted documents' manifest
// (src/gql/persisted-documents.json: SHA-256 -> document) that tihuo reads from
// TIHUO_TRUSTED_DOCUMENTS. The watch-the-order subscription (src/live/) is part of the run only when
// the schema has a Subscription type; scripts/check.mjs then checks it with tsconfig.live.json.
import { readFileSync } from "node:fs";
import type { CodegenConfig } from "@graphql-codegen/cli";

const schema = process.env.TIHUO_SCHEMA ?? "../../schema.graphql";
export const hasSubscriptions = /^type Subscription\b/m.test(readFileSync(schema, "utf8"));

const config: CodegenConfig = {
  schema,
  documents: ["src/**/*.ts", ...(hasSubscriptions ? [] : ["!src/live/**"]), "!src/gql/**"],
  ignoreNoDocuments: false,
  emitLegacyCommonJSImports: false,
  generates: {
    "src/gql/": {
      preset: "client",
      presetConfig: {
        // the hash tihuo expects (Code Generator's own default would be sha1)
        persistedDocuments: { hashAlgorithm: "sha256" },
        fragmentMasking: false,
      },
      config: {
        documentMode: "string",
        enumsAsTypes: true,
        useTypeImports: true,
        strictScalars: true,
        scalars: { DateTime: "string", Date: "string", Decimal: "string" },
      },
    },
  },
};

export default config;
