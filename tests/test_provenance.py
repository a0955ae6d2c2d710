import subprocess

import bench.engine.provenance as provenance


def test_dirty_means_changed_code_not_a_run_script_beside_it(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "a.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(provenance, "REPO", tmp_path)

    def dirty():
        provenance.git_state.cache_clear()
        return provenance.git_state()["git_dirty"]

    try:
        assert dirty() is False
        (tmp_path / "run.sh").write_text(
            "bench run ...\n"
        )  # a run script and its log: the code is unchanged
        (tmp_path / "results").mkdir()
        (tmp_path / "results" / "seed0.json").write_text("{}")
        assert dirty() is False
        (tmp_path / "bench" / "new.py").write_text("y = 2\n")  # new code in a package
        assert dirty() is True
        (tmp_path / "bench" / "new.py").unlink()
        (tmp_path / "bench" / "a.py").write_text("x = 2\n")  # changed code
        assert dirty() is True
    finally:
        provenance.git_state.cache_clear()
