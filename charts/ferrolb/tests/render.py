"""Render the chart with Helm's engine and print the manifests as one YAML stream,
the way `helm template NAME charts/ferrolb -n NAMESPACE` would (NOTES.txt left out).
Used by e2e/tests/rbac.rs, which applies the output to the emulator with kubectl.

usage: render.py RELEASE NAMESPACE [VALUES_JSON]"""
import json
import pathlib
import sys

import helm_python

name, namespace = sys.argv[1], sys.argv[2]
values = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
chart = helm_python.Chart.load(str(pathlib.Path(__file__).resolve().parents[1]))
rendered = chart.render(values=values, name=name, namespace=namespace)
for path in sorted(rendered):
    if path.endswith("NOTES.txt") or not rendered[path].strip():
        continue
    print(f"---\n# Source: {path}\n{rendered[path].strip()}")
