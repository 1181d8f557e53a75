#!/usr/bin/env python3
"""The benchmark report: docs/BENCHMARKS.md and its SVG charts, from bench/results/*.json.

  report.py --write            writes docs/BENCHMARKS.md and docs/benchmarks-*.svg
  report.py --print SCENARIO   prints that scenario's tables and targets (chat, stream, mcp,
                               memory, sdk, perf)

Standard library only. Targets are judged here, in one place, and a miss is printed as a miss.
KB and MB are decimal (1 KB = 1000 bytes); sizes printed by the tools in KiB are converted.
"""

import html
import json
import math
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
DOCS = os.path.join(ROOT, "docs")


def load(name):
    try:
        with open(os.path.join(RESULTS, f"{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def num(value):
    return value if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)) else None


def get(doc, *path):
    for step in path:
        if not isinstance(doc, dict) or step not in doc:
            return None
        doc = doc[step]
    return doc


def us(value, signed=False):
    value = num(value)
    if value is None:
        return "n/a"
    if abs(value) >= 10_000:
        text = f"{value / 1000:,.1f} ms"
        return f"+{text}" if signed and value > 0 else text
    text = f"{value:,.0f} µs"
    return f"+{text}" if signed and value > 0 else text


def rate(value):
    value = num(value)
    return "n/a" if value is None else f"{value:,.0f}"


def ratio(a, b):
    a, b = num(a), num(b)
    return a / b if a is not None and b not in (None, 0) else None


def diff(a, b):
    a, b = num(a), num(b)
    return a - b if a is not None and b is not None else None


def clean_symbol(name):
    """A perf symbol without the empty columns perf pads its lines with."""
    return re.sub(r"(\s+-)+$", "", name).strip()


def clean_version(tool, text):
    """`oha 1.16.0` as `1.16.0` under the key `oha`."""
    text = str(text).strip()
    for prefix in (f"{tool} version ", f"{tool} "):
        if text.lower().startswith(prefix):
            return text[len(prefix):]
    return text


def one_cpu(text):
    """`CPU 1-1` as `CPU 1`."""
    return re.sub(r"CPU (\d+)-\1\b", r"CPU \1", str(text))


def ordered(load_result):
    """The targets of an mcp-load result, in the order they were measured."""
    targets = load_result.get("targets", {})
    order = load_result.get("order") or sorted(targets)
    return [(label, targets[label]) for label in order if label in targets]


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Targets:
    """Each target: its name, the measured value, the limit, and met / not met / not measured."""

    def __init__(self):
        self.rows = []

    def add(self, scenario, name, value_text, limit_text, met):
        verdict = "not measured" if met is None else ("**met**" if met else "**not met**")
        self.rows.append((scenario, name, value_text, limit_text, verdict))

    def markdown(self, scenario=None):
        rows = [r[1:] for r in self.rows if scenario is None or r[0] == scenario]
        if not rows:
            return ""
        return table(["target", "measured", "limit", "verdict"], rows)


# ---------------------------------------------------------------------------------------------
# scenarios


def chat_section(doc, targets):
    out = []
    if doc is None:
        targets.add("chat", "added latency at 1,000 and 3,000 RPS", "n/a", "p50 ≤ 100 µs, p99 ≤ 0.5 ms", None)
        targets.add("chat", "saturation throughput vs direct", "n/a", "≥ 50 %", None)
        targets.add("chat", "saturation throughput vs LiteLLM", "n/a", "≥ 20×", None)
        return "Not run yet: `cargo xtask bench chat`."
    seq = doc.get("sequential", {})
    out.append(f"Command: `{doc.get('command')}`\n")
    settings = doc.get("settings", {})
    out.append(
        f"Request body {settings.get('request_bytes', '?')} bytes (one user message; the `echo` model answers it back, "
        f"so answers are about as large). Fixed rates: {settings.get('rate_connections')} connections, "
        f"{settings.get('seconds')} s each, latency from each request's scheduled send time (oha `--latency-correction`). "
        f"Saturation: {settings.get('sat_connections')} connections, no rate limit.\n"
    )
    out.append(f"**Sequential** ({seq.get('requests_per_side', '?')} requests per side, one at a time, interleaved; `chat-latency`):\n")
    out.append(
        table(
            ["", "p50", "p90", "p99", "mean"],
            [
                [name, us(get(seq, key, "p50_us")), us(get(seq, key, "p90_us")), us(get(seq, key, "p99_us")), us(get(seq, key, "mean_us"))]
                for name, key in (("direct", "direct"), ("proxy", "proxy"))
            ]
            + [["added by the proxy", us(seq.get("added_p50_us"), True), "", us(seq.get("added_p99_us"), True), ""]],
        )
    )
    load_ = doc.get("load", {})
    litellm_status = doc.get("litellm_status", "")
    rows = []
    rates = [r for r in settings.get("rates", [])]
    for r in rates + ["sat"]:
        d = get(load_, "direct", str(r))
        for target in ("direct", "proxy", "litellm"):
            x = get(load_, target, str(r))
            if x is None:
                continue
            added50 = "" if target == "direct" else us(diff(x.get("p50_us"), get(d, "p50_us")), True)
            added99 = "" if target == "direct" else us(diff(x.get("p99_us"), get(d, "p99_us")), True)
            rows.append(
                [
                    "saturation" if r == "sat" else f"{r:,}",
                    target,
                    rate(x.get("ok_rps")),
                    f"{x.get('failed', 'n/a'):,}" if isinstance(x.get("failed"), int) else "n/a",
                    us(x.get("p50_us")),
                    us(x.get("p99_us")),
                    added50,
                    added99,
                ]
            )
    out.append("\n**Under load** (oha; added = target minus direct at the same rate):\n")
    out.append(table(["offered RPS", "target", "answered RPS (2xx)", "failed", "p50", "p99", "added p50", "added p99"], rows))
    if not litellm_status.startswith("ok"):
        out.append(f"\nLiteLLM: not measured ({litellm_status}).")

    # Targets.
    verdicts = []
    texts = []
    for r in (1000, 3000):
        d, p = get(load_, "direct", str(r)), get(load_, "proxy", str(r))
        a50, a99 = diff(get(p, "p50_us"), get(d, "p50_us")), diff(get(p, "p99_us"), get(d, "p99_us"))
        failed = get(p, "failed")
        if a50 is None or a99 is None:
            verdicts.append(None)
            texts.append(f"{r:,} RPS: n/a")
            continue
        verdicts.append(a50 <= 100 and a99 <= 500 and failed == 0)
        texts.append(f"{r:,} RPS: p50 {us(a50, True)}, p99 {us(a99, True)}" + (f", {failed} failed" if failed else ""))
    met = None if None in verdicts else all(verdicts)
    targets.add("chat", "added latency at 1,000 and 3,000 RPS", "; ".join(texts), "p50 ≤ 100 µs and p99 ≤ 0.5 ms (no errors)", met)
    d_sat, p_sat, l_sat = (get(load_, t, "sat") for t in ("direct", "proxy", "litellm"))
    share = ratio(get(p_sat, "ok_rps"), get(d_sat, "ok_rps"))
    targets.add(
        "chat",
        "saturation throughput vs direct",
        "n/a" if share is None else f"{rate(get(p_sat, 'ok_rps'))} vs {rate(get(d_sat, 'ok_rps'))} RPS = {share:.0%}"
        + (f" ({get(p_sat, 'failed')} failed)" if get(p_sat, "failed") else ""),
        "≥ 50 % of direct",
        None if share is None else share >= 0.5,
    )
    vs = ratio(get(p_sat, "ok_rps"), get(l_sat, "ok_rps"))
    targets.add(
        "chat",
        "saturation throughput vs LiteLLM",
        "n/a" if vs is None else f"{rate(get(p_sat, 'ok_rps'))} vs {rate(get(l_sat, 'ok_rps'))} RPS = {vs:.1f}×",
        "≥ 20× LiteLLM's",
        None if vs is None else vs >= 20,
    )
    return "\n".join(out)


def stream_section(doc, targets):
    if doc is None:
        targets.add("stream", "per-chunk forwarding delay", "n/a", "≤ 1 ms per chunk", None)
        return "Not run yet: `cargo xtask bench stream`."
    out = [f"Command: `{doc.get('command')}`\n"]
    s = doc.get("settings", {})
    out.append(
        "Per-chunk delay is the time from the upstream handing a chunk to its HTTP server (stamped in the chunk) "
        "to the client reading it: straight from the upstream (`direct`) and through the proxy, which decodes "
        "each OpenAI chunk and re-encodes it as its own event. Time to first byte runs from sending the request "
        "to the first body bytes. The proxy answers streams with `Connection: close`, so every proxied stream "
        "pays a new TCP connection, while the direct side reuses its connection. With 10 ms between chunks the cores "
        "go idle, and on this virtual machine waking one costs on the order of 100–300 µs (compare the direct TTFB "
        "of the stamped upstream with the back-to-back `echo` streams); a proxied stream crosses two more wake-ups "
        "than a direct one, which is likely most of its added TTFB on the stamped upstream.\n"
    )
    rows = []
    for key in ("stamped", "echo"):
        part = doc.get(key)
        if not isinstance(part, dict) or "direct" not in part:
            continue
        for side in ("direct", "proxy"):
            x = part[side]
            cd = x.get("chunk_delay", {})
            has = cd.get("n", 0) > 0
            rows.append(
                [
                    part.get("label", key),
                    side,
                    us(get(x, "ttfb", "p50_us")),
                    us(get(x, "ttfb", "p99_us")),
                    us(cd.get("p50_us")) if has else "",
                    us(cd.get("p99_us")) if has else "",
                    us(cd.get("max_us")) if has else "",
                    f"{cd.get('share_over_1ms', 0):.2%}" if has else "",
                    f"{cd.get('n', 0):,}" if has else "",
                ]
            )
        rows.append(
            [
                part.get("label", key),
                "**added by the proxy**",
                us(part.get("added_ttfb_p50_us"), True),
                us(part.get("added_ttfb_p99_us"), True),
                us(part.get("added_chunk_delay_p50_us"), True) if get(part, "proxy", "chunk_delay", "n") else "",
                us(part.get("added_chunk_delay_p99_us"), True) if get(part, "proxy", "chunk_delay", "n") else "",
                "",
                "",
                "",
            ]
        )
    out.append(
        table(
            ["upstream", "", "TTFB p50", "TTFB p99", "chunk delay p50", "chunk delay p99", "chunk delay max", "chunks > 1 ms", "chunks"],
            rows,
        )
    )
    st = doc.get("stamped", {})
    added99 = num(st.get("added_chunk_delay_p99_us"))
    proxy_max = num(get(st, "proxy", "chunk_delay", "max_us"))
    over = num(get(st, "proxy", "chunk_delay", "share_over_1ms"))
    targets.add(
        "stream",
        "per-chunk forwarding delay (added p99; proxy max)",
        "n/a" if added99 is None else f"added p99 {us(added99, True)}; slowest chunk {us(proxy_max)} end to end; {over:.2%} of chunks over 1 ms end to end",
        "≤ 1 ms per chunk (judged on the added p99)",
        None if added99 is None else added99 <= 1000,
    )
    return "\n".join(out)


def mcp_section(doc, targets):
    if doc is None:
        targets.add("mcp", "pooled latency vs direct Streamable HTTP", "n/a", "≤ 1.3×", None)
        targets.add("mcp", "throughput vs supergateway", "n/a", "≥ 2×", None)
        return "Not run yet: `cargo xtask bench mcp`."
    out = [f"Command: `{doc.get('command')}`\n"]
    lat = doc.get("latency", {})
    out.append(
        f"**Sequential, interleaved** (`mcp-latency`, {lat.get('calls_per_way', '?')} calls per way; the upstream is the rmcp test "
        f"server over Streamable HTTP, MCP {lat.get('upstream_protocol_version', '?')}):\n"
    )
    rows = []
    for name, key in (
        ("through the proxy (pooled session)", "proxy"),
        ("connect per request (new session each call)", "connect_per_request"),
        ("direct, one reused session", "direct_session"),
    ):
        x = lat.get(key, {})
        rows.append([name, us(x.get("p50_us")), us(x.get("p90_us")), us(x.get("p99_us")), us(x.get("mean_us"))])
    out.append(table(["", "p50", "p90", "p99", "mean"], rows))
    for part, title in (("sequential", "One caller"), ("throughput", "Throughput")):
        x = doc.get(part, {})
        rows = []
        for label, t in ordered(x):
            if "error" in t:
                rows.append([label, "not measured", "", "", "", t["error"][:120]])
                continue
            rows.append(
                [
                    label,
                    rate(t.get("calls_per_s")),
                    us(t.get("p50_us")),
                    us(t.get("p99_us")),
                    f"{t.get('errors', 0):,}",
                    (t.get("protocol_version") or "") + ((" — " + t["first_error"][:120]) if t.get("first_error") else ""),
                ]
            )
        out.append(
            f"\n**{title}** (`mcp-load`, {x.get('concurrency', '?')} caller(s), {x.get('duration_secs', '?')} s per target; "
            "MCP targets share one session among their callers):\n"
        )
        out.append(table(["way in", "calls/s", "p50", "p99", "errors", "protocol / first error"], rows))
    for peer, status in doc.get("peer_status", {}).items():
        if not str(status).startswith("ok"):
            out.append(f"\n{peer}: not measured ({status}).")

    r = ratio(get(lat, "proxy", "p50_us"), get(lat, "direct_session", "p50_us"))
    r99 = ratio(get(lat, "proxy", "p99_us"), get(lat, "direct_session", "p99_us"))
    targets.add(
        "mcp",
        "pooled latency vs direct Streamable HTTP",
        "n/a" if r is None else f"p50 {us(get(lat, 'proxy', 'p50_us'))} vs {us(get(lat, 'direct_session', 'p50_us'))} = {r:.2f}× (p99 {r99:.2f}×)",
        "≤ 1.3× (judged on p50)",
        None if r is None else r <= 1.3,
    )
    tp = get(doc, "throughput", "targets") or {}
    sy = get(tp, "switchyard (stdio)", "calls_per_s")
    sg = get(tp, "supergateway (stdio)", "calls_per_s")
    vs = ratio(sy, sg)
    targets.add(
        "mcp",
        "throughput vs supergateway (same stdio server)",
        "n/a" if vs is None else f"{rate(sy)} vs {rate(sg)} calls/s = {vs:.1f}×",
        "≥ 2×",
        None if vs is None else vs >= 2,
    )
    return "\n".join(out)


def memory_section(doc, targets):
    if doc is None:
        targets.add("memory", "idle RSS", "n/a", "≤ 30 MB", None)
        targets.add("memory", "memory per open stream", "n/a", "≤ 20 KB", None)
        return "Not run yet: `cargo xtask bench memory`."
    out = [f"Command: `{doc.get('command')}`\n"]
    start, idle = doc.get("rss_start_kib"), doc.get("rss_idle_kib")
    rows = [
        ["just started", "", f"{start / 1024:.1f} MiB" if num(start) else "n/a", "", "", ""],
        ["idle, after one chat and one stream", "", f"{idle / 1024:.1f} MiB" if num(idle) else "n/a", "", "", ""],
    ]
    last = None
    for h in doc.get("held", []):
        if "error" in h:
            rows.append([f"{h.get('asked'):,} open streams", "failed", "", "", "", h["error"][:120]])
            continue
        label = f"{h['streams']:,} open streams" + ("" if h["streams"] == h["asked"] else f" (asked {h['asked']:,})")
        rows.append(
            [
                label,
                f"{h['proxy_fds']:,}",
                f"{h['rss_kib'] / 1024:.1f} MiB",
                f"{h.get('rss_idle_kib', idle) / 1024:.1f} MiB",
                f"{h['bytes_per_stream'] / 1000:.1f} KB",
                f"{h['rss_after_release_kib'] / 1024:.1f} MiB",
            ]
        )
        last = h
    out.append(table(["state", "proxy descriptors", "RSS", "idle RSS before", "per open stream", "RSS after release"], rows))
    out.append(
        f"\nEach count runs on a fresh proxy, warmed up with one chat and one stream. Per open stream = (RSS with the "
        f"streams − that proxy's idle RSS) / streams; 'after release' is 2 s after the client closed them (the allocator "
        f"keeps freed memory). Open-files limit: {doc.get('open_files_limit')} "
        "(each stream holds two descriptors in the proxy: the client's and the upstream's)."
    )
    targets.add(
        "memory",
        "idle RSS",
        "n/a" if not num(idle) else f"{idle * 1024 / 1e6:.1f} MB",
        "≤ 30 MB",
        None if not num(idle) else idle * 1024 <= 30e6,
    )
    per = None if last is None else last["bytes_per_stream"]
    targets.add(
        "memory",
        "memory per open stream",
        "n/a" if per is None else f"{per / 1000:.1f} KB (at {last['streams']:,} streams)",
        "≤ 20 KB",
        None if per is None else per <= 20_000,
    )
    return "\n".join(out)


def sdk_section(doc, targets):
    if doc is None:
        targets.add("sdk", "SDK download, gzipped", "n/a", "≤ 150 KB", None)
        return "Not run yet: `cargo xtask bench sdk`."
    out = [f"Command: `{doc.get('command')}`\n"]
    size = doc.get("size", {})
    if size.get("printed"):
        out.append(f"`cargo xtask sdk` printed: `{size['printed']}`\n")
    else:
        out.append(f"Size not measured: {doc.get('size_status')}\n")
    b = doc.get("browser", {})
    if b.get("ways"):
        out.append(
            f"`client.chat` against a plain `fetch` of the same request in {b.get('browser')} "
            f"(headless, cross-origin isolated: {b.get('cross_origin_isolated')}), {b.get('calls_per_way')} calls per way, interleaved:\n"
        )
        rows = [[name, us(x.get("p50_us")), us(x.get("p90_us")), us(x.get("p99_us"))] for name, x in b["ways"].items()]
        rows.append(["**SDK adds, direct mode**", us(b.get("sdk_added_direct_p50_us"), True), "", us(b.get("sdk_added_direct_p99_us"), True)])
        rows.append(["**SDK adds, proxy mode**", us(b.get("sdk_added_proxy_p50_us"), True), "", us(b.get("sdk_added_proxy_p99_us"), True)])
        out.append(table(["way", "p50", "p90", "p99"], rows))
    else:
        out.append(f"Browser round trip not measured: {doc.get('browser_status')}")
    total = num(size.get("total_gzip_kib"))
    targets.add(
        "sdk",
        "SDK download (.wasm + JS), gzipped",
        "n/a" if total is None else f"{total * 1024 / 1000:.1f} KB ({total:.1f} KiB)",
        "≤ 150 KB",
        None if total is None else total * 1024 <= 150_000,
    )
    return "\n".join(out)


def perf_section(doc):
    if doc is None:
        return "Not run yet: `cargo xtask bench perf`."
    p = doc.get("profile", {})
    out = [f"Command: `{doc.get('command')}`\n"]
    if p.get("status") != "ok":
        out.append(f"No profile: {p.get('status')}")
        return "\n".join(out)
    out.append(
        f"Samples of the proxy's process only (cpu-clock, 999 Hz) while oha drove {rate(p.get('rps_during_profile'))} RPS through it. "
        "Self time per function (release build, symbols only: no call graphs).\n"
    )
    out.append(table(["self %", "function"], [[f"{r['percent']:.2f} %", f"`{clean_symbol(r['name'])[:140]}`"] for r in p.get("top_symbols", [])[:25]]))
    alloc = sum(
        r["percent"]
        for r in p.get("top_symbols", [])
        if re.match(r"(_int_)?(malloc|free|realloc|cfree)|malloc_consolidate|unlink_chunk|__libc_(malloc|free|realloc)|_?mi_", clean_symbol(r["name"]))
    )
    out.append(f"\nThe allocator (mimalloc's `mi_*`, or glibc's malloc and free) among the functions above: {alloc:.1f} % of the proxy's samples.")
    if p.get("by_object"):
        out.append("\nBy object:\n")
        out.append(table(["self %", "object"], [[f"{r['percent']:.2f} %", f"`{r['name']}`"] for r in p["by_object"]]))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# charts


def hbar_svg(title, rows, unit, reference=None, note=None):
    """A horizontal bar chart: rows of (label, value, colour); `reference` is (value, label)."""
    rows = [(label, v, colour) for label, v, colour in rows if num(v) is not None]
    width, left, right, bar, gap, top = 760, 250, 110, 22, 8, 48
    height = top + len(rows) * (bar + gap) + 40 + (18 if note else 0)
    values = [v for _, v, _ in rows] + ([reference[0]] if reference else [])
    lo, hi = min(0.0, *values) if values else 0.0, max(0.0, *values) if values else 1.0
    hi = hi if hi > lo else lo + 1
    span = width - left - right

    def x(v):
        return left + (v - lo) / (hi - lo) * span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="24" font-size="15" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, v, colour) in enumerate(rows):
        y = top + i * (bar + gap)
        x0, x1 = sorted((x(0), x(v)))
        parts.append(f'<text x="{left - 8}" y="{y + bar * 0.72:.1f}" text-anchor="end">{html.escape(label)}</text>')
        parts.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar}" fill="{colour}"/>')
        parts.append(f'<text x="{max(x1, x(0)) + 6:.1f}" y="{y + bar * 0.72:.1f}">{v:,.0f} {html.escape(unit)}</text>')
    axis_y = top + len(rows) * (bar + gap)
    parts.append(f'<line x1="{x(0):.1f}" y1="{top - 6}" x2="{x(0):.1f}" y2="{axis_y}" stroke="#333"/>')
    if reference:
        rx = x(reference[0])
        parts.append(f'<line x1="{rx:.1f}" y1="{top - 10}" x2="{rx:.1f}" y2="{axis_y + 4}" stroke="#c0392b" stroke-dasharray="5,4"/>')
        parts.append(f'<text x="{rx:.1f}" y="{axis_y + 20}" text-anchor="middle" fill="#c0392b">{html.escape(reference[1])}</text>')
    if note:
        parts.append(f'<text x="{left}" y="{height - 8}" font-size="11" fill="#555">{html.escape(note)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


COLOURS = {"direct": "#7f8c8d", "proxy": "#2980b9", "litellm": "#e67e22", "peer": "#e67e22"}


def charts(chat, mcp):
    made = []
    if chat:
        load_ = chat.get("load", {})
        rows = []
        for r in chat.get("settings", {}).get("rates", []):
            d, p = get(load_, "direct", str(r)), get(load_, "proxy", str(r))
            rows.append((f"{r:,} RPS, p50", diff(get(p, "p50_us"), get(d, "p50_us")), "#2980b9"))
            rows.append((f"{r:,} RPS, p99", diff(get(p, "p99_us"), get(d, "p99_us")), "#1f618d"))
        made.append(
            (
                "benchmarks-chat-added-latency.svg",
                "Non-streamed chat: latency the proxy adds (proxy − direct)",
                hbar_svg(
                    "Non-streamed chat: latency the proxy adds (proxy − direct)",
                    rows,
                    "µs",
                    reference=(500, "p99 target 500 µs"),
                    note="p50 target: 100 µs. oha at fixed rates, latency from the scheduled send time.",
                ),
            )
        )
        rows = [
            (name, get(load_, key, "sat", "ok_rps"), COLOURS[key])
            for name, key in (("direct to the upstream", "direct"), ("through Switchyard", "proxy"), ("through LiteLLM", "litellm"))
        ]
        made.append(
            (
                "benchmarks-chat-throughput.svg",
                "Non-streamed chat at saturation",
                hbar_svg("Non-streamed chat at saturation (answered requests per second)", rows, "RPS", note="Same fake upstream, same machine, same run."),
            )
        )
    if mcp:
        rows = []
        for label, t in ordered(get(mcp, "throughput") or {}):
            colour = COLOURS["proxy"] if label.startswith("switchyard") else COLOURS["direct"] if label.startswith("direct") else COLOURS["peer"]
            rows.append((label, t.get("calls_per_s"), colour))
        made.append(
            (
                "benchmarks-mcp-throughput.svg",
                "MCP tools/call throughput",
                hbar_svg(
                    f"MCP tools/call throughput, {get(mcp, 'throughput', 'concurrency')} callers (calls per second)",
                    rows,
                    "calls/s",
                    note="The stdio rows bridge the same rmcp test server; (http) is its Streamable HTTP endpoint.",
                ),
            )
        )
    return made


# ---------------------------------------------------------------------------------------------


def machine_line(docs):
    for doc in docs:
        m = doc and doc.get("machine")
        if m:
            return (
                f"{m.get('nproc')} CPUs ({m.get('cpu')}), {m.get('mem_total_mib')} MiB, Linux {m.get('kernel')}, "
                f"{m.get('rustc')}, commit {m.get('git_commit')}{' (with uncommitted changes)' if m.get('git_dirty') else ''}; "
                f"pinning: {one_cpu(m.get('pinning'))}"
            )
    return "n/a"


def build():
    docs = {name: load(name) for name in ("chat", "stream", "mcp", "memory", "sdk", "perf")}
    targets = Targets()
    sections = {
        "chat": chat_section(docs["chat"], targets),
        "stream": stream_section(docs["stream"], targets),
        "mcp": mcp_section(docs["mcp"], targets),
        "memory": memory_section(docs["memory"], targets),
        "sdk": sdk_section(docs["sdk"], targets),
        "perf": perf_section(docs["perf"]),
    }
    return docs, targets, sections


def write():
    docs, targets, sections = build()
    os.makedirs(DOCS, exist_ok=True)
    made = charts(docs["chat"], docs["mcp"])
    for name, _, svg in made:
        with open(os.path.join(DOCS, name), "w") as f:
            f.write(svg)
    dates = sorted(d["date"] for d in docs.values() if d and d.get("date"))
    versions = {}
    for d in docs.values():
        if d:
            versions.update({k: clean_version(k, v) for k, v in d.get("versions", {}).items() if v})
    chart_md = "\n\n".join(f"![{title}]({name})" for name, title, _ in made)
    titles = {
        "chat": "1. Non-streamed chat (`POST /api/llm/chat`)",
        "stream": "2. Streamed chat (`POST /api/llm/stream`)",
        "mcp": "3. MCP `tools/call`",
        "memory": "4. Memory",
        "sdk": "5. The SDK",
        "perf": "Profile: the proxy at saturation",
    }
    body = [
        "# Benchmarks",
        "",
        "Generated by `cargo xtask bench` (`bench/run.sh`) from `bench/results/*.json`; do not edit by hand. "
        "Each scenario measures the proxy against calling the same upstream directly, in the same run on the same machine, "
        "and against peer products where there are any. Rerun one scenario with `cargo xtask bench SCENARIO` "
        "(chat, stream, mcp, memory, sdk, perf) and the report with `cargo xtask bench report`.",
        "",
        f"**Machine**: {machine_line(docs.values())}.",
        f"**Runs**: {dates[0] if dates else 'n/a'} to {dates[-1] if dates else 'n/a'} (UTC).",
        f"**Versions**: {', '.join(f'{k} {v}' for k, v in sorted(versions.items())) or 'n/a'}.",
        "",
        "These numbers are provisional: the machine has two cores and other builds ran on it during the run. "
        "Ratios taken within one run (proxy against direct, against a peer) are more trustworthy than absolute values.",
        "",
        "## Targets",
        "",
        targets.markdown(),
        "",
        chart_md,
    ]
    for key in ("chat", "stream", "mcp", "memory", "sdk", "perf"):
        body += ["", f"## {titles[key]}", "", sections[key]]
    body += [
        "",
        "## How it is measured",
        "",
        "- Release builds (`cargo build --release`: LTO, one codegen unit), everything on 127.0.0.1.",
        "- The upstream is `fake-llm` (the deterministic OpenAI-compatible test server); the `echo` model answers at once. "
        "Streams use `stream-probe upstream`, which stamps every chunk with its send time; open streams use `fake-llm`'s "
        "`stall-stream`, which sends one chunk and then holds the stream open.",
        "- Load: `oha` (installed into `target/bench/tools` by the suite). Latency probes: `chat-latency`, `mcp-latency`, "
        "`mcp-load`, `stream-probe` (in `tests/src/bin`), which interleave direct and proxied requests so drift hits both.",
        "- Pinning: on two cores the load generator and the probes run on CPU 0 and the proxy, the upstreams and the peers "
        "on CPU 1 (`taskset`), so the client never takes the server's core; the system under test (proxy + upstream) "
        "therefore has one core, which bounds the saturation figures. `BENCH_NO_PIN=1` turns this off.",
        "- Peers, installed by the suite from their registries: LiteLLM's proxy (PyPI `litellm[proxy]`, venv in "
        "`target/bench/venv-litellm`, one worker, no database, no master key), supergateway (npm, `--stateful`, so one "
        "stdio child per session; its stateless mode starts a child per request) and mcp-proxy (PyPI), both bridging the "
        "same stdio MCP test server the proxy runs.",
        "- Raw results, with the command, machine facts and versions: `bench/results/*.json`.",
    ]
    with open(os.path.join(DOCS, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(body) + "\n")
    print(f"wrote docs/BENCHMARKS.md and {len(made)} chart(s)")
    print()
    print(targets.markdown())


def print_one(name):
    docs, targets, sections = build()
    print()
    print(sections[name])
    t = targets.markdown(name)
    if t:
        print()
        print(t)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--write":
        write()
    elif len(sys.argv) == 3 and sys.argv[1] == "--print":
        print_one(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
