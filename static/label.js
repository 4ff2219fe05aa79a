// Keyboard labeling: each button carries its key in data-key; Backspace is undo.
(() => {
  let shownAt = performance.now();

  const markShown = () => { shownAt = performance.now(); };
  document.addEventListener("DOMContentLoaded", markShown);
  document.addEventListener("htmx:afterSwap", markShown);

  // Send how long the image was on screen with each answer.
  document.addEventListener("htmx:configRequest", (event) => {
    if (event.detail.elt.matches && event.detail.elt.matches("form.choices")) {
      event.detail.parameters.elapsed_ms = Math.round(performance.now() - shownAt);
    }
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.target.closest && event.target.closest("input, textarea, select")) return;
    const key = event.key === "Backspace" ? "z" : event.key.toLowerCase();
    const button = document.querySelector(`#card button[data-key="${CSS.escape(key)}"]`);
    if (!button || button.disabled) return;
    event.preventDefault();
    button.classList.add("pressed");
    button.click();
  });
})();
