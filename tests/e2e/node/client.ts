// The seed's client use case with a client nobody here wrote: types generated from the
// running API's /openapi.json by openapi-typescript, calls made by openapi-fetch.
//
// tests/e2e/httpapi/test_generated_client.py generates generated/miosa-api.d.ts, compiles
// this file with tsc (strict: a mismatch between the document and this code fails the
// test) and runs it with:
//   API_URL, TOKEN (a write-scope ServiceAccount token), DEPLOYMENT_ID, WORKSPACE, BUNDLE
// It prints one JSON object with what it got.
import { readFileSync } from "node:fs";
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/miosa-api.js";

type Version = components["schemas"]["SeedVersion"];

const env = process.env as Record<string, string>;
const miosa = createClient<paths>({ baseUrl: env.API_URL, headers: { Authorization: `Bearer ${env.TOKEN}` } });
const deployment_id = env.DEPLOYMENT_ID;

function check<T>(what: string, result: { data?: T; error?: unknown; response: Response }): T {
  if (result.data === undefined) {
    throw new Error(`${what}: HTTP ${result.response.status} ${JSON.stringify(result.error)}`);
  }
  return result.data;
}

// miosa.deployments.versions.list(deploymentId, { externalWorkspaceId }) from the seed.
async function listVersions(externalWorkspaceId: string): Promise<Version[]> {
  const all: Version[] = [];
  let cursor: string | undefined;
  do {
    const page = check(
      "list",
      await miosa.GET("/api/v1/deployments/{deployment_id}/versions", {
        params: { path: { deployment_id }, query: { external_workspace_id: externalWorkspaceId, limit: 2, cursor } },
      }),
    );
    all.push(...page.data);
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  return all;
}

const before = await listVersions(env.WORKSPACE);

const bundle = readFileSync(env.BUNDLE);
const published = await miosa.POST("/api/v1/deployments/{deployment_id}/versions", {
  params: { path: { deployment_id }, query: { external_workspace_id: env.WORKSPACE, wait: true } },
  // The raw bundle is the body (the document declares application/gzip as binary).
  body: bundle as unknown as string,
  bodySerializer: (body: unknown) => body as BodyInit,
  headers: { "Content-Type": "application/gzip" },
});
const version = check("publish", published);

const promoted = check(
  "promote",
  await miosa.POST("/api/v1/deployments/{deployment_id}/versions/{version_id}/promote", {
    params: { path: { deployment_id, version_id: version.id ?? "" }, query: { wait: true } },
    body: { reason: "published from the generated client" },
  }),
);

const rolledBack = check(
  "rollback",
  await miosa.POST("/api/v1/deployments/{deployment_id}/rollback", {
    params: { path: { deployment_id }, query: { wait: true } },
    body: { reason: "and back" },
  }),
);

const after = await listVersions(env.WORKSPACE);
const deployment = check("deployment", await miosa.GET("/api/v1/deployments/{deployment_id}", { params: { path: { deployment_id } } }));

console.log(
  JSON.stringify({
    before: before.map((v) => v.version_number),
    published: { id: version.id, state: version.state, created_by: version.created_by, workspace: version.external_workspace_id },
    promoted: { status: promoted.status, live: promoted.deployment.live_version?.id },
    rolledBack: { status: rolledBack.status, live: rolledBack.deployment.live_version?.id },
    after: after.map((v) => v.version_number),
    history: deployment.history.map((h) => [h.action, h.version, h.actor]),
  }),
);
