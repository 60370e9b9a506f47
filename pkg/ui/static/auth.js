// The saga API's token, for a server that requires one (--auth-token-file):
// taken from the page's URL fragment (/#token=…, then removed from the
// address bar) or asked for on the first 401, kept for this tab only
// (sessionStorage) and sent on every request to the API.
"use strict";

const troupeAuth = (() => {
  const KEY = "troupe-token";
  const m = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  let declined = false;

  // fetch is window.fetch with the token; on a 401 it asks for the token
  // (once, unless declined) and tries again.
  async function fetchWithToken(path, opts = {}) {
    for (;;) {
      const token = sessionStorage.getItem(KEY);
      const headers = new Headers(opts.headers || {});
      if (token) headers.set("Authorization", "Bearer " + token);
      const r = await fetch(path, { ...opts, headers });
      if (r.status !== 401) return r;
      // Another request may have been answered meanwhile: try its token.
      if (sessionStorage.getItem(KEY) !== token) continue;
      if (declined) return r;
      const entered = window.prompt(token
        ? "The troupe API refused the token. Enter its token (the file of --auth-token-file):"
        : "This troupe API requires a token. Enter it (the file of --auth-token-file):");
      if (!entered || !entered.trim()) {
        declined = true; // the banner shows the 401; reload to be asked again
        return r;
      }
      sessionStorage.setItem(KEY, entered.trim());
    }
  }
  return { fetch: fetchWithToken };
})();
