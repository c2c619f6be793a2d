"""Run in the sae-bench environment: validate monoscope's SAEBench autointerp files as SAEBench reads them.

    python check_saebench_output.py FILE...   # prints {"files": n, "valid": n, "errors": {...}} as JSON

Each file goes through ``pydantic.TypeAdapter(AutoInterpEvalOutput)`` (sae_bench/evals/autointerp/eval_output.py)
and ``jsonschema.validate`` against the schema SAEBench ships beside it (eval_output_schema_autointerp.json).
"""

import json
import sys
from pathlib import Path

import jsonschema
import sae_bench.evals.autointerp.eval_output as eval_output
from pydantic import TypeAdapter

schema = json.loads((Path(eval_output.__file__).parent / "eval_output_schema_autointerp.json").read_text())
adapter = TypeAdapter(eval_output.AutoInterpEvalOutput)
errors = {}
for name in sys.argv[1:]:
    data = json.loads(Path(name).read_text())
    try:
        adapter.validate_python(data)
        jsonschema.validate(data, schema)
    except Exception as exc:  # every failure is reported, the script's caller fails on any
        errors[Path(name).name] = f"{type(exc).__name__}: {exc}"[:2000]
print(json.dumps({"files": len(sys.argv) - 1, "valid": len(sys.argv) - 1 - len(errors), "errors": errors}))
