"""One thread owns the devices: it takes the waiting jobs of one program and working shape and paints
them as one batch through the control stage and the one driver (``stylize_many_controlled``).

Scheduling. The head of the queue (the oldest waiting job) always runs next, with up to
``max_batch - 1`` younger jobs of its key: first come, first served across groups, and a job waits
only behind older jobs. A job does not join a batch that is already running: a running batch is
one compiled program of a fixed batch size, and adding a member at a chunk boundary would need a
program for the new size (a compilation, seconds to minutes on an accelerator) and would restack
the optimiser state of every member; the next batch starts as soon as this one ends, so a new job
waits at most one batch.

Warm programs. A batch's compiled chunk is JAX's, cached by program, shape and batch size;
``warm_programs`` bounds how many distinct keys stay compiled (least recently used first out:
past the bound the caches are cleared, which JAX allows only as a whole).

Nothing accepted is lost. At every chunk boundary a one-scale batch writes a checkpoint
(``engine.checkpoint.save_batch``) into ``DATA/batches``; after a crash the jobs left running
are queued again, and the same batch resumes from its checkpoint to the images an uninterrupted
run gives. A drain (SIGTERM) stops the batch at the next chunk boundary, after its checkpoint.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import pathlib
import sys
import threading
import traceback
from typing import Any, Optional

import numpy as np

from .. import image
from ..errors import NSTError
from .jobs import Limits, error_message, parse_job
from .store import JobStore


@dataclasses.dataclass
class Paths:
    """Where a server keeps its files (every name chosen here; a request only ever gives an id)."""

    root: pathlib.Path

    def job(self, job_id: str) -> pathlib.Path:
        return self.root / "jobs" / job_id

    def result(self, job_id: str) -> pathlib.Path:
        return self.job(job_id) / "result.png"

    def preview(self, job_id: str) -> pathlib.Path:
        return self.job(job_id) / "preview.png"

    def checkpoint(self, ids: list[str]) -> pathlib.Path:
        return self.root / "batches" / f"{batch_name(ids)}.ckpt.npz"


def batch_name(ids: list[str]) -> str:
    """A batch's name: its jobs, in order (the same jobs after a restart find its checkpoint)."""
    return hashlib.sha256(",".join(ids).encode()).hexdigest()[:16]


class Worker(threading.Thread):
    """The job runner (a daemon thread; ``drain()`` stops it at the next chunk boundary)."""

    def __init__(self, store: JobStore, paths: Paths, network: Any, *, max_batch: int = 4, limits: Optional[Limits] = None,
                 warm_programs: int = 8) -> None:
        super().__init__(name="nst-jax-worker", daemon=True)
        self.store, self.paths, self.network, self.limits = store, paths, network, limits or Limits()
        self.max_batch, self.warm_programs = max_batch, warm_programs
        self.wake = threading.Event()
        self.draining = threading.Event()
        self.batches_run = 0
        self._warm: collections.OrderedDict[str, None] = collections.OrderedDict()
        (paths.root / "batches").mkdir(parents=True, exist_ok=True)
        # jobs a crash or a drain left running: queued again, and their batch runs first, as it was
        self.recovered = _groups(store.running())
        store.requeue_running()

    def drain(self) -> None:
        self.draining.set()
        self.wake.set()

    def run(self) -> None:
        while not self.draining.is_set():
            jobs = self._next()
            if not jobs:
                self.wake.wait(0.2)
                self.wake.clear()
                continue
            self._run_batch(jobs)

    def _next(self) -> list[dict]:
        while self.recovered:
            ids = self.recovered.pop(0)
            jobs = [j for j in (self.store.get(i) for i in ids) if j is not None and j["status"] == "queued"]
            if jobs:
                return jobs
        return self.store.next_batch(self.max_batch)

    def _run_batch(self, jobs: list[dict]) -> None:
        ids = [j["id"] for j in jobs]
        self.store.start(ids, batch_name(ids))
        self._touch(jobs[0]["key"])
        try:
            self._paint(jobs)
            self.batches_run += 1
        except NSTError as err:
            for j in jobs:
                self.store.finish(j["id"], "failed", error_message(err))
        except Exception as err:  # a bug: the jobs fail with a line, the server goes on
            traceback.print_exc()
            for j in jobs:
                self.store.finish(j["id"], "failed", f"internal error: {type(err).__name__}: {error_message(err)}")

    def _touch(self, key: str) -> None:
        """The LRU of compiled programs: past ``warm_programs`` keys, JAX's caches are cleared."""
        import jax

        self._warm[key] = None
        self._warm.move_to_end(key)
        if len(self._warm) > self.warm_programs:
            jax.clear_caches()
            self._warm = collections.OrderedDict([(key, None)])

    def _paint(self, jobs: list[dict]) -> None:
        from ..cli import common, plan
        from ..control import runs as control

        parsed = [parse_job(j["argv"], self.limits) for j in jobs]
        loaded = [plan.working_images(p.args.content, plan.style_list(p.args), p.cfg, self.limits.max_pixels)
                  for p in parsed]
        cfg = parsed[0].cfg
        contents = np.stack([c for c, _, _, _ in loaded])
        styles = [s if p.cfg.style_blend_weights is None else list(zip(s, p.cfg.style_blend_weights))
                  for p, (_, s, _, _) in zip(parsed, loaded)]
        ids = [j["id"] for j in jobs]
        args = parsed[0].args
        one_scale = args.scales is None
        ckpt = self.paths.checkpoint(ids)
        meta = dict(config=cfg, members=[{"job": j["id"], "argv": j["argv"]} for j in jobs],
                    weights_fingerprint=self.network.fingerprint, content_shape=tuple(contents.shape[1:]))
        many = control.stylize_many_controlled(
            contents, styles, self.network, cfg, configs=[p.cfg for p in parsed],
            seeds=[p.parsed.seeds[0] for p in parsed],
            callback=self._callback(ids, ckpt if one_scale else None, meta, cfg.iteration_unit == "evaluation"),
            batch_size=len(jobs), scales=common.parse_scales(args.scales),
            iterations_per_scale=args.iterations_per_scale, color_match_method=parsed[0].parsed.color_match,
            resume=self._resume(ckpt, cfg, contents, meta, len(jobs)) if one_scale else None)
        for i, j in enumerate(jobs):
            if i >= len(many):
                continue  # stopped by a drain before this member ran: it stays queued for the next start
            result = many[i]
            if result.status == "stopped":
                continue
            _, final = common.output_image(result, parsed[i].cfg, loaded[i][3])
            image.save_image(self.paths.result(j["id"]), final, overwrite=True, rounding=parsed[i].cfg.save_rounding)
            if result.status == "nonfinite":
                self.store.finish(j["id"], "failed", common.nonfinite_advice(result, parsed[i].cfg,
                                                                             pathlib.Path("the result")))
            else:
                self.store.finish(j["id"], "done")
        if not self.draining.is_set():
            ckpt.unlink(missing_ok=True)

    def _resume(self, ckpt: pathlib.Path, cfg: Any, contents: np.ndarray, meta: dict, n: int) -> Any:
        """The batch's state from its checkpoint (a crash or a drain interrupted it), or None."""
        import jax

        from ..engine import checkpoint, driver, loop
        from ..engine.batching import ManyResume

        if not ckpt.exists():
            return None

        def template(g: int) -> Any:
            one = loop.init_state(jax.numpy.zeros(contents.shape[1:], jax.numpy.float32), cfg.program(), cfg.values())
            return driver.stack([one] * g)

        try:
            state, rows, _, _ = checkpoint.load_batch(ckpt, template, group_size=n,
                                                      max_rows=2 * self.limits.max_iterations + 64, **meta)
        except NSTError as err:  # another batch's, or damaged: start afresh (the result is the same)
            print(f"warning: {ckpt}: not resumed ({error_message(err)})", file=sys.stderr, flush=True)
            return None
        print(f"resuming a batch of {n} at iteration {int(np.min(np.asarray(state.step)))}", file=sys.stderr,
              flush=True)
        return ManyResume(None, state, rows)

    def _callback(self, ids: list[str], ckpt: Optional[pathlib.Path], meta: dict, by_evals: bool) -> Any:
        from ..engine import checkpoint

        def callback(p: Any) -> bool:
            states = [self.store.get(i) for i in ids]
            cancelled = all(s is None or s["status"] == "cancelled" for s in states)
            stop = self.draining.is_set() or cancelled
            if ckpt is not None and not cancelled:
                checkpoint.save_batch(ckpt, p.batch_state, p.rows, None, group_size=len(ids), **meta)
            self._report(ids, p, by_evals)
            return stop

        return callback

    def _report(self, ids: list[str], p: Any, by_evals: bool) -> None:
        """Each member's iteration, losses, latest loss parts and a preview (the colours restored),
        at a chunk boundary."""
        from ..objective.terms import part_names

        counts = np.asarray(p.batch_state.evals if by_evals else p.batch_state.step)
        pictures = p.restored_image()
        columns = {name: 1 + part_names().index(name) for name in p.parts}
        updates = []
        for i, job_id in enumerate(ids[:len(pictures)]):
            losses = np.concatenate([np.asarray(l)[i] for l, _ in p.finished] + [np.asarray(p.losses)[i]])
            rows = np.asarray(p.rows)[i]
            last = rows[np.isfinite(rows[:, 0])][-1] if np.isfinite(rows[:, 0]).any() else np.full(rows.shape[1:], np.nan)
            before = sum(np.asarray(l).shape[1] for l, _ in p.finished)
            updates.append((job_id, int(before + counts[i]), [float(x) for x in losses[np.isfinite(losses)]],
                            {name: float(last[c]) for name, c in columns.items() if np.isfinite(last[c])}))
            image.save_image(self.paths.preview(job_id), pictures[i], overwrite=True)
        self.store.progress(updates)


def _groups(running: list[dict]) -> list[list[str]]:
    """Running jobs grouped by the batch they ran in, oldest batch first."""
    out: dict[str, list[str]] = {}
    for j in running:
        out.setdefault(j["batch"] or j["id"], []).append(j["id"])
    return list(out.values())
