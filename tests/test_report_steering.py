"""The unit card's steering example: which strength is shown, what the card says, and that the text is escaped."""

from harness.steering.generate import Steering
from results.cards import _steering_html, example_for_unit
from results.run_records import RunRecords


def steering(unit: str, multiple: float, prompt: str, mean_kl: float, steered: str = "steered <b>text</b>\n") -> Steering:
    return Steering("m", (unit,), (multiple,), (multiple * 2.0,), "all", prompt, 4, "greedy", "plain", steered, (mean_kl,), mean_kl)


RECORDS = [
    steering("a/1", 5.0, "p1", 0.2),
    steering("a/1", 5.0, "p2", 0.4),  # mean 0.3 at 5x: under 0.5
    steering("a/1", 10.0, "p1", 0.9),
    steering("a/1", 10.0, "p2", 0.5),  # mean 0.7 at 10x: reaches 0.5
    steering("b/2", 5.0, "p1", 0.01),
    steering("b/2", 10.0, "p1", 0.02),
    steering("b/2", -2.0, "p1", 3.0),  # negative multiples are shown only when no positive one was tried
]


def test_the_smallest_multiple_whose_mean_kl_reaches_the_threshold_is_shown():
    example, reached = example_for_unit(RECORDS, "a/1", 0.5)
    assert (example.multiples, example.prompt, reached) == ((10.0,), "p1", True)
    example, reached = example_for_unit(RECORDS, "a/1", 0.25)
    assert (example.multiples, reached) == ((5.0,), True)


def test_when_no_multiple_reaches_it_the_largest_is_shown_and_the_card_says_so():
    example, reached = example_for_unit(RECORDS, "b/2", 0.5)
    assert (example.multiples, reached) == ((10.0,), False)
    html = _steering_html(RunRecords(steerings=RECORDS, steering_kl_threshold=0.5), "b/2")
    assert "no multiple tried reached 0.5 nats; the largest is shown" in html
    assert example_for_unit(RECORDS, "c/3", 0.5) is None
    assert _steering_html(RunRecords(steerings=RECORDS), "c/3") == ""


def test_the_card_escapes_the_continuations_and_shows_line_breaks():
    html = _steering_html(RunRecords(steerings=RECORDS, steering_kl_threshold=0.5), "a/1")
    assert "steered &lt;b&gt;text&lt;/b&gt;⏎" in html and "<b>text</b>" not in html
    assert "Clamped to 10× its maximum activation (20)" in html and "over 2 prompts" in html


def test_the_card_shows_the_intervention_score_per_source_when_the_run_has_it():
    from results.cards import _intervention_html
    from scorers.intervention import InterventionJudgment

    def judgment(source: str, index: int, correct: bool | None) -> InterventionJudgment:
        p = None if correct is None else (0.9 if correct else 0.2)
        failure = "undecided" if correct is None else None
        return InterventionJudgment("a/1", source, "x", f"p{index}", 5.0, index % 2 == 0, p, correct, 0.4, "b", "m", "h", failure)

    judged = [judgment("real", i, i < 9) for i in range(10)] + [judgment("shuffled", i, i < 5 if i < 9 else None) for i in range(10)]
    html = _intervention_html(RunRecords(interventions={j.key: j for j in judged}), "a/1")
    assert "real 0.90 [0.60, 0.98] (n=10)" in html and "shuffled 0.56" in html and "(n=9, 1 undecided or failed)" in html
    assert "mean KL of the steerings 0.400" in html
    assert _intervention_html(RunRecords(), "a/1") == ""
