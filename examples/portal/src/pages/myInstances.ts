// "My instances": the member's products, newest first, with where to reach them.
import { graphql } from "../gql/index.js";
import { type Api, execute } from "../client.js";

export const MyInstances = graphql(`
  query MyInstances($first: Int!, $after: String) {
    myInstances(first: $first, after: $after) {
      nodes {
        id
        name
        productType
        regionName
        lineName
        ipAddress
        status
        expiresAt
        config {
          summary
        }
        osImage {
          name
        }
      }
    }
  }
`);

export type InstanceRow = { name: string; where: string; address: string; expiresAt: string; os: string };

export async function myInstances(api: Api, after: string | null = null): Promise<InstanceRow[]> {
  const { myInstances: page } = await execute(api, MyInstances, { first: 20, after });
  return page.nodes.map((node) => ({
    name: `${node.name} (${node.config.summary})`,
    where: `${node.regionName} ${node.lineName}`,
    address: node.ipAddress ?? "…",
    expiresAt: node.expiresAt,
    os: node.osImage?.name ?? "",
  }));
}
