#!/usr/bin/env python3
"""Checks the Grafana dashboards in observability/grafana/dashboards/ (run by `make rules-check`).

For every dashboard JSON file:
- it is valid JSON; its uid is present, unique, one of the stable uids below (a new dashboard is added here on
  purpose), at most 40 characters; its title is unique; `id` is null (provisioning assigns it); it has a
  `datasource` variable of type datasource (Prometheus) and every panel, target, query variable and annotation
  query uses it (`${datasource}`), so the dashboards work with any Prometheus data source;
- panel ids and each panel's target refIds are unique; links to `/d/<uid>` point at one of the stable uids;
- every PromQL expression (panel targets, query variables, annotations) parses: template variables are replaced
  by concrete values, the expressions are written as recording rules into a temporary rules file, and
  `promtool check rules` runs over it;
- every metric name an expression uses is declared in Shared/Contracts/MetricNames.swift *and* recorded somewhere
  in Shared/ or Services/ (a declared name no code records would show an empty panel), or is a recording rule of
  observability/prometheus/rules.yml, or a Prometheus built-in (`up`, `ALERTS`, ...); histograms (timers) only
  as `_bucket`, `_sum`, `_count`; the per-service dashboard uses only what ServiceKit exports for every service;
- every label name in a matcher, a `by`/`without`/`on`/`ignoring`/`group_*` list or a legend `{{label}}` is a
  declared `MetricLabel` or a label Prometheus adds (`job`, `instance`, `le`, alert labels);
- every variable an expression uses is defined by the dashboard or is one of Grafana's `$__…` ones.

Also checks that the provisioning files exist and name a file provider and a Prometheus data source.
Standard library only. Exit status 0 = all good, 1 = problems (each printed with file, panel and cause).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The stable uids (URLs, links between dashboards and bookmarks depend on them); file name -> uid.
EXPECTED = {
    "user-experience.json": "switchyard-user-experience",
    "services.json": "switchyard-services",
    "tenant-economics.json": "switchyard-tenant-economics",
}
# Dashboards (files) that must work for any service: only metrics every service exports (ServiceKit), plus
# built-ins. services.json is switchyard-services.
GENERIC_ONLY = {"services.json"}

BUILTIN_METRICS = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped",
                   "scrape_samples_post_metric_relabeling", "scrape_series_added"}
# Labels Prometheus itself adds (target labels, histogram buckets, alert series).
BUILTIN_LABELS = {"job", "instance", "le", "__name__", "alertname", "alertstate", "severity"}

# Grafana's global variables, with a concrete value of the right shape for PromQL.
GRAFANA_GLOBALS = {
    "__rate_interval": "1m", "__interval": "30s", "__range": "6h", "__range_s": "21600",
    "__range_ms": "21600000", "__interval_ms": "30000", "__from": "1700000000000", "__to": "1700021600000",
}
DATASOURCE_UIDS = {"${datasource}", "$datasource"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, message):
        self.items.append(f"{where}: {message}")


# --- what the code declares and records ------------------------------------------------------------------------

def swift_files(*dirs):
    for base in dirs:
        for folder, subfolders, names in os.walk(base):
            subfolders[:] = sorted(d for d in subfolders if d != "TestKit")  # test support records nothing live
            for name in sorted(names):
                if name.endswith(".swift"):
                    yield os.path.join(folder, name)


def load_registry(root):
    """Metric names (identifier -> name) and label names from MetricNames.swift, what the sources record, and
    which of them ServiceKit records for every service."""
    contracts = os.path.join(root, "Shared", "Contracts", "MetricNames.swift")
    text = open(contracts, encoding="utf-8").read()
    names = dict(re.findall(r'static\s+let\s+(\w+)\s*=\s*MetricName\(\s*"([^"]+)"', text))
    labels = set(re.findall(r'MetricLabel\(\s*"([^"]+)"\s*\)', text))
    if not names:
        sys.exit(f"dashboards-check: no MetricName declarations found in {contracts}")

    recorded, generic, kinds = set(), set(), {}
    call = re.compile(r"\.(counter|floatingCounter|gauge|timer)\(\s*\.(\w+)\b")
    shared, services = os.path.join(root, "Shared"), os.path.join(root, "Services")
    for path in swift_files(shared, services):
        if os.path.samefile(path, contracts):
            continue
        source = open(path, encoding="utf-8").read()
        rel = os.path.relpath(path, root)
        for ident in names:
            if re.search(r"\." + ident + r"\b", source):
                recorded.add(ident)
                if re.match(r"Shared/ServiceKit[^/]*/", rel):
                    generic.add(ident)
        for kind, ident in call.findall(source):
            kinds.setdefault(ident, set()).add(kind)
    histograms = set()
    for ident, name in names.items():
        # Timers are rendered as seconds histograms (TelemetryMetrics). A name recorded through a computed
        # MetricName (analytics' log metrics) has no explicit call: a `_seconds` name that is not a gauge is one.
        if "timer" in kinds.get(ident, set()) or (
                not kinds.get(ident) and name.endswith("_seconds") and not name.endswith("_total")):
            histograms.add(name)
    return {
        "declared": set(names.values()),
        "recorded": {names[i] for i in recorded},
        "generic": {names[i] for i in generic},
        "histograms": histograms,
        "labels": labels | BUILTIN_LABELS,
    }


def load_rules(root):
    text = open(os.path.join(root, "observability", "prometheus", "rules.yml"), encoding="utf-8").read()
    records = set(re.findall(r"^\s*-?\s*record:\s*['\"]?([A-Za-z_:][\w:]*)", text, re.M))
    alerts = set(re.findall(r"^\s*-?\s*alert:\s*['\"]?(\w+)", text, re.M))
    return records, alerts


# --- PromQL, lightly: enough to find metric and label names -----------------------------------------------------

TOKEN = re.compile(r"""
    (?P<space>\s+) | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^=<>(){}\[\],@])
""", re.X)
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                "quantile", "limitk", "limit_ratio"}
MATCH_OPS = {"=", "!=", "=~", "!~"}


def tokens(expr):
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"unexpected character {expr[pos]!r} at {pos}")
        pos = m.end()
        if m.lastgroup not in ("space", "comment"):
            out.append((m.lastgroup, m.group()))
    return out


def names_in(expr):
    """(metric names, label names) an expression uses."""
    toks = tokens(expr)
    metrics, labels = set(), set()
    brace = bracket = 0
    i = 0
    while i < len(toks):
        kind, value = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "op":
            brace += {"{": 1, "}": -1}.get(value, 0)
            bracket += {"[": 1, "]": -1}.get(value, 0)
        elif kind == "ident" and bracket == 0:
            if brace:
                if following in MATCH_OPS:
                    labels.add(value)
            elif value.lower() in GROUPING and following == "(":
                i += 2
                while i < len(toks) and toks[i][1] != ")":
                    if toks[i][0] == "ident":
                        labels.add(toks[i][1])
                    i += 1
            elif value.lower() in KEYWORDS or following == "(" or (
                    value.lower() in AGGREGATIONS and following and following.lower() in GROUPING):
                pass  # an operator keyword, a function or an aggregation (promtool checks that they exist)
            else:
                metrics.add(value)
        i += 1
    return metrics, labels


# --- the dashboards --------------------------------------------------------------------------------------------

VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def substitute(expr, variables, where, problems):
    def replace(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in GRAFANA_GLOBALS:
            return GRAFANA_GLOBALS[name]
        if name not in variables:
            problems.add(where, f"uses the undefined variable ${name}")
            return "undefined"
        if variables[name] is None:
            problems.add(where, f"uses the data source variable ${name} inside a query")
            return "undefined"
        return variables[name]
    return VARIABLE.sub(replace, expr)


def all_panels(panels):
    for panel in panels or []:
        yield panel
        yield from all_panels(panel.get("panels"))


def is_datasource_ref(ref):
    return isinstance(ref, dict) and ref.get("type") == "prometheus" and ref.get("uid") in DATASOURCE_UIDS


def strings_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def check_dashboard(path, board, problems, expressions):
    """Structure checks; appends (where, expression, file name, legend) to `expressions`."""
    name = os.path.relpath(path, ROOT)
    source = os.path.basename(path)
    if not isinstance(board.get("schemaVersion"), int):
        problems.add(name, "schemaVersion is missing")
    if board.get("id") is not None:
        problems.add(name, "id must be null (Grafana assigns it; a fixed id clashes between instances)")
    for link in strings_in(board):
        for target in re.findall(r"/d/([A-Za-z0-9_-]+)", link):
            if target not in EXPECTED.values():
                problems.add(name, f"links to /d/{target}, which is none of the stable uids")

    variables, datasource_vars = {}, 0
    for var in board.get("templating", {}).get("list", []):
        vname, vtype = var.get("name"), var.get("type")
        where = f"{name}: variable ${vname}"
        if vtype == "datasource":
            if var.get("query") != "prometheus":
                problems.add(where, "a data source variable must select Prometheus data sources")
            variables[vname] = None
            datasource_vars += vname == "datasource"
            continue
        if vtype == "query":
            if not is_datasource_ref(var.get("datasource")):
                problems.add(where, "its datasource must be the ${datasource} variable")
            query = var.get("query")
            query = query.get("query", "") if isinstance(query, dict) else (query or "")
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.S)
            if m:
                expressions.append((where, m.group(1), source, f"{{{{{m.group(2)}}}}}"))
            elif (m := re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)):
                expressions.append((where, m.group(1), source, ""))
            elif not re.fullmatch(r"\s*(label_values\(\s*\w+\s*\)|label_names\(.*\)|metrics\(.*\))\s*", query):
                problems.add(where, f"unrecognised variable query {query!r}")
        options = [o.get("value") for o in var.get("options", []) if isinstance(o, dict)]
        variables[vname] = str(options[0]) if vtype in ("custom", "interval", "constant") and options else "sample"
    if datasource_vars != 1:
        problems.add(name, "needs exactly one variable named `datasource` of type datasource (Prometheus)")

    for annotation in board.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            where = f"{name}: annotation {annotation.get('name')!r}"
            if not is_datasource_ref(annotation.get("datasource")):
                problems.add(where, "its datasource must be the ${datasource} variable")
            expressions.append((where, annotation["expr"], source, annotation.get("titleFormat", "")))

    ids = set()
    for panel in all_panels(board.get("panels")):
        ptype, title, pid = panel.get("type"), panel.get("title"), panel.get("id")
        where = f"{name}: panel {title!r} (id {pid})"
        if pid in ids:
            problems.add(where, "duplicate panel id")
        ids.add(pid)
        if "gridPos" not in panel:
            problems.add(where, "has no gridPos")
        if panel.get("repeat") and panel["repeat"] not in variables:
            problems.add(where, f"repeats over the undefined variable ${panel['repeat']}")
        if ptype == "row":
            continue
        if not title:
            problems.add(where, "has no title")
        if not is_datasource_ref(panel.get("datasource")):
            problems.add(where, 'its datasource must be {"type": "prometheus", "uid": "${datasource}"}')
        targets = panel.get("targets", [])
        if not targets and ptype != "text":
            problems.add(where, "has no queries")
        refs = set()
        for target in targets:
            ref = target.get("refId")
            twhere = f"{where} query {ref}"
            if ref in refs:
                problems.add(twhere, "duplicate refId")
            refs.add(ref)
            if not is_datasource_ref(target.get("datasource")):
                problems.add(twhere, "its datasource must be the ${datasource} variable")
            if not (target.get("expr") or "").strip():
                problems.add(twhere, "has no expr")
                continue
            expressions.append((twhere, target["expr"], source, target.get("legendFormat", "")))
    return variables


def check_provisioning(directory, problems):
    dashboards = os.path.join(directory, "dashboards")
    datasources = os.path.join(directory, "datasources")
    for folder, needles in ((dashboards, (r"^\s*type:\s*file\b", r"^\s*path:\s*\S")),
                            (datasources, (r"^\s*type:\s*prometheus\b",))):
        files = sorted(f for f in os.listdir(folder) if f.endswith((".yaml", ".yml"))) \
            if os.path.isdir(folder) else []
        if not files:
            problems.add(os.path.relpath(folder, ROOT), "no provisioning file")
        for f in files:
            text = open(os.path.join(folder, f), encoding="utf-8").read()
            if not re.search(r"^apiVersion:\s*1\s*$", text, re.M):
                problems.add(os.path.relpath(os.path.join(folder, f), ROOT), "needs apiVersion: 1")
            for needle in needles:
                if not re.search(needle, text, re.M):
                    problems.add(os.path.relpath(os.path.join(folder, f), ROOT), f"has no line matching {needle}")


def run_promtool(promtool, rendered, problems):
    """Parses every expression with `promtool check rules` (as recording rules in a temporary file)."""
    lines = ["groups:", "  - name: dashboards", "    rules:"]
    for n, (_, expr) in enumerate(rendered):
        lines += [f"      - record: dashboard_check:expr_{n:04d}", f"        expr: {json.dumps(expr)}"]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="dashboards-check-", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        path = f.name
    try:
        result = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    mapped = False
    for line in output.splitlines():
        m = re.search(r'"dashboard_check:expr_(\d+)":\s*(.*)', line)
        if m:
            where, expr = rendered[int(m.group(1))]
            problems.add(where, f"promtool: {m.group(2)}\n    expr: {expr}")
            mapped = True
    if not mapped:
        problems.add("promtool check rules", output.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dashboards", default=os.path.join(ROOT, "observability", "grafana", "dashboards"))
    parser.add_argument("--provisioning", default=os.path.join(ROOT, "observability", "grafana", "provisioning"))
    parser.add_argument("--promtool", default=os.environ.get("PROMTOOL", "promtool"))
    args = parser.parse_args()
    promtool = shutil.which(args.promtool)
    if not promtool:
        sys.exit(f"dashboards-check: {args.promtool} not found (Debian package prometheus; make deps installs it)")

    registry = load_registry(ROOT)
    records, alerts = load_rules(ROOT)
    problems = Problems()
    expressions, uids, titles, panels = [], {}, {}, 0
    files = sorted(f for f in os.listdir(args.dashboards) if f.endswith(".json"))
    for f in files:
        path = os.path.join(args.dashboards, f)
        name = os.path.relpath(path, ROOT)
        try:
            board = json.load(open(path, encoding="utf-8"))
        except json.JSONDecodeError as error:
            problems.add(name, f"not valid JSON: {error}")
            continue
        uid, title = board.get("uid"), board.get("title")
        if not uid:
            problems.add(name, "has no uid")
        elif uid in uids:
            problems.add(name, f"uid {uid!r} is also the uid of {uids[uid]}")
        elif EXPECTED.get(f) != uid:
            expected = EXPECTED.get(f)
            problems.add(name, f"uid {uid!r} is not the stable uid of this file ({expected!r})" if expected else
                         f"is not one of the expected dashboards {sorted(EXPECTED)} (add it to EXPECTED in "
                         f"scripts/dashboards-check.py on purpose)")
        elif len(uid) > 40:
            problems.add(name, "uid longer than 40 characters")
        uids.setdefault(uid, name)
        if not title:
            problems.add(name, "has no title")
        elif title in titles:
            problems.add(name, f"title {title!r} is also the title of {titles[title]}")
        titles.setdefault(title, name)
        before = len(expressions)
        variables = check_dashboard(path, board, problems, expressions)
        panels += sum(1 for p in all_panels(board.get("panels")) if p.get("type") != "row")
        expressions[before:] = [(where, substitute(expr, variables, where, problems), source, legend)
                                for where, expr, source, legend in expressions[before:]]
    for f, uid in EXPECTED.items():
        if f not in files:
            problems.add(os.path.relpath(os.path.join(args.dashboards, f), ROOT), f"missing (stable uid {uid!r})")

    for where, expr, source, legend in expressions:
        try:
            metrics, labels = names_in(expr)
        except ValueError as error:
            problems.add(where, f"cannot read the expression ({error}); promtool will say more")
            continue
        labels |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        for metric in sorted(metrics):
            base = next((metric[:-len(s)] for s in HISTOGRAM_SUFFIXES if metric.endswith(s)
                         and metric[:-len(s)] in registry["histograms"]), None)
            if metric in records or metric in BUILTIN_METRICS:
                continue
            if base is None and metric in registry["histograms"]:
                problems.add(where, f"metric {metric!r} is a histogram: use {metric}_bucket, _sum or _count")
                continue
            declared = base or metric
            if declared not in registry["declared"]:
                problems.add(where, f"metric {metric!r} is not declared in Shared/Contracts/MetricNames.swift, "
                                    "not a recording rule of observability/prometheus/rules.yml and not a "
                                    "Prometheus built-in")
            elif declared not in registry["recorded"]:
                problems.add(where, f"metric {metric!r} is declared but no code in Shared/ or Services/ records it "
                                    "(the panel would stay empty)")
            elif source in GENERIC_ONLY and declared not in registry["generic"]:
                problems.add(where, f"metric {metric!r} is not one ServiceKit exports for every service (this "
                                    "dashboard is for any service)")
        for label in sorted(labels - registry["labels"]):
            problems.add(where, f"label {label!r} is not a MetricLabel of Shared/Contracts/MetricNames.swift nor a "
                                "label Prometheus adds")
        for alert in re.findall(r'alertname\s*=\s*"(\w+)"', expr):
            if alert not in alerts:
                problems.add(where, f"alert {alert!r} is not defined in observability/prometheus/rules.yml")

    if expressions:
        run_promtool(promtool, [(where, expr) for where, expr, _, _ in expressions], problems)
    check_provisioning(args.provisioning, problems)

    if problems.items:
        for item in problems.items:
            print(f"dashboards-check: FAIL {item}", file=sys.stderr)
        print(f"dashboards-check: {len(problems.items)} problem(s) in {len(files)} dashboard(s)", file=sys.stderr)
        return 1
    print(f"dashboards-check: {len(files)} dashboards ({', '.join(sorted(uids))}), {panels} panels, "
          f"{len(expressions)} PromQL expressions parsed by promtool; metric and label names match "
          "MetricNames.swift, rules.yml and Prometheus' built-ins; provisioning files present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
