// Watching an order open (RULES-v2 §4): the subscription orderUpdates over graphql-transport-ws at
// the API's /graphql, the token in connection_init. The first message is the order now; the stream
// ends after ACTIVE, FAILED or CANCELLED.
//
// Checked only when schema.graphql has a Subscription type (scripts/check.mjs): until the live
// order status is in the schema, codegen and tsc leave this file out.
import { graphql } from "../gql/index.js";
import type { WatchOrderSubscription } from "../gql/graphql.js";

export const WatchOrder = graphql(`
  subscription WatchOrder($orderId: ID!) {
    orderUpdates(orderId: $orderId) {
      id
      orderNo
      status
      failureReason
      activatedAt
      instance {
        ipAddress
      }
    }
  }
`);

export type OrderNow = WatchOrderSubscription["orderUpdates"];

/** Calls `onOrder` with each state of the order until it is final; resolves then. */
export function watchOrder(
  wsUrl: string,
  token: string,
  orderId: string,
  onOrder: (order: OrderNow) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(wsUrl, "graphql-transport-ws");
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "connection_init", payload: { Authorization: `Bearer ${token}` } }));
    };
    socket.onmessage = (event: MessageEvent<string>) => {
      const message = JSON.parse(event.data) as { type: string; id?: string; payload?: unknown };
      if (message.type === "connection_ack") {
        const payload = { query: WatchOrder.toString(), variables: { orderId } };
        socket.send(JSON.stringify({ id: "1", type: "subscribe", payload }));
      } else if (message.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
      } else if (message.type === "next") {
        onOrder((message.payload as { data: WatchOrderSubscription }).data.orderUpdates);
      } else if (message.type === "error") {
        reject(new Error(JSON.stringify(message.payload)));
        socket.close();
      } else if (message.type === "complete") {
        resolve();
        socket.close();
      }
    };
    socket.onclose = (event: CloseEvent) => {
      if (event.code !== 1000) reject(new Error(`closed: ${event.code} ${event.reason}`));
    };
  });
}
