"""Full disks and kills (issue 30, item 5): a run's outputs form one consistent set, TTA resumes from
its recorded predictions, no temporary file outlives a failed or killed write, and a full disk is one
line naming the path and the space left there.

Each test here failed on the code before this change."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import ROOT
from tool_loader import load_tool
from toy_run import train

import vlprompt.io
from vlprompt.adapters import run as tta_run
from vlprompt.cli import run_tool
from vlprompt.errors import ConfigError, UserError
from vlprompt.io import atomic_write_json

tta = load_tool("tta")
TPT = "configs/tpt/toy_shapes_noise.py"
TTA_OPTIONS = ["model.backbone.name=test-tiny", "model.backbone.pretrained=None", "views.n_views=4",
               "adapter.selection_p=0.5"]
GIB = 1 << 30


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or ".partial" in p.name)


def _free(monkeypatch, free: int) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(vlprompt.io.shutil, "disk_usage",
                        lambda path: type(usage)(usage.total, usage.total - free, free))


def _full_disk(code: int = errno.ENOSPC):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return refuse


# ---------------------------------------------------------------------------- one line naming path and space
@pytest.mark.parametrize("code, said", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EDQUOT, "Disk quota exceeded")])
def test_a_full_disk_is_one_line_naming_the_path_and_the_free_space(tmp_path, monkeypatch, capsys, code, said):
    """The rename of a finished write fails: the temporary file goes, the target is untouched, and a tool
    stops with exit 2 and one line naming the file and the space left (no traceback)."""
    target = tmp_path / "run" / "results.json"
    _free(monkeypatch, int(1.5 * GIB))
    monkeypatch.setattr(vlprompt.io.os, "replace", _full_disk(code))
    with pytest.raises(OSError) as caught:
        atomic_write_json(target, {"metrics": {}})
    err = caught.value
    assert isinstance(err, UserError) and err.errno == code
    assert str(err).startswith(f"{said} while writing {target} (1.5 GiB free there)")
    assert _temporaries(tmp_path) == [] and not target.exists()

    with pytest.raises(SystemExit) as exit_:
        run_tool(lambda: atomic_write_json(target, {"metrics": {}}), argv=[])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {said} while writing {target} (1.5 GiB free there)")
    assert _temporaries(tmp_path) == []


def test_a_full_disk_while_a_checkpoint_is_written_names_it(tmp_path, monkeypatch):
    """mmengine's checkpoint write fails for space: the error names the checkpoint and the space left."""
    from mmengine.fileio import LocalBackend

    _free(monkeypatch, 0)
    monkeypatch.setattr(LocalBackend, "put", _full_disk())
    work = tmp_path / "run"
    with pytest.raises(UserError, match=rf"No space left on device while writing {work / 'epoch_1.pth'} "
                                        r"\(0 bytes free there\)"):
        train(work, epochs=1, test=False)
    assert _temporaries(work) == []


def test_a_full_disk_while_the_log_file_is_written_stops_the_run_naming_it(tmp_path, monkeypatch, capsys):
    """mmengine's log file finds no room: the run stops with one line naming the log file (logging's default
    prints a traceback and trains on without a log)."""
    import logging

    def full(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(logging.FileHandler, "flush", full, raising=False)
    work = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        run_tool(lambda: train(work, epochs=1, test=False), argv=[])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Logging error" not in err and "Traceback" not in err, err
    log = next(work.rglob("*.log"))
    assert lines[-1].startswith(f"error: No space left on device while writing {log} (") and \
        lines[-1].endswith("free some space and rerun with --resume"), lines


def test_a_full_disk_in_a_library_write_is_one_line(tmp_path, capsys):
    """A library's own write (TensorBoard's event file, a JSON scalar log) fails for space: one line, with the file
    when the error names one, and the space left."""
    def write(filename):
        def fail():
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), filename)
        return fail

    events = tmp_path / "events.out"
    for filename, said in ((str(events), f"Disk quota exceeded while writing {events} ("),
                           (None, "Disk quota exceeded while writing (the file was not named; ")):
        with pytest.raises(SystemExit) as exit_:
            run_tool(write(filename), argv=[])
        assert exit_.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {said}"), lines
    with pytest.raises(PermissionError):  # other OS errors are not a full disk: they pass as they are
        run_tool(lambda: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")), argv=[])


# ---------------------------------------------------------------------------- temporaries of killed writers
def test_a_killed_writers_temporaries_are_removed_by_the_next_write(tmp_path):
    """A write killed between creating its temporary file and renaming it leaves ``.results.json.<pid>-...tmp``;
    the next write of that file removes those of dead processes (never a live writer's)."""
    dead = 999_999_999  # above any pid_max: no such process
    stale = [tmp_path / f".results.json.{dead}-0badf00d.tmp", tmp_path / f".results.json.{dead}-deadbeef.tmp.png"]
    live = tmp_path / f".results.json.{os.getpid()}-1234abcd.tmp"
    other = tmp_path / f".tta.md.{dead}-0badf00d.tmp"  # another file's: left to that file's next write
    for path in (*stale, live, other):
        path.write_text("half")
    atomic_write_json(tmp_path / "results.json", {"ok": 1})
    assert json.loads((tmp_path / "results.json").read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".tta.md.999999999-0badf00d.tmp", live.name,
                                                                 "results.json"])


# ---------------------------------------------------------------------------- a run's outputs as one set
def test_a_rerun_whose_results_cannot_be_written_leaves_no_older_results_beside_its_learned_file(tmp_path,
                                                                                                   monkeypatch):
    """A finished 1-epoch run goes on to 2 epochs (--resume with a longer schedule) and the disk fills when its
    results are written: epoch 2's learned prompts never sit beside epoch 1's results.json, run.json says the
    set is unfinished, and a rerun with --resume completes it."""
    from vlprompt.engine.checkpoint import read_learned

    work = tmp_path / "run"
    train(work, epochs=1)
    assert json.loads((work / "run.json").read_text())["finished"] is True and (work / "results.json").is_file()

    replace = vlprompt.io.durable_replace

    def full_for_results(src, dst):
        if Path(dst).name == "results.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(src, dst)

    monkeypatch.setattr(vlprompt.io, "durable_replace", full_for_results)
    with pytest.raises(UserError, match=rf"No space left on device while writing {work / 'results.json'} \("):
        train(work, epochs=2, resume=True)
    assert read_learned(work / "learned.safetensors")[1]["epoch"] == 2
    assert not (work / "results.json").exists()  # epoch 1's results went when epoch 2's prompts were written
    assert json.loads((work / "run.json").read_text())["finished"] is False
    assert _temporaries(work) == []

    monkeypatch.setattr(vlprompt.io, "durable_replace", replace)
    train(work, epochs=2, resume=True)
    assert json.loads((work / "run.json").read_text())["finished"] is True
    assert json.loads((work / "results.json").read_text())["metrics"]["hm"] >= 0  # toy_shapes: base to novel


def test_a_sweep_never_reuses_a_run_folder_recorded_with_other_settings(tmp_path):
    """A seed-1 run finished but its sweep record was never written (the disk was full): a sweep asking for
    seed 2 in that folder must not resume it (that pairs seed 1's prompts with seed 2's results)."""
    from vlprompt.engine.checkpoint import write_run_record
    from vlprompt.engine.sweep import SweepRun, effective_config, plan_runs

    config = ROOT / "configs/coop/toy_shapes.py"
    run_dir = tmp_path / "seed"
    run_dir.mkdir()
    for name in ("learned.safetensors", "results.json", "epoch_2.pth"):
        (run_dir / name).write_bytes(b"")
    write_run_record(run_dir, {"name": "coop/toy_shapes", "finished": True,
                               "settings": effective_config(config, ["randomness.seed=1"])})
    with pytest.raises(SystemExit, match=r"seed holds a finished run with other settings \(randomness.seed: "
                                         r"1 -> 2\).*--overwrite"):
        plan_runs([SweepRun(run_dir, config, ["randomness.seed=2"])])
    same = SweepRun(run_dir, config, ["randomness.seed=1"])
    assert plan_runs([same]) == [same]  # its own settings: the sweep reruns it with --resume, which tests again


# ---------------------------------------------------------------------------- TTA resumes
class Killed(Exception):
    """The process stops here (a kill, Ctrl-C)."""


class _Counting:
    """The adapter, counting the samples it adapts; raises ``fail`` at sample ``stop`` (0-based)."""

    def __init__(self, adapter, calls: list, stop: int | None = None, fail: BaseException | None = None) -> None:
        self._adapter, self._calls, self._stop, self._fail = adapter, calls, stop, fail

    def __getattr__(self, name):
        return getattr(self._adapter, name)

    def __call__(self, views, index):
        if self._stop is not None and len(self._calls) == self._stop:
            raise self._fail
        self._calls.append(index)
        return self._adapter(views, index)


_BUILD_ADAPTER = tta_run.build_adapter_of


def _wrap_adapter(monkeypatch, calls: list, **kwargs) -> None:
    monkeypatch.setattr(tta_run, "build_adapter_of", lambda *a: _Counting(_BUILD_ADAPTER(*a), calls, **kwargs))


def _tta(work: Path, *extra: str, options: tuple[str, ...] = (), config: str = TPT) -> list[dict]:
    return tta.main([config, "--limit", "6", "--work-dir", str(work), *extra, "--cfg-options", *TTA_OPTIONS, *options])


def test_tta_resumes_from_its_recorded_predictions(tmp_path, monkeypatch):
    """Stopped after 3 of 6 samples (killed), the rerun adapts only the other 3 and ends with the results of an
    uninterrupted run; a rerun under other settings is refused instead of mixing two setups."""
    whole = tmp_path / "whole"
    _tta(whole)
    expected = json.loads((whole / "results.json").read_text())

    work, calls = tmp_path / "run", []
    _wrap_adapter(monkeypatch, calls, stop=3, fail=Killed())
    with pytest.raises(Killed):
        _tta(work)
    assert not (work / "results.json").exists()
    _wrap_adapter(monkeypatch, calls)
    with pytest.raises(ConfigError, match=rf"{work / 'tta_predictions.jsonl'} records 3 predictions made with other "
                                          r"settings \(limit: 6 -> 5\)"):
        tta.main([TPT, "--limit", "5", "--work-dir", str(work), "--cfg-options", *TTA_OPTIONS])

    calls.clear()
    rows = _tta(work)
    assert len(calls) == 3 and set(calls).isdisjoint(i for i, _ in expected["predictions"][:3])
    record = json.loads((work / "results.json").read_text())
    assert record["predictions"] == expected["predictions"]
    assert record["metrics"]["accuracy/top1"] == expected["metrics"]["accuracy/top1"] == rows[0]["top1"]
    assert record["samples"] == expected["samples"]
    assert not (work / "tta_predictions.jsonl").exists()  # done: results.json holds them
    assert _temporaries(work) == []


@pytest.mark.parametrize("config, stream", [
    (TPT, ("adapter.episodic=False",)), ("configs/tda/toy_shapes_noise.py", ("adapter.negative.entropy=[0.0,1.0]",))],
                         ids=["tpt-not-episodic", "tda"])
def test_a_state_keeping_adapter_goes_on_from_its_saved_state(tmp_path, monkeypatch, config, stream):
    """``episodic=False``, TDA's caches: each prediction depends on the samples before, which come in a seeded
    shuffle (``stream.seed``, recorded). Killed after 5 of 6 samples with its state saved after 4, the rerun loads
    that state, makes samples 5 and 6 again and ends with the predictions of an uninterrupted run (it used to start
    over); the saved state goes once results.json is written. Another stream seed is another order."""
    monkeypatch.setattr(tta_run, "ADAPTER_STATE_EVERY", 2)
    whole = tmp_path / "whole"
    calls = []
    _wrap_adapter(monkeypatch, calls)
    _tta(whole, options=stream, config=config)
    expected = json.loads((whole / "results.json").read_text())
    order = expected["stream"]["order"]
    assert expected["stream"]["seed"] == 1 and calls == order and sorted(order) == [i for i, _ in
                                                                                  expected["predictions"]]
    assert order != sorted(order)

    work, calls = tmp_path / "run", []
    _wrap_adapter(monkeypatch, calls, stop=5, fail=Killed())
    with pytest.raises(Killed):
        _tta(work, options=stream, config=config)
    assert (work / "tta_adapter_state.safetensors").is_file()
    calls.clear()
    _wrap_adapter(monkeypatch, calls)
    _tta(work, options=stream, config=config)
    assert calls == order[4:]
    record = json.loads((work / "results.json").read_text())
    assert record["predictions"] == expected["predictions"] and len(order) == 6
    assert not (work / "tta_adapter_state.safetensors").exists() and not (work / "tta_predictions.jsonl").exists()

    calls.clear()
    _tta(tmp_path / "other", options=(*stream, "stream.seed=2"), config=config)
    other = json.loads((tmp_path / "other" / "results.json").read_text())["stream"]
    assert other["seed"] == 2 and calls == other["order"] != order and sorted(other["order"]) == sorted(order)


def test_tta_predictions_from_another_kind_of_device_are_not_mixed(tmp_path, monkeypatch):
    """A log recorded on a GPU is not gone on from on the CPU (their arithmetic differs): refused naming it."""
    work, calls = tmp_path / "run", []
    _wrap_adapter(monkeypatch, calls, stop=3, fail=Killed())
    with pytest.raises(Killed):
        _tta(work)
    path = work / "tta_predictions.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    assert header["settings"]["device"] == "cpu"
    header["settings"]["device"] = "cuda"
    path.write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    _wrap_adapter(monkeypatch, calls)
    with pytest.raises(ConfigError, match=r'records 3 predictions made with other settings '
                                          r'\(device: "cuda" -> "cpu"\)'):
        _tta(work)


def test_tta_on_a_full_disk_stops_with_one_line_and_the_rerun_goes_on(tmp_path, monkeypatch, capsys):
    """The prediction of sample 3 cannot be recorded: exit 2 with one line naming the file and the space left;
    the rerun adapts the 3 samples not recorded, and a half-written line is not read as a prediction."""
    work, calls = tmp_path / "run", []
    _free(monkeypatch, 12 * (1 << 20))
    write = tta_run.PredictionLog.write_line

    def fill_up(self, line: str) -> None:
        if len(calls) == 4:
            write(self, line[:7])  # half the line reaches the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, line)

    _wrap_adapter(monkeypatch, calls)
    monkeypatch.setattr(tta_run.PredictionLog, "write_line", fill_up)
    argv = [TPT, "--limit", "6", "--work-dir", str(work), "--cfg-options", *TTA_OPTIONS]
    with pytest.raises(SystemExit) as exit_:
        run_tool(lambda: tta.main(argv), argv=[])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "sample/s" not in line]  # less the progress bar
    assert len(lines) == 1 and "Traceback" not in err, lines
    assert lines[0].startswith(f"error: No space left on device while writing {work / 'tta_predictions.jsonl'} "
                               "(12.0 MiB free there)")
    assert "3 of 6 samples are recorded" in lines[0]

    monkeypatch.setattr(tta_run.PredictionLog, "write_line", write)
    calls.clear()
    _tta(work)
    assert len(calls) == 3
    record = json.loads((work / "results.json").read_text())
    assert record["samples"]["count"] == 6 and len({i for i, _ in record["predictions"]}) == 6
