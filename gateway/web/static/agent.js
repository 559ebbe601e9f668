// Agent desktop over /agent/ws (frames: gateway/agents/desk_protocol.py and desktop.py).
// The page is served only after sign-in (POST /agent/login sets an HttpOnly cookie the socket
// sends); when the sign-in ends (expired, account removed or rotated) it goes back to the form.
// Messages typed are kept until the gateway says "sent", and sent again (same id, kept once)
// after a reconnect; transcripts are merged by each line's place in the log (seq).
(function () {
  "use strict";
  var ws = null;
  var retry = 500;
  var me = "";
  var dispositions = [];
  var journeys = {};
  var held = {};          // conversation id -> {art, seqs: {}, lines element}
  var pending = {};       // message id -> {cid, text}
  var counter = 0;

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { return false; }
    ws.send(JSON.stringify(frame));
    return true;
  }
  function list(value) { return value.split(",").map(function (s) { return s.trim(); }).filter(Boolean); }
  function ready() {
    send({ type: "ready", skills: list(document.getElementById("skills").value),
      languages: list(document.getElementById("languages").value), available: document.getElementById("available").checked });
  }
  function notice(text) { document.getElementById("notice").textContent = text; }
  function seconds(s) { s = Math.round(s); return s < 60 ? s + " s" : Math.floor(s / 60) + " min " + (s % 60) + " s"; }
  function row(dl, key, value) { dl.appendChild(el("dt", key)); dl.appendChild(el("dd", value === "" || value === undefined ? "\u2014" : value)); }

  function details(ctx) {
    var customer = ctx.customer || {};
    var dl = el("dl");
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
    var closings = (ctx.handoff || {}).closings || [];
    if (closings.length) {
      row(dl, "Earlier dispositions", closings.map(function (c) { return c.code + " by " + c.agent + (c.notes ? ": " + c.notes : ""); }).join("; "));
    }
    return dl;
  }
  function steps(ctx) {
    var ul = el("ul", null, "next-steps");
    (ctx.suggested_next_steps || []).forEach(function (s) { ul.appendChild(el("li", s)); });
    return ul;
  }
  function addLine(box, line, seqs) {
    if (line.seq && seqs[line.seq]) { return; }
    if (line.seq) { seqs[line.seq] = true; }
    if (line.who === "agent" && line.message_id) {  // this desktop's own message, shown as typed
      var mine = box.querySelector("p[data-id='" + line.message_id + "']");
      if (mine) { mine.classList.remove("pending"); delete pending[line.message_id]; return; }
    }
    var p = el("p", null, line.who);
    p.appendChild(el("span", "[" + line.channel + "] " + line.who + (line.agent ? " " + line.agent : "") + ": ", "who"));
    p.appendChild(document.createTextNode(line.text));
    if (line.message_id && pending[line.message_id]) { delete pending[line.message_id]; }
    box.appendChild(p);
    box.scrollTop = box.scrollHeight;
  }

  // ---- offers and screen-pops ------------------------------------------------------------
  function showPop(frame) {
    var ctx = frame.context || {};
    var customer = ctx.customer || {};
    if (frame.state === "active") { activate(frame.conversation_id, ctx); return; }
    document.getElementById("waiting").style.display = "none";
    var old = document.querySelector("article.pop[data-conversation='" + frame.conversation_id + "']");
    if (old) { old.remove(); }
    var art = el("article", null, "pop");
    art.dataset.conversation = frame.conversation_id;
    art.appendChild(el("h2", customer.name || customer.caller_id || "Unknown customer", "customer-name"));
    if (frame.offer) { art.appendChild(el("p", "Offered to you for " + Math.round(frame.offer.seconds) + " s (queue " + frame.offer.queue + ")", "offer-state")); }
    if (frame.state === "ringing") { art.appendChild(el("p", "Your phone is ringing with this call", "offer-state")); }
    var dl = details(ctx);
    dl.insertBefore(el("dd", frame.conversation_id), dl.firstChild);
    dl.insertBefore(el("dt", "Conversation"), dl.firstChild);
    art.appendChild(dl);
    art.appendChild(el("h3", "Suggested next steps"));
    art.appendChild(steps(ctx));
    art.appendChild(el("h3", "Transcript (all channels)"));
    var tr = el("div", null, "transcript");
    var seqs = {};
    (ctx.transcript || []).forEach(function (line) { addLine(tr, line, seqs); });
    art.appendChild(tr);
    var actions = el("div", null, "tools");
    var accept = el("button", "Accept", "accept");
    accept.type = "button";
    accept.addEventListener("click", function () { send({ type: "accept", conversation_id: frame.conversation_id }); });
    actions.appendChild(accept);
    if (frame.offer) {
      var decline = el("button", "Pass", "decline");
      decline.type = "button";
      decline.addEventListener("click", function () { send({ type: "decline", conversation_id: frame.conversation_id }); art.remove(); });
      actions.appendChild(decline);
    }
    art.appendChild(actions);
    var pops = document.getElementById("pops");
    pops.insertBefore(art, pops.firstChild);
    setTimeout(function () { tr.scrollTop = tr.scrollHeight; }, 0);
    if (window.Notification && Notification.permission === "granted") { new Notification("Incoming: " + (customer.name || "customer")); }
  }

  // ---- the queue ---------------------------------------------------------------------------
  function showQueue(entries) {
    var box = document.getElementById("queue-list");
    var table = box.querySelector("table");
    var body = table.querySelector("tbody");
    body.innerHTML = "";
    document.getElementById("queue-empty").hidden = entries.length > 0;
    table.hidden = entries.length === 0;
    entries.forEach(function (e) {
      var tr = el("tr", null, e.state);
      tr.dataset.conversation = e.conversation_id;
      var who = el("td");
      who.appendChild(el("strong", (e.customer || "Customer") + " \u00b7 " + e.channel + (e.mode ? " \u00b7 " + e.mode : "")));
      who.appendChild(el("div", e.queue + " \u00b7 " + seconds(e.waiting_seconds) + (e.reason ? " \u00b7 " + e.reason : ""), "muted"));
      tr.appendChild(who);
      var td = el("td");
      if (e.state === "taken") {
        td.textContent = e.taken_by === me ? "yours" : "with " + e.taken_by;
      } else {
        var b = el("button", "Accept", "accept");
        b.type = "button";
        b.addEventListener("click", function () { send({ type: "accept", conversation_id: e.conversation_id }); });
        td.appendChild(b);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    });
  }

  // ---- conversations held --------------------------------------------------------------------
  function select(options) {
    var s = el("select");
    options.forEach(function (o) { var opt = el("option", o); opt.value = o; s.appendChild(opt); });
    return s;
  }
  function button(text, cls, onclick) {
    var b = el("button", text, cls);
    b.type = "button";
    b.addEventListener("click", onclick);
    return b;
  }
  function sendMessage(cid, text) {
    counter += 1;
    var id = "d-" + Date.now().toString(36) + "-" + counter + "-" + Math.random().toString(36).slice(2, 8);
    pending[id] = { cid: cid, text: text };
    var box = held[cid].lines;
    var p = el("p", null, "agent pending");
    p.dataset.id = id;
    p.appendChild(el("span", "you: ", "who"));
    p.appendChild(document.createTextNode(text));
    p.appendChild(el("span", "", "state"));
    box.appendChild(p);
    box.scrollTop = box.scrollHeight;
    send({ type: "send", conversation_id: cid, text: text, id: id });
  }
  function activate(cid, ctx) {
    document.getElementById("waiting").style.display = "none";
    var pop = document.querySelector("article.pop[data-conversation='" + cid + "']");
    if (pop) { pop.remove(); }
    var customer = ctx.customer || {};
    var entry = held[cid];
    if (!entry) {
      var art = el("article", null, "conversation");
      art.dataset.conversation = cid;
      art.appendChild(el("h2", (customer.name || customer.caller_id || "Customer") + " \u00b7 " + ((ctx.channels || []).slice(-1)[0] || ""), "customer-name"));
      art.appendChild(details(ctx));
      art.appendChild(steps(ctx));
      var whispers = el("div", null, "whispers");
      art.appendChild(whispers);
      var lines = el("div", null, "transcript");
      art.appendChild(lines);
      var typing = el("div", "", "typing");
      art.appendChild(typing);
      var composer = el("form", null, "composer");
      var input = el("input");
      input.placeholder = "Type to the customer";
      input.setAttribute("aria-label", "Message to the customer");
      var last = 0;
      input.addEventListener("input", function () {
        var now = Date.now();
        if (now - last > 2000) { last = now; send({ type: "typing", conversation_id: cid }); }
      });
      composer.appendChild(input);
      composer.appendChild(el("button", "Send", "send"));
      composer.addEventListener("submit", function (ev) {
        ev.preventDefault();
        if (input.value.trim()) { sendMessage(cid, input.value); input.value = ""; }
      });
      art.appendChild(composer);
      var tools = el("div", null, "tools");
      var follow = el("fieldset");
      follow.appendChild(el("legend", "Follow-up"));
      var purpose = select(["track_order", "complete_form", "upload_document"]);
      purpose.className = "purpose";
      follow.appendChild(purpose);
      follow.appendChild(button("Link in chat", "follow-link", function () { send({ type: "follow_up", conversation_id: cid, via: "link", purpose: purpose.value }); }));
      follow.appendChild(button("SMS", "follow-sms", function () { send({ type: "follow_up", conversation_id: cid, via: "sms", purpose: purpose.value }); }));
      tools.appendChild(follow);
      var back = el("fieldset");
      back.appendChild(el("legend", "Hand back to the bot"));
      var journey = select(Object.keys(journeys));
      journey.className = "journey";
      var step = select([]);
      step.className = "step";
      function fillSteps() {
        step.innerHTML = "";
        (journeys[journey.value] || []).forEach(function (s) { var o = el("option", s); o.value = s; step.appendChild(o); });
      }
      journey.addEventListener("change", fillSteps);
      if (ctx.journey && journeys[ctx.journey]) { journey.value = ctx.journey; }
      fillSteps();
      back.appendChild(journey);
      back.appendChild(step);
      back.appendChild(button("Hand back", "hand-back", function () { send({ type: "hand_back", conversation_id: cid, journey: journey.value, step: step.value }); }));
      tools.appendChild(back);
      var close = el("fieldset");
      close.appendChild(el("legend", "Close"));
      var code = select(dispositions);
      code.className = "disposition";
      var notes = el("input");
      notes.className = "notes";
      notes.placeholder = "Notes";
      close.appendChild(code);
      close.appendChild(notes);
      close.appendChild(button("Close", "close", function () { send({ type: "close", conversation_id: cid, code: code.value, notes: notes.value }); }));
      tools.appendChild(close);
      art.appendChild(tools);
      document.getElementById("conversations").insertBefore(art, document.getElementById("conversations").firstChild);
      entry = held[cid] = { art: art, seqs: {}, lines: lines, typing: typing, whispers: whispers };
    }
    (ctx.transcript || []).forEach(function (line) { addLine(entry.lines, line, entry.seqs); });
    // what was typed before a reconnect and not confirmed goes again (same id: kept once)
    Object.keys(pending).forEach(function (id) {
      if (pending[id].cid === cid) { send({ type: "send", conversation_id: cid, text: pending[id].text, id: id }); }
    });
  }
  function release(cid, reason) {
    var entry = held[cid];
    if (!entry) { return; }
    entry.art.querySelectorAll("button, input, select").forEach(function (x) { x.disabled = true; });
    entry.art.appendChild(el("p", "Released: " + reason.replace(/_/g, " "), "notice"));
    entry.art.classList.add("released");
    entry.art.removeAttribute("data-conversation");
    entry.art.dataset.released = cid;
    delete held[cid];
    setTimeout(function () { entry.art.remove(); }, 8000);
  }
  function mark(id, state) {
    document.querySelectorAll(".transcript p[data-id='" + id + "']").forEach(function (p) {
      p.classList.remove("pending");
      p.classList.add(state);
    });
    if (state === "sent" || state === "delivered") { delete pending[id]; }
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + window.location.host + "/agent/ws");
    ws.onopen = function () { retry = 500; document.getElementById("conn").textContent = "connected"; ready(); };
    ws.onmessage = function (ev) {
      var frame = JSON.parse(ev.data);
      var entry = held[frame.conversation_id];
      switch (frame.type) {
        case "welcome":
          me = frame.agent_id;
          dispositions = frame.dispositions || [];
          journeys = frame.journeys || {};
          document.getElementById("agent-id").textContent = frame.agent_id;
          document.getElementById("role").textContent = "(" + frame.role + (frame.queues && frame.queues.length ?
            "; queues " + frame.queues.join(", ") : "") + ")";
          if ((frame.role === "supervisor" || frame.role === "admin") && !document.getElementById("to-supervisor")) {
            var link = el("a", "Supervisor page");
            link.href = "/supervisor";
            link.id = "to-supervisor";
            document.getElementById("me").insertBefore(link, document.getElementById("presence"));
          }
          break;
        case "ready":
          document.getElementById("presence-state").textContent = (frame.available ? "Available" : "Away") +
            " \u2014 skills: " + frame.skills.join(", ") + "; languages: " + frame.languages.join(", ");
          document.body.dataset.ready = "yes";
          break;
        case "queue": showQueue(frame.entries); break;
        case "screen_pop": showPop(frame); break;
        case "active": activate(frame.conversation_id, frame.context || {}); break;
        case "lines":
          if (entry) { (frame.lines || []).forEach(function (line) { addLine(entry.lines, line, entry.seqs); }); entry.typing.textContent = ""; }
          break;
        case "typing":
          if (entry) {
            entry.typing.textContent = "The customer is typing\u2026";
            clearTimeout(entry.typingTimer);
            entry.typingTimer = setTimeout(function () { entry.typing.textContent = ""; }, 4000);
          }
          break;
        case "sent": mark(frame.id, "sent"); break;
        case "delivered": mark(frame.id, "delivered"); break;
        case "unsent": mark(frame.id, "unsent"); delete pending[frame.id]; break;
        case "whisper":
          if (entry) { entry.whispers.appendChild(el("p", "Whisper from " + frame.from + ": " + frame.text, "whisper")); }
          else { notice("Whisper from " + frame.from + ": " + frame.text); }
          break;
        case "released": release(frame.conversation_id, frame.reason); break;
        case "notice": notice(frame.text); break;
        case "refused":
          notice(frame.message);
          if (frame.conversation_id) {
            var pop = document.querySelector("article.pop[data-conversation='" + frame.conversation_id + "']");
            if (pop && frame.code === "taken") { pop.appendChild(el("p", frame.message, "refused")); }
          }
          document.getElementById("presence-state").textContent = frame.message;
          break;
      }
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
