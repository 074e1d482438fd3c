// A page that comes back with a form's errors puts focus on their summary, so a screen reader
// reads them and a keyboard user starts from the links to each field (role=alert alone is not
// reliably read when the page loads with it).
document.addEventListener("DOMContentLoaded", () => {
  const errors = document.getElementById("form-errors");
  if (errors) errors.focus();
});
