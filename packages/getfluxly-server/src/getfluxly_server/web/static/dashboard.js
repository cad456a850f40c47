/* GetFluxly dashboard: the little the pages need beyond plain HTML forms (every page works
   without it, except the live preview). No dependencies, nothing fetched from elsewhere. */
(function () {
  "use strict";

  // The project picker: choosing a project opens its overview.
  document.querySelectorAll("form[data-project-pick] select").forEach(function (select) {
    select.addEventListener("change", function () {
      window.location.href = "/projects/" + encodeURIComponent(select.value);
    });
  });

  // Live preview: a form[data-preview] posts its fields (with its CSRF token) to its
  // data-preview URL as the author types; the answer fills the preview's parts.
  document.querySelectorAll("form[data-preview]").forEach(function (form) {
    var url = form.getAttribute("data-preview");
    var frame = document.getElementById("preview-html");
    var subject = document.getElementById("preview-subject");
    var text = document.getElementById("preview-text");
    var problems = document.getElementById("preview-problems");
    var timer = null;
    var sequence = 0;

    function show(answer) {
      subject.textContent = answer.subject || "";
      text.textContent = answer.text || "";
      frame.srcdoc = answer.html || "";
      var lines = [];
      if (answer.error) lines.push(answer.error);
      (answer.warnings || []).forEach(function (w) { lines.push(w); });
      problems.textContent = lines.join("\n");
      problems.hidden = lines.length === 0;
      form.setAttribute("data-preview-state", answer.error ? "error" : "ok");
    }

    function refresh() {
      var mine = ++sequence;
      var body = new URLSearchParams(new FormData(form));
      fetch(url, { method: "POST", body: body, credentials: "same-origin",
                   headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (answer) { if (mine === sequence) show(answer); })
        .catch(function () { problems.textContent = "The preview could not be loaded"; problems.hidden = false; });
    }

    form.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(refresh, 250);
    });
    refresh();
  });
})();

/* Segments: the builder's rows show the fields of what they test, and the live count of
   the unsaved rule (form[data-count] posts its fields to its data-count URL as the author
   types; the answer is {"count", "rule"} or {"error", "field"}). */
(function () {
  "use strict";

  document.querySelectorAll(".cond select[name$='_kind']").forEach(function (select) {
    select.addEventListener("change", function () {
      select.closest(".cond").setAttribute("data-kind", select.value);
    });
  });

  document.querySelectorAll("form[data-count]").forEach(function (form) {
    var url = form.getAttribute("data-count");
    var out = document.getElementById("segment-count");
    var problem = document.getElementById("segment-count-error");
    var json = document.getElementById("s-json");
    var timer = null;
    var sequence = 0;

    function fromBuilder() {
      var chosen = form.querySelector("input[name='source']:checked");
      return !chosen || chosen.value === "builder";
    }

    function refresh(event) {
      var mine = ++sequence;
      var body = new URLSearchParams(new FormData(form));
      fetch(url, { method: "POST", body: body, credentials: "same-origin",
                   headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (answer) {
          if (mine !== sequence) return;
          if (answer.error) {
            out.textContent = "—";
            problem.textContent = (answer.field ? answer.field + ": " : "") + answer.error;
            problem.hidden = false;
            form.setAttribute("data-count-state", "error");
            return;
          }
          out.textContent = String(answer.count);
          problem.hidden = true;
          // The builder's rule, shown as JSON (unless the author is typing the JSON).
          if (fromBuilder() && json && (!event || event.target !== json)) {
            json.value = JSON.stringify(answer.rule, null, 2);
          }
          form.setAttribute("data-count-state", "ok");
        })
        .catch(function () { problem.textContent = "The count could not be loaded"; problem.hidden = false; });
    }

    form.addEventListener("input", function (event) {
      clearTimeout(timer);
      timer = setTimeout(function () { refresh(event); }, 300);
    });
    form.addEventListener("change", function (event) {
      clearTimeout(timer);
      timer = setTimeout(function () { refresh(event); }, 300);
    });
    refresh(null);
  });
})();
