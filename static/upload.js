// The admin page's upload panel (templates/_upload.html). htmx sends the form; this moves the
// progress bar with the bytes sent, says what the server is doing after the last one, shows
// a refusal in the panel (far down the page, the message bar is out of sight), and hands
// files dropped on the zone to the form's file input and sends them.
(() => {
  const inUploadForm = (event) =>
    event.target instanceof Element && event.target.closest("#upload-form") !== null;
  const dropZone = (event) =>
    event.target instanceof Element ? event.target.closest("#drop-zone") : null;
  const say = (text, failed = false) => {
    const state = document.getElementById("upload-state");
    if (!state) return;
    state.textContent = text;
    state.classList.toggle("failed", failed);
  };
  const megabytes = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

  document.addEventListener("dragover", (event) => {
    const zone = dropZone(event);
    if (!zone) return;
    event.preventDefault(); // else the browser opens the dropped file instead
    zone.classList.add("over");
  });
  document.addEventListener("dragleave", (event) => {
    const zone = dropZone(event);
    if (zone) zone.classList.remove("over");
  });
  document.addEventListener("drop", (event) => {
    const zone = dropZone(event);
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("over");
    const files = event.dataTransfer ? event.dataTransfer.files : null;
    if (!files || files.length === 0) return;
    zone.querySelector("input[type=file]").files = files;
    zone.closest("form").requestSubmit();
  });

  document.addEventListener("htmx:beforeRequest", (event) => {
    if (!inUploadForm(event)) return;
    const bar = document.getElementById("upload-progress");
    bar.value = 0;
    bar.hidden = false;
    say("Uploading…");
  });

  document.addEventListener("htmx:xhr:progress", (event) => {
    const { lengthComputable, loaded, total } = event.detail;
    if (!inUploadForm(event) || !lengthComputable || !total) return;
    const bar = document.getElementById("upload-progress");
    // htmx reports the answer's download as progress too, after the upload: the bar only
    // moves forward, so that second count never pulls it back.
    const percent = Math.floor((100 * loaded) / total);
    if (percent <= bar.value) return;
    bar.value = percent;
    say(percent < 100
      ? `Uploading… ${percent}% of ${megabytes(total)}`
      : `Uploaded ${megabytes(total)}; the server is checking every image and importing…`);
  });

  document.addEventListener("htmx:afterRequest", (event) => {
    if (!inUploadForm(event)) return;
    const xhr = event.detail.xhr;
    if (event.detail.successful) {
      say("Imported: the report is below.");
      event.target.closest("form").reset();
      return;
    }
    // Refused or failed: the panel shows why, not the previous upload's report.
    const result = document.getElementById("upload-result");
    if (result) result.replaceChildren();
    document.getElementById("upload-progress").hidden = true;
    if (xhr && xhr.status) {
      const type = xhr.getResponseHeader("Content-Type") || "";
      const text = type.startsWith("text/plain") ? xhr.responseText.trim() : "";
      say(text || `The upload failed (error ${xhr.status}); nothing was imported.`, true);
    } else {
      say("The server could not be reached; nothing was imported.", true);
    }
  });
})();
