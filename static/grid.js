// Keyboard grids (cluster bootstrap and grid verify): the arrow keys move between the
// thumbnails, space toggles the focused one (it is a checkbox), Enter presses the grid's
// main button, and every other control on the card carries its key in data-key (class keys,
// s mixed, u order, z or Backspace undo). Works again after each htmx swap of #grid-card.
(() => {
  let shownAt = performance.now();
  const pending = new Set(); // requests of the card on their way: keys wait for them

  const card = () => document.getElementById("grid-card");
  const boxes = () => Array.from(document.querySelectorAll("#grid-card .thumbs input[type=checkbox]"));

  const say = (text) => window.activelabel.showError(text); // app.js, on every page

  // A fresh grid: focus its first thumbnail, so the arrows and space work at once and the
  // focus ring shows where they act. Once per card: htmx reports a swap more than once
  // (swap, then settle), and keys pressed in between must not be undone by a second call.
  const ready = () => {
    const current = card();
    if (!current || current.dataset.ready) return;
    current.dataset.ready = "1";
    shownAt = performance.now();
    const first = boxes()[0];
    if (first) first.focus({ preventScroll: true });
  };
  document.addEventListener("DOMContentLoaded", ready);
  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target && event.detail.target.id === "grid-card") ready();
    else if (card() && card().contains(event.detail.target)) ready();
  });
  document.addEventListener("htmx:load", (event) => {
    if (event.detail.elt && event.detail.elt.id === "grid-card") ready();
  });

  document.addEventListener("htmx:beforeSend", (event) => {
    const elt = event.detail.elt;
    if (elt && elt.closest && elt.closest("#grid-card")) pending.add(event.detail.xhr);
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    if (!pending.delete(event.detail.xhr)) return;
    document.querySelectorAll("#grid-card .pressed").forEach((b) => b.classList.remove("pressed"));
  });

  document.addEventListener("htmx:configRequest", (event) => {
    const elt = event.detail.elt;
    if (elt.matches && elt.matches("form.grid-form")) {
      event.detail.parameters.elapsed_ms = Math.round(performance.now() - shownAt);
    }
  });

  // How many thumbnails sit on one row, from where they are laid out.
  const columns = (list) => {
    if (list.length < 2) return 1;
    const top = list[0].parentElement.offsetTop;
    const index = list.findIndex((box) => box.parentElement.offsetTop !== top);
    return index === -1 ? list.length : index;
  };

  const move = (key) => {
    const list = boxes();
    if (!list.length) return false;
    let at = list.indexOf(document.activeElement);
    if (at === -1) { list[0].focus(); return true; }
    const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns(list), ArrowDown: columns(list) }[key];
    at = Math.max(0, Math.min(list.length - 1, at + step));
    list[at].focus();
    list[at].parentElement.scrollIntoView({ block: "nearest" });
    return true;
  };

  const busy = () => {
    for (const xhr of pending) if (xhr.readyState === XMLHttpRequest.DONE) pending.delete(xhr);
    return pending.size > 0;
  };

  const press = (control) => {
    if (control.disabled || busy()) return;
    // htmx wires a swapped-in card up when it settles; a key pressed before that would
    // submit the form natively (a page load).
    if (window.htmx) window.htmx.process(card());
    if (control.matches("input[type=radio]")) {
      control.checked = true;
      control.dispatchEvent(new Event("change", { bubbles: true }));
      return;
    }
    if (control.dataset.key === "Enter") {
      const form = control.closest("form");
      const picked = form && form.querySelector("input[name=class_id]:checked, input[type=hidden][name=class_id]");
      if (form && form.querySelector("input[type=radio][name=class_id]") && !picked) {
        say("Pick the cluster's class first: press its key or click it.");
        return;
      }
    }
    control.classList.add("pressed");
    control.click();
  };

  document.addEventListener("keydown", (event) => {
    if (!card() || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const target = event.target;
    if (target.closest && target.closest("input:not([type=checkbox]):not([type=radio]), textarea, select, [contenteditable]")) return;
    if (event.key.startsWith("Arrow")) {
      if (move(event.key)) event.preventDefault();
      return;
    }
    if (event.repeat) return;
    if (event.key === " ") {
      const list = boxes();
      if (list.includes(target)) return; // the checkbox toggles itself
      if (!list.length) return;
      event.preventDefault();
      const box = list[0];
      box.focus();
      box.click();
      return;
    }
    const key = event.key === "Enter" ? "Enter" : event.key === "Backspace" ? "z" : event.key.toLowerCase();
    const control = document.querySelector(`#grid-card [data-key="${CSS.escape(key)}"]`);
    if (!control) return;
    event.preventDefault(); // Backspace must never navigate back, Enter never submit natively
    press(control);
  });
})();
