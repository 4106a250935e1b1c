// Render the \( \) and \[ \] that pymdownx.arithmatex leaves in the page, with the bundled KaTeX.
// document$ is Material's page observable: it fires on the first load and on every instant navigation.
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,
  });
});
