"""Contexts are shown as the text they are, with one unambiguous mark: in prompts, the report and show-unit.

The tokenizer is the embedded model's (Gemma 3, byte fallback), loaded alone (``embedded_tokenizer``:
about 40 s the first time on two cores, seconds after). The pure rendering functions are also
tested on hand-made token pieces, and the decoding on a byte-level BPE tokenizer (GPT-2 style).
"""

import html
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from explainers.token_stats import token_statistics_explanation
from harness.api import show_unit_text
from harness.index.sampling import render
from harness.llm.client import LLMClient
from harness.llm.render import RENDERING, display_units, shown, with_activations, with_marked_target
from harness.records import ContextSample, Judgment, TokenContext, UnitContexts, UnitStats, contexts_digest
from harness.run.evaluate import _current, _scorer_settings
from harness.subject.decoding import REPLACEMENT, token_pieces
from results.report import _tokens_html
from scorers.rubric import RUBRIC_FORMATS, judge_unit
from scorers.simulation import simulate_unit
from tests.test_scorers import ScriptedBackend

ISSUE_TEXT = "naïve café 𓂀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ 🦜 Ǆ"
GRID = "grid = [[1, 2], [3, 4]]"
FURTHER_TEXTS = {
    "cjk": "日本語のテキストと中文字符，还有한국어 문장.",
    "cjk_extension_b": "𠀀𠀁𪚥 and 𓀀𓁐",
    "devanagari": "नमस्ते दुनिया, क्षत्रिय",
    "arabic_harakat": "السَّلَامُ عَلَيْكُمْ",
    "hebrew_niqqud": "שָׁלוֹם",
    "thai_tamil": "สวัสดีครับ தமிழ்",
    "combining_marks": "e\u0301 a\u0308 Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "zwj_sequences": "family: 👩\u200d👩\u200d👧 and 👨\u200d👩\u200d👧\u200d👦, pilot 👩🏽\u200d✈️",
    "flags": "🇫🇷 🇯🇵 🇺🇸 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "skin_tones": "👍🏻👍🏼👍🏽👍🏾👍🏿 🤝🏿",
    "mark_characters": "a ⟦quoted⟧ span ⟦⟧, a ⏎ symbol\nand ⟦[[x]]⟧{3}",
    "brackets": "def f(x):\n    return {'a': [[x], [[x]]], 'b': (x[0], x[1:])}\n",
    "math_alphanumerics": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕏 𝒜𝓁𝓅𝒽𝒶",
    "emoji_in_code": "print('🦜' * 3)  # ꙮ 🦜",
    "carriage_return": "line1\r\nline2",
}


@pytest.fixture(scope="module")
def gemma_tokenizer():
    from harness.subject.embedded import embedded_tokenizer

    return embedded_tokenizer()


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def context_of(tokens: tuple[str, ...], activations: tuple[float, ...] | None = None, target: int = 0) -> TokenContext:
    return TokenContext("d/1", "d/1@0:0", "top", 0, tokens, activations or (0.0,) * len(tokens), target)


def unmark(rendered: str) -> str:
    return re.sub(r"⟦(.*?)⟧(\{\d+\})?", r"\1", rendered)


# The issue's examples, with their right values.


def test_the_issue_text_renders_whole_and_joins_to_the_original(gemma_tokenizer):
    ids = encode(gemma_tokenizer, ISSUE_TEXT)
    assert len(ids) == 38
    assert sum(gemma_tokenizer.decode([token]) == REPLACEMENT for token in ids) == 25  # the old, token-by-token decoding
    pieces = token_pieces(gemma_tokenizer, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == ISSUE_TEXT
    assert REPLACEMENT not in "".join(pieces)
    context = context_of(pieces)
    units = [shown("".join(pieces[i] for i in unit)) for unit in display_units(pieces)]
    assert units == ["na", "ï", "ve", " café", " ", "𓂀", " ", *"𝔘𝔫𝔦𝔠𝔬𝔡𝔢", " ", "ꙮ", " ", "🦜", " ", "Ǆ"]
    assert with_activations(context, 1.0) == ISSUE_TEXT


def test_the_grid_with_3_marked_reads_unambiguously(gemma_tokenizer):
    ids = encode(gemma_tokenizer, GRID)
    pieces = token_pieces(gemma_tokenizer, ids)
    assert pieces == ("grid", " =", " [[", "1", ",", " ", "2", "],", " [", "3", ",", " ", "4", "]]")
    three = pieces.index("3")
    assert with_marked_target(context_of(pieces, target=three)) == "grid = [[1, 2], [⟦3⟧, 4]]"
    firing = tuple(4.0 if i == three else 0.0 for i in range(len(pieces)))
    assert with_activations(context_of(pieces, firing), 4.0) == "grid = [[1, 2], [⟦3⟧{10}, 4]]"


def test_a_firing_byte_token_marks_its_whole_character(gemma_tokenizer):
    ids = encode(gemma_tokenizer, "𝔘𝔫 x")
    pieces = token_pieces(gemma_tokenizer, ids)
    assert pieces[:8] == ("", "", "", "𝔘", "", "", "", "𝔫")  # four byte tokens each, the last carries the character
    for position in range(4, 8):  # any byte token of 𝔫
        assert with_marked_target(context_of(pieces), position) == "𝔘⟦𝔫⟧ x"
        firing = tuple(5.0 if i == position else 0.0 for i in range(len(pieces)))
        assert with_activations(context_of(pieces, firing), 10.0) == "𝔘⟦𝔫⟧{5} x"
    levels = (0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 8.0, 0.0, 0.0)
    assert with_activations(context_of(pieces, levels), 10.0) == "𝔘⟦𝔫⟧{8} x", "a unit's level is its tokens' largest"


# Further inputs of the same kind.


@pytest.mark.parametrize("name", sorted(FURTHER_TEXTS))
def test_further_scripts_and_emoji_render_as_decoded_with_one_mark(gemma_tokenizer, name: str):
    text = FURTHER_TEXTS[name]
    ids = encode(gemma_tokenizer, text)
    pieces = token_pieces(gemma_tokenizer, ids)
    assert "".join(pieces) == gemma_tokenizer.decode(ids) == text
    quiet = with_activations(context_of(pieces), 1.0)
    assert REPLACEMENT not in quiet
    assert quiet == shown(text) == text.replace("⟦", "[").replace("⟧", "]").replace("⏎", "↵").replace("\r", "␍").replace("\n", "⏎")
    assert "\n" not in quiet
    units = display_units(pieces)
    for position in range(len(pieces)):
        marked = with_marked_target(context_of(pieces, target=position))
        assert marked.count("⟦") == 1 and marked.count("⟧") == 1, marked
        assert marked.index("⟦") < marked.index("⟧")
        assert marked.replace("⟦", "").replace("⟧", "") == quiet
        firing = tuple(1.0 if i == position else 0.0 for i in range(len(pieces)))
        listed = with_activations(context_of(pieces, firing), 1.0)
        assert len(re.findall(r"⟦[^⟦⟧]*⟧\{10\}", listed)) == 1 and listed.count("⟦") == 1 and unmark(listed) == quiet
    assert sum(len(unit) for unit in units) == len(pieces)


@pytest.mark.parametrize("name", ["math_alphanumerics", "cjk_extension_b", "zwj_sequences", "flags", "skin_tones"])
def test_a_window_edge_inside_a_character_shows_replacement_only_at_that_edge(gemma_tokenizer, name: str):
    text = FURTHER_TEXTS[name]
    ids = encode(gemma_tokenizer, text)
    for start in range(0, 4):
        for end in range(len(ids) - 3, len(ids) + 1):
            pieces = token_pieces(gemma_tokenizer, ids[start:end])
            rendered = with_activations(context_of(pieces), 1.0)
            inner = rendered.strip(REPLACEMENT)
            assert REPLACEMENT not in inner, (start, end, rendered)
            assert inner in text
            lead, trail = len(rendered) - len(rendered.lstrip(REPLACEMENT)), len(rendered) - len(rendered.rstrip(REPLACEMENT))
            assert lead <= 3 and (lead == 0 or start > 0), "at most the 3 bytes of a character cut by the start"
            assert trail <= 3 and (trail == 0 or end < len(ids)), "at most the 3 bytes of a character cut by the end"
            for position in range(len(pieces)):
                assert with_marked_target(context_of(pieces, target=position)).count("⟦") == 1


def test_edge_bytes_are_one_replacement_each_and_leave_the_next_character_whole(gemma_tokenizer):
    ids = encode(gemma_tokenizer, "𝔘𝔫𝔦")  # 𝔘 and 𝔫 are 4 byte tokens each, 𝔦 one token
    start_cut = token_pieces(gemma_tokenizer, ids[1:])
    assert start_cut == ("\ufffd", "\ufffd", "\ufffd", "", "", "", "𝔫", "𝔦")
    assert gemma_tokenizer.decode(ids[1:]) == "\ufffd" * 7 + "𝔦", "Gemma's own decoding loses 𝔫 there too"
    assert [len(unit) for unit in display_units(start_cut)] == [1, 1, 1, 4, 1]
    end_cut = token_pieces(gemma_tokenizer, ids[:6])
    assert end_cut == ("", "", "", "𝔘", "\ufffd", "\ufffd")
    assert with_marked_target(context_of(end_cut), 5) == "𝔘\ufffd⟦\ufffd⟧"


def test_a_literal_replacement_character_is_text():
    class Pieces:
        def decode(self, ids: list[int]) -> str:
            return "".join(["a", "\ufffd", "b"][i] for i in ids)

    assert token_pieces(Pieces(), [0, 1, 2]) == ("a", "\ufffd", "b")


def test_a_byte_level_bpe_tokenizer_keeps_characters_whole():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    def byte_level(merges: list[tuple[str, str]]) -> PreTrainedTokenizerFast:
        vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
        for first, second in merges:
            vocab[first + second] = len(vocab)
        core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        core.decoder = decoders.ByteLevel()
        return PreTrainedTokenizerFast(tokenizer_object=core)

    plain = byte_level([])
    bytes_of_ri = plain.convert_ids_to_tokens(plain("日本", add_special_tokens=False)["input_ids"])
    straddling = byte_level([(bytes_of_ri[2], bytes_of_ri[3])])  # one token = last byte of 日 + first of 本
    for tokenizer in (plain, straddling):
        for text in ("日本 café 🦜!", "x 👩\u200d👩\u200d👧", FURTHER_TEXTS["flags"]):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            pieces = token_pieces(tokenizer, ids)
            assert "".join(pieces) == text and len(pieces) == len(ids)
    pieces = token_pieces(straddling, straddling("日本", add_special_tokens=False)["input_ids"])
    assert pieces == ("", "", "", "", "日本") and len(display_units(pieces)) == 1


# Marks never collide with the text; units.


def test_mark_characters_of_the_text_are_shown_as_ascii():
    pieces = ("x", " ⟦", "y", "⟧", "⏎", "\n", "z")
    assert with_activations(context_of(pieces), 1.0) == "x [y]↵⏎z"
    assert with_marked_target(context_of(pieces), 2) == "x [⟦y⟧]↵⏎z"


def test_display_units_group_empty_pieces_with_the_next_token():
    assert display_units(("a", "", "", "b", "c")) == [range(0, 1), range(1, 4), range(4, 5)]
    assert display_units(("a", "", "")) == [range(0, 3)], "trailing empty pieces join the last unit"
    assert display_units(("", "")) == [range(0, 2)]
    assert display_units(()) == []


# One rendering for prompts, show-unit and the report.


Recorder = ScriptedBackend  # records every prompt it is sent


def test_show_unit_the_judge_and_the_report_show_the_same_context(gemma_tokenizer, tmp_path: Path):
    text = "naïve 𝔘𝔫𝔦 ⟦x⟧\ny 🦜 z"
    ids = encode(gemma_tokenizer, text)
    chunks = np.array([ids + [gemma_tokenizer.eos_token_id] * 4], dtype=np.int64)
    pieces = token_pieces(gemma_tokenizer, ids)
    target = next(i for i, piece in enumerate(pieces) if piece == "𝔫") - 2  # a byte token inside 𝔫
    activations = tuple(3.0 if i == target else 0.0 for i in range(len(ids)))
    sample = ContextSample("d/1", "top", 0, target, 0, activations)
    context = render(sample, chunks, gemma_tokenizer)
    expected = "naïve 𝔘⟦𝔫⟧𝔦 [x]⏎y 🦜 z"
    assert with_marked_target(context) == expected

    stats = UnitStats("d/1", len(ids), 1, 1 / len(ids), 0.0, 3.0, 0.0, 0.1, (1,))
    assert show_unit_text(stats, [sample], chunks, gemma_tokenizer).splitlines()[1] == f"    3.000  {expected}"

    backend = Recorder("3")
    judge_unit(UnitContexts("d/1", 3.0, (), (context,)), "fraktur letters", "real", LLMClient(backend, cache_dir=tmp_path), "rating")
    assert f"\n{expected}\n" in backend.prompts[0]

    report = _tokens_html(context, 3.0)
    assert html.unescape(re.sub(r"<[^>]+>", "", report)) == unmark(expected)
    marked = re.findall(r"<span class='([^']*)' title='([^']*)'>([^<]*)</span>", report)
    assert [(title, body) for classes, title, body in marked if "tg" in classes] == [("0.000 / 3.000 / 0.000 / 0.000", "𝔫")]


def test_the_structured_simulator_lists_display_units_and_predicts_per_token(gemma_tokenizer, tmp_path: Path):
    pieces = token_pieces(gemma_tokenizer, encode(gemma_tokenizer, "a 𝔘 b"))
    assert pieces == ("a", " ", "", "", "", "𝔘", " b")
    context = context_of(pieces, (0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0))
    backend = Recorder("[0, 1, 9, 2]")
    (simulation,) = simulate_unit(UnitContexts("d/1", 1.0, (), (context,)), "x", "real", LLMClient(backend, cache_dir=tmp_path))
    assert "1: 'a'\n2: ' '\n3: '𝔘'\n4: ' b'\n" in backend.prompts[0] and "list of 4 integers" in backend.prompts[0]
    assert simulation.predicted == (0.0, 1.0, 9.0, 9.0, 9.0, 9.0, 2.0) and simulation.actual == context.activations
    assert simulation.rendering == RENDERING


def test_token_statistics_count_characters_not_byte_tokens():
    firing = context_of(("a", "", "𝔘", " b"), (0.0, 3.0, 0.0, 0.0))
    unit = UnitContexts("d/1", 3.0, (firing, firing), ())
    assert token_statistics_explanation(unit).text == 'the tokens "𝔘"'


# Records made with another rendering are redone.


def test_a_rendering_change_redoes_explanations_judgments_and_simulations():
    old = context_of(("a", "\ufffd", "\ufffd"))
    new = context_of(("a", "", "é"))
    assert contexts_digest([old], RENDERING) != contexts_digest([new], RENDERING), "new token text changes the digest"
    assert contexts_digest([new], "1") != contexts_digest([new], RENDERING)

    client = SimpleNamespace(backend=SimpleNamespace(name="b", model="m"))
    settings = _scorer_settings(client, "judge_format", "rating", RUBRIC_FORMATS)
    assert settings["rendering"] == RENDERING
    fields = dict(unit="d/1", context_id="c", context_kind="top", activation=1.0, level=9, source="real", explanation="e", score=2.0)
    fields |= dict(judge_format="rating", backend="b", model="m", prompt_hash=settings["prompt_hash"], rubric_hash="r")
    assert _current(Judgment(**fields, rendering=RENDERING), "e", settings)
    assert not _current(Judgment(**fields), "e", settings), "a judgment of the old rendering (no field) is redone"


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (("line", "\r", "\n", "next"), "line⟦␍⟧⏎next"),  # a token that is only \r is a visible mark, never ⟦⟧
        (("a", "\r", "b"), "a⟦␍⟧b"),
        (("a", "\u2028", "b"), "a⟦⏎⟧b"),  # every break str.splitlines knows is a line break
        (("a", "\x0c", "b"), "a⟦⏎⟧b"),
        (("a", "\x85", "b"), "a⟦⏎⟧b"),
        (("a", "␍", "b"), "a⟦↵⟧b"),  # a literal ␍ of the text is escaped like a literal ⏎
    ],
)
def test_every_line_break_and_carriage_return_is_visible_on_one_line(tokens: tuple[str, ...], expected: str) -> None:
    context = TokenContext("u/0", "u/0@0:1", "top", 0, tokens, (0.0, 1.0, 0.0, 0.0)[: len(tokens)], 1)
    rendered = with_marked_target(context)
    assert rendered == expected
    assert len(rendered.splitlines()) == 1
