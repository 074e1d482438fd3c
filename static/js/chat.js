// The live chat's small behaviours on top of htmx's ws extension. The page works without them:
// every form also posts normally.
(() => {
  if (window.imbueChat) return;
  window.imbueChat = true;

  let handledSeq = null; // the last "message saved" confirmation acted on

  const $ = (id) => document.getElementById(id);

  function updateCounter() {
    const box = $("message-text");
    const counter = $("message-count");
    if (!box || !counter) return;
    const max = Number(counter.dataset.max || box.maxLength || 0);
    const left = max - box.value.length;
    counter.textContent = `${box.value.length} of ${max} characters`;
    counter.classList.toggle("counter-near", left < max * 0.1);
  }

  // The server says whether a message can be sent now (no reply in flight, not ended).
  function syncSendButton() {
    const state = document.querySelector("#message-status [data-can-send]");
    const button = $("send-button");
    if (state && button) button.disabled = state.dataset.canSend !== "1";
  }

  // Keep the newest message in view unless the reader has scrolled up to read older ones.
  let pinned = true;
  function keepScrolled() {
    const log = $("transcript");
    if (log && pinned) log.scrollTop = log.scrollHeight;
  }
  document.addEventListener(
    "scroll",
    (event) => {
      const log = event.target;
      if (log && log.id === "transcript") {
        pinned = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      }
    },
    true,
  );

  // Clear the draft only once the server confirms the message is stored.
  function clearIfSaved() {
    const sent = $("message-sent");
    const seq = sent && sent.dataset.seq;
    if (!seq || seq === handledSeq) return;
    handledSeq = seq;
    const box = $("message-text");
    if (box) {
      box.value = "";
      updateCounter();
    }
    // Each message starts with a fresh, deliberate choice of skills.
    document
      .querySelectorAll("#chat-form input[name=strategies]")
      .forEach((input) => (input.checked = false));
    const suggestion = $("suggestion");
    if (suggestion) suggestion.textContent = "";
    pinned = true;
    keepScrolled();
  }

  // One click, one message: Send waits for the server's next word on whether it may send again.
  document.addEventListener("htmx:wsBeforeSend", (event) => {
    if (event.target.id === "chat-form" && $("send-button")) $("send-button").disabled = true;
  });
  document.addEventListener("htmx:wsAfterMessage", () => {
    clearIfSaved();
    syncSendButton();
    keepScrolled();
  });
  // The socket's state on the chat element: for styling, and for tests to wait on.
  document.addEventListener("htmx:wsOpen", (event) => {
    if (event.target.id === "chat") event.target.dataset.socket = "open";
    syncSendButton();
  });
  document.addEventListener("htmx:wsClose", (event) => {
    if (event.target.id === "chat") event.target.dataset.socket = "closed";
  });
  document.addEventListener("input", (event) => {
    if (event.target && event.target.id === "message-text") updateCounter();
  });
  // Ctrl+Enter (Cmd+Enter on a Mac) sends; Enter alone makes a new line.
  document.addEventListener("keydown", (event) => {
    if (event.target.id !== "message-text" || event.key !== "Enter") return;
    if (!(event.ctrlKey || event.metaKey)) return;
    event.preventDefault();
    const form = $("chat-form");
    if (form && !$("send-button").disabled) form.requestSubmit();
  });
  document.addEventListener("DOMContentLoaded", () => {
    handledSeq = ($("message-sent") && $("message-sent").dataset.seq) || null;
    updateCounter();
    keepScrolled();
    const worksheet = $("worksheet");
    if (worksheet && window.matchMedia("(min-width: 60rem)").matches) worksheet.open = true;
  });
})();
