// The quality and agreement pages: with a row of a keyed table focused (Tab or click), r
// presses its send-to-review button.
(() => {
  document.addEventListener("click", (event) => {
    const row = event.target.closest && event.target.closest("table[data-row-keys] tr[tabindex]");
    if (row && !event.target.closest("button, a, input")) row.focus();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "r" || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const row = document.activeElement && document.activeElement.closest &&
      document.activeElement.closest("table[data-row-keys] tr[tabindex]");
    const button = row && row.querySelector('button[data-key="r"]');
    if (!button) return;
    event.preventDefault();
    button.click();
    const next = row.nextElementSibling;
    if (next) next.focus();
  });
})();
