/*!
 * gflux.js — the GetFluxly browser script: no dependencies, no build step, ES2017 at most.
 *
 *   <script src="https://HOST/v1/browser/gflux.js" data-key="gflux_pub_..." async></script>
 *
 * Attributes of that tag:
 *   data-key             the project's publishable key (gflux_pub_...); required.
 *   data-api-host        where events go (default: the origin the script came from).
 *   data-auto-page       "false" turns off the page_viewed event sent on load.
 *   data-flush-interval  seconds between sends of queued events (default 5).
 *
 * window.gflux:
 *   track(event, properties)     a snake_case event (at most 64 characters, 32 properties).
 *   identify(externalId, traits) says who the visitor is: sends type "identify" with the
 *                                anonymous id, externalId and traits, and remembers externalId
 *                                (localStorage "gflux_external_id") for every later event.
 *   page(properties)             page_viewed with path, url, title, referrer and search.
 *   flush()                      sends what is queued now; a Promise that never rejects.
 *   reset()                      logout: forgets the external id and starts a new anonymous id.
 *   anonymousId()                this device's anonymous id.
 * Calls made before the script loads can be queued as arrays of [method, ...arguments]:
 *   (window.gflux = window.gflux || []).push(["track", "signed_up", {plan: "pro"}]);
 *
 * The anonymous id is a random UUID in the first-party cookie gflux_anon (Path=/,
 * SameSite=Lax, one year, renewed on every load, Secure on https). Events are queued and sent
 * in batches (at most 100 events and 60 KB a request) with fetch(keepalive) every few seconds
 * or at 20 events; when the page is hidden or left they go with navigator.sendBeacon. Failed
 * sends are retried with backoff (message_id makes a retry harmless). Nothing here ever
 * throws into the page: mistakes are reported with console.warn and the event is dropped.
 */
(function () {
  "use strict";

  var VERSION = "0.1.0";
  var ANON_COOKIE = "gflux_anon";
  var EXTERNAL_KEY = "gflux_external_id";
  var YEAR_SECONDS = 365 * 24 * 60 * 60;
  var EVENT_NAME = /^[a-z][a-z0-9]*(_[a-z0-9]+)*$/;
  var MAX_NAME = 64;
  var MAX_PROPERTIES = 32; // the server's limit per event
  var MAX_EVENT_BYTES = 32 * 1024; // the server's limit for one event
  var MAX_BATCH_EVENTS = 100; // the server's limit per batch
  var MAX_DEPTH = 32; // how deep properties and traits may nest (the object is level 1)
  // Keepalive fetches and beacons of one page share a 64 KiB budget in flight.
  var MAX_REQUEST_BYTES = 60 * 1024;
  var FLUSH_AT = 20;
  var MAX_QUEUE = 1000; // the oldest events go first when a long outage fills the queue
  var MAX_ATTEMPTS = 6; // sends of one batch before it is given up
  var MAX_BACKOFF_MS = 60 * 1000;

  if (typeof window === "undefined" || typeof document === "undefined") return;
  var previous = window.gflux;
  if (previous && previous.__gflux) return; // the tag is on the page twice

  function warn() {
    try {
      if (typeof console !== "undefined" && console.warn) {
        console.warn.apply(console, ["[gflux]"].concat(Array.prototype.slice.call(arguments)));
      }
    } catch (e) {
      /* a console that throws is not worth more */
    }
  }

  function uuid() {
    var c = window.crypto;
    // randomUUID exists only in secure contexts; plain-http sites get getRandomValues.
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    var bytes = new Uint8Array(16);
    if (c && typeof c.getRandomValues === "function") {
      c.getRandomValues(bytes);
    } else {
      for (var i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    var hex = Array.prototype.map.call(bytes, function (b) {
      return (b + 0x100).toString(16).slice(1);
    }).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20),
      hex.slice(20)].join("-");
  }

  function byteLength(text) {
    if (typeof TextEncoder === "function") return new TextEncoder().encode(text).length;
    return text.length * 3; // the most UTF-8 can take per UTF-16 unit
  }

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  // Why the server could not store a value ("" if it can): nesting deeper than MAX_DEPTH
  // (a cyclic object ends here too), or a NUL character in a key or a string.
  function unstorable(value, depth) {
    if (typeof value === "string") return value.indexOf("\u0000") >= 0 ? "a NUL character" : "";
    if (value === null || typeof value !== "object") return "";
    if (depth > MAX_DEPTH) return "nesting deeper than " + MAX_DEPTH + " levels";
    var keys = Object.keys(value);
    for (var i = 0; i < keys.length; i++) {
      if (keys[i].indexOf("\u0000") >= 0) return "a NUL character in a key";
      var item = value[keys[i]];
      var problem = unstorable(item, item !== null && typeof item === "object" ? depth + 1 : depth);
      if (problem) return problem;
    }
    return "";
  }

  // -- Configuration, from the script tag.

  function ownScript() {
    var current = document.currentScript;
    if (current && current.hasAttribute("data-key")) return current;
    // currentScript is null when the script runs from a callback (or was loaded oddly).
    var tags = document.querySelectorAll("script[data-key]");
    for (var i = tags.length - 1; i >= 0; i--) {
      if (/\/gflux(\.min)?\.js([?#]|$)/.test(tags[i].src)) return tags[i];
    }
    return current;
  }

  function config() {
    var tag = ownScript();
    var attr = function (name) {
      return tag ? tag.getAttribute(name) : null;
    };
    var host = attr("data-api-host");
    if (!host) {
      try {
        host = new URL(tag && tag.src ? tag.src : location.href, location.href).origin;
      } catch (e) {
        host = location.origin;
      }
    }
    var interval = parseFloat(attr("data-flush-interval") || "");
    return {
      key: (attr("data-key") || "").trim(),
      apiHost: host.replace(/\/+$/, ""),
      autoPage: attr("data-auto-page") !== "false",
      flushIntervalMs: isFinite(interval) && interval > 0 ? interval * 1000 : 5000,
    };
  }

  // -- Identity: the anonymous id in a first-party cookie, the external id in localStorage.

  function readCookie(name) {
    var parts = (document.cookie || "").split(";");
    for (var i = 0; i < parts.length; i++) {
      var pair = parts[i].trim();
      if (pair.indexOf(name + "=") === 0) {
        try {
          return decodeURIComponent(pair.slice(name.length + 1));
        } catch (e) {
          return null; // not ours to repair: a new id is written over it
        }
      }
    }
    return null;
  }

  function writeAnonCookie(value) {
    var cookie = ANON_COOKIE + "=" + encodeURIComponent(value) + "; Path=/; Max-Age=" +
      YEAR_SECONDS + "; SameSite=Lax";
    if (location.protocol === "https:") cookie += "; Secure";
    try {
      document.cookie = cookie;
    } catch (e) {
      /* cookies are off (or the document is sandboxed): the id lives for this page only */
    }
  }

  function storage(action, value) {
    // Private modes and sandboxed frames throw on merely touching localStorage.
    try {
      var store = window.localStorage;
      if (action === "get") return store.getItem(EXTERNAL_KEY);
      if (action === "set") store.setItem(EXTERNAL_KEY, value);
      else store.removeItem(EXTERNAL_KEY);
    } catch (e) {
      /* remembered in memory only */
    }
    return null;
  }

  function normalizeId(value) {
    if (typeof value === "number" && isFinite(value)) value = String(value);
    if (typeof value !== "string") return null;
    var text = value.trim();
    // The server takes 1-255 printable characters.
    if (!text || text.length > 255 || /[\u0000-\u001f\u007f-\u009f]/.test(text)) return null;
    return text;
  }

  // Set by start(); read by everything below.
  var settings = { key: "", apiHost: "", autoPage: false, flushIntervalMs: 5000 };
  var anonymousId = null;
  var externalId = null;

  // -- Events.

  function pageInfo() {
    return {
      path: location.pathname,
      url: location.href,
      title: document.title,
      referrer: document.referrer,
      search: location.search,
    };
  }

  function context() {
    var ctx = {
      library: { name: "gflux.js", version: VERSION },
      user_agent: navigator.userAgent,
      locale: navigator.language,
      page: pageInfo(),
    };
    try {
      ctx.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (e) {
      /* no Intl: no timezone */
    }
    if (window.screen) {
      ctx.screen = {
        width: window.screen.width,
        height: window.screen.height,
        density: window.devicePixelRatio || 1,
      };
    }
    return ctx;
  }

  function newEvent(type) {
    var event = {
      type: type,
      message_id: uuid(),
      timestamp: new Date().toISOString(),
      anonymous_id: anonymousId,
      context: context(),
    };
    if (externalId) event.external_id = externalId;
    return event;
  }

  // -- The queue: each entry is the event's JSON (a snapshot: later changes by the page to
  // the objects it passed do not leak in) and its size in bytes.

  var queue = [];
  var timer = null;
  var failures = 0;
  var leaving = false;
  var warnedFull = false;
  var chain = Promise.resolve();

  function enqueue(event) {
    if (!settings.key) {
      warn("no data-key on the script tag; event dropped:", event.event || event.type);
      return;
    }
    var json;
    try {
      json = JSON.stringify(event);
    } catch (e) {
      warn("event dropped: its properties cannot be written as JSON", e);
      return;
    }
    var size = byteLength(json);
    if (size > MAX_EVENT_BYTES) {
      warn("event dropped: larger than 32 KB", event.event || event.type);
      return;
    }
    queue.push({ json: json, size: size });
    if (queue.length > MAX_QUEUE) {
      queue.splice(0, queue.length - MAX_QUEUE);
      if (!warnedFull) warn("the queue is full; the oldest events were dropped");
      warnedFull = true;
    }
    if (leaving) beacon(); // the page is going away: a timer would never fire
    else if (queue.length >= FLUSH_AT) flush();
    else schedule(settings.flushIntervalMs);
  }

  // Takes the next batch off the queue: at most 100 events and MAX_REQUEST_BYTES.
  function take() {
    var batch = [];
    var bytes = 64;
    while (queue.length && batch.length < MAX_BATCH_EVENTS) {
      var next = queue[0];
      if (batch.length && bytes + next.size + 64 > MAX_REQUEST_BYTES) break;
      batch.push(queue.shift());
      bytes += next.size + 64;
    }
    return batch;
  }

  function putBack(batch) {
    queue.unshift.apply(queue, batch);
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
  }

  // The request body, with sent_at stamped now: the server corrects clock skew with it.
  function body(batch) {
    var sentAt = JSON.stringify(new Date().toISOString());
    return '{"events":[' + batch.map(function (entry) {
      return entry.json.slice(0, -1) + ',"sent_at":' + sentAt + "}";
    }).join(",") + "]}";
  }

  function schedule(delay) {
    if (timer !== null) return;
    timer = setTimeout(function () {
      timer = null;
      flush();
    }, delay);
  }

  function cancelTimer() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }

  function retryLater(batch, retryAfterSeconds) {
    failures += 1;
    if (failures >= MAX_ATTEMPTS) {
      warn("giving up on " + batch.length + " event(s) after " + failures + " attempts");
      failures = 0;
    } else {
      putBack(batch);
    }
    var backoff = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, failures));
    if (retryAfterSeconds > 0) backoff = Math.max(backoff, retryAfterSeconds * 1000);
    cancelTimer();
    if (queue.length) schedule(backoff * (0.75 + Math.random() / 2));
    return false;
  }

  // One batch over fetch; true when the batch is done with (stored or refused for good).
  function post(batch) {
    var request;
    try {
      request = fetch(settings.apiHost + "/v1/events/batch", {
        method: "POST",
        keepalive: true, // finishes even if the page is closed meanwhile
        mode: "cors",
        credentials: "omit",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + settings.key },
        body: body(batch),
      });
    } catch (e) {
      request = Promise.reject(e);
    }
    return request.then(function (response) {
      if (response.status === 429 || response.status === 408 || response.status >= 500) {
        return retryLater(batch, parseInt(response.headers.get("Retry-After") || "", 10));
      }
      failures = 0;
      return response.json().catch(function () {
        return {};
      }).then(function (answer) {
        if (!response.ok) {
          warn("the server refused " + batch.length + " event(s): " + response.status,
            answer && answer.error, answer && answer.detail);
        } else if (answer && answer.rejected) {
          warn(answer.rejected + " event(s) rejected:", answer.errors);
        }
        return true;
      });
    }, function () {
      return retryLater(batch, 0); // offline, blocked, or the server is down
    });
  }

  function drain() {
    cancelTimer();
    var step = function () {
      if (!queue.length) return undefined;
      return post(take()).then(function (done) {
        return done ? step() : undefined;
      });
    };
    return Promise.resolve().then(step).catch(function (e) {
      warn("sending failed", e);
    });
  }

  function flush() {
    // One drain at a time, in order; the returned promise settles after this one.
    chain = chain.then(drain, drain);
    return chain;
  }

  // The page is hidden or going away: hand everything queued to the browser now.
  function beacon() {
    cancelTimer();
    var url = settings.apiHost + "/v1/events/batch?api_key=" + encodeURIComponent(settings.key);
    while (queue.length) {
      var batch = take();
      var payload = body(batch);
      var sent = false;
      try {
        // A string goes as text/plain: no preflight, which a beacon could not wait for.
        sent = typeof navigator.sendBeacon === "function" && navigator.sendBeacon(url, payload);
      } catch (e) {
        sent = false;
      }
      if (!sent) {
        try {
          fetch(url, { method: "POST", keepalive: true, credentials: "omit", body: payload })
            .catch(function () {});
          sent = true;
        } catch (e) {
          sent = false; // over the keepalive budget: keep them for a later chance
        }
      }
      if (!sent) {
        putBack(batch);
        return;
      }
    }
  }

  // -- The public API.

  function track(name, properties) {
    if (typeof name !== "string" || name.length > MAX_NAME || !EVENT_NAME.test(name)) {
      warn("event dropped: the name must be snake_case, at most 64 characters:", name);
      return;
    }
    if (properties !== undefined && properties !== null && !isObject(properties)) {
      warn("event dropped: properties must be an object:", name);
      return;
    }
    if (properties && Object.keys(properties).length > MAX_PROPERTIES) {
      warn("event dropped: more than " + MAX_PROPERTIES + " properties:", name);
      return;
    }
    var problem = properties ? unstorable(properties, 1) : "";
    if (problem) {
      warn("event dropped: its properties hold " + problem + ":", name);
      return;
    }
    var event = newEvent("track");
    event.event = name;
    event.properties = properties || {};
    enqueue(event);
  }

  function identify(id, traits) {
    var given = id !== undefined && id !== null && id !== "";
    var external = given ? normalizeId(id) : null;
    if (given && !external) {
      warn("identify dropped: the id must be a string of 1-255 printable characters:", id);
      return;
    }
    if (traits !== undefined && traits !== null && !isObject(traits)) {
      warn("identify dropped: traits must be an object");
      return;
    }
    var problem = traits ? unstorable(traits, 1) : "";
    if (problem) {
      warn("identify dropped: its traits hold " + problem);
      return;
    }
    if (external && externalId && external !== externalId) {
      // Another user on this device without reset(): a fresh anonymous id keeps the server
      // from merging the two people's profiles through the old one.
      anonymousId = uuid();
      writeAnonCookie(anonymousId);
    }
    if (external) {
      externalId = external;
      storage("set", external);
    }
    var event = newEvent("identify");
    if (traits && Object.keys(traits).length) event.traits = traits;
    enqueue(event);
  }

  function page(properties) {
    if (properties !== undefined && properties !== null && !isObject(properties)) {
      warn("page view dropped: properties must be an object");
      return;
    }
    var merged = pageInfo();
    if (properties) Object.keys(properties).forEach(function (k) {
      merged[k] = properties[k];
    });
    track("page_viewed", merged);
  }

  function reset() {
    externalId = null;
    storage("remove");
    anonymousId = uuid();
    writeAnonCookie(anonymousId);
  }

  // Every entry point swallows its own errors: a bug here must never break the host page.
  function guarded(fn, fallback) {
    return function () {
      try {
        return fn.apply(null, arguments);
      } catch (e) {
        warn("internal error", e);
        return typeof fallback === "function" ? fallback() : fallback;
      }
    };
  }

  var api = {
    __gflux: true,
    version: VERSION,
    track: guarded(track),
    identify: guarded(identify),
    page: guarded(page),
    reset: guarded(reset),
    flush: guarded(flush, function () {
      return Promise.resolve();
    }),
    anonymousId: guarded(function () {
      return anonymousId;
    }, null),
  };

  function start() {
    settings = config();
    try {
      anonymousId = normalizeId(readCookie(ANON_COOKIE) || "");
    } catch (e) {
      anonymousId = null; // document.cookie throws in sandboxed frames
    }
    anonymousId = anonymousId || uuid();
    writeAnonCookie(anonymousId); // renews the year on every load
    externalId = normalizeId(storage("get") || "");

    document.addEventListener("visibilitychange", guarded(function () {
      if (document.visibilityState === "hidden") beacon();
    }));
    window.addEventListener("pagehide", guarded(function () {
      leaving = true;
      beacon();
    }));
    window.addEventListener("pageshow", guarded(function () {
      leaving = false; // back from the back/forward cache
    }));

    if (!settings.key) warn("the script tag has no data-key (gflux_pub_...); nothing is sent");
    // Calls queued before the script loaded go first, so a queued identify already names
    // the user in the automatic page view.
    if (Array.isArray(previous)) {
      previous.forEach(function (call) {
        if (Array.isArray(call) && call[0] !== "__gflux" && typeof api[call[0]] === "function") {
          api[call[0]].apply(null, call.slice(1));
        }
      });
    }
    if (settings.autoPage) api.page();
  }

  try {
    window.gflux = api;
    start();
  } catch (e) {
    warn("could not start", e);
  }
})();
