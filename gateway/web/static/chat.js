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
    if (!send({ type: "message", text: text })) {
      bubble("notice", "Not connected yet; your message is kept in the box.");
      input.value = text;
      return;
    }
    var div = bubble("me", input.type === "password" ? "\u2022\u2022\u2022\u2022" : text);
    div.dataset.text = text;
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

  function handle(frame) {
    switch (frame.type) {
      case "session":
        status.textContent = frame.resumed ? "(welcome back)" : "";
        if (frame.max_message_chars) { maxChars = frame.max_message_chars; }
        document.body.dataset.conversation = frame.conversation_id;
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
    var url = scheme + window.location.host + "/chat/ws" + (params.get("c") ? "?c=" + encodeURIComponent(params.get("c")) : "");
    ws = new WebSocket(url);
    ws.onopen = function () { retry = 500; document.body.dataset.connected = "yes"; };
    ws.onmessage = function (ev) {
      try { handle(JSON.parse(ev.data)); } catch (e) { console.error("bad frame", e); }
    };
    ws.onclose = function (ev) {
      document.body.dataset.connected = "no";
      sent.forEach(function (div) { if (!input.value) { input.value = div.dataset.text || ""; } div.classList.add("refused"); });
      sent = [];
      if (ev.code === 1008 || ev.code === 1009) {
        closedForGood = true;
        bubble("notice", "The chat was closed: " + (ev.reason || "too many messages") + ". Reload the page to continue.");
        return;
      }
      if (!closedForGood) { setTimeout(connect, retry); retry = Math.min(retry * 2, 10000); }
    };
  }

  form.addEventListener("submit", function (ev) { ev.preventDefault(); sendText(input.value); });
  input.addEventListener("input", updateCounter);
  connect();
})();
