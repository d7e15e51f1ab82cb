"""Single runs: ``stylize`` optimises one image, a batch of one through the one driver;
``make_loss_fn`` is the same batch of one's objective, for users who want ``loss_fn(image)``.

``Result`` is what a run returns. The compiled loop is ``nst_jax.engine.loop``; preparing its arguments
and running its chunks is ``nst_jax.engine.driver``, shared with ``batching.stylize_many``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..program.config import StyleConfig
from .driver import Progress, drive, prepare, prepare_targets
from ..errors import ConfigError
from .loop import LoopState, row_size
from ..objective.terms import objective_jit, part_names
from ..objective.targets import ImageLike

Array = jax.Array

__all__ = ["Progress", "Result", "make_loss_fn", "stylize"]


@dataclasses.dataclass
class Result:
    """A finished (or stopped) run.

    ``image``: the last iterate (EMA of iterates when ``ema_decay`` is set); ``best_image``: the
    lowest-loss iterate (MATLAB's choice, with its quirk under ``select="after_best"``);
    ``output``: the one the config selects. ``losses``: total loss per iteration, evaluated at the
    iterate before its update; ``loss_parts``: iterations × len(``objective.part_names()``), its
    weighted terms (content, style, TV, temporal; NaN where unknown: resumed heads, the zoom line
    search); ``terms``: the names of the terms this run has (``parts()`` maps each to its column).
    ``status``: "done", "stopped" (callback asked) or "nonfinite".
    """

    image: np.ndarray
    best_image: np.ndarray
    losses: np.ndarray
    evaluations: int
    iterations: int
    status: str
    config: StyleConfig
    seed: int
    state: Optional[LoopState] = None
    loss_parts: Optional[np.ndarray] = None
    terms: tuple[str, ...] = ("content", "style", "tv")

    def parts(self) -> dict[str, np.ndarray]:
        """Each term this run has -> its weighted value per iteration (NaN where unknown)."""
        if self.loss_parts is None:
            return {}
        return {name: self.loss_parts[:, part_names().index(name)] for name in self.terms}

    @property
    def output(self) -> np.ndarray:
        return self.best_image if self.config.select in ("best", "after_best") else self.image

    @property
    def final_loss(self) -> float:
        finite = self.losses[np.isfinite(self.losses)]
        return float(finite[-1]) if finite.size else float("nan")


def stylize(
    content: ImageLike,
    style: Any,
    params: Any,
    config: StyleConfig,
    *,
    iterations: Optional[int] = None,
    seed: int = 0,
    key: Optional[Array] = None,
    callback: Optional[Callable[[Progress], Optional[bool]]] = None,
    init_image: Optional[ImageLike] = None,
    convention: Any = None,
    resume: Optional[LoopState] = None,
    resume_losses: Optional[np.ndarray] = None,
    chunk_size: Optional[int] = None,
    masks: Optional[ImageLike] = None,
    style_masks: Optional[Sequence[Optional[ImageLike]]] = None,
    devices: Optional[Sequence[jax.Device]] = None,
    temporal: Optional[tuple[ImageLike, ImageLike]] = None,
) -> Result:
    """Optimise an image so its VGG features match the content's and its style statistics the style's.

    Args:
      content: H×W×3 RGB in [0, 1] at the working size (the library never resizes).
      style: one array, a sequence (blended), or (array, weight) pairs.
      params: a ``weights.Network`` (or a params dict with ``convention=``).
      config: a ``StyleConfig`` (see ``nst_jax.preset``). Its program keys the compilation; its
        values, iterations and seed never do.
      iterations: overrides ``config.iterations`` (for L-BFGS without line search: evaluations).
      seed: seeds the start-image noise (``jax.random.PRNGKey(seed)``).
      key: a ``jax.random`` key instead of ``seed``.
      callback: called between chunks with a ``Progress``; returning True stops the run.
      init_image: a start image (RGB [0, 1]) instead of ``config.init``.
      convention: for a bare params dict: a ``vgg.Convention`` or a ``network.NetSpec``.
      resume: a ``LoopState`` to continue from (see ``Result.state`` and ``checkpoint.py``); the
        run continues to ``iterations`` in total, exactly as an uninterrupted run would.
      resume_losses: the losses recorded before ``resume`` (kept at the head of ``Result.losses``).
      chunk_size: steps per compiled chunk (default ``config.chunk_size``).
      masks, style_masks: spatial control: K×H×W region weights over the content, style k
        painting region k (guided Gram matrices, Gatys et al. 2017; see ``compute_targets``).
      devices: split this one image's rows over these devices (``nst_jax.engine.sharding``): the image,
        its activations and the optimiser state are sharded, so N devices hold about 1/N of them
        each. Default (or one device): the first device holds everything.
      temporal: video (``nst_jax.video.frames``): (the previous stylised frame warped to this one, RGB
        [0, 1] H×W×3; H×W weights, e.g. ``temporal.consistency_mask``): adds
        ``temporal_weight · temporal.temporal_loss`` to the objective.

    Returns:
      ``Result``.
    """
    total = config.iterations if iterations is None else int(iterations)
    if total < 0:
        raise ConfigError(f"iterations must be >= 0; got {total}")
    content = jnp.asarray(content, jnp.float32)
    prep = prepare(params, [content], [style], [config], keys=[jax.random.PRNGKey(seed) if key is None else key],
                   convention=convention, init_images=[init_image], masks=[masks], style_masks=[style_masks],
                   temporal=[temporal],
                   resume=None if resume is None else jax.tree.map(lambda x: jnp.asarray(x)[None], resume))
    head = None
    if resume_losses is not None:
        losses = np.asarray(resume_losses, np.float32).reshape(-1, 1)
        head = np.concatenate([losses, np.full((len(losses), row_size() - 1), np.nan, np.float32)], axis=1)[None]

    def single(p: Progress) -> Optional[bool]:
        assert callback is not None
        return callback(dataclasses.replace(p, losses=p.losses[0], member=0))

    # One image over several devices: its rows split over them (a batch × spatial mesh of 1 × N).
    spread = list(devices) if devices is not None and len(devices) > 1 else None
    run = drive(prep, total, rounds=config.lbfgs_round, chunk_size=chunk_size,
                callback=None if callback is None else single, devices=spread,
                spatial=1 if spread is None else len(spread), head=head)
    rows = run.rows[0]  # (a batch of one is never padded)
    return Result(
        image=run.images[0],
        best_image=run.best_images[0],
        losses=rows[:, 0],
        evaluations=int(run.evaluations[0]),
        iterations=int(run.steps[0]),
        status=run.status[0],
        config=config,
        seed=seed,
        state=jax.tree.map(lambda x: x[0], run.state),
        loss_parts=rows[:, 1:],
        terms=prep.terms,
    )



def make_loss_fn(
    params: Any,
    content: ImageLike,
    style: Any,
    config: StyleConfig,
    *,
    convention: Any = None,
    masks: Optional[ImageLike] = None,
    style_masks: Optional[Sequence[Optional[ImageLike]]] = None,
) -> Callable[[Array], tuple[Array, dict[str, Array]]]:
    """``loss_fn(image) -> (total, parts)`` for one config, over targets computed here once.

    ``image`` is H×W×3 RGB in [0, 1] at the working size; the preset's preprocessing happens
    inside, so the value equals the original program's loss at the same pixels. The targets and
    values come from ``driver.prepare_targets``, as a run's do.

    Args:
      params: a ``weights.Network`` (params + convention) or a params dict with ``convention=``.
      content: H×W×3 RGB in [0, 1].
      style: one array, a sequence of arrays, or (array, weight) pairs (see ``compute_targets``).
      config: a ``StyleConfig``.
      convention: for a bare params dict: a ``vgg.Convention`` or a ``network.NetSpec``.
      masks, style_masks: spatial control, see ``compute_targets``.

    Returns:
      ``loss_fn``. It calls the jitted ``objective`` with the params, targets and values as
      *arguments* (not constants of its program); it uses the direct convolutions, whatever
      ``config.conv_algorithm`` says. Inside your own ``jit``, call ``objective.terms.objective``
      instead, with the params as your function's argument.
    """
    t = prepare_targets(params, [content], [style], [config], convention=convention, masks=[masks],
                        style_masks=[style_masks])
    targets, values = t.targets[0], jax.tree.map(jnp.asarray, t.values[0])

    def loss_fn(image: Array) -> tuple[Array, dict[str, Array]]:
        return objective_jit(t.params, targets, image, values, program=t.program, spec=t.spec)

    return loss_fn
