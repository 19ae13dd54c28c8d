#!/usr/bin/env bash
# Validates the monitoring artefacts: Prometheus config, alert rules and their
# unit tests, the Grafana dashboard and the provisioning files.
# Usage: deploy/check.sh   (needs promtool and python3; exits non-zero on failure)
set -euo pipefail

deploy_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$deploy_dir")"
dashboard="$repo_dir/dashboards/clipstash.json"
provisioning="$repo_dir/dashboards/provisioning"

command -v promtool >/dev/null || { echo "promtool not found (apt-get install prometheus)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cd "$deploy_dir"
echo "== promtool check config"
promtool check config prometheus.yml
echo "== promtool check rules"
promtool check rules alerts.yml
echo "== promtool test rules"
promtool test rules alerts.test.yml

echo "== dashboard structure"
# Checks the dashboard and writes every panel query, with the Grafana variables
# substituted ($__rate_interval->5m, $job/$instance->.*), as recording rules into
# a temporary rule file, so promtool parses each one as PromQL.
python3 - "$dashboard" "$tmp/dashboard_exprs.yml" <<'PY'
import json, re, sys

path, out = sys.argv[1], sys.argv[2]
errors = []
with open(path) as f:
    d = json.load(f)

if d.get("schemaVersion", 0) < 39:
    errors.append(f"schemaVersion {d.get('schemaVersion')} < 39")
variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
    errors.append("template variable 'datasource' (type datasource, query prometheus) missing")
for name in ("job", "instance"):
    v = variables.get(name)
    if not v or v.get("type") != "query" or not v.get("multi") or not v.get("includeAll"):
        errors.append(f"template variable '{name}' must be a multi, includeAll query variable")

want_ds = {"type": "prometheus", "uid": "${datasource}"}
exprs, ids = [], set()
panels = d.get("panels", [])
if not panels:
    errors.append("no panels")
for p in panels:
    title = p.get("title", f"panel {p.get('id')}")
    if p.get("type") not in ("timeseries", "stat"):
        errors.append(f"{title}: type {p.get('type')!r} not timeseries/stat")
    if p.get("id") in ids:
        errors.append(f"{title}: duplicate id {p.get('id')}")
    ids.add(p.get("id"))
    gp = p.get("gridPos", {})
    if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")):
        errors.append(f"{title}: gridPos incomplete")
    if p.get("datasource") != want_ds:
        errors.append(f"{title}: panel datasource is not {want_ds}")
    if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
        errors.append(f"{title}: no unit")
    targets = p.get("targets") or []
    if not targets:
        errors.append(f"{title}: no targets")
    refs = [t.get("refId") for t in targets]
    if len(set(refs)) != len(refs) or not all(refs):
        errors.append(f"{title}: refIds missing or duplicated")
    for t in targets:
        if t.get("datasource", want_ds) != want_ds:
            errors.append(f"{title}/{t.get('refId')}: target datasource is not {want_ds}")
        expr = (t.get("expr") or "").strip()
        if not expr:
            errors.append(f"{title}/{t.get('refId')}: no expr")
            continue
        if 'job=~"$job"' not in expr or 'instance=~"$instance"' not in expr:
            errors.append(f"{title}/{t.get('refId')}: expr does not filter job/instance")
        sub = expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*")
        if "$" in sub:
            errors.append(f"{title}/{t.get('refId')}: unsubstituted variable in {sub}")
        exprs.append((f"{title}/{t.get('refId')}", sub))

if errors:
    print("\n".join("  FAILED: " + e for e in errors), file=sys.stderr)
    sys.exit(1)

with open(out, "w") as f:
    f.write("groups:\n  - name: dashboard_exprs\n    rules:\n")
    for i, (where, expr) in enumerate(exprs):
        f.write(f"      # {where}\n      - record: dashboard:expr_{i}\n        expr: {json.dumps(expr)}\n")
print(f"  SUCCESS: {len(panels)} panels, {len(exprs)} queries")
PY

echo "== dashboard queries parse as PromQL"
# promtool 2.42 has no 'promql' subcommand; 'check rules' parses every expr.
promtool check rules "$tmp/dashboard_exprs.yml"

echo "== provisioning files"
if python3 -c 'import yaml' 2>/dev/null; then
  python3 - "$provisioning" <<'PY'
import sys, yaml
base = sys.argv[1]
ds = yaml.safe_load(open(f"{base}/datasources/prometheus.yml"))["datasources"][0]
assert ds["name"] == "Prometheus" and ds["uid"] == "prometheus" and ds["type"] == "prometheus", ds
prov = yaml.safe_load(open(f"{base}/dashboards/clipstash.yml"))["providers"][0]
assert prov["type"] == "file" and prov["options"]["path"], prov
print("  SUCCESS: datasource and dashboard provider parse")
PY
else
  echo "  SKIPPED: python3 yaml module not installed"
fi

echo "All checks passed."
