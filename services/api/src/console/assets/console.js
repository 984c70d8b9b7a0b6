// pixelfarm console: each page's part starts from <body data-page>. Text from the server is
// always set as text (never as HTML); state changes carry the session's CSRF token.
"use strict";

(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const island = document.getElementById("page-data");
  const data = island ? JSON.parse(island.textContent) : null;

  // An element with attributes and children (strings become text nodes).
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs ?? {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // Replace an element's children (arrays flattened, null and undefined skipped).
  const fill = (e, ...children) =>
    e.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));

  const number = (n) => Number(n).toLocaleString("en-US");
  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }
  const rate = (r) => (r > 0 ? `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}/s` : "–");
  const finished = (c) => c.succeeded + c.dead + c.cancelled;

  // POST a JSON body with the CSRF token; the answer's JSON, or an Error with the API's message.
  async function call(url, body) {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(answer?.error?.message ?? `${res.status} ${res.statusText}`);
    return answer;
  }

  // ---- batches -----------------------------------------------------------------------------

  function batchesPage() {
    const tbody = document.querySelector("#batches tbody");
    const rows = new Map(data.batches.map((b) => [b.id, b]));
    let sortKey = null;
    let sortDir = 1;

    const status = (b) => (!b.done ? "active" : b.counts.dead > 0 ? "failed" : "done");
    const sortValue = {
      name: (b) => b.name.toLowerCase(),
      created: (b) => b.created_at,
      progress: (b) => finished(b.counts) / Math.max(1, b.total),
      rate: (b) => b.rate_per_second,
      device: (b) => b.device_seconds,
    };

    function row(b) {
      const c = b.counts;
      const share = b.total ? (100 * finished(c)) / b.total : 0;
      const counts = [
        ["succeeded", c.succeeded], ["running", c.running], ["queued", c.queued],
        ["pending", c.pending], ["retryable", c.retryable], ["dead", c.dead],
        ["cancelled", c.cancelled],
      ].filter(([, n]) => n > 0);
      const waiting = !b.done && b.live_workers === 0;
      return h("tr", { "data-batch": b.id, "data-status": status(b) },
        h("th", { scope: "row" }, h("a", { href: `/console/batches/${b.id}` }, b.name)),
        h("td", {}, b.model),
        h("td", {}, h("time", { datetime: b.created_at }, new Date(b.created_at).toLocaleString())),
        h("td", {},
          h("span", {
            class: c.dead > 0 ? "bar has-dead" : "bar", role: "progressbar",
            "aria-valuemin": 0, "aria-valuemax": b.total, "aria-valuenow": finished(c),
            "aria-label": `${finished(c)} of ${b.total} jobs finished`,
          }, h("span", { style: null })),
          ` ${number(finished(c))} / ${number(b.total)}`),
        h("td", { class: "counts" }, counts.map(([s, n]) =>
          h("span", { class: `state-${s}` }, `${number(n)} ${s}`)),
          waiting ? h("span", { class: "state-dead" }, "no live worker") : null),
        h("td", { class: "num" }, rate(b.rate_per_second)),
        h("td", { class: "num" }, b.done ? "done" : duration(b.eta_seconds)),
        h("td", { class: "num" }, b.device_seconds.toFixed(1)),
        h("td", {}, Object.entries(b.tags).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`))),
        h("td", {}, b.done ? null : h("button", {
          type: "button", "data-cancel": b.id, "aria-label": `Cancel ${b.name}`,
        }, "Cancel")),
      );
    }

    function render() {
      const text = document.getElementById("batch-filter").value.trim().toLowerCase();
      const want = document.getElementById("state-filter").value;
      let list = [...rows.values()];
      if (sortKey) {
        const v = sortValue[sortKey];
        list.sort((a, b) => (v(a) < v(b) ? -sortDir : v(a) > v(b) ? sortDir : 0));
      }
      tbody.replaceChildren();
      for (const b of list) {
        const hay = [b.name, status(b), ...Object.entries(b.tags).map(([k, v]) => `${k}=${v}`)]
          .join(" ").toLowerCase();
        if (text && !hay.includes(text)) continue;
        if (want && status(b) !== want) continue;
        const tr = row(b);
        // Widths are set through the DOM: the policy allows no inline style attribute.
        tr.querySelector(".bar > span").style.width =
          `${b.total ? (100 * finished(b.counts)) / b.total : 0}%`;
        tbody.append(tr);
      }
      document.getElementById("no-batches").hidden = rows.size > 0;
    }

    document.getElementById("batch-filter").addEventListener("input", render);
    document.getElementById("state-filter").addEventListener("change", render);
    for (const btn of document.querySelectorAll("th button[data-sort]")) {
      // The column header, not its button, says how the table is sorted (ARIA allows it there).
      btn.parentElement.setAttribute("aria-sort", "none");
      btn.addEventListener("click", () => {
        sortDir = sortKey === btn.dataset.sort ? -sortDir : 1;
        sortKey = btn.dataset.sort;
        for (const o of document.querySelectorAll("th button[data-sort]")) o.parentElement.setAttribute("aria-sort", "none");
        btn.parentElement.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
        render();
      });
    }
    tbody.addEventListener("click", (ev) => {
      const id = ev.target?.dataset?.cancel;
      if (!id) return;
      const b = rows.get(id);
      if (!confirm(`Cancel every unfinished job of ${b.name}?`)) return;
      const form = document.getElementById("cancel-form");
      form.action = `/console/batches/${id}/cancel`;
      form.submit();
    });
    if (data.older) {
      document.getElementById("older").append(
        h("a", { href: `/console/batches?before=${data.older}` }, "Older batches →"));
    }
    render();

    // One stream follows the unfinished batches shown.
    const live = data.batches.filter((b) => !b.done).slice(0, 20).map((b) => b.id);
    if (live.length > 0) {
      const source = new EventSource(`/console/batches/watch?ids=${live.join(",")}`);
      source.addEventListener("batch", (ev) => {
        const b = JSON.parse(ev.data);
        rows.set(b.id, b);
        render();
      });
    }
  }

  // ---- submit ------------------------------------------------------------------------------

  function submitPage() {
    const text = document.getElementById("manifest");
    const preview = document.getElementById("preview");
    const error = document.getElementById("submit-error");
    // An error naming a line: put the cursor there.
    const at = error?.textContent.match(/\(line (\d+)\)/);
    if (at) selectLine(Number(at[1]));

    function selectLine(n) {
      const lines = text.value.split("\n");
      const start = lines.slice(0, n - 1).reduce((s, l) => s + l.length + 1, 0);
      text.focus();
      text.setSelectionRange(start, start + (lines[n - 1] ?? "").length);
      const lineHeight = text.scrollHeight / Math.max(1, lines.length);
      text.scrollTop = Math.max(0, (n - 3) * lineHeight);
    }

    document.getElementById("manifest-file").addEventListener("change", async (ev) => {
      const file = ev.target.files[0];
      if (file) text.value = await file.text();
    });
    document.getElementById("check").addEventListener("click", async () => {
      preview.replaceChildren(h("p", {}, "Checking…"));
      try {
        const p = await call("/console/submit/preview", { manifest: text.value });
        // The last submit's error is about another text.
        if (error) error.hidden = true;
        const axes = p.vars.map((v) => h("tr", {},
          h("th", { scope: "row" }, v.name), h("td", {}, number(v.values.length)),
          h("td", {}, v.values.join(", "))));
        const factors = [...p.vars.map((v) => v.values.length)];
        if (p.sizes) factors.push(p.sizes);
        if (p.seeds) factors.push(p.seeds);
        const formula = factors.length ? `${factors.join(" × ")}${p.explicit ? ` + ${p.explicit}` : ""} = ` : "";
        fill(preview,
          h("p", { id: "preview-count" }, `${p.name} on ${p.model}: ${formula}${number(p.jobs)} ${p.jobs === 1 ? "job" : "jobs"}`),
          axes.length ? h("table", {}, h("thead", {}, h("tr", {},
            h("th", {}, "variable"), h("th", {}, "count"), h("th", {}, "values"))), h("tbody", {}, axes)) : null,
          p.sizes ? h("p", {}, `${p.sizes} size(s) × ${p.seeds} seed(s) per variant`) : null,
        );
      } catch (e) {
        preview.replaceChildren(h("p", { class: "error", role: "alert", id: "preview-error" }, e.message));
        const line = e.message.match(/\(line (\d+)\)/);
        if (line) selectLine(Number(line[1]));
      }
    });
  }

  // ---- one batch: progress, gallery, review ------------------------------------------------

  function batchPage() {
    let batch = data.batch;
    const jobs = [];
    const byId = new Map();
    const selected = new Set();
    // Each variable's values, read from the jobs' keys in the order they first appear: the jobs
    // come in id order, and a batch's ids are made in manifest order, so that is the manifest's.
    const vars = new Map();
    const filters = new Map();
    const gallery = document.getElementById("gallery");
    const statusLine = document.getElementById("gallery-status");
    const more = document.getElementById("gallery-more");
    // The gallery shows at most `limit` tiles (more on demand), and a grid cell CELL_TILES: the
    // page stays as quick with 10,000 jobs as with 100.
    const PAGE_TILES = 240;
    const CELL_TILES = 24;
    let limit = PAGE_TILES;
    let loading = true;

    function progress() {
      const c = batch.counts;
      const box = document.getElementById("batch-progress");
      const bar = h("span", { class: c.dead > 0 ? "bar has-dead" : "bar", role: "progressbar",
        "aria-valuemin": 0, "aria-valuemax": batch.total, "aria-valuenow": finished(c),
        "aria-label": "jobs finished" }, h("span", {}));
      bar.firstChild.style.width = `${batch.total ? (100 * finished(c)) / batch.total : 0}%`;
      fill(box,
        bar,
        h("span", { id: "progress-text" }, `${number(finished(c))} of ${number(batch.total)} finished`),
        h("span", { class: "counts" }, ["succeeded", "running", "queued", "pending", "retryable", "dead", "cancelled"]
          .filter((s) => c[s] > 0).map((s) => h("span", { class: `state-${s}` }, `${number(c[s])} ${s}`))),
        h("span", {}, `rate ${rate(batch.rate_per_second)}`),
        h("span", {}, batch.done ? "done" : `ETA ${duration(batch.eta_seconds)}`),
        h("span", {}, `${batch.device_seconds.toFixed(1)} device-seconds`),
        !batch.done && batch.live_workers === 0 ? h("span", { class: "state-dead" }, "no live worker serves this model") : null,
      );
      box.dataset.done = batch.done ? "true" : "false";
      document.getElementById("cancel-form").hidden = batch.done;
    }

    function learn(job) {
      for (const [name, value] of Object.entries(job.vars)) {
        if (!vars.has(name)) vars.set(name, []);
        if (!vars.get(name).includes(value)) vars.get(name).push(value);
      }
    }

    function controls() {
      const box = document.getElementById("var-filters");
      box.replaceChildren();
      for (const [name, values] of vars) {
        const sel = h("select", { "data-var": name },
          h("option", { value: "" }, "any"), values.map((v) => h("option", { value: v }, v)));
        sel.value = filters.get(name) ?? "";
        sel.addEventListener("change", () => {
          if (sel.value) filters.set(name, sel.value); else filters.delete(name);
          limit = PAGE_TILES;
          render();
        });
        box.append(h("label", {}, `${name} `, sel));
      }
      for (const id of ["rows-by", "cols-by"]) {
        const sel = document.getElementById(id);
        const keep = sel.value;
        fill(sel, h("option", { value: "" }, "none"),
          [...vars.keys()].map((n) => h("option", { value: n }, n)));
        sel.value = keep;
      }
    }

    function shown(job) {
      for (const [name, value] of filters) if (job.vars[name] !== value) return false;
      const want = document.getElementById("review-filter").value;
      const verdict = job.review?.verdict;
      if (want === "approved" || want === "rejected") return verdict === want;
      if (want === "unreviewed") return job.state === "succeeded" && !verdict;
      if (want === "failed") return job.state === "dead" || job.state === "cancelled";
      return true;
    }

    function caption(job) {
      const v = Object.entries(job.vars);
      return v.length ? v.map(([k, x]) => `${k}=${x}`).join(" · ") + ` · #${job.key.split("#").pop()}` : job.key;
    }

    function tile(job) {
      const verdict = job.review?.verdict;
      const classes = ["tile"];
      if (verdict) classes.push(verdict);
      if (selected.has(job.id)) classes.push("selected");
      if (job.state === "dead" || job.state === "cancelled") classes.push("failed");
      let picture;
      if (job.state === "succeeded") {
        picture = h("img", { src: `/console/jobs/${job.id}/thumbnail`, loading: "lazy", decoding: "async",
          alt: job.params.prompt, width: 164, height: 164 });
      } else if (job.state === "dead" || job.state === "cancelled") {
        picture = h("div", { class: "reason" }, job.last_error
          ? `${job.state}${job.error_kind ? ` (${job.error_kind})` : ""}: ${job.last_error}` : job.state);
      } else {
        picture = h("div", { class: "pending" }, job.progress ? `${job.state} ${job.progress.done}/${job.progress.total}` : job.state);
      }
      return h("figure", { class: classes.join(" "), tabindex: 0, "data-job": job.id, "data-state": job.state,
        "data-verdict": verdict ?? "", "aria-label": `${caption(job)}, ${verdict ?? job.state}` },
        job.state === "succeeded" ? h("input", { type: "checkbox", class: "sel", checked: selected.has(job.id),
          "aria-label": `select ${caption(job)}`, tabindex: -1 }) : null,
        picture,
        h("figcaption", {}, caption(job)),
        h("div", { class: "verdict" }, verdict ? `${verdict} by ${job.review.by}` : ""),
      );
    }

    function render() {
      const focused = document.activeElement?.dataset?.job;
      const list = jobs.filter(shown);
      const rowsBy = document.getElementById("rows-by").value;
      const colsBy = document.getElementById("cols-by").value;
      gallery.replaceChildren();
      if (rowsBy || colsBy) {
        const rowValues = rowsBy ? vars.get(rowsBy) : [""];
        const colValues = colsBy ? vars.get(colsBy) : [""];
        const table = h("table", { class: "grid" },
          h("thead", {}, h("tr", {}, h("th", {}, rowsBy && colsBy ? `${rowsBy} \\ ${colsBy}` : ""),
            colValues.map((c) => h("th", { scope: "col" }, c || colsBy || "")))));
        const body = h("tbody");
        for (const r of rowValues) {
          const tr = h("tr", {}, h("th", { scope: "row" }, r || rowsBy || ""));
          for (const c of colValues) {
            const cell = list.filter((j) => (!rowsBy || j.vars[rowsBy] === r) && (!colsBy || j.vars[colsBy] === c));
            const rest = cell.length - CELL_TILES;
            const all = rest > 0 ? h("button", { type: "button", class: "more" }, `all ${number(cell.length)}`) : null;
            // The cell's jobs on their own: its row and column become filters.
            all?.addEventListener("click", () => {
              if (rowsBy) filters.set(rowsBy, r);
              if (colsBy) filters.set(colsBy, c);
              document.getElementById("rows-by").value = "";
              document.getElementById("cols-by").value = "";
              controls();
              render();
            });
            tr.append(h("td", {}, h("div", { class: "cell" }, cell.slice(0, CELL_TILES).map(tile)), all));
          }
          body.append(tr);
        }
        table.append(body);
        gallery.append(table);
        more.hidden = true;
      } else {
        gallery.append(...list.slice(0, limit).map(tile));
        more.hidden = list.length <= limit;
        document.getElementById("show-more").textContent = `Show more (${number(list.length - limit)} not shown)`;
      }
      const approved = jobs.filter((j) => j.review?.verdict === "approved").length;
      const rejected = jobs.filter((j) => j.review?.verdict === "rejected").length;
      document.getElementById("download-approved").hidden = approved === 0;
      statusLine.textContent = `${number(list.length)} shown of ${number(jobs.length)}${loading ? " (loading…)" : ""}` +
        ` · ${number(approved)} approved · ${number(rejected)} rejected`;
      document.getElementById("selection-count").textContent = selected.size ? `${selected.size} selected` : "";
      if (focused) gallery.querySelector(`[data-job="${focused}"]`)?.focus();
    }

    async function decide(ids, verdict) {
      const eligible = ids.filter((id) => byId.get(id)?.state === "succeeded");
      if (eligible.length === 0) return;
      try {
        const answer = await call("/console/reviews", { jobs: eligible, verdict });
        const at = new Date().toISOString();
        for (const id of eligible) {
          byId.get(id).review = verdict ? { verdict, by: answer.by, at } : undefined;
          selected.delete(id);
        }
      } catch (e) {
        alert(`The review was not saved: ${e.message}`);
      }
      render();
    }

    async function load() {
      let after = null;
      do {
        const url = `/console/batches/${batch.id}/jobs` + (after ? `?after=${after}` : "");
        const res = await fetch(url, { credentials: "same-origin" });
        if (!res.ok) {
          statusLine.textContent = `Cannot load the jobs: ${(await res.json().catch(() => ({})))?.error?.message ?? res.status}`;
          return;
        }
        const page = await res.json();
        for (const j of page.jobs) {
          const old = byId.get(j.id);
          if (old) Object.assign(old, j); else { jobs.push(j); byId.set(j.id, j); }
          learn(j);
        }
        after = page.next_after;
        // The first page is shown while the rest load (a 10,000-job batch reads 20 pages).
        if (loading && page.jobs.length === jobs.length && after) { controls(); render(); }
      } while (after);
      loading = false;
      controls();
      render();
    }

    function open(job) {
      const dialog = document.getElementById("detail");
      document.getElementById("detail-title").textContent = caption(job);
      const img = document.getElementById("detail-image");
      img.hidden = job.state !== "succeeded";
      if (job.state === "succeeded") {
        // A small image is enlarged with its pixels kept sharp.
        img.classList.toggle("small", Math.max(job.params.width, job.params.height) < 512);
        img.src = `/console/jobs/${job.id}/image`;
        img.alt = job.params.prompt;
      }
      document.getElementById("detail-rerender").href = `/console/submit?from=${job.id}`;
      const p = job.params;
      const fields = [
        ["job", job.id], ["key", job.key], ["state", job.state], ["prompt", p.prompt],
        ["negative prompt", p.negative_prompt], ["seed", p.seed], ["size", `${p.width}×${p.height}`],
        ["steps", p.steps], ["guidance", p.guidance], ["sampler", p.sampler], ["model", job.model],
        ["LoRAs", (p.loras ?? []).map((l) => `${l.name} (${l.weight})`).join(", ")],
        ["image sha256", job.sha256], ["attempts", `${job.attempt} of ${job.max_attempts}`],
        ["timings", Object.entries(job.timings ?? {}).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(", ")],
        ["review", job.review ? `${job.review.verdict} by ${job.review.by}, ${new Date(job.review.at).toLocaleString()}` : ""],
        ["error", job.last_error],
      ].filter(([, v]) => v !== null && v !== undefined && v !== "");
      fill(document.getElementById("detail-fields"),
        fields.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
      dialog.showModal();
    }

    gallery.addEventListener("click", (ev) => {
      const fig = ev.target.closest("figure[data-job]");
      if (!fig) return;
      const job = byId.get(fig.dataset.job);
      if (ev.target.classList.contains("sel")) {
        if (ev.target.checked) selected.add(job.id); else selected.delete(job.id);
        render();
      } else if (ev.target.tagName === "IMG") {
        open(job);
      } else {
        fig.focus();
      }
    });
    gallery.addEventListener("keydown", (ev) => {
      const fig = ev.target.closest?.("figure[data-job]");
      if (!fig || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      const tiles = [...gallery.querySelectorAll("figure[data-job]")];
      const i = tiles.indexOf(fig);
      const id = fig.dataset.job;
      const key = ev.key;
      const move = { ArrowRight: 1, ArrowDown: 1, j: 1, ArrowLeft: -1, ArrowUp: -1, k: -1 }[key];
      if (move) {
        tiles[Math.min(tiles.length - 1, Math.max(0, i + move))]?.focus();
      } else if (key === "A" && selected.size) {
        decide([...selected], "approved");
      } else if (key === "R" && selected.size) {
        decide([...selected], "rejected");
      } else if (key === "a") {
        decide([id], "approved");
      } else if (key === "r") {
        decide([id], "rejected");
      } else if (key === "u") {
        decide([id], null);
      } else if (key === "x" || key === " ") {
        if (byId.get(id).state !== "succeeded") return;
        if (selected.has(id)) selected.delete(id); else selected.add(id);
        render();
      } else if (key === "Enter") {
        open(byId.get(id));
      } else {
        return;
      }
      ev.preventDefault();
    });
    for (const id of ["rows-by", "cols-by", "review-filter"]) {
      document.getElementById(id).addEventListener("change", () => { limit = PAGE_TILES; render(); });
    }
    document.getElementById("show-more").addEventListener("click", () => { limit += PAGE_TILES; render(); });
    document.getElementById("select-all").addEventListener("click", () => {
      for (const j of jobs.filter(shown)) if (j.state === "succeeded") selected.add(j.id);
      render();
    });
    document.getElementById("select-none").addEventListener("click", () => { selected.clear(); render(); });
    document.getElementById("approve-selected").addEventListener("click", () => decide([...selected], "approved"));
    document.getElementById("reject-selected").addEventListener("click", () => decide([...selected], "rejected"));
    document.getElementById("cancel-form").addEventListener("submit", (ev) => {
      if (!confirm("Cancel every unfinished job of this batch?")) ev.preventDefault();
    });

    progress();
    controls();
    load();
    if (!batch.done) {
      // Progress is pushed; the gallery re-reads the jobs when the counts move: one read at a
      // time, at most every 2 s, and no more often than a millisecond per job (10 s for 10,000).
      const source = new EventSource(`/console/batches/watch?ids=${batch.id}`);
      let reload = null;
      source.addEventListener("batch", (ev) => {
        batch = JSON.parse(ev.data);
        progress();
        if (batch.done) {
          // The last states at once: a finished batch shows no tile still running.
          source.close();
          clearTimeout(reload);
          load();
        } else if (!reload) {
          reload = setTimeout(async () => { await load(); reload = null; }, Math.max(2000, jobs.length));
        }
      });
    }
  }

  const pages = { batches: batchesPage, batch: batchPage, submit: submitPage };
  pages[document.body.dataset.page]?.();
})();
