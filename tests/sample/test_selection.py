"""The sample covers the range of a skewed corpus: its longest document, every stratum, every length quantile."""

from __future__ import annotations

from pathlib import Path

from freight.runner.inputs import read_input
from freight.runner.sampling import choose, profile, select

from .conftest import skewed_texts, write_folder


def test_a_skewed_corpus_is_covered_to_its_extremes(skewed: Path) -> None:
    profiles = list(profile(read_input(skewed)))
    strata = {p.signature for p in profiles}
    assert len(strata) >= 4  # the corpus really is skewed: notes, long prose, tables, Cyrillic

    for seed in range(10):
        selection = select(profiles, size=8, seed=seed)
        ids = [p.doc_id for p in selection.picks]
        assert len(ids) == 8 == len(set(ids))
        assert "longest" in ids
        assert {p.signature for p in selection.picks} == strata
        assert {p.quantile for p in selection.picks} == {0, 1, 2, 3}
        assert selection.uncovered == []
        longest = next(p for p in selection.picks if p.doc_id == "longest")
        assert longest.reasons[0].startswith("the longest document")
        assert all(p.reasons for p in selection.picks)  # every pick says why


def test_the_same_seed_gives_the_same_sample_and_another_seed_may_not(skewed: Path) -> None:
    def ids(seed: int) -> list[str]:
        return [p.doc_id for p in select(profile(read_input(skewed)), size=8, seed=seed).picks]

    assert ids(7) == ids(7)
    assert len({tuple(ids(seed)) for seed in range(6)}) > 1


def test_a_size_too_small_for_the_strata_says_what_it_left_out(skewed: Path) -> None:
    selection = select(profile(read_input(skewed)), size=2, seed=0)
    assert len(selection.picks) == 2 and "longest" in [p.doc_id for p in selection.picks]
    assert any(gap.startswith("stratum ") for gap in selection.uncovered)


def test_the_rest_of_the_size_follows_the_corpus(skewed: Path) -> None:
    selection = select(profile(read_input(skewed)), size=20, seed=1)
    notes = [p for p in selection.picks if p.doc_id.startswith("note-")]
    assert len(notes) > len(selection.picks) // 2  # 95 % of the corpus is notes: most of the extra weight goes there
    assert any("of the corpus" in r for p in notes for r in p.reasons)


def test_choose_rereads_exactly_the_chosen_documents(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "docs", skewed_texts())
    selection, docs = choose(folder, size=8, seed=3)
    assert [d.doc_id for d in docs] == [p.doc_id for p in selection.picks]
    texts = skewed_texts()
    assert all(d.text == texts[d.doc_id] for d in docs)


def test_a_corpus_smaller_than_the_size_is_taken_whole(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "docs", {"a": "one", "b": "two two", "c": "three three three"})
    selection = select(profile(read_input(folder)), size=8, seed=0)
    assert sorted(p.doc_id for p in selection.picks) == ["a", "b", "c"]
