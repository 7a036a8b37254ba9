"""Resume bookkeeping of augment (pipeline/augment/state.py): a finished step is skipped only when its fingerprint
matches and its outputs are unchanged."""
import os

from pipeline.augment import state


def _finish(ledger, root, fp):
    os.makedirs(os.path.join(root, "out"), exist_ok=True)
    with open(os.path.join(root, "out", "a.bin"), "wb") as f:
        f.write(b"abc")
    return ledger.write("step", fp, ["out"], {"seconds": 1})


def test_a_finished_step_is_complete_for_its_fingerprint_only(tmp_path):
    ledger = state.Ledger(str(tmp_path))
    _finish(ledger, str(tmp_path), "fp1")
    assert ledger.complete("step", "fp1") is not None
    assert ledger.complete("step", "fp2") is None  # a changed input or setting reruns it


def test_a_corrupted_removed_or_added_output_file_makes_it_incomplete(tmp_path):
    ledger = state.Ledger(str(tmp_path))
    path = tmp_path / "out" / "a.bin"
    _finish(ledger, str(tmp_path), "fp")
    path.write_bytes(b"abd")
    assert ledger.complete("step", "fp") is None
    _finish(ledger, str(tmp_path), "fp")
    path.unlink()
    assert ledger.complete("step", "fp") is None
    _finish(ledger, str(tmp_path), "fp")
    (tmp_path / "out" / "extra").write_bytes(b"")
    assert ledger.complete("step", "fp") is None


def test_identity_follows_the_output_content(tmp_path):
    ledger = state.Ledger(str(tmp_path))
    first = _finish(ledger, str(tmp_path), "fp")["identity"]
    assert _finish(ledger, str(tmp_path), "fp")["identity"] == first  # same bytes: downstream steps stay valid
    (tmp_path / "out" / "a.bin").write_bytes(b"other")
    assert ledger.write("step", "fp", ["out"], {})["identity"] != first


def test_a_garbled_record_means_not_done(tmp_path):
    ledger = state.Ledger(str(tmp_path))
    _finish(ledger, str(tmp_path), "fp")
    (tmp_path / "state" / "step.json").write_text("{not json")
    assert ledger.complete("step", "fp") is None


def test_a_code_or_library_change_reruns_a_finished_step(tmp_path, monkeypatch):
    from pipeline.augment.config import AugmentConfig
    from pipeline.augment.run import Job

    runs = []

    def body(tmp):
        runs.append(1)
        with open(tmp["out.txt"], "w") as f:
            f.write("x")
        return {}

    def step():
        job = Job("mnist", str(tmp_path / "aug"), AugmentConfig(), log=lambda *_: None)
        job.claim()
        job.step("s", "a step", {"a": 1}, ["out.txt"], body)

    step()
    step()
    assert len(runs) == 1  # same code: skipped
    real = state.code_identity()
    assert len(real) == 16 and real == state.code_identity()
    versions = state.artifacts.versions()
    monkeypatch.setattr(state.artifacts, "versions", lambda: {**versions, "tensorflow": "0.0-other"})
    state.code_identity.cache_clear()
    try:
        assert state.code_identity() != real  # another library version is another code identity
        step()
        assert len(runs) == 2  # ... and reruns the step
    finally:
        state.code_identity.cache_clear()


def test_the_code_identity_follows_the_source_files(tmp_path, monkeypatch):
    import importlib

    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(state, "CODE_PACKAGES", ("fakepkg",))
    importlib.invalidate_caches()
    state.code_identity.cache_clear()
    try:
        before = state.code_identity()
        (pkg / "m.py").write_text("X = 2\n")
        state.code_identity.cache_clear()
        assert state.code_identity() != before
    finally:
        state.code_identity.cache_clear()
