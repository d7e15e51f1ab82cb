"""``nst-jax stylize --web``: the server's page and read-only API watching one CLI run, from the
CLI's own process on 127.0.0.1. A client follows the run's events to the end and gets the file the
command wrote; the view takes no jobs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx

from nst_jax import image

from serve_support import ROOT, files, make_inputs, wait


def test_web_shows_one_cli_run_live_and_its_result(tmp_path):
    d = make_inputs(tmp_path / "inputs")
    out = tmp_path / "out.png"
    env = dict(os.environ, PYTHONPATH=str(ROOT), NST_JAX_NO_BROWSER="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nst_jax", "stylize", str(d / "content.png"), str(d / "style.png"), "-o", str(out),
         "--weights", str(d / "syn.h5"), "--size", "64", "--iterations", "40", "--chunk-size", "2", "--web",
         "--no-progress"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = wait(lambda: proc.stderr.readline(), 120, "the live view's address")
        while "live view:" not in line:
            line = wait(lambda: proc.stderr.readline(), 120, "the live view's address")
        url = re.search(r"http://127\.0\.0\.1:\d+/\?job=([0-9a-f]{32})", line)
        assert url, line
        base, job_id = url.group(0).split("/?job=")[0], url.group(1)
        events = []
        with httpx.Client(timeout=30) as h:
            page = h.get(base + "/")
            assert page.status_code == 200 and "nst-jax" in page.text
            assert h.post(base + "/jobs", files=files(d)).status_code == 403  # a view: no new jobs
            with h.stream("GET", f"{base}/jobs/{job_id}/events") as stream:
                for raw in stream.iter_lines():
                    if raw.startswith("data: "):
                        events.append(json.loads(raw[6:]))
                        if events[-1]["status"] in ("done", "failed", "cancelled"):
                            break
            result = h.get(f"{base}/jobs/{job_id}/image").content
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert events[-1]["status"] == "done" and events[-1]["iteration"] == 40 and len(events[-1]["losses"]) == 40
    steps = [e["iteration"] for e in events]
    assert steps == sorted(steps) and len(set(steps)) >= 2  # it moved while watched
    (tmp_path / "view.png").write_bytes(result)  # the view's result: the file the command wrote
    assert (image.load_image(str(out)) == image.load_image(str(tmp_path / "view.png"))).all()
