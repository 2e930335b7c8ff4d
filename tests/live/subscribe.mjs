// The npm graphql-ws client subscribing to tihuo: node subscribe.mjs URL TOKEN QUERY VARIABLES_JSON.
// Prints each message it receives as one JSON line ({"next": ...}, {"error": ...}, {"complete": true}),
// and exits when the subscription ends.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token, query, variables] = process.argv.slice(2);
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  retryAttempts: 0,
  lazy: false,
  on: { connected: () => console.log(JSON.stringify({ connected: true })) },
});
const print = (line) => console.log(JSON.stringify(line));
client.subscribe(
  { query, variables: JSON.parse(variables) },
  {
    next: (value) => print({ next: value }),
    error: (error) => {
      print({ error: Array.isArray(error) ? error : String(error) });
      client.dispose().then(() => process.exit(1));
    },
    complete: () => {
      print({ complete: true });
      client.dispose().then(() => process.exit(0));
    },
  },
);
