// Supervisor page over /supervisor/ws (frames: gateway/agents/supervision.py): every live
// conversation, a watched conversation's transcript as it happens, take over, whisper, steer.
(function () {
  "use strict";
  var ws = null;
  var retry = 500;
  var me = "";
  var journeys = {};
  var rows = {};        // conversation id -> summary
  var watched = "";
  var seqs = {};
  var agents = [];

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function send(frame) { if (ws && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(frame)); } }
  function notice(text) { document.getElementById("notice").textContent = text; }
  function seconds(s) { s = Math.max(0, Math.round(s)); return s < 60 ? s + " s" : Math.floor(s / 60) + " min " + (s % 60) + " s"; }

  function renderLive() {
    var body = document.querySelector("#live tbody");
    body.innerHTML = "";
    Object.keys(rows).map(function (k) { return rows[k]; })
      .filter(function (r) { return r.status !== "closed"; })
      .sort(function (a, b) { return b.updated_at - a.updated_at; })
      .forEach(function (r) {
        var tr = el("tr", null, r.conversation_id === watched ? "watched" : "");
        tr.dataset.conversation = r.conversation_id;
        tr.appendChild(el("td", r.customer || r.conversation_id.slice(0, 8)));
        tr.appendChild(el("td", r.channel || (r.channels || []).join(",")));
        tr.appendChild(el("td", (r.journey || "") + (r.step ? " / " + r.step : "")));
        tr.appendChild(el("td", r.waiting ? "waiting" + (r.choice ? " (" + r.choice + ")" : "") : r.status));
        tr.appendChild(el("td", r.waiting ? seconds(Date.now() / 1000 - r.waiting_since) : ""));
        tr.appendChild(el("td", r.frustration ? r.frustration.toFixed(2) : "", r.frustration >= 0.5 ? "hot" : ""));
        tr.appendChild(el("td", r.agent || ""));
        tr.addEventListener("click", function () { watch(r.conversation_id); });
        body.appendChild(tr);
      });
  }
  function renderState(frame) {
    var body = document.querySelector("#queue tbody");
    body.innerHTML = "";
    frame.queue.forEach(function (e) {
      var tr = el("tr");
      tr.appendChild(el("td", e.customer || e.conversation_id.slice(0, 8)));
      tr.appendChild(el("td", e.queue));
      tr.appendChild(el("td", e.channel));
      tr.appendChild(el("td", seconds(e.waiting_seconds)));
      tr.appendChild(el("td", e.state + (e.taken_by ? " (" + e.taken_by + ")" : e.offered_to ? " (" + e.offered_to + ")" : "")));
      body.appendChild(tr);
    });
    agents = frame.agents || [];
    var ul = document.getElementById("agents");
    ul.innerHTML = "";
    agents.forEach(function (a) {
      ul.appendChild(el("li", a.agent_id + " (" + a.role + ", " + (a.available ? "available" : "away") + ", holds " + a.holding + ")"));
    });
    var select = document.getElementById("take-agent");
    var keep = select.value;
    select.innerHTML = "";
    var names = [me].concat(agents.map(function (a) { return a.agent_id; }).filter(function (n) { return n !== me; }));
    names.forEach(function (n) { var o = el("option", n === me ? n + " (me)" : n); o.value = n; select.appendChild(o); });
    if (keep) { select.value = keep; }
  }
  function line(box, l) {
    if (l.seq && seqs[l.seq]) { return; }
    if (l.seq) { seqs[l.seq] = true; }
    var p = el("p", null, l.who);
    p.appendChild(el("span", "[" + l.channel + "] " + l.who + (l.agent ? " " + l.agent : "") + ": ", "who"));
    p.appendChild(document.createTextNode(l.text));
    box.appendChild(p);
    box.scrollTop = box.scrollHeight;
  }
  function watch(cid) {
    watched = cid;
    seqs = {};
    document.getElementById("watch-transcript").innerHTML = "";
    document.getElementById("watch-title").textContent = "Loading\u2026";
    renderLive();
    send({ type: "watch", conversation_id: cid });
  }
  function steps(journey) {
    var select = document.getElementById("steer-step");
    select.innerHTML = "";
    (journeys[journey] || []).forEach(function (s) { var o = el("option", s); o.value = s; select.appendChild(o); });
  }
  function showWatched(frame) {
    var ctx = frame.context || {};
    var customer = ctx.customer || {};
    document.getElementById("watch-title").textContent = (customer.name || "Customer") + " \u00b7 " + (ctx.channels || []).join(" \u2192 ");
    document.getElementById("watch-where").textContent = "Journey " + (ctx.journey || "-") + ", step " + (ctx.step || "-") +
      " \u00b7 " + ctx.status + ((ctx.handoff || {}).agent ? " \u00b7 with " + ctx.handoff.agent : "") +
      " \u00b7 verified: " + (Object.keys(ctx.verified || {}).join(", ") || "no");
    var box = document.getElementById("watch-transcript");
    (ctx.transcript || []).forEach(function (l) { line(box, l); });
    document.getElementById("watch-tools").hidden = false;
    steps(ctx.journey);
  }

  document.getElementById("take-over").addEventListener("click", function () {
    send({ type: "take_over", conversation_id: watched, agent: document.getElementById("take-agent").value });
  });
  document.getElementById("whisper").addEventListener("click", function () {
    var input = document.getElementById("whisper-text");
    if (input.value.trim()) { send({ type: "whisper", conversation_id: watched, text: input.value }); input.value = ""; }
  });
  document.getElementById("steer").addEventListener("click", function () {
    var instruction = document.getElementById("steer-instruction").value;
    var frame = { type: "steer", conversation_id: watched, instruction: instruction };
    if (instruction === "goto") { frame.step = document.getElementById("steer-step").value; }
    send(frame);
  });

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + window.location.host + "/supervisor/ws");
    ws.onopen = function () { retry = 500; document.getElementById("conn").textContent = "connected"; };
    ws.onmessage = function (ev) {
      var frame = JSON.parse(ev.data);
      switch (frame.type) {
        case "welcome":
          me = frame.name;
          journeys = frame.journeys || {};
          document.getElementById("me").textContent = frame.name;
          document.body.dataset.ready = "yes";
          break;
        case "conversations":
          rows = {};
          frame.conversations.forEach(function (r) { rows[r.conversation_id] = r; });
          renderLive();
          if (watched) { watch(watched); }
          break;
        case "conversation":
          rows[frame.summary.conversation_id] = frame.summary;
          renderLive();
          if (frame.summary.conversation_id === watched) {
            document.getElementById("watch-where").textContent = "Journey " + (frame.summary.journey || "-") + ", step " +
              (frame.summary.step || "-") + " \u00b7 " + frame.summary.status + (frame.summary.agent ? " \u00b7 with " + frame.summary.agent : "");
            steps(frame.summary.journey);
          }
          break;
        case "state": renderState(frame); break;
        case "transcript": if (frame.conversation_id === watched) { showWatched(frame); } break;
        case "lines":
          if (frame.conversation_id === watched) {
            var box = document.getElementById("watch-transcript");
            (frame.lines || []).forEach(function (l) { line(box, l); });
          }
          break;
        case "done": notice("Done: " + frame.action.replace(/_/g, " ") + (frame.agent ? " (" + frame.agent + ")" : "")); break;
        case "refused": notice("Not done: " + frame.message); break;
      }
    };
    ws.onclose = function () {
      document.body.dataset.ready = "no";
      document.getElementById("conn").textContent = "disconnected, reconnecting\u2026";
      fetch("/supervisor", { credentials: "same-origin", cache: "no-store" }).then(function (r) {
        if (r.status === 401 || r.status === 403) { window.location.assign("/supervisor"); return; }
        setTimeout(connect, retry); retry = Math.min(retry * 2, 10000);
      }, function () { setTimeout(connect, retry); retry = Math.min(retry * 2, 10000); });
    };
  }
  setInterval(renderLive, 5000);  // waiting times move on
  connect();
})();
