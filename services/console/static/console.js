// Copy buttons: the only script of the console. Every page works without it.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent;
  // The clipboard API exists only in secure contexts (HTTPS, localhost).
  if (!navigator.clipboard) { button.textContent = "Select and copy"; return; }
  navigator.clipboard.writeText(text).then(
    () => { button.textContent = "Copied"; },
    () => { button.textContent = "Select and copy"; },
  );
});
