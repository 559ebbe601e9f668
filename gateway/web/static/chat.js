// Web chat client: one WebSocket to /chat/ws, frames as described in gateway/digital/chat_protocol.py.
(function () {
  "use strict";
  var log = document.getElementById("log");
  var form = document.getElementById("composer");
  var input = document.getElementById("text");
  var counter = document.getElementById("counter");
  var status = document.getElementById("status");
  var maxChars = 2000;
  var ws = null;
  var sent = [];          // bubbles awaiting "accepted" or "refused", oldest first
  var retry = 500;
  var closedForGood = false;
  var lastSeq = 0;        // the last pushed frame seen (an agent's message, a hand-back's question)
  var withAgent = "";     // the agent holding the chat, if any
  var lastTyping = 0;
  var typingTimer = null;
  var counterId = 0;
  var typingBox = document.getElementById("typing");
  var queueBox = document.getElementById("queue-status");

  function seqKey() { return "voicegw-seq-" + (document.body.dataset.conversation || ""); }
  function newId() { counterId += 1; return "c-" + Date.now().toString(36) + "-" + counterId + "-" + Math.random().toString(36).slice(2, 8); }

  function bubble(cls, text) {
    var div = document.createElement("div");
    div.className = "msg " + cls;
    div.textContent = text || "";
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  function buttons(div, items) {
    var row = document.createElement("div");
    row.className = "actions";
    items.forEach(function (item) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = item.label;
      if (item.id) { b.id = item.id; }
      b.addEventListener("click", function () { item.onclick(b, row); });
      row.appendChild(b);
    });
    div.appendChild(row);
  }

  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { return false; }
    ws.send(JSON.stringify(frame));
    return true;
  }

  function sendText(text) {
    if (!text.trim()) { return; }
    if (text.length > maxChars) {
      bubble("refused", "Your message is " + text.length + " characters; the limit is " + maxChars + ". Please shorten or split it.");
      return;
    }
    var id = newId();
    if (!send({ type: "message", text: text, id: id })) {
      bubble("notice", "Not connected yet; your message is kept in the box.");
      input.value = text;
      return;
    }
    var div = bubble("me", input.type === "password" ? "\u2022\u2022\u2022\u2022" : text);
    div.dataset.text = text;
    div.dataset.id = id;
    sent.push(div);
    input.value = "";
    input.type = "text";
    updateCounter();
  }

  function updateCounter() {
    var n = input.value.length;
    counter.textContent = n > maxChars * 0.8 ? n + " / " + maxChars : "";
    counter.className = n > maxChars ? "over" : "";
  }

  function offerCall(frame) {
    var div = bubble("bot", frame.text || "Would you like us to call you?");
    buttons(div, [{ label: frame.number ? "Call me" : "Call me at\u2026", id: "call-me", onclick: function (b, row) {
      var number = frame.number;
      if (!number) {
        number = window.prompt("Number to call (for example +15551234567)") || "";
        if (!number) { return; }
      }
      if (send({ type: "accept_call", number: frame.number ? "" : number })) {
        row.querySelectorAll("button").forEach(function (x) { x.disabled = true; });
        bubble("me", "Yes, call me");
      }
    } }]);
  }

  function showTyping(name) {
    typingBox.textContent = (name || "The agent") + " is typing\u2026";
    clearTimeout(typingTimer);
    typingTimer = setTimeout(function () { typingBox.textContent = ""; }, 4000);
  }

  function showQueue(frame) {
    queueBox.innerHTML = "";
    var p = document.createElement("p");
    var text = "You are number " + frame.position + " in the queue for an agent";
    if (frame.wait_seconds >= 0) {
      text += " (about " + Math.max(1, Math.round(frame.wait_seconds / 60)) + " min)";
    }
    if (frame.mode === "callback") { text = "An agent will call you back (you are number " + frame.position + ")"; }
    if (frame.mode === "message") { text = "Your message is kept for an agent (you are number " + frame.position + ")"; }
    p.textContent = text + ".";
    queueBox.appendChild(p);
    if ((frame.choices || []).length) {
      buttons(queueBox, [
        { label: "Leave a message instead", id: "leave-message", onclick: function () { send({ type: "queue_choice", choice: "message" }); } },
        { label: "Call me back", id: "call-back", onclick: function () { send({ type: "queue_choice", choice: "callback" }); } }
      ]);
    }
    queueBox.hidden = false;
  }

  function pushed(frame) {
    // frames people sent carry their place in the log: one seen already (a replay) is dropped
    if (!frame.seq) { return true; }
    if (frame.seq <= lastSeq) { return false; }
    lastSeq = frame.seq;
    try { sessionStorage.setItem(seqKey(), String(lastSeq)); } catch (e) { /* private mode */ }
    return true;
  }

  function handle(frame) {
    if (!pushed(frame)) { return; }
    switch (frame.type) {
      case "session":
        status.textContent = frame.resumed ? "(welcome back)" : "";
        if (frame.max_message_chars) { maxChars = frame.max_message_chars; }
        document.body.dataset.conversation = frame.conversation_id;
        try { lastSeq = Math.max(lastSeq, parseInt(sessionStorage.getItem(seqKey()) || "0", 10) || 0); } catch (e) { /* private mode */ }
        if (window.location.search.indexOf("c=") >= 0 && window.history.replaceState) {
          window.history.replaceState(null, "", window.location.pathname);
        }
        break;
      case "say":
        bubble("bot", frame.text);
        break;
      case "ask":
        var div = bubble("bot", frame.text);
        var expect = frame.expect || {};
        input.type = expect.sensitive ? "password" : "text";
        var options = expect.kind === "yesno" ? ["yes", "no"] : (expect.kind === "choice" ? expect.options || [] : []);
        if (options.length) {
          buttons(div, options.map(function (o) { return { label: o, onclick: function () { sendText(o); } }; }));
        }
        break;
      case "offer_call":
        offerCall(frame);
        break;
      case "followup":
        var f = bubble("bot", frame.text + " ");
        if (frame.url) {
          var a = document.createElement("a");
          a.href = frame.url; a.textContent = frame.url; a.target = "_blank"; a.rel = "noopener";
          f.appendChild(a);
        }
        break;
      case "transfer":
        bubble("system", frame.text);
        break;
      case "hangup":
        bubble("system", "The conversation has ended. Thank you.");
        queueBox.hidden = true;
        withAgent = "";
        break;
      case "queue":
        showQueue(frame);
        break;
      case "agent_joined":
        withAgent = frame.name;
        queueBox.hidden = true;
        bubble("system", frame.name + " joined the conversation.");
        break;
      case "agent_message":
        typingBox.textContent = "";
        var m = bubble("agent", "");
        var who = document.createElement("span");
        who.className = "from";
        who.textContent = frame.name;
        m.appendChild(who);
        m.appendChild(document.createTextNode(frame.text));
        break;
      case "agent_left":
        withAgent = "";
        typingBox.textContent = "";
        bubble("system", frame.text);
        break;
      case "typing":
        showTyping(frame.name);
        break;
      case "seen":
        log.querySelectorAll(".msg.me").forEach(function (d) { if (d.dataset.id === frame.id) { d.classList.add("seen"); } });
        break;
      case "notice":
        bubble("notice", frame.text);
        break;
      case "accepted":
        var ok = sent.shift();
        if (ok) { ok.classList.add("delivered"); }
        break;
      case "refused":
        var bad = frame.text ? sent.shift() : null;
        if (bad) { bad.className = "msg refused"; bad.textContent = frame.text; }
        bubble("notice refusal", frame.message);
        if (frame.text && !input.value) { input.value = frame.text; updateCounter(); }
        break;
    }
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var params = new URLSearchParams(window.location.search);
    var query = [];
    if (params.get("c")) { query.push("c=" + encodeURIComponent(params.get("c"))); }
    if (lastSeq) { query.push("since=" + lastSeq); }
    var url = scheme + window.location.host + "/chat/ws" + (query.length ? "?" + query.join("&") : "");
    ws = new WebSocket(url);
    ws.onopen = function () { retry = 500; document.body.dataset.connected = "yes"; };
    ws.onmessage = function (ev) {
      try { handle(JSON.parse(ev.data)); } catch (e) { console.error("bad frame", e); }
    };
    ws.onclose = function (ev) {
      document.body.dataset.connected = "no";
      // messages not acknowledged go again (same id: kept once) when the chat is back
      var unsent = sent;
      sent = [];
      if (ev.code === 1008 || ev.code === 1009) {
        unsent.forEach(function (div) { if (!input.value) { input.value = div.dataset.text || ""; } div.classList.add("refused"); });
      } else {
        window.setTimeout(function () { resend(unsent); }, 0);
      }
      if (ev.code === 1008 || ev.code === 1009) {
        closedForGood = true;
        bubble("notice", "The chat was closed: " + (ev.reason || "too many messages") + ". Reload the page to continue.");
        return;
      }
      if (!closedForGood) { setTimeout(connect, retry); retry = Math.min(retry * 2, 10000); }
    };
  }

  function resend(divs) {
    if (!divs.length || closedForGood) { return; }
    if (!ws || ws.readyState !== WebSocket.OPEN) { window.setTimeout(function () { resend(divs); }, 300); return; }
    divs.forEach(function (div) {
      if (send({ type: "message", text: div.dataset.text || "", id: div.dataset.id })) { sent.push(div); }
    });
  }

  form.addEventListener("submit", function (ev) { ev.preventDefault(); sendText(input.value); });
  input.addEventListener("input", function () {
    updateCounter();
    var now = Date.now();
    if (withAgent && now - lastTyping > 2000) { lastTyping = now; send({ type: "typing" }); }
  });
  connect();
})();
