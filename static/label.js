// Keyboard labeling: each button on the card carries its key in data-key (1-9 and letters
// for classes, s skip, u unsure, z undo); Backspace is undo too.
(() => {
  let shownAt = performance.now();
  // A key pressed while the card's request is on its way is ignored: it would act on the
  // card being replaced (an undo would take back the answer before the one just given).
  // Requests are told apart by their XMLHttpRequest: when one ends, its form has been
  // swapped out and htmx reports the event on another element.
  const pending = new Set();

  const markShown = () => { shownAt = performance.now(); };
  document.addEventListener("DOMContentLoaded", markShown);
  document.addEventListener("htmx:afterSwap", markShown);

  document.addEventListener("htmx:beforeSend", (event) => {
    const elt = event.detail.elt;
    if (elt && elt.closest && elt.closest("#card")) pending.add(event.detail.xhr);
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    if (!pending.delete(event.detail.xhr)) return;
    // On an error the card stays: let its buttons look pressable again.
    document.querySelectorAll("#card button.pressed").forEach((b) => b.classList.remove("pressed"));
  });

  // Send how long the image was on screen with each answer.
  document.addEventListener("htmx:configRequest", (event) => {
    if (event.detail.elt.matches && event.detail.elt.matches("form.choices")) {
      event.detail.parameters.elapsed_ms = Math.round(performance.now() - shownAt);
    }
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || event.isComposing) return;
    if (event.target.closest && event.target.closest("input:not([type=checkbox]), textarea, select, [contenteditable]")) return;
    const key = event.key === "Backspace" ? "z" : event.key.toLowerCase();
    const button = document.querySelector(`#card button[data-key="${CSS.escape(key)}"]`);
    if (!button) return;
    event.preventDefault(); // Backspace must never navigate back
    for (const xhr of pending) if (xhr.readyState === XMLHttpRequest.DONE) pending.delete(xhr);
    if (button.disabled || pending.size > 0) return;
    // htmx wires a swapped-in card up only when it settles (20 ms later); a key pressed
    // before that would submit the form natively (a page load, the answer lost).
    if (window.htmx) window.htmx.process(button.closest("#card"));
    button.classList.add("pressed");
    button.click();
  });
})();
