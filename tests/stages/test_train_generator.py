"""train_generator (tasks/train_generator.py), pure parts: the seeded example sample and which
retriever gives training context."""

from tasks.train_generator import context_role, sample_rows

ROWS = [{"qid": f"q{i}"} for i in range(10)]


def test_sample_rows_is_seeded_and_keeps_order():
    sample = sample_rows(ROWS, 4, seed=13)
    assert len(sample) == 4 and sample == sample_rows(ROWS, 4, seed=13)
    assert [ROWS.index(r) for r in sample] == sorted(ROWS.index(r) for r in sample)
    assert sample != sample_rows(ROWS, 4, seed=14)


def test_sample_rows_cap_zero_or_above_takes_all():
    assert sample_rows(ROWS, 0, 13) is ROWS
    assert sample_rows(ROWS, 10, 13) is ROWS and sample_rows(ROWS, 99, 13) is ROWS
    assert sample_rows([], 3, 13) == []


def test_context_comes_from_the_candidate_when_indexed():
    assert context_role({"tables": {"base": {}, "candidate": {}}}) == "candidate"
    assert context_role({"tables": {"base": {}}}) == "base"
