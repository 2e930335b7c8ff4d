// tihuo's GraphiQL set-up (written for tihuo, not from npm): loaded by the page at /graphql after
// React, ReactDOM and GraphiQL. It is a file rather than an inline script so the page's
// Content-Security-Policy can say `script-src 'self'`.
(function () {
  "use strict";

  var EXAMPLE_QUERY = [
    "# tihuo GraphiQL: everything on this page is served by this server.",
    "#",
    "# 1. Sign in: fill in your password and run this (Ctrl-Enter or the play button).",
    "# 2. Copy the token from the result into the Headers pane below:",
    '#      {"Authorization": "Bearer <token>"}',
    "# 3. Run queries as that user, e.g.  { me { username role } }",
    "",
    "mutation {",
    '  login(input: {username: "admin", password: ""}) {',
    "    ... on LoginSuccess { token viewer { username role } }",
    "    ... on Error { code message }",
    "  }",
    "}",
    "",
  ].join("\n");

  // A request carrying this placeholder is simply not signed in, so it can stay until replaced.
  var HEADERS_PLACEHOLDER = '{\n  "Authorization": "Bearer <token from the login mutation>"\n}';

  // The query and variables live in the address, so a page can be shared; headers never do.
  var parameters = new URLSearchParams(window.location.search);

  function updateURL(name, value) {
    if (value) {
      parameters.set(name, value);
    } else {
      parameters.delete(name);
    }
    var search = parameters.toString();
    history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
  }

  // no subscription URL: the API has no subscriptions
  var fetcher = GraphiQL.createFetcher({ url: window.location.pathname });

  function TihuoGraphiQL() {
    var queryState = React.useState(parameters.get("query") || EXAMPLE_QUERY);
    var variablesState = React.useState(parameters.get("variables") || undefined);

    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      query: queryState[0],
      variables: variablesState[0],
      onEditQuery: function (value) {
        queryState[1](value);
        updateURL("query", value);
      },
      onEditVariables: function (value) {
        variablesState[1](value);
        updateURL("variables", value);
      },
      isHeadersEditorEnabled: true,
      defaultHeaders: HEADERS_PLACEHOLDER,
      defaultEditorToolsVisibility: "headers",
      // tokens stay out of localStorage unless the user turns this on in GraphiQL's settings
      shouldPersistHeaders: false,
      inputValueDeprecation: true,
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(TihuoGraphiQL),
  );
})();
