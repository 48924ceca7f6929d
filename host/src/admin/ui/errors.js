// Loaded first, as a classic script: collects every script error, failed resource,
// rejected promise, console.error and CSP violation of the page in
// window.__gatehouseErrors, so tests (and curious operators) can read them.
(function () {
  var errors = (window.__gatehouseErrors = []);
  function note(kind, text) {
    errors.push(kind + ": " + text);
  }
  window.addEventListener("error", function (e) {
    if (e.target && e.target !== window && (e.target.src || e.target.href)) note("resource", e.target.src || e.target.href);
    else note("error", (e.message || "?") + " at " + (e.filename || "?") + ":" + (e.lineno || 0));
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    note("rejection", String(e.reason && (e.reason.stack || e.reason.message) || e.reason));
  });
  document.addEventListener("securitypolicyviolation", function (e) {
    note("csp", e.violatedDirective + " " + e.blockedURI);
  });
  var original = console.error;
  console.error = function () {
    note("console", Array.prototype.map.call(arguments, String).join(" "));
    return original.apply(console, arguments);
  };
})();
