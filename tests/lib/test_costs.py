"""Stage costs (tasks/lib/costs.py): parameter counts, bytes on disk, peak memory."""

from tasks.lib.costs import dir_bytes, peak_rss_mb, trainable_parameters


def test_trainable_parameters_counts_only_what_requires_grad():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1, bias=False))
    assert trainable_parameters(model) == (10, 10)  # 3*2 weights + 2 biases, then 2*1
    model[0].weight.requires_grad_(False)
    assert trainable_parameters(model) == (4, 10)  # the 6 frozen weights still count in total


def test_dir_bytes_sums_files_in_subfolders(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"12345")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"123")
    (tmp_path / "empty").mkdir()
    assert dir_bytes(tmp_path) == 8
    assert dir_bytes(tmp_path / "empty") == 0


def test_peak_rss_is_in_megabytes():
    mb = peak_rss_mb()
    assert 10 < mb < 1_000_000  # this process holds at least the interpreter, and not a terabyte
    assert peak_rss_mb() >= mb  # a peak never goes down
