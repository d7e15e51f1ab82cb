"""``nst-jax serve``: the API through Starlette's test client, batching, equality with the CLI, and
a real server process killed (SIGKILL) or drained (SIGTERM) mid-batch."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3

import httpx
import pytest
from starlette.testclient import TestClient

from nst_jax import weights
from nst_jax.serve.app import Settings, create_app
from nst_jax.serve.jobs import Limits

from serve_support import ADAM, cli_result, files, make_inputs, server, wait


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("serve"))


def client_for(inputs, data, **settings):
    app = create_app(Settings(data, **settings), weights.load_weights(inputs / "syn.h5"))
    return TestClient(app)


def finished(c, job_id, seconds=240):
    def done():
        job = c.get(f"/jobs/{job_id}").json()
        return job if job["status"] in ("done", "failed", "cancelled") else None

    return wait(done, seconds, f"job {job_id}")


def test_jobs_of_one_program_run_as_one_batch_and_equal_their_cli_runs(inputs, tmp_path):
    """Two jobs of one program and shape (other style, weight, seed and iterations) wait behind a
    job of another shape, then run as one batch of 2; each result is the CLI's PNG byte for byte."""
    a = {**ADAM, "iterations": "6", "init": "noise", "seed": "3"}
    b = {**ADAM, "iterations": "4", "style-weight": "3e4", "init": "noise", "seed": "5"}
    blocker = {**ADAM, "size": "64", "iterations": "30"}
    with client_for(inputs, tmp_path / "data", max_batch=4) as c:
        ids = [c.post("/jobs", files=files(inputs), data=blocker).json()["id"]]
        ids.append(c.post("/jobs", files=files(inputs), data=a).json()["id"])
        ids.append(c.post("/jobs", files=files(inputs, "style2.png"), data=b).json()["id"])
        jobs = [finished(c, i) for i in ids]
        assert [j["status"] for j in jobs] == ["done"] * 3, [j["error"] for j in jobs]
        assert jobs[0]["batch"]["size"] == 1
        assert jobs[1]["batch"] == jobs[2]["batch"] and jobs[1]["batch"]["size"] == 2
        assert (jobs[1]["iteration"], jobs[2]["iteration"]) == (6, 4) and len(jobs[2]["losses"]) == 4
        assert jobs[1]["config"]["style_weight"] != jobs[2]["config"]["style_weight"]
        got = [c.get(f"/jobs/{i}/image") for i in ids[1:]]
    assert all(r.status_code == 200 and r.headers["content-type"] == "image/png" for r in got)
    assert got[0].content == cli_result(inputs, a, tmp_path / "a.png")
    assert got[1].content == cli_result(inputs, b, tmp_path / "b.png", style="style2.png")


def test_an_lbfgs_job_equals_its_cli_run_and_the_events_stream_each_chunk(inputs, tmp_path):
    """The default preset (L-BFGS) alone in its batch: the CLI's bytes; the event stream sends an
    event whenever the job moves (never backwards) and ends with the result."""
    opts = {"size": "48", "iterations": "6", "chunk-size": "2", "style-layers": "relu1_1,relu2_1",
            "content-layers": "relu2_2"}
    with client_for(inputs, tmp_path / "data") as c:
        job_id = c.post("/jobs", files=files(inputs), data=opts).json()["id"]
        events = []
        with c.stream("GET", f"/jobs/{job_id}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[-1]["status"] == "done" and events[-1]["iteration"] == 6 and len(events) >= 2
        steps = [e["iteration"] for e in events]
        assert steps == sorted(steps) and len(set(map(json.dumps, events))) == len(events)
        assert events[-1]["preview"].startswith(f"/jobs/{job_id}/image")
        image = c.get(f"/jobs/{job_id}/image").content
        listed = c.get("/jobs").json()["jobs"]
    assert image == cli_result(inputs, opts, tmp_path / "cli.png")
    assert listed[0]["id"] == job_id and listed[0]["options"]


@pytest.mark.parametrize("option, value", [("size", "abc"), ("style-weight", "-1"), ("preserve-colors", "sepia"),
                                           ("preset", "picasso"), ("optimizer", "rmsprop")])
def test_a_bad_option_is_a_400_with_the_clis_message(inputs, tmp_path, capsys, option, value):
    from nst_jax import cli

    with client_for(inputs, tmp_path / "data") as c:
        r = c.post("/jobs", files=files(inputs), data={option: value})
    assert r.status_code == 400
    code = cli.main(["stylize", str(inputs / "content.png"), str(inputs / "style.png"), "-o", str(tmp_path / "x.png"),
                     "--weights", str(inputs / "syn.h5"), f"--{option}={value}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: {r.json()['error']}"
    jobs = tmp_path / "data" / "jobs"
    assert not jobs.exists() or not list(jobs.iterdir())  # a refused job leaves nothing on disk


def test_cancel_a_queued_job_and_the_queue_is_first_come_first_served(inputs, tmp_path):
    with client_for(inputs, tmp_path / "data", max_batch=2) as c:
        first = c.post("/jobs", files=files(inputs), data={**ADAM, "size": "64", "iterations": "20"}).json()["id"]
        queued = [c.post("/jobs", files=files(inputs), data={**ADAM, "iterations": "2"}).json()["id"] for _ in range(3)]
        assert c.delete(f"/jobs/{queued[1]}").json()["status"] == "cancelled"
        jobs = [finished(c, i) for i in [first, *queued]]
    assert [j["status"] for j in jobs] == ["done", "done", "cancelled", "done"]
    # the oldest waiting job always ran next: its batch started no later than a younger job's
    assert jobs[0]["started"] <= jobs[1]["started"] <= jobs[3]["started"]
    assert jobs[1]["batch"] == jobs[3]["batch"] and jobs[1]["batch"]["size"] == 2


def test_the_jobs_live_in_sqlite_in_wal_mode(inputs, tmp_path):
    with client_for(inputs, tmp_path / "data") as c:
        job_id = c.post("/jobs", files=files(inputs), data={**ADAM, "iterations": "2"}).json()["id"]
        finished(c, job_id)
    db = sqlite3.connect(tmp_path / "data" / "jobs.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0] == "done"


def _results(inputs, data, jobs, sig):
    """Run ``jobs`` on a real server, stop it with ``sig`` once every job has made progress and a
    checkpoint is on disk, start it again, and return each job's final PNG."""
    with httpx.Client() as h:
        with server(inputs, data, h) as s:
            # a job of another shape first: the two below wait together and run as one batch
            h.post(s.url + "/jobs", files=files(inputs), data={**ADAM, "size": "64", "iterations": "4"})
            ids = [h.post(s.url + "/jobs", files=files(inputs), data=o).json()["id"] for o in jobs]
            wait(lambda: all(h.get(f"{s.url}/jobs/{i}").json()["iteration"] >= 4 for i in ids)
                 and list((data / "batches").glob("*.ckpt.npz")), 240, "progress and a checkpoint")
            before = [h.get(f"{s.url}/jobs/{i}").json()["iteration"] for i in ids]
            code = s.stop(sig)
        assert code in ((-signal.SIGKILL,) if sig == signal.SIGKILL else (0, 143)), code
        with server(inputs, data, h) as s:
            jobs_after = [finished(_Http(h, s.url), i) for i in ids]
            assert [j["status"] for j in jobs_after] == ["done"] * len(ids), [j["error"] for j in jobs_after]
            assert all(j["iteration"] == int(o["iterations"]) for j, o in zip(jobs_after, jobs))
            # it resumed from the checkpoint (the iterations before the stop were not run again)
            assert "resuming a batch of 2 at iteration" in s.output()
            return before, [h.get(f"{s.url}/jobs/{i}/image").content for i in ids]


class _Http:
    """``httpx.Client`` with a base URL, as ``finished`` takes a client."""

    def __init__(self, h, url):
        self.h, self.url = h, url

    def get(self, path):
        return self.h.get(self.url + path)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm-drain"])
def test_a_restarted_server_finishes_every_job_with_the_uninterrupted_images(inputs, tmp_path, sig):
    jobs = [{**ADAM, "iterations": "40"}, {**ADAM, "iterations": "40", "style-weight": "3e4"}]
    before, images = _results(inputs, tmp_path / "data", jobs, sig)
    assert all(b < 40 for b in before)  # stopped mid-batch
    for k, (o, got) in enumerate(zip(jobs, images)):
        want = cli_result(inputs, o, tmp_path / f"cli{k}.png")
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest()


def test_limits_of_a_job(inputs, tmp_path):
    with client_for(inputs, tmp_path / "data", limits=Limits(max_size=64, max_iterations=100)) as c:
        big = c.post("/jobs", files=files(inputs), data={"size": "128", "iterations": "10"}).json()["error"]
        long = c.post("/jobs", files=files(inputs), data={"iterations": "101"}).json()["error"]
    assert "at most 64 pixels" in big and "at most 100" in long


def test_set_reaches_any_config_field_as_on_the_command_line(inputs, tmp_path, capsys):
    """``set`` repeats, as ``--set`` does; any other option given twice is refused."""
    from nst_jax import cli

    opts = {**ADAM, "iterations": "3"}
    with client_for(inputs, tmp_path / "data") as c:
        job_id = c.post("/jobs", files=files(inputs), data={**opts, "set": ["tv_loss=l1", "tv_weight=50"]}).json()["id"]
        job = finished(c, job_id)
        png = c.get(f"/jobs/{job_id}/image").content
        twice = c.post("/jobs", files=files(inputs), data={**opts, "size": ["48", "64"]})
    assert job["status"] == "done" and job["config"]["tv_loss"] == "l1" and job["config"]["tv_weight"] == 50
    assert twice.status_code == 400 and "give an option once" in twice.json()["error"]
    argv = ["stylize", str(inputs / "content.png"), str(inputs / "style.png"), "-o", str(tmp_path / "cli.png"),
            "--weights", str(inputs / "syn.h5"), "--no-progress", *[f"--{k}={v}" for k, v in opts.items()],
            "--set", "tv_loss=l1", "--set", "tv_weight=50"]
    assert cli.main(argv) == 0
    assert png == (tmp_path / "cli.png").read_bytes()


def test_a_warm_program_serves_later_jobs_without_compiling_again(inputs, tmp_path):
    """Two batches one after the other, of one program and shape but other values, seeds and
    iterations: the engine's chunk is traced once (the values are arguments, not constants)."""
    from conftest import CompileCounter

    # a size no other test of this process uses, so the first job compiles here
    first = {**ADAM, "size": "56", "iterations": "4", "init": "noise", "seed": "1"}
    later = {**first, "iterations": "6", "seed": "2", "style-weight": "7e3", "learning-rate": "0.05"}
    with client_for(inputs, tmp_path / "data", max_batch=1) as c, CompileCounter() as counter:
        ids = [c.post("/jobs", files=files(inputs), data=first).json()["id"]]
        finished(c, ids[0])
        traced = counter.traces
        ids.append(c.post("/jobs", files=files(inputs), data=later).json()["id"])
        job = finished(c, ids[1])
        before = c.get(f"/jobs/{ids[0]}").json()
    assert traced >= 1 and counter.traces == traced, (traced, counter.traces)
    assert job["status"] == "done" and job["iteration"] == 6 and job["batch"]["id"] != before["batch"]["id"]
