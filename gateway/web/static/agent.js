// Agent desktop: states skills and languages over /agent/ws and shows screen-pops.
// The page is served only after sign-in (POST /agent/login sets an HttpOnly cookie the socket
// sends); when the sign-in ends (expired, account removed or rotated) it goes back to the form.
(function () {
  "use strict";
  var ws = null;
  var retry = 500;
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function list(value) { return value.split(",").map(function (s) { return s.trim(); }).filter(Boolean); }
  function ready() {
    if (!ws || ws.readyState !== WebSocket.OPEN) { return; }
    ws.send(JSON.stringify({ type: "ready", skills: list(document.getElementById("skills").value),
      languages: list(document.getElementById("languages").value), available: document.getElementById("available").checked }));
  }
  function row(dl, key, value) { dl.appendChild(el("dt", key)); dl.appendChild(el("dd", value === "" || value === undefined ? "\u2014" : value)); }
  function showPop(frame) {
    var ctx = frame.context || {};
    var customer = ctx.customer || {};
    document.getElementById("waiting").style.display = "none";
    var art = el("article", null, "pop");
    art.dataset.conversation = frame.conversation_id;
    art.appendChild(el("h2", customer.name || customer.caller_id || "Unknown customer", "customer-name"));
    var dl = el("dl");
    row(dl, "Conversation", frame.conversation_id);
    row(dl, "Customer id", customer.id);
    row(dl, "Phone", customer.caller_id || (customer.phone_last4 ? "\u2026" + customer.phone_last4 : ""));
    row(dl, "Verified", Object.keys(ctx.verified || {}).join(", ") || "not verified");
    row(dl, "Intent", ctx.intent);
    row(dl, "Channels", (ctx.channels || []).join(" \u2192 "));
    var slots = ctx.slots || {};
    var hidden = /(_spoken|^customer_name|^customer_first_name|^customer_language|^phone_last4)$/;
    row(dl, "Details", Object.keys(slots).filter(function (k) { return !hidden.test(k); })
      .map(function (k) { return k.replace(/_/g, " ") + ": " + slots[k]; }).join("; "));
    if (ctx.transfer && ctx.transfer.reason) { row(dl, "Why transferred", ctx.transfer.reason); }
    art.appendChild(dl);
    art.appendChild(el("h3", "Suggested next steps"));
    var ul = el("ul", null, "next-steps");
    (ctx.suggested_next_steps || []).forEach(function (s) { ul.appendChild(el("li", s)); });
    art.appendChild(ul);
    art.appendChild(el("h3", "Transcript (all channels)"));
    var tr = el("div", null, "transcript");
    (ctx.transcript || []).forEach(function (line) {
      var p = el("p");
      p.appendChild(el("span", "[" + line.channel + "] " + line.who + ": ", "who"));
      p.appendChild(document.createTextNode(line.text));
      tr.appendChild(p);
    });
    art.appendChild(tr);
    setTimeout(function () { tr.scrollTop = tr.scrollHeight; }, 0);
    var pops = document.getElementById("pops");
    pops.insertBefore(art, pops.firstChild);
    if (window.Notification && Notification.permission === "granted") { new Notification("Incoming: " + (customer.name || "customer")); }
  }
  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + window.location.host + "/agent/ws");
    ws.onopen = function () { retry = 500; document.getElementById("conn").textContent = "connected"; ready(); };
    ws.onmessage = function (ev) {
      var frame = JSON.parse(ev.data);
      if (frame.type === "welcome") {
        document.getElementById("agent-id").textContent = frame.agent_id;
        document.getElementById("role").textContent = "(" + frame.role + (frame.queues && frame.queues.length ?
          "; queues " + frame.queues.join(", ") : "") + ")";
      }
      else if (frame.type === "ready") {
        document.getElementById("presence-state").textContent = (frame.available ? "Available" : "Away") +
          " \u2014 skills: " + frame.skills.join(", ") + "; languages: " + frame.languages.join(", ");
        document.body.dataset.ready = "yes";
      }
      else if (frame.type === "screen_pop") { showPop(frame); }
      else if (frame.type === "refused") { document.getElementById("presence-state").textContent = frame.message; }
    };
    ws.onclose = function () {
      document.body.dataset.ready = "no";
      document.getElementById("conn").textContent = "disconnected, reconnecting\u2026";
      fetch("/agent", { credentials: "same-origin", cache: "no-store" }).then(function (r) {
        if (r.status === 401) { window.location.assign("/agent"); return; }  // signed out: show the form
        setTimeout(connect, retry); retry = Math.min(retry * 2, 10000);
      }, function () { setTimeout(connect, retry); retry = Math.min(retry * 2, 10000); });
    };
  }
  document.getElementById("presence").addEventListener("submit", function (ev) { ev.preventDefault(); ready(); });
  connect();
})();
