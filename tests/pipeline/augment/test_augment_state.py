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
