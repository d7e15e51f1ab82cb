"""A load test on 127.0.0.1, bounded in count and time: 32 clients at once submit small jobs of 4
distinct programs to a real ``nst-jax serve``. No job is lost, jobs of one program share batches,
and each result is the PNG its own ``nst-jax stylize`` run writes. (Timings: scripts/bench_serve.py.)"""

from __future__ import annotations

import concurrent.futures

import httpx

from serve_support import cli_result, files, make_inputs, server, wait

# Four programs (SGD and Adam: a batch member's bytes are its single run's; README, "Serving")
BASE = {"size": "32", "iterations": "4", "chunk-size": "2", "style-layers": "relu1_1,relu2_1",
        "content-layers": "relu2_2", "init": "noise"}
PROGRAMS = [{**BASE, "optimizer": "adam", "learning-rate": "0.02"},
            {**BASE, "optimizer": "adam", "learning-rate": "0.02", "size": "40"},
            {**BASE, "optimizer": "sgd", "learning-rate": "1e-4"},
            {**BASE, "optimizer": "adam", "learning-rate": "0.02", "pooling": "avg"}]
CLIENTS = 32


def job_options(k: int) -> dict:
    """Client k's job: program k % 4, its own seed and style weight."""
    return {**PROGRAMS[k % 4], "seed": str(k), "style-weight": f"{1e3 * (1 + k):g}"}


def test_32_clients_4_programs_no_job_lost_each_equals_its_single_run(tmp_path):
    inputs = make_inputs(tmp_path / "inputs")
    with httpx.Client() as h, server(inputs, tmp_path / "data", h, "--max-batch", "8", "--max-pending", "64") as s:

        def client(k: int) -> tuple[str, bytes, dict]:
            with httpx.Client(timeout=30) as c:
                r = c.post(s.url + "/jobs", files=files(inputs, "style.png" if k % 2 else "style2.png"),
                           data=job_options(k))
                assert r.status_code == 201, r.text
                job_id = r.json()["id"]

                def done():
                    job = c.get(f"{s.url}/jobs/{job_id}").json()
                    return job if job["status"] in ("done", "failed", "cancelled") else None

                job = wait(done, 300, f"client {k}'s job", step=0.2)
                return job_id, c.get(f"{s.url}/jobs/{job_id}/image").content, job

        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, range(CLIENTS)))
        listed = {j["id"] for j in h.get(s.url + "/jobs").json()["jobs"]}
    assert len({r[0] for r in results}) == CLIENTS and {r[0] for r in results} <= listed
    assert [r[2]["status"] for r in results] == ["done"] * CLIENTS, [r[2]["error"] for r in results]
    batches = {r[2]["batch"]["id"] for r in results}
    assert len(batches) < CLIENTS and max(r[2]["batch"]["size"] for r in results) > 1  # they were batched
    for k, (_, png, _) in enumerate(results):
        want = cli_result(inputs, job_options(k), tmp_path / f"cli{k}.png", "style.png" if k % 2 else "style2.png")
        assert png == want, f"client {k}"
