// The saga API's token, for a server that requires one (--auth-token-file):
// taken from the page's URL fragment (#token=…, removed from the address
// bar at once) or entered in a small form shown on the first 401, kept for
// this tab only (sessionStorage) and sent on every request to the API.
"use strict";

const troupeAuth = (() => {
  const KEY = "troupe-token";
  // #token=T, alone or beside the page's own route: #/sagas/x&token=T.
  const parts = location.hash.replace(/^#/, "").split("&");
  const given = parts.find((p) => p.startsWith("token="));
  if (given) {
    sessionStorage.setItem(KEY, decodeURIComponent(given.slice("token=".length)));
    const rest = parts.filter((p) => p !== given).join("&");
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }

  // ask shows the form (once); submitting it keeps the token and reloads.
  function ask(refused) {
    if (document.getElementById("token-form")) return;
    const form = document.createElement("form");
    form.id = "token-form";
    const input = Object.assign(document.createElement("input"), {
      type: "password", id: "token-input", autocomplete: "off", required: true,
      placeholder: "token (the file of the server's --auth-token-file)",
    });
    const label = Object.assign(document.createElement("label"), {
      htmlFor: "token-input",
      textContent: refused ? "The troupe API refused the token. Token: " : "This troupe API requires a token. Token: ",
    });
    const button = Object.assign(document.createElement("button"), { type: "submit", textContent: "Use token" });
    form.append(label, input, " ", button);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      location.reload();
    });
    document.body.prepend(form);
  }

  // fetch is window.fetch with the token; a 401 shows the form and is
  // returned as it is (the page shows the error until a token is given).
  async function fetchWithToken(path, opts = {}) {
    const token = sessionStorage.getItem(KEY);
    const headers = new Headers(opts.headers || {});
    if (token) headers.set("Authorization", "Bearer " + token);
    const r = await fetch(path, { ...opts, headers });
    if (r.status === 401) ask(!!token);
    return r;
  }
  return { fetch: fetchWithToken };
})();
