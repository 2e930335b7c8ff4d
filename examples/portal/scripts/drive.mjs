// Drives the built portal client (`tsc --outDir build`) against a running tihuo, as its pages would:
//   node scripts/drive.mjs <graphql url> <step> [json arguments]
// and prints what the page would show, as JSON. Used by tihuo's tests/test_typed_client.py.
const [url, step, raw] = process.argv.slice(2);
const args = raw ? JSON.parse(raw) : {};
const build = new URL("../build/", import.meta.url);
const { signIn } = await import(new URL("pages/signIn.js", build));
const { preview, redeem } = await import(new URL("pages/redeem.js", build));
const { myCards } = await import(new URL("pages/myCards.js", build));
const { myInstances } = await import(new URL("pages/myInstances.js", build));

const api = { url, token: args.token, language: "en" };
const steps = {
  signIn: () => signIn(api, args.username, args.password),
  preview: () => preview(api, args.code),
  redeem: () => redeem(api, args.code, args.osImageId ?? null, args.idempotencyKey),
  myCards: () => myCards(api),
  myInstances: () => myInstances(api),
};
try {
  console.log(JSON.stringify(await steps[step]()));
} catch (error) {
  console.log(JSON.stringify({ thrown: error.constructor.name, code: error.code, message: error.message }));
}
