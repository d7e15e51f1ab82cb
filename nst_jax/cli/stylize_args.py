"""The ``stylize`` command's options: its own, then the config's (``common.add_config_options``).

Apart from the command (``cli.stylize``) so that the job server can parse a job with the very
same parser (``serve.jobs``) while the command's ``--web`` uses the server's page: both import
this module, neither imports the other.
"""

from __future__ import annotations

from typing import Any

from . import common
from ..program.presets import PRESETS


def add_parser(sub: Any) -> None:
    """The ``stylize`` command's options (the config's own come from ``common.add_config_options``)."""
    s = sub.add_parser("stylize", help="paint CONTENT in the style of STYLE(s)",
                       description="Paint CONTENT in the style of STYLE (several styles are blended).")
    s.add_argument("content")
    s.add_argument("styles", nargs="*", metavar="STYLE")
    s.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .tif, .webp, .bmp)")
    s.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)} (default: default)")
    s.add_argument("--weights", help="converted weights file (default: the weights directory)")
    s.add_argument("--save-every", type=int, metavar="K", help="also save the image every K iterations")
    s.add_argument("--montage", metavar="PATH", help="also save content | result | style side by side")
    s.add_argument("--loss-plot", metavar="PATH", help="also save the loss curve as a PNG")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--no-download", action="store_true", help="never fetch weights (offline use)")
    s.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write a checkpoint every N iterations (also written on Ctrl-C / SIGTERM)")
    s.add_argument("--checkpoint", metavar="PATH",
                   help="checkpoint file (default: OUTPUT.ckpt.npz; with several results DIR/batch.ckpt.npz)")
    s.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint")
    s.add_argument("--web", action="store_true", help="watch the run in a browser: the page of nst-jax serve, "
                   "live, on 127.0.0.1 (extra nst-jax[serve])")
    b = s.add_argument_group("many results in one compiled program: one per style (--batch), per swept value "
                             "(a comma list on a value option) and per seed (--seed 0,1,2), written into -o DIR")
    b.add_argument("--batch", action="store_true", help="one output per style in the directory -o OUTDIR")
    b.add_argument("--styles-dir", metavar="DIR", help="add every image in DIR as a style (implies --batch)")
    b.add_argument("--batch-size", type=int, help="results optimised at once (default: what fits in memory)")
    b.add_argument("--format", help="output format in batch mode (png, jpg, tif, webp; default png)")
    b.add_argument("--grid", metavar="PATH", help="also save every result in one labelled picture: rows and "
                   "columns named by the styles, swept values and seeds")
    b.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize(); each host runs and writes its share")
    b.add_argument("--coordinator", metavar="HOST:PORT", help="--distributed: process 0's address "
                   "(default: $JAX_COORDINATOR_ADDRESS, or the cluster's)")
    b.add_argument("--num-processes", type=int, help="--distributed: how many processes (default: $JAX_NUM_PROCESSES)")
    b.add_argument("--process-id", type=int, help="--distributed: this process's index (default: $JAX_PROCESS_ID)")
    common.add_config_options(s)
