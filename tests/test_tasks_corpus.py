"""Training texts: complete, valid, and including the evaluation templates."""

import ast
import re

from saelab.tasks import get_task
from saelab.tasks.greater_than import CORPUS_TEMPLATES
from saelab.tasks.ioi import BABA_TEMPLATES, abba


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for key in ("A", "B", "PLACE", "OBJECT"):
        pattern = pattern.replace(re.escape(f"[{key}]"), r"\w+")
    return re.compile(pattern + r" \w+\.")


def test_ioi_texts_end_with_the_indirect_object():
    names = set(get_task("ioi").vocabulary("tiny").words["names"])
    texts = get_task("ioi").corpus_texts(400, seed=0)
    eval_patterns = [_template_regex(t) for t in BABA_TEMPLATES + tuple(abba(t) for t in BABA_TEMPLATES)]
    n_eval = 0
    for text in texts:
        used = [w for w in re.findall(r"\w+", text) if w in names]
        io = used[-1]
        assert text.endswith(f" {io}.") and used.count(io) == 2 and len(set(used)) == 2
        n_eval += any(p.fullmatch(text) for p in eval_patterns)
    assert 120 < n_eval < 280  # about half use the evaluation templates


def test_greater_than_texts_end_later_than_they_start():
    texts = get_task("greater_than").corpus_texts(300, seed=0)
    assert (
        sum(t.startswith("The ") and " lasted from the year " in t and " to the year " in t for t in texts)
        > 100
    )
    for text in texts:
        start, end = map(int, re.findall(r"\b1\d{3}\b", text))
        assert start // 100 == end // 100 and 2 <= start % 100 < end % 100 <= 99
        assert any(
            re.fullmatch(
                re.escape(t)
                .replace(r"\{noun\}", r"\w+")
                .replace(r"\{start\}", str(start))
                .replace(r"\{end\}", str(end)),
                text,
            )
            for t in CORPUS_TEMPLATES
        )


def test_docstring_texts_are_python_documenting_args_in_order():
    texts = get_task("docstring").corpus_texts(100, seed=0)
    published = 0
    for text in texts:
        function = ast.parse(text).body[0]
        args = [a.arg for a in function.args.args][1:]
        documented = re.findall(r":param (\w+):", ast.get_docstring(function))
        assert documented == args[len(args) - len(documented) :] and len(documented) >= 2
        published += len(args) == 6 and len(documented) == 4
    assert published >= 40


EVAL_PROMPT = re.compile(
    r'\ndef \w+\(self(?:, \w+){6}\):\n    """\w+ \w+ \w+\n\n'
    r"    :param \w+: \w+ \w+\n    :param \w+: \w+ \w+\n    :param"
)


def test_published_setting_texts_continue_eval_prompts_with_the_answer():
    from saelab.tasks import gpt2_tokenizer

    data = get_task("docstring").generate(gpt2_tokenizer(), 3, seed=0)
    assert all(EVAL_PROMPT.fullmatch(p) for p in data.clean_prompts)
    checked = 0
    for text in get_task("docstring").corpus_texts(60, seed=1):
        cut = [m.end() for m in re.finditer(r"\n    :param", text)]
        if len(cut) == 4 and EVAL_PROMPT.fullmatch(text[: cut[2]]):
            args = [a.arg for a in ast.parse(text).body[0].args.args][1:]
            assert text[cut[2] :].startswith(f" {args[4]}:")
            checked += 1
    assert checked >= 15
