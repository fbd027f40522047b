"""labkit.recipes: the table of recipes the zoo reads (data only: no recipe imports the zoo), and the command-line
overrides of a recipe's fields."""

import pytest

from labkit import recipes
from labkit.recipes.gpt_shakespeare import LAB


def test_every_recipe_module_declares_one_recipe_and_what_it_needs():
    table = recipes.recipes()
    assert set(table) == {r.name for r in table.values()} and len(table) == len(recipes.RECIPE_MODULES)
    for r in table.values():
        assert r.version >= 1 and r.description
        assert all(n in table for n in r.needs), (r.name, r.needs)  # dependencies are zoo models


def test_bad_overrides_say_what_is_allowed():
    with pytest.raises(ValueError, match="expected name=value"):
        recipes.parse_overrides(LAB, ["layers=2"])
    with pytest.raises(ValueError, match="must be a int"):
        recipes.parse_overrides(LAB, ["n_layers=two"])
    assert recipes.parse_overrides(LAB, ["tie_weights=true", "head_lr=0.01"]).tie_weights is True
