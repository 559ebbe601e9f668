// Drop the gateway's chat into any page:
//   <script src="http://GATEWAY:8080/chat/embed.js" async></script>
// Adds a "Chat with us" button that opens the chat in a frame served by the gateway.
(function () {
  "use strict";
  var script = document.currentScript;
  var origin = script ? new URL(script.src).origin : window.location.origin;
  function make() {
    if (document.getElementById("voicegw-chat-button")) { return; }
    var button = document.createElement("button");
    button.id = "voicegw-chat-button";
    button.textContent = "Chat with us";
    button.style.cssText = "position:fixed;right:1rem;bottom:1rem;z-index:2147483646;padding:.7rem 1.1rem;" +
      "border:0;border-radius:999px;background:#1f6feb;color:#fff;font:16px system-ui,sans-serif;cursor:pointer;";
    var frame = document.createElement("iframe");
    frame.id = "voicegw-chat-frame";
    frame.title = "Chat";
    frame.style.cssText = "position:fixed;right:1rem;bottom:4.5rem;z-index:2147483647;width:min(24rem,92vw);" +
      "height:min(34rem,75vh);border:0;border-radius:12px;box-shadow:0 4px 24px rgba(0,0,0,.2);display:none;background:#fff;";
    button.addEventListener("click", function () {
      if (!frame.src) { frame.src = origin + "/chat"; }
      frame.style.display = frame.style.display === "none" ? "block" : "none";
    });
    document.body.appendChild(frame);
    document.body.appendChild(button);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", make); } else { make(); }
})();
