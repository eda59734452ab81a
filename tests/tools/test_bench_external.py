"""bench_train_step's --official-cmd: an outside timing program's RESULT line joins the table."""

import sys

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_train_step  # noqa: E402

FAKE = """import json, sys
if sys.argv[1] == "broken":
    sys.exit("official code exploded")
print("some log line")
print("RESULT " + json.dumps({"median_s": 8.0, "min_s": 7.5, "peak_bytes": 4e9, "base_bytes": 2e9,
                              "argv": sys.argv[1:]}))
"""


def test_external_command_is_filled_in_and_its_result_merged(tmp_path):
    script = tmp_path / "adapter.py"
    script.write_text(FAKE)
    cfg = dict(variant="external", learner="maple", classes=50, batch_size=4,
               command=f"{sys.executable} {script} {{learner}} {{classes}} {{batch_size}}")
    res = bench_train_step.run_config(cfg, script="unused")
    assert res["argv"] == ["maple", "50", "4"]
    assert (res["median_s"], res["peak_bytes"], res["prompts"], res["variant"]) == (8.0, 4e9, "-", "external")

    broken = bench_train_step.run_config(dict(cfg, learner="broken"), script="unused")
    assert "median_s" not in broken and "official code exploded" in broken["error"]
