// console.js — the only script of the Tandem console (served from /console/assets, CSP 'self').
// The cluster page follows /console/cluster/stream (server-sent events: the table, rendered and
// escaped by the server, once a second); the charts page draws /console/charts/data with uPlot.
'use strict';
(function () {
  var live = document.querySelector('[data-stream]');
  if (live && window.EventSource) {
    var es = new EventSource(live.getAttribute('data-stream'));
    es.onmessage = function (e) { live.innerHTML = e.data; live.setAttribute('data-updated', String(Date.now())); };
    es.addEventListener('expired', function () { es.close(); window.location.href = '/console/login'; });
  }

  var traffic = document.getElementById('chart-traffic');
  if (traffic && window.uPlot) {
    var width = function () { return Math.max(320, traffic.clientWidth || 800); };
    var plots = [];
    var draw = function (points) {
      var t = points.map(function (p) { return p.t / 1000; });
      var col = function (k) { return points.map(function (p) { return p[k]; }); };
      plots.forEach(function (p) { p.destroy(); });
      plots = [
        new uPlot({ width: width(), height: 260, series: [{}, { label: 'received', stroke: '#2563eb', width: 2 }, { label: 'delivered', stroke: '#16a34a', width: 2 },
          { label: 'deferred', stroke: '#d97706', width: 2 }, { label: 'bounced', stroke: '#dc2626', width: 2 }], axes: [{}, { label: 'per minute' }] },
        [t, col('received'), col('delivered'), col('deferred'), col('bounced')], traffic),
        new uPlot({ width: width(), height: 200, series: [{}, { label: 'queued', stroke: '#7c3aed', fill: 'rgba(124,58,237,0.12)', width: 2 }], axes: [{}, { label: 'messages' }] },
          [t, col('queue')], document.getElementById('chart-queue')),
      ];
      traffic.setAttribute('data-points', String(points.length));
    };
    var load = function () {
      fetch(traffic.getAttribute('data-src'), { credentials: 'same-origin' })
        .then(function (r) { if (r.status === 401) { window.location.href = '/console/login'; } return r.json(); })
        .then(draw).catch(function () {});
    };
    load();
    setInterval(load, 30000);
  }
})();
