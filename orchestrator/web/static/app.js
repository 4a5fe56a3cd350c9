// The orchestrator's status page: plain JavaScript, no framework, no build.
//
// Reads the admin API from the same origin.  Live updates come from
// GET /api/v1/events/stream, read with fetch() and parsed here (EventSource
// cannot send the Authorization header); a dropped stream reconnects with
// Last-Event-ID.  The log view loads a process's recent lines once, then
// follows GET /api/v1/processes/{name}/logs/stream the same way (polling
// logs?lines= only when the stream is refused or overflows).  A token, when the API asks for one (401), is kept in
// sessionStorage and sent as "Authorization: Bearer", never in a URL.
'use strict';
(function () {
  const API = '/api/v1';
  const TOKEN_KEY = 'orchestrator.token';
  const MAX_EVENTS = 500;          // events kept in memory
  const SHOWN_EVENTS = 100;        // rows in the table
  const MAX_SSE_BUFFER = 1 << 20;  // bytes of one unfinished SSE message
  const LIST_EVERY = 5000;         // ms between status refreshes (probe times, latencies)
  const LOGS_EVERY = 2000;         // ms between log polls (when the log stream is unavailable)
  const LOG_LINES = 200;           // lines read when the log view opens (and per poll)
  const MAX_LOG_LINES = 2000;      // lines kept in the log view
  const SPARK_POINTS = 30;
  const SPARK_EVERY = 10000;       // ms: at most one latency read per process this often, on screen only
  const STATUSES = ['stopped', 'starting', 'running', 'unhealthy', 'crashed', 'stopping', 'unknown'];
  const TYPES = ['starting', 'running', 'unhealthy', 'crashed', 'exited', 'restart_scheduled', 'gave_up',
    'stopping', 'stopped', 'spawn_failed', 'restarted', 'config_reloaded', 'config_rejected'];

  const $ = (id) => document.getElementById(id);
  const state = {
    about: null, aboutAt: 0,
    procs: new Map(),     // name -> {data, at (performance.now() when read), card, health}
    pending: new Map(),   // name -> verb in flight
    events: [], lastId: 0,
    logView: null,        // the open log view: {name, lines, last, abort, timer, drawing}
    monitorOnly: false,
  };

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // -- the token ------------------------------------------------------------------------

  let asking = null;

  function authHeaders(extra) {
    const headers = Object.assign({ Accept: 'application/json' }, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = 'Bearer ' + token;
    return headers;
  }

  // Ask once for the token, however many requests were refused meanwhile.
  function askToken(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (asking) return asking;
    const dialog = $('login');
    $('login-error').textContent = message || '';
    asking = new Promise((resolve) => {
      const form = $('login-form');
      const submitted = (e) => {
        e.preventDefault();
        const value = $('login-token').value.trim();
        if (!value) return;
        sessionStorage.setItem(TOKEN_KEY, value);
        $('login-token').value = '';
        form.removeEventListener('submit', submitted);
        dialog.close();
        asking = null;
        resolve();
      };
      form.addEventListener('submit', submitted);
    });
    if (!dialog.open) dialog.showModal();
    $('login-token').focus();
    return asking;
  }
  $('login').addEventListener('cancel', (e) => e.preventDefault());  // nothing works without it

  // -- requests -------------------------------------------------------------------------

  async function readJSON(response) {
    try { return await response.json(); } catch (e) { return null; }
  }

  // fetch() with the token; a 401 asks for the token (once) and tries again.
  async function authFetch(path, options, extraHeaders) {
    for (;;) {
      const sent = sessionStorage.getItem(TOKEN_KEY);
      const response = await fetch(API + path, Object.assign({ headers: authHeaders(extraHeaders), cache: 'no-store' }, options));
      if (response.status !== 401) return response;
      const body = await readJSON(response);
      if (sessionStorage.getItem(TOKEN_KEY) !== sent && sessionStorage.getItem(TOKEN_KEY)) continue;  // a newer token came meanwhile
      await askToken(body && body.error);
    }
  }

  async function api(method, path) {
    const response = await authFetch(path, { method });
    const body = await readJSON(response);
    if (!response.ok) throw new HttpError(response.status, (body && body.error) || 'HTTP ' + response.status);
    return body;
  }

  function showNotice(text) {
    const notice = $('notice');
    notice.textContent = text || '';
    notice.hidden = !text;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // -- formatting -----------------------------------------------------------------------

  function duration(secs) {
    secs = Math.max(0, Math.floor(secs));
    const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24, m = Math.floor(secs / 60) % 60, s = secs % 60;
    if (d) return d + 'd ' + h + 'h ' + m + 'm';
    if (h) return h + 'h ' + m + 'm ' + s + 's';
    if (m) return m + 'm ' + s + 's';
    return s + 's';
  }
  const clock = (epoch) => new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
  const ms = (secs) => (secs * 1000).toFixed(secs < 0.01 ? 1 : 0) + ' ms';
  const elapsed = (at) => (performance.now() - at) / 1000;

  // -- the orchestrator ------------------------------------------------------------------

  function renderAbout() {
    const about = state.about;
    if (!about) return;
    $('version').textContent = about.version;
    $('uptime').textContent = duration(about.uptime_secs + elapsed(state.aboutAt));
    state.monitorOnly = about.monitor_only;
    $('mode').textContent = about.monitor_only ? 'monitor-only' : 'managing';
    const reason = $('mode-reason');
    reason.hidden = !about.monitor_only;
    reason.textContent = 'Monitor-only mode (orchestrator.enabled: false): processes are watched, ' +
      'never started, stopped or restarted from here.';
  }

  // -- processes --------------------------------------------------------------------------

  function card(name) {
    let proc = state.procs.get(name);
    if (!proc) {
      const node = $('card-template').content.firstElementChild.cloneNode(true);
      node.dataset.name = name;
      node.querySelector('.name').textContent = name;
      node.querySelectorAll('button[data-verb]').forEach((button) => {
        button.addEventListener('click', () => command(name, button.dataset.verb));
      });
      node.querySelector('.logs-button').addEventListener('click', () => openLogs(name));
      const note = node.querySelector('.note');
      note.id = 'note-' + name.replace(/[^A-Za-z0-9_-]/g, '_');
      node.querySelectorAll('button').forEach((b) => b.setAttribute('aria-describedby', note.id));
      proc = { data: null, at: 0, card: node, healthTotal: -1, sparkAt: 0, visible: !observer };
      state.procs.set(name, proc);
      if (observer) observer.observe(node);
      addOption($('filter-process'), name);
    }
    return proc;
  }

  function addOption(select, value) {
    if ([...select.options].some((o) => o.value === value)) return;
    const option = document.createElement('option');
    option.value = value;
    option.textContent = value;
    select.appendChild(option);
  }

  function setProcess(data) {
    const proc = card(data.name);
    const before = proc.data && proc.data.status;
    proc.data = data;
    proc.at = performance.now();
    renderProcess(proc);
    if (before && before !== data.status) announce(data.name + ': ' + before + ' → ' + data.status);
    refreshSpark(proc);
  }

  function renderProcess(proc) {
    const d = proc.data, node = proc.card;
    const q = (selector) => node.querySelector(selector);
    node.className = 'card s-' + d.status + (d.gave_up ? ' gave-up' : '');
    q('.status').textContent = d.status;
    q('.pid').textContent = d.pid == null ? '—' : String(d.pid);
    q('.restarts').textContent = String(d.restart_count);
    const health = d.health, last = health && health.last;
    const healthText = last
      ? d.last_health_check + ' · ' + ms(last.latency_secs) + ' · ' + clock(last.timestamp) +
        (last.healthy ? '' : ' (' + last.reason + ')')
      : d.last_health_check;
    q('.health').textContent = healthText;
    q('.health').classList.toggle('bad', d.last_health_check === 'unhealthy');
    const exit = d.last_exit;
    q('.exit').textContent = exit ? exit.description + ', cause: ' + exit.cause + ' (pid ' + exit.pid +
      ', at ' + clock(exit.at) + ')' : '—';
    tick(proc);
    renderActions(d.name, proc);
  }

  // Uptime and the restart countdown move between reads.
  function tick(proc) {
    const d = proc.data, node = proc.card, gone = elapsed(proc.at);
    node.querySelector('.uptime').textContent = d.pid == null ? '—' : duration(d.uptime_secs + gone);
    const restart = node.querySelector('.restart');
    let text = '—';
    if (d.gave_up) text = 'gave up after ' + d.attempts + ' of ' + d.max_attempts + ' attempts';
    else if (d.next_restart_in != null) text = 'in ' + Math.max(0, d.next_restart_in - gone).toFixed(1) + ' s';
    else if (d.attempts) text = d.attempts + ' of ' + d.max_attempts + ' attempts used';
    restart.textContent = text;
    restart.classList.toggle('bad', d.gave_up);
  }

  function renderActions(name, proc) {
    const pending = state.pending.get(name);
    const reason = state.monitorOnly ? 'Disabled: monitor-only mode (orchestrator.enabled: false).'
      : pending ? 'Disabled: ' + pending + ' pending…' : '';
    proc.card.querySelectorAll('button[data-verb]').forEach((button) => {
      button.disabled = Boolean(reason);
      button.title = reason;
    });
    const note = proc.card.querySelector('.note');
    if (reason) { note.textContent = reason; note.classList.remove('error'); }
    else if (note.dataset.kept !== '1') note.textContent = '';
  }

  function renderList(list) {
    const container = $('processes');
    const names = list.processes.map((p) => p.name);
    for (const name of [...state.procs.keys()]) {
      if (names.includes(name)) continue;
      const gone = state.procs.get(name);
      if (observer) observer.unobserve(gone.card);
      gone.card.remove();
      state.procs.delete(name);
    }
    list.processes.forEach(setProcess);
    const empty = container.querySelector('.empty');
    if (empty) empty.remove();
    // Configuration order; cards are moved only when it changed (a moved
    // node loses the keyboard focus).
    const cards = names.map((name) => state.procs.get(name).card);
    if (cards.some((c, i) => container.children[i] !== c)) cards.forEach((c) => container.appendChild(c));
    if (!names.length) container.innerHTML = '<p class="empty">No process is configured.</p>';
  }

  async function refreshAll() {
    const [about, list] = await Promise.all([api('GET', '/orchestrator'), api('GET', '/processes')]);
    state.about = about;
    state.aboutAt = performance.now();
    renderAbout();
    renderList(list);
  }

  const refreshing = new Map();
  function refreshProcess(name) {
    if (refreshing.has(name)) return;  // one read per burst of events
    refreshing.set(name, setTimeout(async () => {
      refreshing.delete(name);
      try { setProcess(await api('GET', '/processes/' + encodeURIComponent(name))); }
      catch (e) { if (e.status === 404) refreshAll().catch(() => {}); }
    }, 100));
  }

  // -- the sparkline of probe latencies --------------------------------------------------

  // Read a process's last probe latencies when it has new ones, its card
  // is on screen, and the last read is SPARK_EVERY old: a hundred
  // processes cost a few reads, not a hundred every refresh.
  const observer = 'IntersectionObserver' in window ? new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const proc = state.procs.get(entry.target.dataset.name);
      if (!proc) continue;
      proc.visible = entry.isIntersecting;
      refreshSpark(proc);
    }
  }) : null;

  async function refreshSpark(proc) {
    const health = proc.data && proc.data.health;
    if (!health || !proc.visible || proc.sparkBusy || health.total === proc.healthTotal ||
        (proc.healthTotal >= 0 && performance.now() - proc.sparkAt < SPARK_EVERY)) return;
    proc.sparkBusy = true;
    proc.sparkAt = performance.now();
    const name = proc.data.name;
    try {
      const detail = await api('GET', '/processes/' + encodeURIComponent(name) + '/health?limit=' + SPARK_POINTS);
      proc.healthTotal = detail.total;
      drawSpark(proc.card.querySelector('.spark'), detail.results);
    } catch (e) { /* the next refresh tries again */ }
    proc.sparkBusy = false;
  }

  function drawSpark(svg, results) {
    const NS = 'http://www.w3.org/2000/svg';
    while (svg.firstChild) svg.firstChild.remove();
    if (!results.length) { svg.setAttribute('aria-label', 'No probe results yet'); return; }
    const latencies = results.map((r) => r.latency_secs);
    const max = Math.max(...latencies, 1e-6), step = results.length > 1 ? 120 / (results.length - 1) : 0;
    const y = (v) => (22 - (v / max) * 20).toFixed(1);
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('points', results.map((r, i) => (i * step).toFixed(1) + ',' + y(r.latency_secs)).join(' '));
    svg.appendChild(line);
    results.forEach((r, i) => {
      if (r.healthy) return;
      const dot = document.createElementNS(NS, 'circle');
      dot.setAttribute('cx', (i * step).toFixed(1));
      dot.setAttribute('cy', y(r.latency_secs));
      dot.setAttribute('r', '2');
      svg.appendChild(dot);
    });
    const failed = results.filter((r) => !r.healthy).length;
    svg.setAttribute('aria-label', 'Probe latency over the last ' + results.length + ' checks: ' +
      ms(Math.min(...latencies)) + ' to ' + ms(max) + (failed ? ', ' + failed + ' failed' : ''));
  }

  // -- actions --------------------------------------------------------------------------

  async function command(name, verb) {
    if (state.monitorOnly || state.pending.has(name)) return;
    const proc = card(name), note = proc.card.querySelector('.note');
    state.pending.set(name, verb);
    note.dataset.kept = '0';
    renderActions(name, proc);
    let text, failed = false;
    try {
      const answer = await api('POST', '/processes/' + encodeURIComponent(name) + '/' + verb);
      text = answer.message + (answer.pid != null ? ' (pid ' + answer.pid + ')' : '');
      setProcess(answer);
    } catch (e) {
      text = verb + ' failed: ' + e.message;
      failed = true;
    }
    state.pending.delete(name);
    renderActions(name, proc);
    note.textContent = text;
    note.dataset.kept = '1';
    note.classList.toggle('error', failed);
    refreshProcess(name);
  }

  function announce(text) {
    const region = $('announce');
    const line = document.createElement('p');
    line.textContent = text;
    region.appendChild(line);
    while (region.childElementCount > 5) region.firstElementChild.remove();
  }

  // -- logs -------------------------------------------------------------------------------

  // One log view at a time: opening another process's, or closing it,
  // aborts its stream (the server counts stream clients against
  // admin.max_stream_clients, so none may be left behind).
  function openLogs(name) {
    stopLogs();
    const view = { name, lines: [], last: 0, abort: new AbortController(), timer: null, drawing: null };
    state.logView = view;
    $('logs-title').textContent = 'Logs: ' + name;
    $('logs-text').textContent = '';
    logState('Reading the last ' + LOG_LINES + ' lines…', false);
    $('logs').hidden = false;
    followLogs(view);
    $('logs').scrollIntoView({ block: 'nearest' });
    $('logs-text').focus();
  }

  function stopLogs() {
    const view = state.logView;
    state.logView = null;
    if (!view) return;
    view.abort.abort();
    clearTimeout(view.timer);
    clearTimeout(view.drawing);
  }

  const logPath = (view, rest) => '/processes/' + encodeURIComponent(view.name) + '/logs' + rest;

  function logState(text, warn) {
    const node = $('logs-state');
    node.textContent = text;
    node.classList.toggle('warn', Boolean(warn));
  }

  // Lines are drawn at most every 100 ms, however fast they come.
  function addLines(view, lines, replace) {
    if (replace) view.lines = [];
    view.lines.push(...lines);
    if (view.lines.length > MAX_LOG_LINES) view.lines.splice(0, view.lines.length - MAX_LOG_LINES);
    if (lines.length) view.last = lines[lines.length - 1].sequence;
    if (!view.drawing) view.drawing = setTimeout(() => { view.drawing = null; drawLines(view); }, 100);
  }

  function drawLines(view) {
    if (state.logView !== view) return;
    const pre = $('logs-text');
    pre.textContent = view.lines.map((l) => clock(l.timestamp) + (l.stream === 'stderr' ? ' ! ' : '   ') +
      l.text).join('\n');
    if ($('logs-follow').checked) pre.scrollTop = pre.scrollHeight;
  }

  // The recent lines once, then the stream from the last of them; a drop
  // reconnects with Last-Event-ID (the ring replays what was missed).
  async function followLogs(view) {
    let delay = 2000, loaded = false, drops = 0;
    while (state.logView === view) {
      let reason, fallback = null;
      try {
        if (!loaded) {
          const logs = await api('GET', logPath(view, '?lines=' + LOG_LINES));
          if (state.logView !== view) return;
          addLines(view, logs.lines, true);
          loaded = true;
        }
        const response = await authFetch(logPath(view, '/stream'), { signal: view.abort.signal },
          { Accept: 'text/event-stream', 'Last-Event-ID': String(view.last) });
        if (!response.ok) {
          const body = await readJSON(response);
          const error = (body && body.error) || 'HTTP ' + response.status;
          if (response.status === 503 || response.status === 404) fallback = error;  // the cap, or no such route
          throw new Error(error);
        }
        logState('Following new lines live' + (drops ? ' (reconnected after line #' + view.last + ')' : '') + '.');
        await readSSE(response, (message) => {
          if (message.type === 'overflow') {
            let body = null;
            try { body = JSON.parse(message.data); } catch (e) { /* the text says enough */ }
            fallback = (body && body.error) || 'the log stream overflowed';
            throw new Error(fallback);
          }
          if (message.type !== 'line') return;
          let line = null;
          try { line = JSON.parse(message.data); } catch (e) { return; }
          if (line && typeof line.sequence === 'number') addLines(view, [line], false);
        }, (ms) => { delay = ms; });
        reason = 'the stream ended';
      } catch (e) {
        reason = e.message;
      }
      if (state.logView !== view) return;  // closed: the abort ended the read
      if (fallback) { pollLogs(view, fallback); return; }
      drops += 1;
      logState('Log stream dropped (' + reason + '); reconnecting in ' + delay / 1000 +
        ' s with Last-Event-ID ' + view.last + '…', true);
      await sleep(delay);
    }
  }

  // Without the stream: the last LOG_LINES lines, every LOGS_EVERY.
  async function pollLogs(view, why) {
    if (state.logView !== view) return;
    let text = 'Polling: the last ' + LOG_LINES + ' lines every ' + LOGS_EVERY / 1000 +
      ' s (no live log stream: ' + why + ').';
    try {
      const logs = await api('GET', logPath(view, '?lines=' + LOG_LINES));
      if (state.logView !== view) return;
      const last = logs.lines[logs.lines.length - 1];
      if (!last || last.sequence !== view.last || view.lines.length !== logs.lines.length) {
        addLines(view, logs.lines, true);
      }
    } catch (e) {
      text = 'Cannot read the logs: ' + e.message;
    }
    if (state.logView !== view) return;
    logState(text, true);
    view.timer = setTimeout(() => pollLogs(view, why), LOGS_EVERY);
  }

  $('logs-close').addEventListener('click', () => {
    const name = state.logView && state.logView.name;
    stopLogs();
    $('logs').hidden = true;
    const proc = state.procs.get(name);
    if (proc) proc.card.querySelector('.logs-button').focus();
  });

  // -- events -----------------------------------------------------------------------------

  // Events are told apart by id, not sequence: a restarted orchestrator
  // numbers them from 1 again.
  const seen = new Set();
  function addEvent(event) {
    if (seen.has(event.id)) return;  // replayed after a reconnect
    seen.add(event.id);
    state.events.push(event);
    if (state.events.length > MAX_EVENTS) seen.delete(state.events.shift().id);
    state.lastId = event.sequence;
    addOption($('filter-type'), event.type);
  }

  function renderEvents() {
    const process = $('filter-process').value, type = $('filter-type').value;
    const shown = state.events.filter((e) => (!process || e.process === process) && (!type || e.type === type))
      .slice(-SHOWN_EVENTS).reverse();
    const body = document.createElement('tbody');
    for (const e of shown) {
      const row = body.insertRow();
      const cells = [String(e.sequence), clock(e.timestamp), e.process || '—', e.type,
        e.from && e.to ? e.from + ' → ' + e.to : '', e.reason + (e.pid ? ' (pid ' + e.pid + ')' : '')];
      cells.forEach((text, i) => {
        const cell = row.insertCell();
        cell.textContent = text;
        if (i === 3) cell.className = 't-' + e.type;
      });
    }
    if (!shown.length) body.insertRow().insertCell().textContent = 'No events' + (process || type ? ' match.' : ' yet.');
    $('events').replaceChild(body, $('events').tBodies[0]);
  }
  $('filter-process').addEventListener('change', renderEvents);
  $('filter-type').addEventListener('change', renderEvents);

  function onEvent(event) {
    addEvent(event);
    renderEvents();
    if (!event.process) { refreshAll().catch(() => {}); return; }  // a reload: processes may come and go
    const proc = state.procs.get(event.process);
    if (proc && proc.data && STATUSES.includes(event.to)) {
      // Show the change at once; the full status follows.
      setProcess(Object.assign({}, proc.data, {
        status: event.to, pid: event.pid, restart_count: event.restart_count,
        uptime_secs: event.to === 'starting' ? 0 : proc.data.uptime_secs,
      }));
    }
    refreshProcess(event.process);
  }

  // -- the event stream (Server-Sent Events over fetch) -----------------------------------

  // A browser opens at most 6 connections to one host: one stream per tab
  // would starve the seventh tab.  So the tabs of this page in one browser
  // share one stream: the tab holding a Web Lock reads it and passes every
  // event on over a BroadcastChannel; when it closes, another takes over
  // (with its own Last-Event-ID).  Without those APIs (a plain-http page
  // off loopback is not a secure context) each tab reads its own stream.
  const channel = 'BroadcastChannel' in window ? new BroadcastChannel('orchestrator-events') : null;
  const shared = Boolean(channel && navigator.locks);
  let leading = !shared, streamState = ['connecting', 'connecting…'];

  function setStream(kind, text) {
    const node = $('stream');
    node.dataset.state = kind;
    node.textContent = text;
    if (leading) {
      streamState = [kind, text];
      if (shared) channel.postMessage({ stream: streamState });
    }
  }

  function followStream() {
    if (!shared) { stream(); return; }
    channel.onmessage = (message) => {
      const data = message.data;
      if (data.hello) { if (leading) channel.postMessage({ stream: streamState }); return; }
      if (leading) return;
      if (data.event) onEvent(data.event);
      else if (data.stream) {
        const node = $('stream');
        node.dataset.state = data.stream[0];
        node.textContent = data.stream[1] + ' (shared with another tab)';
      }
    };
    channel.postMessage({ hello: true });
    navigator.locks.request('orchestrator-event-stream', () => { leading = true; return stream(); });
  }

  function parseMessage(block, retry) {
    let type = 'message', id = null;
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line[0] === ':') continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') type = value;
      else if (field === 'id') id = value;
      else if (field === 'retry' && /^\d+$/.test(value)) retry(Number(value));
    }
    return data.length ? { type, id, data: data.join('\n') } : null;
  }

  // Read an SSE response to its end: onMessage(message) for each message
  // (throwing ends the read and cancels the body), onRetry(ms) for a
  // "retry:" field.  One unfinished message may hold MAX_SSE_BUFFER bytes.
  async function readSSE(response, onMessage, onRetry) {
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const message = parseMessage(buffer.slice(0, end), onRetry);
          buffer = buffer.slice(end + 2);
          if (message) onMessage(message);
        }
        if (buffer.length > MAX_SSE_BUFFER) throw new Error('a message larger than 1 MiB');
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  async function stream() {
    let delay = 2000, drops = 0;
    for (;;) {
      let reason;
      try {
        const response = await authFetch('/events/stream', {},
          { Accept: 'text/event-stream', 'Last-Event-ID': String(state.lastId) });
        if (!response.ok) {
          const body = await readJSON(response);
          throw new Error((body && body.error) || 'HTTP ' + response.status);
        }
        setStream('live', drops ? 'live (reconnected, resumed after event #' + state.lastId + ')' : 'live');
        if (drops) refreshAll().catch(() => {});
        await readSSE(response, (message) => {
          if (!message.data) return;
          let event = null;
          try { event = JSON.parse(message.data); } catch (e) { /* not an event: ignore */ }
          if (message.type === 'overflow') {  // the server dropped us: resume from lastId
            throw new Error((event && event.error) || 'the stream overflowed');
          }
          if (event && typeof event.sequence === 'number') {
            onEvent(event);
            if (shared) channel.postMessage({ event });
          }
        }, (ms) => { delay = ms; });
        reason = 'the stream ended';
      } catch (e) {
        reason = e.message;
      }
      drops += 1;
      setStream('down', 'disconnected (' + reason + '); reconnecting in ' + delay / 1000 +
        ' s with Last-Event-ID ' + state.lastId + '…');
      await sleep(delay);
    }
  }

  // -- start --------------------------------------------------------------------------------

  TYPES.forEach((t) => addOption($('filter-type'), t));

  async function start() {
    try {
      const [, recent] = await Promise.all([refreshAll(), api('GET', '/events?limit=' + SHOWN_EVENTS)]);
      recent.events.forEach(addEvent);
      state.lastId = recent.last_sequence;
      renderEvents();
      performance.mark('orchestrator:first-status');  // (bench/ui.py reads it)
      showNotice('');
    } catch (e) {
      showNotice('Cannot read the orchestrator: ' + e.message);
    }
    followStream();
    setInterval(() => {
      renderAbout();
      state.procs.forEach((proc) => { if (proc.data) tick(proc); });
    }, 1000);
    setInterval(() => {
      if (document.hidden) return;
      refreshAll().then(() => showNotice(''), (e) => showNotice('Cannot read the orchestrator: ' + e.message));
    }, LIST_EVERY);
  }

  start();
})();
