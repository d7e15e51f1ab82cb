"""Image files in and out, and resizing (montages and plots: ``figures``; colour: ``color``).

This package is the only code that touches image files (Pillow; pypng and tifffile read and write
16-bit files). A module a job: ``read`` (``load_image``, ``image_size``, ``load_region_mask``),
``sixteen`` (16-bit PNG and TIFF decoding), ``write``
(``save_image``, ``check_output_path``), ``geometry`` (``working_shape``, ``resize``). Conventions:

* An image is a float32 ``H×W×3`` RGB array with values in ``[0, 1]`` (numpy; the colour
  functions also accept and return jax arrays).
* Every problem a user can fix (a missing, unreadable, broken or too large input; an output path
  that cannot be written) is an :class:`~nst_jax.errors.ImageError` with a one-line message
  naming the file. Non-fatal notes are ``warnings.warn(msg, NSTWarning)``.
* Invalid option values (``rounding``, ``method``, ``side``, ``bit_depth``) raise
  :class:`~nst_jax.errors.ConfigError` (a ``ValueError``).

Loading (:func:`load_image`):

* Transparency (RGBA, LA, PA, palette or ``tRNS`` transparency) is composited over **white**,
  since white is what a transparent region looks like on a page or in a viewer, and the
  style-transfer programs this library reproduces all read images as opaque RGB.
* 16-bit data keep their precision (``/ 65535``). Pillow decodes 16-bit greyscale (``I;16``) itself,
  but gives 16-bit RGB/RGBA/LA PNG and TIFF files as 8-bit modes, so those are decoded by
  :mod:`.sixteen`: PNG with imagecodecs (optional, C) or pypng, TIFF with tifffile. Where that
  cannot keep 16 bits (a large PNG without imagecodecs, a TIFF compression that needs it) the image
  is used at 8 bits with an ``NSTWarning`` saying why.
* An ICC profile other than sRGB is converted to sRGB with ``ImageCms`` (for 8-bit data); without
  ``ImageCms``, or for 16-bit/float data, the profile is ignored with a warning.
* The size limit is checked from the header before decoding (``max_pixels``; the CLI's
  ``--max-pixels``). Pillow's own decompression-bomb limit is replaced by ``max_pixels`` while
  one of our loads runs (under a lock, restored afterwards), so raising ``max_pixels`` works.

Saving (:func:`save_image`; ``figures.save_loss_plot`` too): the format comes from the extension; an
existing file is only replaced with ``overwrite=True``; a missing parent directory is created;
the data are written to a temporary file in the destination directory and moved into place with
``os.replace``, so a failed write never leaves a partial file or damages an existing one.
"""

from nst_jax.image.common import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, RESIZE_METHODS, ROUNDINGS, SIDES
from nst_jax.image.geometry import resize, working_shape
from nst_jax.image.read import image_size, load_image, load_region_mask
from nst_jax.image.write import check_output_path, save_image, to_uint8, write_file_atomic

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "RESIZE_METHODS",
    "ROUNDINGS",
    "SIDES",
    "check_output_path",
    "image_size",
    "load_image",
    "load_region_mask",
    "resize",
    "save_image",
    "to_uint8",
    "working_shape",
    "write_file_atomic",
]
