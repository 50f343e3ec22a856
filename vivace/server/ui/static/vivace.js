/*
 * vivace web UI: keeps the page of a run that is not final up to date, without a reload.
 *
 * The page's <main> carries data-* settings (see vivace/server/ui/live.py). Every poll-ms it asks
 * the run's live endpoint for its state, its change key and the log lines after the log cursor;
 * it appends those lines (as text, never as HTML), and when the change key differs it fetches
 * fresh HTML of the page's sections (rendered and escaped by the server's templates), no more
 * often than ten times what the last refresh took. It stops once the run is final, pauses while
 * the tab is hidden, and keeps at most max-log-lines lines so a chatty run cannot make the page
 * slow.
 */
(function () {
  "use strict";

  var page = document.querySelector("main[data-live-url]");
  if (!page || page.dataset.final === "true") {
    return;
  }
  var settings = page.dataset;
  var pollMs = Number(settings.pollMs) || 1500;
  var maxLines = Number(settings.maxLogLines) || 1000;
  // Sections are refreshed at most this often; a slow refresh (a huge run) widens the gap to ten
  // times what it took, so an open page never keeps the server busier than a tenth of its time.
  var sectionsEveryMs = 2 * pollMs;
  var logCursor = settings.logCursor || "";
  var changeKey = settings.changeKey;
  var lastSections = 0;
  var waitingForTab = false;

  var statusLine = document.querySelector("[data-live=status]");
  var badge = document.querySelector("[data-live=state]");
  var lines = document.getElementById("log-lines");
  var logView = document.getElementById("log-view");
  var emptyNote = document.getElementById("log-empty");
  var trimmedNote = document.getElementById("log-trimmed");

  function showStatus(text, stopped) {
    if (!statusLine) {
      return;
    }
    statusLine.hidden = false;
    statusLine.textContent = text;
    statusLine.classList.toggle("stopped", Boolean(stopped));
  }

  function schedule(ms) {
    window.setTimeout(function () {
      if (document.hidden) {
        waitingForTab = true;
      } else {
        poll();
      }
    }, ms);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && waitingForTab) {
      waitingForTab = false;
      poll();
    }
  });

  function isJson(response) {
    return (response.headers.get("content-type") || "").indexOf("application/json") === 0;
  }

  function getJson(url) {
    return fetch(url, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    }).then(function (response) {
      if (response.redirected) {
        throw new Stop("Live updates stopped: you were signed out. Reload to sign in again.");
      }
      if (!response.ok || !isJson(response)) {
        throw new Stop("Live updates stopped: the server answered " + response.status + ".");
      }
      return response.json();
    });
  }

  function Stop(message) {
    this.message = message;
  }

  function liveUrl() {
    var url = new URL(settings.liveUrl, window.location.href);
    if (logCursor) {
      url.searchParams.set("log_cursor", logCursor);
    } else if (settings.logAfter) {
      url.searchParams.set("after", settings.logAfter); // a long log: follow from the page's load
    }
    return url;
  }

  function sectionsUrl() {
    var url = new URL(settings.sectionsUrl, window.location.href);
    url.search = window.location.search; // the page's own filters and cursors
    return url;
  }

  function setState(type, name) {
    if (!badge) {
      return;
    }
    badge.className = "state state-" + type;
    badge.textContent = name;
    badge.title = type;
  }

  function logRow(line) {
    var row = document.createElement("tr");
    row.className = "level-" + line.level_name;
    var time = document.createElement("time");
    time.dateTime = line.time;
    time.title = line.time;
    time.textContent = line.time.slice(11, 23);
    var task = document.createElement("td");
    task.className = "log-task";
    if (line.task_run_id) {
      var link = document.createElement("a");
      link.href = settings.root + "/task-runs/" + encodeURIComponent(line.task_run_id);
      link.title = "task run " + line.task_run_id;
      link.textContent = line.name;
      task.appendChild(link);
    } else {
      task.textContent = line.name;
    }
    row.appendChild(cell("log-time", time));
    row.appendChild(cell("log-level", document.createTextNode(line.level_name)));
    row.appendChild(task);
    row.appendChild(cell("log-message", document.createTextNode(line.message)));
    return row;
  }

  function cell(className, content) {
    var td = document.createElement("td");
    td.className = className;
    td.appendChild(content);
    return td;
  }

  function appendLogs(newLines) {
    if (!lines || !newLines.length) {
      return;
    }
    var atBottom = logView.scrollHeight - logView.scrollTop - logView.clientHeight < 40;
    var batch = document.createDocumentFragment();
    newLines.forEach(function (line) {
      batch.appendChild(logRow(line));
    });
    lines.appendChild(batch);
    var extra = lines.rows.length - maxLines;
    if (extra > 0) {
      for (var i = 0; i < extra; i += 1) {
        lines.removeChild(lines.firstElementChild);
      }
      if (trimmedNote) {
        trimmedNote.hidden = false;
      }
    }
    if (emptyNote) {
      emptyNote.hidden = true;
    }
    if (atBottom) {
      logView.scrollTop = logView.scrollHeight;
    }
  }

  function refreshSections(force) {
    var now = Date.now();
    if (!force && now - lastSections < sectionsEveryMs) {
      return Promise.resolve(); // the key still differs, so a later poll does it
    }
    lastSections = now;
    return getJson(sectionsUrl()).then(function (answer) {
      sectionsEveryMs = Math.min(Math.max(2 * pollMs, 10 * (Date.now() - now)), 60000);
      Object.keys(answer.sections).forEach(function (name) {
        var holder = document.querySelector('[data-live-section="' + name + '"]');
        if (holder) {
          holder.innerHTML = answer.sections[name]; // server-rendered, escaped HTML
        }
      });
      changeKey = answer.change_key;
    });
  }

  function poll() {
    var update;
    getJson(liveUrl())
      .then(function (answer) {
        update = answer;
        appendLogs(update.logs);
        if (update.log_cursor) {
          logCursor = update.log_cursor;
        }
        setState(update.state_type, update.state_name);
        if (update.change_key !== changeKey) {
          return refreshSections(update.final);
        }
        return undefined;
      })
      .then(function () {
        if (update.final && !update.more_logs) {
          showStatus("The run is " + update.state_name.toLowerCase() + ": live updates ended.", true);
          return;
        }
        // A backlog of lines is fetched quickly, but never faster than 4 polls a second: a
        // chatty run must not turn every open tab into a stream of requests.
        schedule(update.more_logs ? 250 : pollMs);
      })
      .catch(function (error) {
        if (error instanceof Stop) {
          showStatus(error.message, true);
          return;
        }
        showStatus("Cannot reach the server; trying again.");
        schedule(pollMs * 2);
      });
  }

  showStatus("Live: this page updates while the run goes on.");
  schedule(pollMs);
})();
