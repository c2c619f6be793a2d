"""``explain`` and ``score`` check their settings against the run before any model is loaded."""

import pytest

import harness.api
from harness.api import EvaluationConfig, Role, explain_command, score_command
from harness.errors import MonoscopeError
from tests.test_known_answer import build_synthetic_run

CASES = {
    "unknown judge format": (EvaluationConfig(judge_format="bogus"), "unknown judge format 'bogus'"),
    "unknown simulator format": (EvaluationConfig(simulator_format="bogus"), "unknown simulator format 'bogus'"),
    "missing index": (EvaluationConfig(dictionaries=("nosuch",)), "no index named nosuch — choose among syn"),
    "no units": (EvaluationConfig(units_per_dictionary=0), "--units is 0"),
}


@pytest.mark.parametrize(
    "command, case", [("score", case) for case in sorted(CASES)] + [("explain", "missing index"), ("explain", "no units")]
)
def test_bad_settings_fail_before_a_model_loads(tmp_path, monkeypatch, case, command):
    def no_model(*args, **kwargs):
        raise AssertionError("a client (and its model) was made before the settings were checked")

    monkeypatch.setattr(harness.api, "make_client", no_model)
    build_synthetic_run(tmp_path)
    config, message = CASES[case]
    with pytest.raises(MonoscopeError, match=message):
        if command == "explain":
            explain_command(tmp_path, config, Role())
        else:
            score_command(tmp_path, config, Role(), Role())
