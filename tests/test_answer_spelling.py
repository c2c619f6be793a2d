"""Log-probability formats read the answers in the spelling the model emits, checked once and refused below half the mass."""

import math
from pathlib import Path

import pytest

from harness.errors import MonoscopeError
from harness.llm.client import LLMClient
from harness.llm.interface import CHOICE_LOGPROBS, Message
from scorers.answers import MIN_ANSWER_MASS, answer_spelling, answer_spellings
from scorers.rubric import judge_unit
from scorers.simulation import simulate_unit
from tests.test_scorers import contexts


class LogprobBackend:
    """Puts probability ``bare`` on the options as written and ``spaced`` on them after a space, spread evenly;
    for "0".."3" in judgments it favours the digit ``favourite``."""

    name = "logprobs"
    model = "scripted"
    capabilities = frozenset({CHOICE_LOGPROBS})

    def __init__(self, bare: float, spaced: float, favourite: str = "2") -> None:
        self.bare, self.spaced, self.favourite = bare, spaced, favourite
        self.asked: list[list[str]] = []

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        self.asked.append(list(choices))
        n = len({c.strip() for c in choices})
        out = {}
        for choice in choices:
            mass = (self.spaced if choice.startswith(" ") else self.bare) / n
            out[choice] = math.log(mass * (3 if choice.strip() == self.favourite else 1))
        return out


@pytest.mark.parametrize(("bare", "spaced", "prefix"), [(0.99, 0.001, ""), (0.01, 0.9, " "), (0.5, 0.4, "")])
def test_the_spelling_with_more_mass_is_chosen(tmp_path: Path, bare, spaced, prefix):
    client = LLMClient(LogprobBackend(bare, spaced), cache_dir=tmp_path)
    spelling = answer_spelling(client, "rubric_rating", ["0", "1", "2", "3"], "judge", "judge format expected_value")
    assert spelling.prefix == prefix
    assert spelling.mass == pytest.approx(max(bare, spaced) * 6 / 4, rel=1e-6)  # the favourite counts three times
    assert client.backend_calls == 1 and set(client.backend.asked[0]) == {"0", "1", "2", "3", " 0", " 1", " 2", " 3"}


def test_too_little_mass_on_either_spelling_is_refused(tmp_path: Path):
    client = LLMClient(LogprobBackend(0.1, 0.1), cache_dir=tmp_path)
    with pytest.raises(MonoscopeError, match=r"judge format yes_no: model 'scripted' puts 0\.\d+ of its probability .* at least 0.5"):
        answer_spelling(client, "rubric_yes_no", ["Yes", "No"], "judge", "judge format yes_no")
    assert MIN_ANSWER_MASS == 0.5


def test_scorers_ask_for_the_chosen_spelling(tmp_path: Path):
    backend = LogprobBackend(0.98, 0.01, favourite="3")
    client = LLMClient(backend, cache_dir=tmp_path)
    spellings = answer_spellings(client, "expected_value", client, "expected_value")
    assert {role: s.prefix for role, s in spellings.items()} == {"judge": "", "simulator": ""}
    judged = judge_unit(contexts(), "cats", "real", client, "expected_value", answer_prefix=spellings["judge"].prefix)
    assert backend.asked[-1] == ["0", "1", "2", "3"]
    # Expected value under weights 1, 1, 1, 3 over 0..3: (0 + 1 + 2 + 9) / 6 = 2.
    assert [j.score for j in judged] == [pytest.approx(2.0), pytest.approx(2.0)]
    simulate_unit(contexts(), "cats", "real", client, "expected_value", answer_prefix="")
    assert backend.asked[-1] == [str(d) for d in range(10)]
    judge_unit(contexts(), "cats", "real", client, "yes_no", answer_prefix=" ")
    assert backend.asked[-1] == [" Yes", " No"]


def test_generating_and_likelihood_formats_need_no_check(tmp_path: Path):
    client = LLMClient(LogprobBackend(0.0001, 0.0001), cache_dir=tmp_path)
    assert answer_spellings(client, "rating", client, "likelihood") == {}
    assert client.backend_calls == 0
