// Errors from htmx requests (bad input, expired form) are shown in the message bar.
document.addEventListener("htmx:responseError", (event) => {
  const bar = document.getElementById("flash");
  if (!bar) return;
  const message = document.createElement("p");
  message.className = "flash error";
  message.textContent = event.detail.xhr.responseText || "The server could not do that.";
  bar.replaceChildren(message);
});
document.addEventListener("htmx:sendError", () => {
  const bar = document.getElementById("flash");
  if (!bar) return;
  const message = document.createElement("p");
  message.className = "flash error";
  message.textContent = "The server cannot be reached. Your last answer was not saved; try again.";
  bar.replaceChildren(message);
});
document.addEventListener("htmx:afterRequest", (event) => {
  const bar = document.getElementById("flash");
  if (bar && event.detail.successful) bar.replaceChildren();
});
