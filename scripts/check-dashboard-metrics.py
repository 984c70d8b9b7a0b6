#!/usr/bin/env python3
"""Check that every pixelfarm_* metric used by dashboards / alert rules exists.

Usage:
  check-dashboard-metrics.py DASHBOARD.json [RULES.yaml ...] -- SCRAPE [SCRAPE ...]
  check-dashboard-metrics.py DASHBOARD.json SCRAPE [SCRAPE ...]

Sources (before `--`): Grafana dashboard JSON (PromQL in `expr`, and in
`query`/`definition` of template variables) or Prometheus rule files (YAML
with groups[].rules[].expr). Names defined by `record:` rules in a given
rule file count as present.

Scrapes (after `--`): files in the Prometheus text exposition format, e.g.
`curl -s host:8080/metrics > scheduler.txt`. A metric is present when it
appears as a sample name (first token of a non-comment line, label set
stripped) or in a `# TYPE name kind` / `# HELP name ...` line. A query name
X_bucket / X_sum / X_count is satisfied by a histogram X (X_sum / X_count
also by a summary X), and X_total by an OpenMetrics counter X.
deploy/monitoring/expected-metrics.txt is such a file with TYPE lines only.

Exit 0 when all names are present, 1 when some are missing (listed on
stderr), 2 on usage errors.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

NAME_RE = re.compile(r"(?<![A-Za-z0-9_:.\"'])(pixelfarm_[A-Za-z0-9_]*)")
STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
SAMPLE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)")
META_RE = re.compile(r"^#\s*(TYPE|HELP)\s+([A-Za-z_:][A-Za-z0-9_:]*)(?:\s+(\S+))?")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def promql_names(expr: str) -> set[str]:
    """pixelfarm_* metric names in a PromQL expression (string literals and
    Grafana template text inside them are ignored)."""
    no_strings = STRING_RE.sub('""', expr)
    # Drop label matchers' contents: `{model=~"..."}` already lost its string;
    # label *names* never start with pixelfarm_, so nothing else to strip.
    return set(NAME_RE.findall(no_strings))


def walk_dashboard(node, out: list[tuple[str, str]], where: str = "") -> None:
    if isinstance(node, dict):
        title = node.get("title") or node.get("name") or where
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                out.append((f"{title}.{key}", value))
            elif key == "query" and isinstance(value, str):
                out.append((f"{title}.query", value))
            else:
                walk_dashboard(value, out, title)
    elif isinstance(node, list):
        for item in node:
            walk_dashboard(item, out, where)


def load_source(path: Path) -> tuple[list[tuple[str, str]], set[str]]:
    """Returns ([(location, promql)], recorded_names)."""
    text = path.read_text()
    exprs: list[tuple[str, str]] = []
    recorded: set[str] = set()
    if path.suffix == ".json":
        walk_dashboard(json.loads(text), exprs)
        return exprs, recorded
    try:
        import yaml  # type: ignore
    except ImportError:  # pragma: no cover
        sys.exit("check-dashboard-metrics: PyYAML is needed to read rule files")
    doc = yaml.safe_load(text) or {}
    if "spec" in doc and "groups" not in doc:  # a PrometheusRule object
        doc = doc["spec"]
    for group in doc.get("groups", []) or []:
        for rule in group.get("rules", []) or []:
            name = rule.get("alert") or rule.get("record") or "?"
            if "record" in rule:
                recorded.add(rule["record"])
            exprs.append((f"{group.get('name')}/{name}", str(rule.get("expr", ""))))
    return exprs, recorded


def load_scrape(path: Path, samples: set[str], types: dict[str, str]) -> None:
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = META_RE.match(line)
            if m:
                kind, name, arg = m.groups()
                if kind == "TYPE":
                    types[name] = (arg or "untyped").lower()
                else:
                    types.setdefault(name, "untyped")
            continue
        m = SAMPLE_RE.match(line)
        if m:
            samples.add(m.group(1))


def present(name: str, samples: set[str], types: dict[str, str]) -> bool:
    if name in samples or name in types:
        return True
    for suffix in HIST_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            kind = types.get(base)
            if kind == "histogram" or (kind == "summary" and suffix != "_bucket"):
                return True
    if name.endswith("_total") and types.get(name[: -len("_total")]) == "counter":
        return True
    return False


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    if "--" in argv:
        i = argv.index("--")
        sources, scrapes = argv[:i], argv[i + 1 :]
    else:
        sources, scrapes = argv[:1], argv[1:]
    if not sources or not scrapes:
        print("check-dashboard-metrics: need at least one source and one scrape file", file=sys.stderr)
        return 2

    samples: set[str] = set()
    types: dict[str, str] = {}
    for s in scrapes:
        load_scrape(Path(s), samples, types)
    if not samples and not types:
        print("check-dashboard-metrics: the scrape files contain no metrics", file=sys.stderr)
        return 1

    missing: dict[str, list[str]] = {}
    used: set[str] = set()
    n_exprs = 0
    for src in sources:
        exprs, recorded = load_source(Path(src))
        if not exprs:
            print(f"check-dashboard-metrics: {src}: no PromQL expressions found", file=sys.stderr)
            return 1
        for where, expr in exprs:
            n_exprs += 1
            for name in sorted(promql_names(expr)):
                used.add(name)
                if name in recorded or present(name, samples, types):
                    continue
                missing.setdefault(name, []).append(f"{src}: {where}")

    if missing:
        print("check-dashboard-metrics: metrics used but not exported:", file=sys.stderr)
        for name, places in sorted(missing.items()):
            print(f"  {name}", file=sys.stderr)
            for p in places[:5]:
                print(f"      used in {p}", file=sys.stderr)
        return 1
    print(f"check-dashboard-metrics: OK: {len(used)} pixelfarm metric names in {n_exprs} expressions "
          f"from {len(sources)} source(s) all present in {len(scrapes)} scrape file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
