"""`evaluate --report` puts its verdict into the output's dataset card (OUT_DIR/README.md), never over a user's."""
import numpy as np
import pytest

from pipeline.dataset import card
from pipeline.evaluation.evaluate import evaluate


@pytest.mark.e2e
def test_evaluate_writes_its_verdict_into_the_dataset_card(tmp_path, real, real_source, fast, write_output):
    out = write_output(tmp_path / "o", real.test.images[:300], real.test.labels[:300],
                       latents=np.zeros((300, 2), np.float32))
    r = evaluate(out, real_source, None, str(tmp_path / "report"), fast)
    text = (tmp_path / "o" / card.CARD_FILE).read_text()
    assert f"**Verdict: {r['verdict']['status'].upper()}**" in text
    assert "(report: `../report/report.html`)" in text and str(tmp_path) not in text
    (tmp_path / "o" / card.CARD_FILE).write_text("mine\n")
    evaluate(out, real_source, None, str(tmp_path / "report"), fast)
    assert (tmp_path / "o" / card.CARD_FILE).read_text() == "mine\n"
