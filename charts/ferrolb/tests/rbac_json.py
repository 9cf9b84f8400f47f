"""Print the chart's RBAC rules per component as JSON (used by e2e/tests/rbac.rs)."""
import json
import pathlib

import helm_python
import yaml

chart = helm_python.Chart.load(str(pathlib.Path(__file__).resolve().parents[1]))
out = {"controller": [], "speaker": []}
for path, text in chart.render(values={}, name="lb").items():
    if path.endswith("NOTES.txt"):
        continue
    for d in yaml.safe_load_all(text):
        if d and d.get("kind") in ("ClusterRole", "Role"):
            comp = "controller" if d["metadata"]["name"].endswith("-controller") else "speaker"
            for r in d["rules"]:
                for g in r["apiGroups"]:
                    for res in r["resources"]:
                        for v in r["verbs"]:
                            out[comp].append([g, res, v])
print(json.dumps(out))
