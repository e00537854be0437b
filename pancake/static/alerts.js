// The unread count in the header follows /api/alerts/live, the signed-in
// member's own stream. Pages work without this script.
(function () {
  if (!window.EventSource) return;
  var badges = document.querySelectorAll("[data-unread]");
  if (!badges.length) return;
  var source = new EventSource("/api/alerts/live");
  source.onmessage = function (event) {
    var n = JSON.parse(event.data).unread;
    badges.forEach(function (b) {
      b.textContent = n > 0 ? "(" + n + " new)" : "";
      b.dataset.count = String(n);
    });
  };
})();
