"""Run in the sae-dashboard environment: build SAEDashboard's own records from monoscope's Neuronpedia export.

    python check_dashboard_records.py EXPORT_DIR   # prints {"sources": n, "features": n, "activations": n, "mismatches": [...]}

Every ``batch-N.json`` becomes a ``NeuronpediaDashboardBatch`` (which builds a ``NeuronpediaDashboardFeature`` per
feature and a ``NeuronpediaDashboardActivation`` per activation; sae_dashboard/neuronpedia/neuronpedia_dashboard.py),
and its ``to_dict()`` must give back the file's object unchanged: no field lost, renamed or added.
"""

import json
import sys
from pathlib import Path

from sae_dashboard.neuronpedia.neuronpedia_dashboard import NeuronpediaDashboardBatch

root = Path(sys.argv[1])
sources, features, activations, mismatches = 0, 0, 0, []
for folder in sorted(p for p in root.iterdir() if p.is_dir()):
    sources += 1
    for path in sorted(folder.glob("batch-*.json")):
        data = json.loads(path.read_text())
        batch = NeuronpediaDashboardBatch(**data)
        features += len(batch.features)
        activations += sum(len(feature.activations) for feature in batch.features)
        if batch.to_dict() != data:
            mismatches.append(f"{folder.name}/{path.name}")
print(json.dumps({"sources": sources, "features": features, "activations": activations, "mismatches": mismatches}))
