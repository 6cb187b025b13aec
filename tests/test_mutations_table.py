"""The mutations table (tests/mutations.py) still names real places: each mechanism it
removes is found exactly once, so ``make mutations`` cannot rot when the code moves."""

from __future__ import annotations

import pytest

from tests.mutations import MUTATIONS, ROOT, Mutation


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_names_one_place_in_the_product(mutation: Mutation) -> None:
    text = (ROOT / mutation.path).read_text()
    for before, after in ((mutation.before, mutation.after), *mutation.more):
        assert text.count(before) == 1, f"{mutation.path}: {before!r}"
        assert before != after
    assert (ROOT / mutation.test.split("::")[0]).exists(), mutation.test
