// The feedback panel's small behaviours: "Use this version", telling the server when finished
// feedback is on screen (request-to-display latency), and showing refused requests' messages.
(() => {
  if (window.imbueFeedback) return; // the slot may be swapped in again; listen only once
  window.imbueFeedback = true;

  const PANEL = "feedback-panel-body";
  const STATUS = "feedback-status";
  const FLAG = "feedback-used-rewrite";
  let socket = null; // the feedback socket (htmx ws extension's wrapper)
  const reported = new Set();

  const draftBox = () =>
    document.querySelector("#chat-form textarea[name='text']") ||
    document.querySelector("#chat-form textarea");
  const isFeedbackSocket = (event) =>
    event.detail && event.detail.elt && event.detail.elt.matches("[data-feedback-socket]");

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-feedback-rewrite]");
    const box = button && draftBox();
    if (!box) return;
    box.value = button.dataset.feedbackRewrite;
    box.dispatchEvent(new Event("input", { bubbles: true }));
    const flag = document.getElementById(FLAG);
    if (flag) flag.value = "1";
    box.focus();
  });

  function reportViewed() {
    const panel = document.getElementById(PANEL);
    if (!panel || panel.dataset.state !== "final" || !socket) return;
    const id = panel.dataset.requestId;
    if (!id || reported.has(id) || document.visibilityState !== "visible") return;
    reported.add(id);
    // After the next paint: the moment the learner can actually see it.
    requestAnimationFrame(() =>
      socket.send(JSON.stringify({ action: "viewed", request_id: Number(id) })),
    );
  }

  // "Get feedback" asks over the feedback socket while it is open: the same fields as the
  // button's HTTP request (its hx-post, used whenever the socket is not open), without an HTTP
  // request per draft. The answer is the panel (or a refusal's message) the socket sends next.
  // The draft stays in the box whatever happens; a socket that closes first ends the wait (its
  // next connection sends the newest panel of this draft, if the request was made).
  const ASK_TIMEOUT_MS = 20000;
  let asking = null;
  function doneAsking() {
    if (!asking) return;
    clearTimeout(asking.timer);
    asking.button.disabled = false;
    asking.button.removeAttribute("aria-busy");
    asking = null;
  }
  document.addEventListener("htmx:confirm", (event) => {
    const button = event.detail.elt;
    const form = document.getElementById("chat-form");
    if (!button || button.id !== "feedback-button" || !socket || !form) return;
    event.preventDefault();
    if (asking) return; // one request at a time, as hx-disabled-elt keeps it over HTTP
    const fields = new FormData(form);
    const flag = document.getElementById(FLAG);
    socket.send(
      JSON.stringify({
        action: "request",
        text: fields.get("text") || "",
        strategies: fields.getAll("strategies"),
        used_rewrite: flag ? flag.value : "",
      }),
    );
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    asking = { button, timer: setTimeout(doneAsking, ASK_TIMEOUT_MS) };
  });
  document.addEventListener("htmx:wsAfterMessage", (event) => {
    if (isFeedbackSocket(event)) doneAsking();
  });

  // The slot says whether its socket is open (data-socket), for styles and tests alike.
  document.addEventListener("htmx:wsOpen", (event) => {
    if (!isFeedbackSocket(event)) return;
    socket = event.detail.socketWrapper;
    event.detail.elt.dataset.socket = "open";
    reportViewed();
  });
  document.addEventListener("htmx:wsClose", (event) => {
    if (!isFeedbackSocket(event)) return;
    socket = null;
    event.detail.elt.dataset.socket = "closed";
    doneAsking();
  });
  // The panel is not a live region (a screen reader would read all of it again at each of its
  // updates): its short status ("Quick check ready: 2 skills to work on...") goes to the slot's
  // one polite status line, once per change of request or state. A socket that reconnects and
  // sends the panel already shown says nothing new.
  let announced = null;
  const panelKey = (panel) =>
    `${panel.dataset.requestId || ""}|${panel.dataset.state || ""}|${panel.dataset.announce || ""}`;
  let announcing = null;
  function announce() {
    const panel = document.getElementById(PANEL);
    const status = document.getElementById(STATUS);
    if (!panel || !status) return;
    const key = panelKey(panel);
    if (key === announced) return;
    announced = key;
    const text = panel.dataset.announce;
    if (!text) return;
    // Emptied first: the same words for a new request are still a change to read out.
    clearTimeout(announcing);
    status.textContent = "";
    announcing = setTimeout(() => (status.textContent = text), 100);
  }

  document.addEventListener("htmx:wsAfterMessage", reportViewed);
  document.addEventListener("htmx:afterSettle", reportViewed);
  document.addEventListener("htmx:wsAfterMessage", announce);
  document.addEventListener("htmx:afterSettle", announce);
  document.addEventListener("htmx:oobAfterSwap", announce);
  document.addEventListener("visibilitychange", reportViewed);

  document.addEventListener("htmx:beforeSwap", (event) => {
    const target = event.detail.target;
    if (!target || target.id !== PANEL) return;
    // A refused request (empty draft, no strategy, too long) answers 422 with a message to show.
    if (event.detail.xhr.status === 422) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
      return;
    }
    // A fast expert answer can beat the quick check's HTTP response over the socket: keep it.
    const incoming = /data-request-id="(\d+)"/.exec(event.detail.serverResponse || "");
    if (incoming && target.dataset.requestId === incoming[1] && target.dataset.state === "final") {
      event.detail.shouldSwap = false;
    }
  });

  // A stored message (the chat confirms it in #message-sent) ends the turn: the next draft starts
  // with a clean panel and no rewrite flag.
  let sentSeq = null;
  function resetIfSent() {
    const sent = document.getElementById("message-sent");
    const seq = sent && sent.dataset.seq;
    if (!seq || seq === sentSeq) return;
    sentSeq = seq;
    const flag = document.getElementById(FLAG);
    if (flag) flag.value = "";
    const panel = document.getElementById(PANEL);
    if (panel && panel.dataset.state !== "empty") {
      panel.dataset.state = "empty";
      panel.removeAttribute("data-request-id");
      panel.removeAttribute("data-announce");
      panel.innerHTML = '<p class="hint">No feedback on this message yet.</p>';
    }
  }
  document.addEventListener("htmx:wsAfterMessage", resetIfSent);
  document.addEventListener("DOMContentLoaded", () => {
    const sent = document.getElementById("message-sent");
    sentSeq = (sent && sent.dataset.seq) || null;
    const panel = document.getElementById(PANEL);
    if (panel) announced = panelKey(panel); // what the page loads with is not news
  });
})();
