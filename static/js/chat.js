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

  // The draft is also kept in this tab's session storage until the server confirms it stored, so
  // a reload (the database away, a page that stopped answering) does not lose it. Session, not
  // local, storage: it goes with the tab, and nothing the learner wrote stays on a shared
  // computer.
  function draftKey() {
    const chat = $("chat");
    const path = chat && chat.getAttribute("ws-connect");
    return path ? `imbue-draft:${path}` : null;
  }
  function storeDraft() {
    const key = draftKey();
    const box = $("message-text");
    if (!key || !box) return;
    try {
      if (box.value) sessionStorage.setItem(key, box.value);
      else sessionStorage.removeItem(key);
    } catch (error) {
      // Storage full or switched off: the box itself still holds the draft.
    }
  }
  function forgetDraft() {
    const key = draftKey();
    try {
      if (key) sessionStorage.removeItem(key);
    } catch (error) {
      // As above.
    }
  }
  function restoreDraft() {
    const key = draftKey();
    const box = $("message-text");
    if (!key || !box || box.value) return; // the server's own draft (a refused post) wins
    let kept = null;
    try {
      kept = sessionStorage.getItem(key);
    } catch (error) {
      return;
    }
    if (!kept) return;
    // Stored after all (the page went before the confirmation came): it is in the transcript.
    const said = document.querySelectorAll("#transcript .msg-learner .msg-text");
    const last = said.length ? said[said.length - 1].textContent : "";
    const plain = (text) => text.replace(/\s+/g, " ").trim();
    if (last && plain(last) === plain(kept)) {
      forgetDraft();
      return;
    }
    box.value = kept;
    updateCounter();
  }

  // Clear the draft only once the server confirms the message is stored.
  function clearIfSaved() {
    if (!$("message-text")) forgetDraft(); // the conversation ended: nothing more to send
    const sent = $("message-sent");
    const seq = sent && sent.dataset.seq;
    if (!seq || seq === handledSeq) return;
    handledSeq = seq;
    forgetDraft();
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

  // Focus is never dropped to the page: a keyboard or screen-reader user who pressed Send, Get
  // feedback, Try again, a check-in or End would otherwise start again from the top. When the
  // control they were on is disabled or replaced, focus goes back to it (or to what replaced it,
  // by id) once it can take it again, else to the message box, else to the end-of-chat summary.
  // A click elsewhere on the page (the control still there and usable) is left alone.
  let lastFocused = null;
  let lost = null; // the control focus was on when it was disabled or removed
  let waiting = null; // the next look while that control is still disabled
  const inChat = (element) => element && element.closest && element.closest("#chat, .feedback-slot");
  const remember = (event) => {
    const control = event.type === "focusin" ? event.target : document.activeElement;
    if (inChat(control)) {
      lastFocused = control;
      lost = null;
    }
  };
  document.addEventListener("focusin", remember);
  // Also as a key or click acts (captured before htmx disables the control): a page in the
  // background gets no focus events.
  document.addEventListener("keydown", remember, true);
  document.addEventListener("click", remember, true);
  function usable(element) {
    return Boolean(element && element.isConnected && !element.disabled && element.offsetParent);
  }
  function keepFocus() {
    const active = document.activeElement;
    // Still where it was (the control may be disabled a moment later): `lost` is kept until the
    // learner's next focus, key or click.
    if (active && active !== document.body && active.isConnected) return;
    if (!lost && lastFocused && (!lastFocused.isConnected || lastFocused.disabled)) lost = lastFocused;
    if (!lost) return;
    const again = lost.isConnected ? lost : (lost.id && $(lost.id)) || null;
    if (usable(again)) {
      again.focus();
      return;
    }
    if (again && again.disabled) {
      // Enabled again when its request ends (htmx does that after its own events): look again.
      clearTimeout(waiting);
      waiting = setTimeout(keepFocus, 100);
      return;
    }
    const summary = $("summary-heading");
    const target = [$("message-text"), summary].find(usable);
    if (!target) return;
    if (target === summary) summary.setAttribute("tabindex", "-1");
    target.focus();
  }
  document.addEventListener("htmx:afterSettle", keepFocus);
  document.addEventListener("htmx:beforeRequest", (event) => {
    // The control that asks (Get feedback) is disabled while it does (hx-disabled-elt), which
    // drops its focus, and may be enabled again before a look sees it disabled.
    const asking = event.detail && event.detail.elt;
    if (asking && asking === lastFocused) lost = asking;
    setTimeout(keepFocus, 0);
  });
  document.addEventListener("htmx:afterRequest", () => setTimeout(keepFocus, 0));

  // The study's Continue box is polled until the conversation ends: the poll's answer replaces it
  // only when its status changed, and the status line beside it (a live region kept on the
  // page) takes the new words then, so a screen reader hears the change once, not every 3 s.
  document.addEventListener("htmx:beforeSwap", (event) => {
    const box = event.detail.target;
    if (!box || box.id !== "continue-box" || !event.detail.shouldSwap) return;
    const answer = document.createElement("template");
    answer.innerHTML = event.detail.serverResponse || "";
    const next = answer.content.getElementById("continue-box");
    if (next && next.dataset.status === box.dataset.status) event.detail.shouldSwap = false;
  });
  document.addEventListener("htmx:afterSettle", () => {
    const box = $("continue-box");
    const status = $("continue-hint");
    if (box && status && box.dataset.status && status.textContent.trim() !== box.dataset.status) {
      status.textContent = box.dataset.status;
    }
  });

  // One click, one message: Send waits for the server's next word on whether it may send again.
  document.addEventListener("htmx:wsBeforeSend", (event) => {
    const button = $("send-button");
    if (event.target.id !== "chat-form" || !button) return;
    // Disabling the focused button would drop focus: the message box takes it first.
    if (document.activeElement === button && usable($("message-text"))) $("message-text").focus();
    button.disabled = true;
  });
  document.addEventListener("htmx:wsAfterMessage", () => {
    clearIfSaved();
    syncSendButton();
    keepScrolled();
    keepFocus();
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
    if (event.target && event.target.id === "message-text") {
      updateCounter();
      storeDraft();
    }
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
    restoreDraft();
    updateCounter();
    keepScrolled();
    const worksheet = $("worksheet");
    if (worksheet && window.matchMedia("(min-width: 60rem)").matches) worksheet.open = true;
  });
})();
