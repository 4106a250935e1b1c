"""docs/results.md is rendered from the JSON committed beside it (python -m tinyref.bench.report)."""
import json

import pytest

from tinyref.bench import report
from tinyref.errors import UsageError

MACHINE = {"date": "2026-01-02T03:04:05+00:00", "cpu": "Test CPU", "cores": 2, "os": "Linux 6", "python": "3.11",
           "tinygrad": "0.14.0", "device": "CPU:LLVM", "load_average": [1.5, 1.0, 0.5], "tinygrad_env": {},
           "torch": "2.13.0", "torch_threads": 2}


def row(config, impl, ms, tokens_per_s):
    return {"impl": impl, "config": config, "ms_per_step": ms, "tokens_per_s": tokens_per_s, "warmup_s": 1.0,
            "peak_mem_mb": 10.0, "note": ""}


def write_inputs(directory, bench_rows):
    directory.mkdir()
    (directory / "bench.json").write_text(json.dumps({"machine": MACHINE, "results": bench_rows, "generation": []}))
    (directory / "check.json").write_text(json.dumps({"devices": [
        {"device": "CPU", "dtype": "float32", "forward_max_err": 2e-7, "grad_max_err": 5e-7, "causal_ok": True,
         "seconds": 3.0, "ok": True, "reason": None, "model": "gpt2"}]}))
    return directory


def test_the_page_shows_the_machine_date_and_same_run_ratios(tmp_path):
    # 3000 tokens/s against PyTorch eager's 1200 in the same run: 2.50x
    data = write_inputs(tmp_path / "results", [row("S", "tinyref", 1.0, 3000.0), row("S", "torch-eager", 2.5, 1200.0)])
    page = report.render(report.load(data))
    assert "| date | 2026-01-02T03:04:05+00:00 |" in page and "Test CPU, 2 cores" in page
    assert "| S | tinyref | 1.00 | 1.00 | 3,000 | 10 | 2.50x |" in page
    assert "| S | torch-eager | 1.00 | 2.50 | 1,200 | 10 | 1.00x |" in page
    assert "| `CPU` | gpt2 | float32 | 2.0e-07 | 5.0e-07 | yes | 3.0 | agrees |" in page


def test_an_out_of_date_page_is_caught(tmp_path, capsys):
    data = write_inputs(tmp_path / "results", [row("S", "tinyref", 1.0, 3000.0), row("S", "torch-eager", 2.5, 1200.0)])
    page = tmp_path / "results.md"
    assert report.main(["--data", str(data), "--out", str(page)]) == 0
    assert report.main(["--data", str(data), "--out", str(page), "--check"]) == 0
    page.write_text(page.read_text().replace("2.50x", "3.00x"))          # a figure edited by hand
    assert report.main(["--data", str(data), "--out", str(page), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_the_charts_are_drawn_from_the_json_and_a_hand_edit_is_caught(tmp_path, capsys):
    data = write_inputs(tmp_path / "results", [row("S", "tinyref", 1.0, 3000.0), row("S", "torch-eager", 2.5, 1200.0)])
    page = tmp_path / "results.md"
    assert report.main(["--data", str(data), "--out", str(page)]) == 0
    chart = (data / "speed.png").read_bytes()
    assert chart[:8] == b"\x89PNG\r\n\x1a\n" and b"tEXt" not in chart      # a PNG with no metadata (no date, no version)
    assert "![Bar chart: training tokens per second" in page.read_text() and "](results/speed.png)" in page.read_text()
    assert not (data / "profile.png").exists() and "profile.png" not in page.read_text()   # no profile JSON, no chart
    (data / "speed.png").write_bytes(chart[:-12] + bytes(12))                    # an image edited by hand
    assert report.main(["--data", str(data), "--out", str(page), "--check"]) == 1
    assert "speed.png out of date" in capsys.readouterr().err
    bench = json.loads((data / "bench.json").read_text())
    bench["results"][0]["tokens_per_s"] = 6000.0                                 # measured again: a new figure
    (data / "bench.json").write_text(json.dumps(bench))
    assert report.main(["--data", str(data), "--out", str(page)]) == 0
    assert (data / "speed.png").read_bytes() not in (chart, chart[:-12] + bytes(12))
    assert report.main(["--data", str(data), "--out", str(page), "--check"]) == 0


def test_the_page_says_how_peak_memory_was_measured(tmp_path):
    data = write_inputs(tmp_path / "results", [row("S", "tinyref", 1.0, 3000.0)])
    assert "a later implementation reuses memory an earlier one freed" in report.render(report.load(data))
    bench = json.loads((data / "bench.json").read_text())
    (data / "bench.json").write_text(json.dumps({**bench, "process_per_impl": True}))
    assert "the implementation's own process rose while it ran" in report.render(report.load(data))


def test_missing_json_names_the_command_that_writes_it(tmp_path):
    (tmp_path / "results").mkdir()
    with pytest.raises(UsageError, match="lacks bench.json, check.json: write it with 'tinyref bench --config all"):
        report.load(tmp_path / "results")


def test_the_committed_page_is_what_its_json_renders():
    assert report.main(["--check"]) == 0, "docs/results.md was edited by hand or its JSON changed: run python -m tinyref.bench.report"
