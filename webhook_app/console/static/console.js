// The console's one script (no inline scripts: CSP).

// The sign-in goes back to the page that sent here, its #fragment included: the MLflow UI's pages
// live in the fragment (#/experiments/1/runs/...), which a browser keeps across a redirect but never
// sends to a server, so the server's `next` lacks it.
(function () {
  var next = document.querySelector("form input[name=next]");
  if (next && next.value && window.location.hash && next.value.indexOf("#") < 0) {
    next.value += window.location.hash;
  }
})();

// The copy button of a new API key.
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) return;
  var field = document.getElementById(button.getAttribute("data-copy"));
  if (!field) return;
  field.select();
  var copied = false;
  try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).catch(function () {});
    copied = true;
  }
  button.textContent = copied ? "Copied" : "Press Ctrl+C";
});
