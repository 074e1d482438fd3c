// Small progressive enhancements; every page works without them.
document.addEventListener("htmx:wsOpen", () => document.body.classList.remove("ws-offline"));
document.addEventListener("htmx:wsClose", () => document.body.classList.add("ws-offline"));
