// Progressive enhancement only: every page works without this file.
// Closes other open detail panels in the matrix when one is opened.
document.addEventListener("toggle", (event) => {
  const opened = event.target;
  if (!(opened instanceof HTMLDetailsElement) || !opened.classList.contains("cell") || !opened.open) {
    return;
  }
  for (const other of document.querySelectorAll("details.cell[open]")) {
    if (other !== opened) {
      other.open = false;
    }
  }
}, true);
