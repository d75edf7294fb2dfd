// PrivateRouter's only script of its own (no inline script anywhere: the CSP forbids it).
// Event delegation on the document, so it keeps working after htmx swaps the page body.
"use strict";
(function () {
  function csrf() {
    var holder = document.querySelector("[data-csrf]");
    return holder ? holder.getAttribute("data-csrf") : "";
  }

  // ROOT_PATH: the prefix the pages are served under (empty without one), for our own fetches.
  function root() {
    var holder = document.querySelector("[data-root]");
    return holder ? holder.getAttribute("data-root") : "";
  }

  // Copy buttons: <button data-copy="#element-id">
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });

  // Show what needs JavaScript only when it runs.
  function reveal() {
    document.querySelectorAll(".js-only").forEach(function (el) { el.hidden = false; });
    document.querySelectorAll(".no-js").forEach(function (el) { el.hidden = true; });
  }
  document.addEventListener("DOMContentLoaded", reveal);
  document.addEventListener("htmx:afterSettle", reveal);

  // ---- Playground: the conversation lives only in this page's memory. ----
  var history = [];

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scrollDown(log) { log.scrollTop = log.scrollHeight; }

  async function readStream(response, onDelta) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var usage = null;
    for (;;) {
      var step = await reader.read();
      if (step.done) break;
      buffer += decoder.decode(step.value, { stream: true });
      var frames = buffer.split("\n\n");
      buffer = frames.pop();
      frames.forEach(function (frame) {
        frame.split("\n").forEach(function (line) {
          if (line.indexOf("data: ") !== 0) return;
          var data = line.slice(6);
          if (data === "[DONE]") return;
          var chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          (chunk.choices || []).forEach(function (choice) { onDelta(choice.delta || {}); });
        });
      });
    }
    return usage;
  }

  async function settledTurn(requestId) {
    for (var attempt = 0; attempt < 40; attempt++) {
      var response = await fetch(root() + "/playground/turns/" + encodeURIComponent(requestId), { credentials: "same-origin" });
      if (response.status === 200) return response.json();
      await new Promise(function (resolve) { setTimeout(resolve, 250); });
    }
    return null;
  }

  async function send(form) {
    var log = document.getElementById("chatlog");
    var prompt = form.querySelector("#pg-prompt");
    var button = form.querySelector("button[type=submit]");
    var text = prompt.value.trim();
    if (!text) return;
    var empty = log.querySelector(".chat-empty");
    if (empty) empty.remove();
    log.appendChild(el("div", "msg user", text));
    history.push({ role: "user", content: text });
    prompt.value = "";
    button.disabled = true;

    var bubble = el("div", "msg assistant");
    var thinking = el("details");
    thinking.appendChild(el("summary", "", "Reasoning"));
    var thoughts = el("span");
    thinking.appendChild(thoughts);
    thinking.hidden = true;
    var answer = el("span", "answer");
    var meta = el("span", "meta", "Streaming…");
    bubble.appendChild(thinking);
    bubble.appendChild(answer);
    bubble.appendChild(meta);
    bubble.setAttribute("aria-live", "polite");
    log.appendChild(bubble);
    scrollDown(log);

    var messages = [];
    var system = document.getElementById("pg-system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    var body = {
      model: document.getElementById("pg-model").value,
      messages: messages.concat(history),
      stream: true,
      stream_options: { include_usage: true },
    };
    var temperature = document.getElementById("pg-temperature").value;
    if (temperature !== "") body.temperature = Number(temperature);
    var maxTokens = document.getElementById("pg-max-tokens").value;
    if (maxTokens !== "") body.max_tokens = Number(maxTokens);

    var requestId = null;
    var admitted = false;  // an answer that started, or an upstream failure (5xx): a usage event follows
    try {
      var response = await fetch(root() + "/playground/chat", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
        body: JSON.stringify(body),
      });
      requestId = response.headers.get("x-request-id");
      admitted = response.ok || response.status >= 500;
      if (!response.ok) {
        var failure = await response.json().catch(function () { return null; });
        throw new Error(failure && failure.error ? failure.error.message : "HTTP " + response.status);
      }
      await readStream(response, function (delta) {
        if (delta.reasoning_content) { thinking.hidden = false; thoughts.textContent += delta.reasoning_content; }
        if (delta.content) answer.textContent += delta.content;
        scrollDown(log);
      });
      history.push({ role: "assistant", content: answer.textContent });
      meta.textContent = "Settling…";
      var turn = requestId ? await settledTurn(requestId) : null;
      if (turn) {
        meta.textContent = turn.input_tokens + " in · " + turn.output_tokens + " out · $" + turn.cost_usd +
          (turn.tokens_estimated ? " (tokens estimated)" : "");
        meta.setAttribute("data-cost", turn.cost_usd);
        var balance = document.getElementById("pg-balance");
        if (balance) balance.textContent = "$" + turn.balance_usd;
      } else {
        meta.textContent = "Cost not available yet; see the Usage page.";
      }
    } catch (error) {
      bubble.classList.add("failed");
      meta.textContent = "Error: " + error.message;
      history.pop();
      // A failed turn may still be billed (tokens streamed before a mid-stream error): say what it cost.
      var failedTurn = admitted && requestId ? await settledTurn(requestId) : null;
      if (failedTurn) {
        var free = Number(failedTurn.cost_usd) === 0;
        meta.textContent += free ? " · nothing charged" : " · " + failedTurn.input_tokens + " in · " +
          failedTurn.output_tokens + " out · $" + failedTurn.cost_usd + " charged";
        meta.setAttribute("data-cost", failedTurn.cost_usd);
        var balanceAfter = document.getElementById("pg-balance");
        if (balanceAfter) balanceAfter.textContent = "$" + failedTurn.balance_usd;
      }
    } finally {
      button.disabled = false;
      prompt.focus();
      scrollDown(log);
    }
  }

  document.addEventListener("submit", function (event) {
    if (event.target.id !== "playground-form") return;
    event.preventDefault();
    send(event.target);
  });
  document.addEventListener("click", function (event) {
    if (!event.target.closest("#pg-clear")) return;
    history = [];
    var log = document.getElementById("chatlog");
    log.replaceChildren(el("p", "chat-empty", "Conversation cleared. It is kept only in this tab."));
  });
  document.addEventListener("keydown", function (event) {
    if (event.target.id === "pg-prompt" && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      event.target.form.requestSubmit();
    }
  });
})();
