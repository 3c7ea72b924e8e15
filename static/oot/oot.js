// Progressive enhancement only: every page works without this file.
// A matrix cell's details panel closes when another one opens, on Escape,
// and on a click outside it.
"use strict";

function closeCells(except) {
  for (const cell of document.querySelectorAll("details.cell[open]")) {
    if (cell !== except) {
      cell.open = false;
    }
  }
}

document.addEventListener("toggle", (event) => {
  const opened = event.target;
  if (opened instanceof HTMLDetailsElement && opened.classList.contains("cell") && opened.open) {
    closeCells(opened);
  }
}, true);

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    closeCells(null);
  }
});

document.addEventListener("click", (event) => {
  if (!(event.target instanceof Element) || !event.target.closest("details.cell")) {
    closeCells(null);
  }
});
