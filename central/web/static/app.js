// Draws every chart whose data the server rendered as <script type="application/json" data-chart>.
// The numbers are also in the table next to each chart (and downloadable as CSV).
(function () {
  "use strict";
  var palette = ["#1f4e79", "#c0504d", "#2e8540", "#8064a2", "#d98b00", "#4bacc6"];
  function draw(root) {
    if (typeof Chart === "undefined") { return; }
    root.querySelectorAll("script[data-chart]").forEach(function (node) {
      var canvas = document.getElementById(node.dataset.chart);
      if (!canvas || canvas.dataset.drawn) { return; }
      var spec = JSON.parse(node.textContent);
      var datasets = spec.datasets.map(function (d, i) {
        var colour = palette[i % palette.length];
        var est = d.estimated || [];
        return {
          label: d.label, data: d.data, borderColor: colour, tension: 0.1, pointRadius: spec.type === "line" ? 2 : 0,
          // Estimated buckets are drawn pale so they are not mistaken for measured figures.
          backgroundColor: d.data.map(function (_v, j) { return est[j] ? colour + "55" : colour; })
        };
      });
      canvas.dataset.drawn = "1";
      new Chart(canvas, {
        type: spec.type, data: { labels: spec.labels, datasets: datasets },
        options: { responsive: true, maintainAspectRatio: false, animation: false,
                   scales: { y: { beginAtZero: spec.type === "bar", title: { display: !!spec.unit, text: spec.unit } } } }
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:load", function (e) { draw(e.target); });
})();
