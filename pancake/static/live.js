// New notices appear without a reload. The page works without this script;
// it only adds what the server streams on /api/notices/live. Text goes in
// with textContent, never as markup.
(function () {
  if (!window.EventSource) return;
  var list = document.getElementById("notices");
  var count = document.getElementById("live-count");
  var empty = document.getElementById("no-notices");
  var source = new EventSource("/api/notices/live");
  // Marks the list as live once the stream is open (styles and tests use it).
  source.onopen = function () {
    list.dataset.live = "open";
  };
  source.onmessage = function (event) {
    var message = JSON.parse(event.data);
    var item = document.createElement("li");
    var title = document.createElement("h3");
    var body = document.createElement("p");
    title.textContent = message.notice.title;
    body.textContent = message.notice.body;
    item.append(title, body);
    list.prepend(item);
    if (empty) empty.remove();
    count.textContent = "(" + message.total + ", live)";
  };
})();
