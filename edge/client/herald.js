// Herald browser client. No dependencies; works as a classic script
// (window.Herald) or an ES module import of the same file via globalThis.
//
//   const h = new Herald({
//     url: "wss://push.example.com/ws",        // default: this page's host
//     // In a cluster, ask where the user belongs (its ring owner), so
//     // most messages need no hop between nodes:
//     routeURL: "https://push.example.com/v1/route", user: "alice",
//     getToken: async () => fetchTokenFromYourBackend(),
//     onMessage: (msg) => console.log(msg.id, msg.data, msg.ts),
//     onState: (state, info) => console.log(state, info),  // optional
//   });
//   h.connect();   ...   h.close();
//
// It keeps its resume position the way the protocol asks (PROTOCOL.md,
// "Resuming"): the last cursor the server sent, and the IDs of the
// messages received above it. It reconnects with since=<cursor>&seen=<ids>
// and answers a "resync" frame with the same, so the server sends exactly
// what it lacks. It drops repeated IDs all the same, acks each message
// after onMessage returns, and backs off with jitter. Close codes
// 4000-4399 mean "reconnect"; 4400-4999 and protocol errors stop it.
(function (root) {
  "use strict";

  const SUBPROTOCOL = "herald.v1";
  const SEEN_MAX = 2048; // IDs remembered to drop repeats
  const SEEN_SEND = 100; // IDs above the cursor sent when resuming

  class Herald {
    constructor(opts) {
      if (!opts || typeof opts.getToken !== "function") {
        throw new Error("Herald: getToken is required");
      }
      this.url = opts.url || defaultURL();
      this.routeURL = opts.routeURL || null;
      this.user = opts.user || null;
      this.getToken = opts.getToken;
      this.onMessage = opts.onMessage || function () {};
      this.onState = opts.onState || function () {};
      this.cursor = opts.since || ""; // resume position: the last cursor received
      this.above = []; // IDs received above the cursor
      this.seen = new Set();
      this.seenOrder = [];
      this.attempt = 0;
      this.ws = null;
      this.timer = null;
      this.heartbeat = null;
      this.lastFrame = 0;
      this.closed = false;
      this.hint = null; // {url, delayMs} from a "reconnect" frame
    }

    async connect() {
      this.closed = false;
      clearTimeout(this.timer);
      let token;
      try {
        token = await this.getToken();
      } catch (err) {
        this.onState("error", { reason: "getToken failed", error: err });
        return this.retry();
      }
      if (this.closed) return;
      let base = (this.hint && this.hint.url) || null;
      if (!base && this.routeURL && this.user) {
        base = await this.route();
        if (this.closed) return;
      }
      const target = new URL(base || this.url, location.href);
      this.hint = null;
      if (this.cursor) {
        target.searchParams.set("since", this.cursor);
        target.searchParams.set("seen", this.above.slice(-SEEN_SEND).join(","));
      }
      const ws = new WebSocket(target.toString(), [SUBPROTOCOL, "bearer." + token]);
      this.ws = ws;
      this.onState("connecting", { url: target.origin + target.pathname });
      ws.onmessage = (ev) => this.frame(ev.data);
      ws.onclose = (ev) => this.closedWith(ev.code, ev.reason);
      ws.onerror = () => {}; // onclose follows with the details
    }

    frame(text) {
      this.lastFrame = Date.now();
      let f;
      try {
        f = JSON.parse(text);
      } catch (e) {
        return;
      }
      switch (f.type) {
        case "ready":
          this.attempt = 0;
          this.advance(f.cursor);
          this.startHeartbeat();
          this.onState("open", { user: f.user, node: f.node, replayed: f.replayed });
          break;
        case "resync":
          // The server may have missed deliveries for us: say where we are.
          this.send({ type: "resume", since: this.cursor || undefined, seen: this.above.slice(-SEEN_SEND) });
          break;
        case "message":
          this.advance(f.cursor);
          if (this.seen.has(f.id)) {
            this.send({ type: "ack", id: f.id }); // a repeat: dropped, acked again
            break;
          }
          this.remember(f.id);
          if (f.id > this.cursor) {
            this.above.push(f.id);
            if (this.above.length > SEEN_MAX) this.above.shift(); // only the newest are sent
          }
          try {
            this.onMessage({ id: f.id, data: f.data, ts: f.ts });
          } finally {
            this.send({ type: "ack", id: f.id });
          }
          break;
        case "reconnect":
          this.hint = { url: f.url || null, delayMs: f.delay_ms || 0 };
          break;
        case "pong":
          break;
      }
    }

    // route asks the cluster which node should hold the user; null on
    // failure (the client then uses its configured url).
    async route() {
      try {
        const u = new URL(this.routeURL, location.href);
        u.searchParams.set("user", this.user);
        const resp = await fetch(u.toString());
        if (!resp.ok) return null;
        const r = await resp.json();
        return r.url || null;
      } catch (e) {
        return null;
      }
    }

    // advance moves the resume position to cursor, if it is later, and
    // forgets the IDs it now covers.
    advance(cursor) {
      if (!cursor || cursor <= this.cursor) return;
      this.cursor = cursor;
      this.above = this.above.filter((id) => id > cursor);
    }

    remember(id) {
      this.seen.add(id);
      this.seenOrder.push(id);
      if (this.seenOrder.length > SEEN_MAX) this.seen.delete(this.seenOrder.shift());
    }

    send(obj) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
    }

    startHeartbeat() {
      clearInterval(this.heartbeat);
      // Browsers cannot see WebSocket pings: an application ping detects a
      // dead connection (e.g. after a laptop sleeps).
      this.heartbeat = setInterval(() => {
        if (Date.now() - this.lastFrame > 60000) {
          this.ws && this.ws.close(4001, "client idle timeout");
          return;
        }
        this.send({ type: "ping" });
      }, 25000);
    }

    closedWith(code, reason) {
      clearInterval(this.heartbeat);
      this.ws = null;
      if (this.closed) return this.onState("closed", { code, reason });
      const terminal = (code >= 4400 && code <= 4999) || code === 1002 || code === 1003 || code === 1007 || code === 1009;
      if (terminal) {
        this.closed = true;
        return this.onState("failed", { code, reason });
      }
      this.onState("disconnected", { code, reason });
      this.retry();
    }

    retry() {
      if (this.closed) return;
      let delay;
      if (this.hint) {
        delay = this.hint.delayMs; // the server spread its clients out
      } else {
        const base = Math.min(30000, 500 * Math.pow(2, this.attempt));
        delay = base / 2 + Math.random() * base / 2;
      }
      this.attempt++;
      this.timer = setTimeout(() => this.connect(), delay);
    }

    close() {
      this.closed = true;
      clearTimeout(this.timer);
      clearInterval(this.heartbeat);
      if (this.ws) this.ws.close(1000, "bye");
    }
  }

  function defaultURL() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return proto + "//" + location.host + "/ws";
  }

  root.Herald = Herald;
})(typeof globalThis !== "undefined" ? globalThis : window);
