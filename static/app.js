// Errors from htmx requests (bad input, expired form, server down) are shown in the message bar.
(() => {
  const show = (text) => {
    const bar = document.getElementById("flash");
    if (!bar) return;
    const message = document.createElement("p");
    message.className = "flash error";
    message.setAttribute("role", "alert");
    message.textContent = text;
    bar.replaceChildren(message);
  };
  // Other scripts (grid.js) show their messages the same way.
  window.activelabel = { showError: show };

  document.addEventListener("htmx:responseError", (event) => {
    const xhr = event.detail.xhr;
    // The app answers htmx requests with a short plain-text message; anything else (a
    // proxy's or the WSGI server's HTML error page) is not shown raw.
    const type = xhr.getResponseHeader("Content-Type") || "";
    const text = type.startsWith("text/plain") ? xhr.responseText.trim() : "";
    show(text || `The server could not do that (error ${xhr.status}). Nothing was saved; try again or reload the page.`);
  });

  document.addEventListener("htmx:sendError", () => {
    show("The server cannot be reached. Your last answer was not saved; try again.");
  });

  document.addEventListener("htmx:afterRequest", (event) => {
    const bar = document.getElementById("flash");
    if (bar && event.detail.successful) bar.replaceChildren();
  });
})();
