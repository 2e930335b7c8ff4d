// "My cards": the cards the member redeemed, newest first, with what each order became.
import { graphql } from "../gql/index.js";
import { type Api, execute } from "../client.js";

export const MyCards = graphql(`
  query MyCards($first: Int!, $after: String, $keyword: String) {
    myRedemptions(first: $first, after: $after, keyword: $keyword) {
      totalCount
      pageInfo {
        hasNextPage
        endCursor
      }
      nodes {
        id
        cardName
        productType
        redeemedAt
        card {
          maskedCode
        }
        order {
          id
          orderNo
          status
          failureReason
        }
      }
    }
  }
`);

export type CardRow = { card: string; name: string; redeemedAt: string; orderNo: string; status: string };

export async function myCards(
  api: Api,
  after: string | null = null,
  keyword: string | null = null,
): Promise<{ rows: CardRow[]; total: number; next: string | null }> {
  const { myRedemptions } = await execute(api, MyCards, { first: 20, after, keyword });
  return {
    rows: myRedemptions.nodes.map((node) => ({
      card: node.card.maskedCode,
      name: node.cardName,
      redeemedAt: node.redeemedAt,
      orderNo: node.order.orderNo,
      status: node.order.failureReason ?? node.order.status,
    })),
    total: myRedemptions.totalCount,
    next: myRedemptions.pageInfo.hasNextPage ? (myRedemptions.pageInfo.endCursor ?? null) : null,
  };
}
