// Runs app.js in Node with a minimal DOM and fetch, for the tests of
// package ui. FIXTURES maps API paths to JSON answers; other paths answer
// 404.
//
//   node render.js APP.JS FIXTURES.JSON
//     prints the HTML of #deadletters (and "hidden" when it is hidden),
//     then a line with its text.
//   node render.js APP.JS FIXTURES.JSON eval EXPR
//     prints EXPR, evaluated once the page has loaded, as JSON.
"use strict";
const fs = require("fs");
const vm = require("vm");
const [appPath, fixturesPath, mode, expr] = process.argv.slice(2);
const fixtures = JSON.parse(fs.readFileSync(fixturesPath, "utf8"));

class Node_ {
  constructor(tag) { this.tag = tag; this.attrs = {}; this.children = []; this.hidden = false; this.className = ""; this._text = null; this.checked = false; this.value = ""; }
  set textContent(v) { this._text = String(v); this.children = []; }
  get textContent() { return this._text !== null ? this._text : this.children.map((c) => c.textContent).join(""); }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  addEventListener() {}
  append(...cs) { for (const c of cs) this.children.push(typeof c === "string" ? new Text_(c) : c); }
  replaceChildren(...cs) { this.children = []; this._text = null; this.append(...cs); }
  html() {
    const attrs = Object.entries(this.attrs).map(([k, v]) => ` ${k}="${v}"`).join("") + (this.className ? ` class="${this.className}"` : "");
    const inner = this._text !== null ? this._text : this.children.map((c) => c.html()).join("");
    return `<${this.tag}${attrs}>${inner}</${this.tag}>`;
  }
}
class Text_ { constructor(s) { this.textContent = s; } html() { return this.textContent; } }

const byId = {};
const document = {
  createElement: (tag) => new Node_(tag),
  createElementNS: (_, tag) => new Node_(tag),
  createTextNode: (s) => new Text_(s),
  querySelector: (sel) => (byId[sel] ||= new Node_("section")),
};
globalThis.Node = Node_;
globalThis.document = document;
document.body = { dataset: {} };
globalThis.window = { addEventListener() {}, innerWidth: 1280, scrollTo() {} };
globalThis.location = { hash: "", pathname: "/", search: "" };
globalThis.history = { replaceState() {} };
const stored = {};
globalThis.sessionStorage = { getItem: (k) => stored[k] ?? null, setItem: (k, v) => { stored[k] = String(v); } };
globalThis.fetch = async (path) => {
  const hit = Object.prototype.hasOwnProperty.call(fixtures, path);
  return { ok: hit, status: hit ? 200 : 404, statusText: hit ? "OK" : "Not Found", text: async () => (hit ? JSON.stringify(fixtures[path]) : "") };
};

// The page loads auth.js (the API's token) before app.js.
const authPath = require("path").join(require("path").dirname(appPath), "auth.js");
vm.runInThisContext(fs.readFileSync(authPath, "utf8"), { filename: authPath });
vm.runInThisContext(fs.readFileSync(appPath, "utf8"), { filename: appPath });
setTimeout(() => {
  if (mode === "eval") {
    process.stdout.write(JSON.stringify(vm.runInThisContext(expr)) + "\n");
    process.exit(0);
  }
  const box = byId["#deadletters"];
  process.stdout.write((box.hidden ? "hidden\n" : "") + box.html() + "\n" + box.textContent + "\n");
  process.exit(0);
}, 100);
