// Redeeming a card, in two steps: the preview (what the card gives, the images to choose from),
// then the redemption itself, which places the order.
import { graphql } from "../gql/index.js";
import { type Api, execute } from "../client.js";

export const PreviewCard = graphql(`
  query PreviewCard($code: String!) {
    redemptionPreview(code: $code) {
      __typename
      ... on RedemptionPreview {
        productType
        productName
        months
        osRequired
        osImages {
          id
          name
          family
        }
        config {
          regionName
          lineName
          summary
        }
        validUntil
        notices
      }
      ... on Error {
        code
        message
      }
    }
  }
`);

export const RedeemCard = graphql(`
  mutation RedeemCard($code: String!, $osImageId: ID, $idempotencyKey: String) {
    redeemCard(input: { code: $code, osImageId: $osImageId, idempotencyKey: $idempotencyKey }) {
      __typename
      ... on RedeemCardSuccess {
        order {
          id
          orderNo
          status
          createdAt
        }
      }
      ... on Error {
        code
        message
      }
    }
  }
`);

export type Choice = { id: string; name: string; family: "LINUX" | "WINDOWS" };
export type Preview = { summary: string; months: number; validUntil: string; images: Choice[] };
export type Refusal = { code: string; message: string };

export async function preview(api: Api, code: string): Promise<Preview | Refusal> {
  const { redemptionPreview: result } = await execute(api, PreviewCard, { code });
  if (result.__typename !== "RedemptionPreview") {
    return { code: result.code, message: result.message };
  }
  return {
    summary: `${result.productName}: ${result.config.regionName} ${result.config.lineName}, ${result.config.summary}`,
    months: result.months,
    validUntil: result.validUntil,
    images: result.osImages,
  };
}

export async function redeem(
  api: Api,
  code: string,
  osImageId: string | null,
  idempotencyKey: string,
): Promise<{ orderId: string; orderNo: string } | Refusal> {
  const { redeemCard: result } = await execute(api, RedeemCard, { code, osImageId, idempotencyKey });
  if (result.__typename !== "RedeemCardSuccess") {
    return { code: result.code, message: result.message };
  }
  return { orderId: result.order.id, orderNo: result.order.orderNo };
}
