// The copy button of a new API key: the one script of the console (no inline scripts: CSP).
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
