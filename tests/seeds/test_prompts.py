"""Prompt builders, shipped categories and bad input (with hypothesis fuzzing)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tamis.seeds import categories as cat
from tamis.seeds.prompts import (
    COUNT_WORDS,
    RELATIONS,
    ObjectName,
    Prompt,
    Question,
    numerical_prompts,
    read_objects,
    spatial_prompts,
)

APPLE, CAT = ObjectName("apple", "apples", "an"), ObjectName("cat", "cats")


def test_numerical_and_spatial_text():
    p = numerical_prompts([APPLE], ["in an old town", None], counts=(3,))
    assert [x.text for x in p] == ["three apples, in an old town", "three apples"]
    assert p[0].category == "count=3" and p[0].question.count == 3 and p[1].background is None
    s = spatial_prompts([(APPLE, CAT)], split="eval")
    assert [x.text for x in s] == [
        "an apple on the left of a cat",
        "an apple on the right of a cat",
        "an apple on top of a cat",
        "an apple under a cat",
    ]
    assert {x.split for x in s} == {"eval"} and s[3].category == "relation=under"
    assert Prompt.from_dict(s[0].to_dict()) == s[0]


def test_bad_input():
    with pytest.raises(ValueError, match="count 11 outside"):
        numerical_prompts([APPLE], [None], counts=(11,))
    with pytest.raises(ValueError, match="count 0 outside"):
        Question("count", APPLE, count=0)
    with pytest.raises(ValueError, match="unknown relation 'behind'"):
        spatial_prompts([(APPLE, CAT)], ["behind"])
    with pytest.raises(ValueError, match="at least one object"):
        numerical_prompts([], [None])
    with pytest.raises(ValueError, match="unknown split"):
        numerical_prompts([APPLE], [None], split="test")
    with pytest.raises(ValueError, match="unknown object 'unicorn'"):
        cat.object_by_name("unicorn")
    with pytest.raises(ValueError, match="two different objects"):
        spatial_prompts([(APPLE, APPLE)])
    with pytest.raises(ValueError, match="singular, a/an singular, plural"):
        ObjectName.parse("apple, apples")


def test_comp90_lines(tmp_path):
    assert ObjectName.parse("apple, an apple, apples") == APPLE
    assert ObjectName.parse(APPLE.to_line()) == APPLE
    f = tmp_path / "objects.txt"
    f.write_text("# header\napple, an apple, apples\n\ncat, a cat, cats\nbad line\n")
    with pytest.raises(ValueError, match=r"objects.txt:5"):
        read_objects(str(f))
    f.write_text("apple, an apple, apples\ncat, a cat, cats\n")
    assert read_objects(str(f)) == [APPLE, CAT]


def test_shipped_split_mirrors_the_paper():
    assert len(cat.OBJECTS) == 90 and len(set(cat.OBJECTS)) == 90
    assert len(cat.TRAIN_OBJECTS) == 60 and len(cat.EVAL_OBJECTS) == 30
    assert not set(cat.TRAIN_OBJECTS) & set(cat.EVAL_OBJECTS)
    assert len(cat.TRAIN_BACKGROUNDS) == 8 and len(cat.EVAL_BACKGROUNDS) == 4
    assert not set(cat.TRAIN_BACKGROUNDS) & set(cat.EVAL_BACKGROUNDS)
    assert len(numerical_prompts(cat.TRAIN_OBJECTS, cat.TRAIN_BACKGROUNDS)) == 2400
    train_pair_objs = {o for pair in cat.TRAIN_PAIRS for o in pair}
    eval_pair_objs = {o for pair in cat.EVAL_PAIRS for o in pair}
    assert not train_pair_objs & eval_pair_objs
    assert len(spatial_prompts(cat.TRAIN_PAIRS)) == 320
    assert len(spatial_prompts(cat.EVAL_PAIRS)) == 160
    assert cat.split_objects() == (cat.TRAIN_OBJECTS, cat.EVAL_OBJECTS)


words = st.text(alphabet="abcdefghij ", min_size=1, max_size=12).filter(lambda w: w.strip())


@settings(max_examples=40, deadline=None)
@given(words, words, st.lists(st.integers(1, 10), min_size=1, max_size=4, unique=True))
def test_fuzz_numerical(singular, plural, counts):
    obj = ObjectName(singular.strip(), plural.strip())
    out = numerical_prompts([obj], ["on a beach"], counts=counts)
    assert [p.question.count for p in out] == counts
    for p, n in zip(out, counts):
        assert p.text == f"{COUNT_WORDS[n]} {obj.plural}, on a beach"


@settings(max_examples=40, deadline=None)
@given(st.integers(-5, 20), st.sampled_from(list(RELATIONS) + ["above", "", "LEFT OF"]))
def test_fuzz_bad_values(count, relation):
    if 1 <= count <= 10:
        assert numerical_prompts([APPLE], [None], counts=(count,))[0].question.count == count
    else:
        with pytest.raises(ValueError, match="outside the supported range"):
            numerical_prompts([APPLE], [None], counts=(count,))
    if relation in RELATIONS:
        assert spatial_prompts([(APPLE, CAT)], [relation])[0].question.relation == relation
    else:
        with pytest.raises(ValueError, match="unknown relation"):
            spatial_prompts([(APPLE, CAT)], [relation])
